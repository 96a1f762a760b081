// Text mode: no camera, no peer connection; messages both ways and the
// typing indicator through the signaling WebSocket.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startDuet } from '../lib/server.js';
import { launch, openPage, start, waitMatchedCount, screenshot, consoleProblems } from '../lib/browser.js';

let server;
let browser;

before(async () => {
  server = await startDuet({ name: 'text', args: ['--widen-after-secs', '1'] });
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  if (server) await server.stop();
});

test('text mode: messages go both ways and the typing indicator is shown', async () => {
  const a = await openPage(browser, server.base);
  const b = await openPage(browser, server.base);
  await start(a, { mode: 'text' });
  await start(b, { mode: 'text' });
  await Promise.all([waitMatchedCount(a, 1), waitMatchedCount(b, 1)]);
  assert.equal(await a.evaluate(() => window.duet.pairingId), await b.evaluate(() => window.duet.pairingId));

  // B types: A sees "Stranger is typing…".
  await b.click('#chat-input');
  await b.keyboard.type('hello A', { delay: 20 });
  await a.waitForSelector('#typing:not([hidden])', { timeout: 10000 });
  await b.keyboard.press('Enter');
  await a.waitForSelector('#messages li.them:has-text("hello A")', { timeout: 10000 });
  assert.equal(await b.inputValue('#chat-input'), '', 'Enter sent and cleared the input');
  await b.waitForSelector('#messages li.me:has-text("hello A")');

  // And back: A types, B sees the indicator, then the message.
  await a.click('#chat-input');
  await a.keyboard.type('hi B, nice to meet you', { delay: 20 });
  await b.waitForSelector('#typing:not([hidden])', { timeout: 10000 });
  console.log(`screenshot: ${await screenshot(b, 'text-call-typing')}`);
  await a.keyboard.press('Enter');
  await b.waitForSelector('#messages li.them:has-text("hi B, nice to meet you")', { timeout: 10000 });
  await b.waitForSelector('#typing', { state: 'hidden' });

  // Text mode uses no camera and no peer connection at all.
  for (const p of [a, b]) {
    assert.equal(await p.evaluate(() => window.duet.pcCreatedCount), 0);
    assert.equal(await p.evaluate(() => window.duet.mode), 'text');
  }
  console.log(`screenshot: ${await screenshot(a, 'text-call')}`);
});

test('with no shared interest the page says it is widening to everyone, then pairs', async () => {
  const a = await openPage(browser, server.base);
  const b = await openPage(browser, server.base);
  await start(a, { mode: 'text', interests: ['chess'] });
  await a.waitForFunction(() => window.duet.state === 'queued');
  await start(b, { mode: 'text', interests: ['painting'] });
  await a.waitForFunction(() => window.duet.widened === true, null, { timeout: 15000 });
  assert.ok(await a.evaluate(() => window.duet.events.some((e) => e.kind === 'recv' && e.detail === 'widened')));
  await Promise.all([waitMatchedCount(a, 1), waitMatchedCount(b, 1)]);
  assert.deepEqual(await a.evaluate(() => window.duet.commonInterests), []);
  await a.context().close();
  await b.context().close();
});

test('users who share an interest are paired and told what they share', async () => {
  const a = await openPage(browser, server.base);
  const b = await openPage(browser, server.base);
  await start(a, { mode: 'text', interests: ['Jazz', 'hiking'] });
  await a.waitForFunction(() => window.duet.state === 'queued');
  await start(b, { mode: 'text', interests: ['jazz'] });
  await Promise.all([waitMatchedCount(a, 1), waitMatchedCount(b, 1)]);
  assert.deepEqual(await b.evaluate(() => window.duet.commonInterests), ['jazz']);
  assert.match(await b.textContent('#status'), /Connected — you both like jazz/);
  await a.context().close();
  await b.context().close();
});

test('the page raised no script errors and no Content-Security-Policy refusals', () => {
  assert.deepEqual(consoleProblems(), []);
});
