// Report: 201, the pair is separated, and the reporter never meets the
// reported user again — with the re-meeting cooldown off, so only the
// report rule keeps them apart.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startDuet } from '../lib/server.js';
import {
  launch, openPage, start, waitState, waitMatchedCount, sampleRemoteFrames, waitRemoteColor, screenshot, pageLog,
  consoleProblems,
} from '../lib/browser.js';

const WIDEN_SECS = 1;
let server;
const browsers = {};

before(async () => {
  server = await startDuet({ name: 'report', args: ['--widen-after-secs', String(WIDEN_SECS), '--cooldown-secs', '0'] });
  [browsers.red, browsers.blue, browsers.yellow] = await Promise.all([
    launch({ color: 'red' }), launch({ color: 'blue' }), launch({ color: 'yellow' }),
  ]);
});

after(async () => {
  await Promise.all(Object.values(browsers).map((b) => b && b.close().catch(() => {})));
  if (server) await server.stop();
});

async function user(browser) {
  const p = await openPage(browser, server.base);
  await sampleRemoteFrames(p);
  return p;
}

test('a report is accepted (201), separates the pair, and the reporter is never paired with the reported user again', async () => {
  const a = await user(browsers.red);
  const b = await user(browsers.blue);
  const c = await user(browsers.yellow);
  await start(a);
  await waitState(a, 'queued');
  await start(b);
  await Promise.all([waitMatchedCount(a, 1), waitMatchedCount(b, 1)]);
  await waitRemoteColor(a, 'blue');
  const firstPairing = await a.evaluate(() => window.duet.pairingId);

  // C waits while A and B talk.
  await start(c);
  await waitState(c, 'queued');

  await a.click('#report-btn');
  await a.locator('#report-dialog').waitFor({ state: 'visible' });
  await a.check('input[name="category"][value="harassment"]');
  await a.fill('#report-text', 'Insulted me and would not stop.');
  console.log(`screenshot: ${await screenshot(a, 'report-dialog')}`);
  const [resp] = await Promise.all([
    a.waitForResponse((r) => r.url().endsWith('/api/reports') && r.request().method() === 'POST'),
    a.click('#report-submit'),
  ]);
  assert.equal(resp.status(), 201, `POST /api/reports answered ${resp.status()}: ${await resp.text().catch(() => '')}`);
  const body = await resp.json();
  assert.ok(body.report_id, 'the answer carries a report id');
  await a.locator('#report-dialog').waitFor({ state: 'hidden' });

  // The pair is separated: B is told its partner left.
  await waitState(b, 'left').catch(async (e) => { throw new Error(`B was not separated: ${e.message}\n${await pageLog(b)}`); });
  // A goes on and meets the one waiting user, C (not B).
  await waitMatchedCount(a, 2).catch(async (e) => { throw new Error(`A was not paired again: ${e.message}\nA: ${await pageLog(a)}\nC: ${await pageLog(c)}`); });
  assert.equal(await a.evaluate(() => window.duet.pairingId), await c.evaluate(() => window.duet.pairingId), 'A is paired with C');
  await waitRemoteColor(a, 'yellow', { after: await a.evaluate(() => window.duet.marks.matched) });

  // Now A and B both wait, alone in the queue, with no cooldown: they must never be matched.
  await b.click('#next-btn');
  await waitState(b, 'queued');
  await a.click('#next-btn');
  await waitState(a, 'queued');
  await waitState(c, 'left');
  await a.waitForTimeout((WIDEN_SECS * 4 + 2) * 1000);
  const [sa, sb] = [await a.evaluate(() => ({ state: window.duet.state, pairings: window.duet.pairings })),
    await b.evaluate(() => ({ state: window.duet.state, pairings: window.duet.pairings }))];
  assert.equal(sa.state, 'queued', `A still waits (${JSON.stringify(sa)})`);
  assert.equal(sb.state, 'queued', `B still waits (${JSON.stringify(sb)})`);
  const shared = sa.pairings.filter((p) => sb.pairings.includes(p));
  assert.deepEqual(shared, [firstPairing], 'A and B shared no pairing after the report');

  // The queue itself works: C comes back and is paired with one of them.
  await c.click('#next-btn');
  await waitMatchedCount(c, 2);
  const cp = await c.evaluate(() => window.duet.pairingId);
  const ap = await a.evaluate(() => window.duet.pairingId);
  const bp = await b.evaluate(() => window.duet.pairingId);
  assert.ok(cp === ap || cp === bp, 'C is paired with A or B');
  assert.notEqual(ap && bp && ap === bp, true, 'A and B are not paired together');
});

test('the page raised no script errors and no Content-Security-Policy refusals', () => {
  assert.deepEqual(consoleProblems(), []);
});
