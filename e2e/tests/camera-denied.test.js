// Camera permission denied: a clear message, and text chat still works.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startDuet } from '../lib/server.js';
import { launch, openPage, start, waitMatchedCount, screenshot, consoleProblems } from '../lib/browser.js';

let server;
let denied;
let normal;

before(async () => {
  server = await startDuet({ name: 'camera-denied', args: ['--widen-after-secs', '1'] });
  // No fake-UI auto-accept: every permission prompt is denied.
  [denied, normal] = await Promise.all([launch({ grantMedia: false }), launch()]);
});

after(async () => {
  await Promise.all([denied, normal].map((b) => b && b.close().catch(() => {})));
  if (server) await server.stop();
});

test('a user who denies the camera sees a clear message and can still chat by text', async () => {
  const a = await openPage(denied, server.base);
  const msg = a.locator('#camera-error');
  await msg.waitFor({ state: 'visible', timeout: 10000 });
  const text = await msg.textContent();
  assert.match(text, /denied/i);
  assert.match(text, /text/i, 'the message points to text chat');
  assert.equal(await a.evaluate(() => window.duet.camera), 'denied');
  assert.ok(await a.isChecked('input[name="mode"][value="text"]'), 'text mode is selected for the user');
  console.log(`screenshot: ${await screenshot(a, 'camera-denied')}`);

  // Asking for video again asks the browser again, is refused again, and falls back to text.
  await a.click('input[name="mode"][value="video"]', { force: true });
  await a.waitForFunction(() => window.duet.events.filter((e) => e.kind === 'camera').length >= 2, null, { timeout: 10000 });
  await msg.waitFor({ state: 'visible' });
  assert.ok(await a.isChecked('input[name="mode"][value="text"]'), 'back in text mode');
  assert.equal(await a.evaluate(() => window.duet.state), 'landing');

  // Text mode works with no camera at all.
  await start(a, { mode: 'text' });
  const b = await openPage(normal, server.base);
  await start(b, { mode: 'text' });
  await Promise.all([waitMatchedCount(a, 1), waitMatchedCount(b, 1)]);
  await a.fill('#chat-input', 'no camera here');
  await a.press('#chat-input', 'Enter');
  await b.waitForSelector('#messages li.them:has-text("no camera here")');
  await b.fill('#chat-input', 'text is fine');
  await b.press('#chat-input', 'Enter');
  await a.waitForSelector('#messages li.them:has-text("text is fine")');
  assert.equal(await a.evaluate(() => window.duet.pcCreatedCount), 0);
});

test('the page raised no script errors and no Content-Security-Policy refusals', () => {
  assert.deepEqual(consoleProblems(), []);
});
