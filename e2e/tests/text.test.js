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

test('the page raised no script errors and no Content-Security-Policy refusals', () => {
  assert.deepEqual(consoleProblems(), []);
});
