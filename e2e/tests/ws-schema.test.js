// The WebSocket contract check that every test runs (lib/wscheck.js): a
// video call with chat and Next goes through without a frame that breaks
// the server's /api/ws.schema.json, the check saw both sockets in both
// directions, and it does refuse what breaks the schema, naming the
// message and the error.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startDuet } from '../lib/server.js';
import { launch, openPage, start, waitMatchedCount, waitState, consoleProblems } from '../lib/browser.js';
import { checked, checkFrame, takeViolations } from '../lib/wscheck.js';

let server;
let browser;

before(async () => {
  server = await startDuet({ name: 'ws-schema' });
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  if (server) await server.stop();
});

test('every frame of a call matches the WebSocket schema, on /ws and /sfu/ws, both ways', async () => {
  const a = await openPage(browser, server.base);
  const b = await openPage(browser, server.base);
  await start(a);
  await waitState(a, 'queued');
  await start(b);
  await Promise.all([waitMatchedCount(a, 1), waitMatchedCount(b, 1)]);
  await a.waitForFunction(() => window.duet.pc && window.duet.pc.connectionState === 'connected', null, { timeout: 20000 });
  await a.fill('#chat-input', 'hello over the checked socket');
  await a.press('#chat-input', 'Enter');
  await b.waitForSelector('#messages li.them:has-text("hello over the checked socket")', { timeout: 10000 });
  await a.keyboard.press('Escape'); // Next
  await b.waitForFunction(() => window.duet.state !== 'matched', null, { timeout: 10000 });
  assert.deepEqual(await takeViolations(), []);
  for (const key of [
    '/ws sent join', '/ws received queued', '/ws received matched', '/ws sent chat', '/ws received chat',
    '/ws sent next', '/ws received partner_left',
    '/sfu/ws sent offer', '/sfu/ws received answer', '/sfu/ws received state',
  ]) {
    assert.ok(checked.get(key) > 0, `no ${key} frame was checked; checked: ${JSON.stringify([...checked])}`);
  }
  console.log(`ws schema: checked ${JSON.stringify(Object.fromEntries(checked))}`);
  assert.deepEqual(consoleProblems(), []);
});

test('the check refuses frames that break the schema and names the message and the error', async () => {
  const bad = [
    ['/ws', 'received', '{"type":"matched"}', /pairing_id/],
    ['/ws', 'sent', '{"type":"join","mode":"hologram"}', /mode|enum|oneOf|anyOf/],
    ['/ws', 'sent', '{"type":"teleport"}', /type|oneOf|anyOf|const/],
    ['/sfu/ws', 'received', '{"type":"answer"}', /sdp/],
    ['/sfu/ws', 'sent', 'not json', /not JSON/],
  ];
  for (const [path, dir, payload, error] of bad) {
    const problem = await checkFrame(server.base, path, dir, payload);
    assert.ok(problem, `${path} ${dir} ${payload} was accepted`);
    assert.match(problem, error);
    assert.ok(problem.includes(path) && problem.includes(payload), `the report names the socket and the message: ${problem}`);
  }
  const taken = await takeViolations();
  assert.equal(taken.length, bad.length, 'each refused frame is kept for the hook that fails the test');
  assert.equal(await checkFrame(server.base, '/ws', 'sent', '{"type":"next"}'), null, 'a good frame passes');
});
