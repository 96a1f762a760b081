// A visit by keyboard and screen reader, and an axe-core audit of every
// screen. One server and one browser for the whole file.
//
// - Right after being paired, typing "hi" and Enter sends "hi" to the
//   stranger (the focus is in the chat input) and the call goes on; Enter on
//   a button the person did not reach with Tab sends the message instead of
//   pressing that button.
// - A whole visit with the keyboard only: landing → Start → paired → "hi" →
//   Next (Esc) → report dialog (focus trapped, restored) → Stop, asserting
//   document.activeElement after each step; what a screen reader is told
//   (the page's live regions, recorded with a MutationObserver) is each piece
//   of news once.
// - axe-core: 0 WCAG 2.1 A/AA violations on every screen of the user page and
//   the moderation pages, at desktop and phone sizes, in both colour schemes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startDuet } from '../lib/server.js';
import { launch, openPage, start, waitState, waitMatchedCount, pageLog } from '../lib/browser.js';
import { createModerator, openAdmin, login, view } from '../lib/admin.js';
import { Audit, AUDIT_CONTEXT } from '../lib/axe.js';

const PASSWORD = 'correct horse battery staple';
const STATEMENT = 'You insulted the person you were talking to. duet does not allow this.';
let server;
let browser;

before(async () => {
  server = await startDuet({ name: 'a11y', args: ['--widen-after-secs', '1', '--cooldown-secs', '0'] });
  await createModerator(server, 'ada@example.org', 'admin', PASSWORD);
  browser = await launch({ color: 'red' });
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  if (server) await server.stop();
});

/** A user page whose announcements (additions to the page's live regions) are recorded in window.__said. */
async function userPage(o = {}) {
  const page = await openPage(browser, server.base, o);
  await page.evaluate(() => {
    window.__said = [];
    const watch = (id) => new MutationObserver((ms) => {
      for (const m of ms) for (const n of m.addedNodes) window.__said.push({ region: id, text: n.textContent });
    }).observe(document.getElementById(id), { childList: true, subtree: true, characterData: true });
    watch('announcer');
    watch('alerter');
  });
  return page;
}

const said = (page) => page.evaluate(() => window.__said.map((s) => s.text));
const focused = (page) => page.evaluate(() => {
  const a = document.activeElement;
  return a ? a.id || `${a.tagName.toLowerCase()}${a.className ? `.${a.className.split(' ').join('.')}` : ''}` : null;
});

async function assertFocus(page, id, step) {
  assert.equal(await focused(page), id, `after ${step}, the focus is on #${id}`);
}

/** Presses `key` until the focus is on #id (at most `max` times); fails if it never gets there. */
async function pressUntil(page, key, id, max = 12) {
  const seen = [];
  for (let i = 0; i < max; i++) {
    await page.keyboard.press(key);
    const at = await focused(page);
    seen.push(at);
    if (at === id) return seen;
  }
  throw new Error(`${key} never reached #${id}; focus went ${seen.join(' → ')}`);
}

/** Sends a chat line with the mouse and fill (the strangers are not the subject). */
async function chat(from, to, text) {
  await from.fill('#chat-input', text);
  await from.press('#chat-input', 'Enter');
  await to.waitForFunction((t) => [...document.querySelectorAll('#messages li.them')].some((li) => li.textContent.includes(t)), text);
}

test('typing "hi" and Enter right after being paired sends it to the stranger, and the call goes on', async () => {
  const a = await userPage();
  const b = await userPage();
  await start(a);
  await waitState(a, 'queued');
  await assertFocus(a, 'chat-input', 'Start');
  await start(b);
  await waitMatchedCount(a, 1);
  // No click anywhere: the person just types.
  await a.keyboard.type('hi');
  await a.keyboard.press('Enter');
  await b.waitForFunction(() => [...document.querySelectorAll('#messages li.them')].some((li) => li.textContent.includes('hi')), null, { timeout: 10000 })
    .catch(async (e) => { throw new Error(`the stranger never got "hi": ${e.message}\nA: ${await pageLog(a)}`); });
  const pairing = await a.evaluate(() => window.duet.pairingId);
  assert.equal(await a.evaluate(() => window.duet.state), 'matched', 'still paired after Enter');
  assert.equal(await b.evaluate(() => window.duet.pairingId), pairing);
  assert.equal(await a.inputValue('#chat-input'), '', 'the message left the input');

  // Next holds the focus without the person having Tabbed to it (as after a
  // click): typing and Enter still make a message, and Next is not pressed.
  await a.evaluate(() => document.getElementById('next-btn').focus());
  await a.keyboard.type('still here');
  await assertFocus(a, 'chat-input', 'typing with the focus on Next');
  await a.keyboard.press('Enter');
  await b.waitForFunction(() => document.getElementById('messages').textContent.includes('still here'));
  await a.evaluate(() => document.getElementById('next-btn').focus());
  await a.keyboard.press('Enter');
  await assertFocus(a, 'chat-input', 'Enter on a Next that was not reached with Tab');
  // A click on Mute keeps the focus on Mute; Enter there sends, it does not unmute.
  await a.click('#mute-btn');
  assert.equal(await a.getAttribute('#mute-btn', 'aria-pressed'), 'true');
  await a.keyboard.type('ok');
  await a.keyboard.press('Enter');
  await b.waitForFunction(() => document.getElementById('messages').textContent.includes('ok'));
  assert.equal(await a.getAttribute('#mute-btn', 'aria-pressed'), 'true', 'typing after a click on Mute did not press it again');
  assert.equal(await a.evaluate(() => window.duet.pairingId), pairing, 'the same stranger all along');
  assert.equal(await a.evaluate(() => window.duet.matchedCount), 1);

  // The stranger's messages are read aloud, unless the person turns that off.
  await chat(b, a, 'hello there');
  await a.click('#speak-messages');
  await chat(b, a, 'are you reading this');
  const heard = await said(a);
  assert.equal(heard.filter((t) => t === 'Stranger says: hello there').length, 1, `read once: ${JSON.stringify(heard)}`);
  assert.ok(!heard.some((t) => t.includes('are you reading this')), `not read once turned off: ${JSON.stringify(heard)}`);
  assert.ok(!heard.some((t) => t.includes('still here')), 'the person\'s own messages are not read back');
  await a.context().close();
  await b.context().close();
});

test('a whole visit with the keyboard only, with the focus where the person expects it and each announcement once', async () => {
  const a = await userPage();
  const b = await userPage();
  const c = await userPage();
  // Landing: skip link, the mode (arrow keys), the 18+ box, Start.
  await a.keyboard.press('Tab');
  assert.equal(await a.evaluate(() => document.activeElement.className), 'skip', 'the first Tab stop is the skip link');
  await a.keyboard.press('Tab');
  assert.equal(await a.evaluate(() => document.activeElement.id), 'ui-lang-select', 'then the page language switch in the top bar');
  await a.keyboard.press('Tab');
  assert.equal(await a.evaluate(() => document.activeElement.value), 'video');
  await a.keyboard.press('ArrowRight');
  assert.equal(await a.evaluate(() => document.activeElement.value), 'text');
  assert.ok(await a.isChecked('input[name="mode"][value="text"]'), 'text mode chosen with an arrow key');
  await pressUntil(a, 'Tab', 'accept');
  // Start without the 18+ box: the error is said (assertively) and the focus goes to the box.
  await pressUntil(a, 'Tab', 'start-btn', 1);
  await a.keyboard.press('Enter');
  await assertFocus(a, 'accept', 'Start without accepting the rules');
  assert.deepEqual(await a.evaluate(() => window.__said), [
    { region: 'alerter', text: 'Please confirm that you are 18 or older and accept the rules.' },
  ]);
  await a.keyboard.press('Space');
  assert.ok(await a.isChecked('#accept'));
  await pressUntil(a, 'Tab', 'start-btn', 1);
  await a.keyboard.press('Enter');
  await waitState(a, 'queued');
  await assertFocus(a, 'chat-input', 'Start');
  assert.ok(await a.evaluate(() => document.getElementById('chat-input').readOnly), 'read-only while looking');

  // Paired: the focus is in the chat input, "hi" + Enter goes to the stranger.
  await start(b, { mode: 'text' });
  await waitMatchedCount(a, 1);
  await assertFocus(a, 'chat-input', 'being paired');
  await a.keyboard.type('hi');
  await a.keyboard.press('Enter');
  await b.waitForFunction(() => document.getElementById('messages').textContent.includes('hi'));
  assert.equal(await a.evaluate(() => window.duet.state), 'matched');
  await chat(b, a, 'hello');
  // The stranger leaves; Esc is Next; the focus stays in the chat input.
  await b.click('#stop-btn');
  await waitState(a, 'left');
  await assertFocus(a, 'chat-input', 'the stranger leaving');
  await a.keyboard.press('Escape');
  await waitState(a, 'queued');
  await assertFocus(a, 'chat-input', 'Next (Esc)');

  // A second stranger; the report dialog by keyboard.
  await start(c, { mode: 'text' });
  await waitMatchedCount(a, 2);
  await assertFocus(a, 'chat-input', 'being paired again');
  const pairing = await a.evaluate(() => window.duet.pairingId);
  await pressUntil(a, 'Shift+Tab', 'report-btn', 2);
  await a.keyboard.press('Enter');
  await a.locator('#report-dialog').waitFor({ state: 'visible' });
  const inDialog = () => a.evaluate(() => document.getElementById('report-dialog').contains(document.activeElement));
  assert.ok(await inDialog(), `the dialog takes the focus (it is on ${await focused(a)})`);
  // Tab and Shift+Tab go round inside the dialog.
  const stops = new Set();
  for (let i = 0; i < 8; i++) {
    await a.keyboard.press('Tab');
    assert.ok(await inDialog(), `Tab ${i + 1} stays in the dialog (focus on ${await focused(a)})`);
    stops.add(await focused(a));
  }
  for (let i = 0; i < 3; i++) {
    await a.keyboard.press('Shift+Tab');
    assert.ok(await inDialog(), `Shift+Tab ${i + 1} stays in the dialog (focus on ${await focused(a)})`);
  }
  assert.ok(stops.has('report-cancel') && stops.has('report-submit') && stops.has('report-text'), `every control is reached: ${[...stops]}`);
  // Esc closes the dialog only (it is not Next) and gives the focus back to Report.
  await a.keyboard.press('Escape');
  await a.locator('#report-dialog').waitFor({ state: 'hidden' });
  await assertFocus(a, 'report-btn', 'closing the dialog with Esc');
  assert.equal(await a.evaluate(() => window.duet.pairingId), pairing, 'Esc in the dialog did not press Next');
  // Open again; choose "spam" with Space and the arrows; send.
  await a.keyboard.press('Enter');
  await a.locator('#report-dialog').waitFor({ state: 'visible' });
  assert.equal(await a.evaluate(() => document.activeElement.name), 'category', 'the first control is the first category');
  await a.keyboard.press('Space');
  for (let i = 0; i < 4; i++) await a.keyboard.press('ArrowDown');
  assert.equal(await a.evaluate(() => document.querySelector('input[name="category"]:checked').value), 'spam');
  await pressUntil(a, 'Tab', 'report-text', 1);
  await a.keyboard.type('ads for followers');
  await pressUntil(a, 'Tab', 'report-submit', 3);
  const [resp] = await Promise.all([
    a.waitForResponse((r) => r.url().endsWith('/api/reports') && r.request().method() === 'POST'),
    a.keyboard.press('Enter'),
  ]);
  assert.equal(resp.status(), 201);
  await a.locator('#report-dialog').waitFor({ state: 'hidden' });
  await waitState(a, 'queued');
  await assertFocus(a, 'chat-input', 'sending the report (the call moved on)');

  // Stop, by Shift+Tab to it and Enter.
  await pressUntil(a, 'Shift+Tab', 'stop-btn', 3);
  await a.keyboard.press('Enter');
  await waitState(a, 'stopped');
  await assertFocus(a, 'start-btn', 'Stop');

  // Announcements: the page's only live regions are the two announcers (and the dialogs' own alerts), and each
  // piece of news was said once, in order.
  const regions = await a.evaluate(() => [...document.querySelectorAll('[aria-live]:not([aria-live="off"]), [role="status"], [role="alert"], [role="log"]')]
    .map((el) => el.id));
  assert.deepEqual(regions, ['report-error', 'captcha-error', 'announcer', 'alerter']);
  assert.deepEqual(await said(a), [
    'Please confirm that you are 18 or older and accept the rules.',
    'Looking for someone…',
    'Connected',
    'Stranger says: hello',
    'Stranger left. Press Next (Esc) to meet someone new.',
    'Looking for someone…',
    'Connected',
    'Thanks — your report was sent. You won’t meet this person again. Looking for someone…',
    'Chat stopped. Press Start to talk to someone new.',
  ]);
  for (const p of [a, b, c]) await p.context().close();
});

test('axe-core finds no WCAG 2.1 A/AA violation on any screen, at desktop and phone sizes, in both colour schemes', async () => {
  const audit = new Audit();
  const opts = { context: AUDIT_CONTEXT };
  // User page: landing, waiting, in a video call, the report dialog.
  const a = await userPage(opts);
  await a.waitForFunction(() => window.duet.camera === 'on', null, { timeout: 15000 });
  await audit.check(a, 'user: landing');
  await start(a);
  await waitState(a, 'queued');
  await audit.check(a, 'user: waiting');
  const b = await userPage(opts);
  await start(b);
  await Promise.all([waitMatchedCount(a, 1), waitMatchedCount(b, 1)]);
  await a.waitForFunction(() => window.duet.marks.firstFrame, null, { timeout: 20000 });
  await chat(b, a, 'you are pathetic');
  await chat(a, b, 'bye');
  await audit.check(a, 'user: in a video call');

  // Moderation: login, then the wall with this call on it.
  const mod = await openAdmin(browser, server.base, opts);
  await audit.check(mod, 'admin: login');
  await login(mod, 'ada@example.org', PASSWORD);
  await mod.waitForFunction(() => window.admin.view === 'wall');
  const pairing = await a.evaluate(() => window.duet.pairingId);
  await mod.waitForFunction((p) => window.admin.wall.pairings.includes(p), pairing, { timeout: 15000 });
  await audit.check(mod, 'admin: wall');

  await a.click('#report-btn');
  await a.locator('#report-dialog').waitFor({ state: 'visible' });
  await a.check('input[name="category"][value="harassment"]');
  await audit.check(a, 'user: report dialog');
  await a.click('#report-submit');
  await a.locator('#report-dialog').waitFor({ state: 'hidden' });

  // Text mode.
  const c = await userPage(opts);
  const d = await userPage(opts);
  await start(c, { mode: 'text' });
  await waitState(c, 'queued');
  await start(d, { mode: 'text' });
  await Promise.all([waitMatchedCount(c, 1), waitMatchedCount(d, 1)]);
  await chat(d, c, 'hi from text mode');
  await chat(c, d, 'hello');
  await audit.check(c, 'user: text mode');

  // The report's detail, then a ban from it: B is refused and may appeal.
  await view(mod, '#/reports');
  await mod.waitForFunction(() => window.admin.report);
  // Opening a report from the list with the keyboard puts the focus on it (the list is redrawn).
  await mod.focus('.report-item');
  await mod.keyboard.press('Enter');
  await mod.waitForFunction(() => document.activeElement && document.activeElement.id === 'report-detail-title', null, { timeout: 10000 })
    .catch(async () => { throw new Error(`the focus is on ${await focused(mod)} after opening a report`); });
  await audit.check(mod, 'admin: report detail');
  await mod.click('#report-ban');
  await mod.locator('#action-dialog').waitFor({ state: 'visible' });
  await mod.check('input[name="action-duration"][value="86400"]');
  await mod.fill('#action-statement', STATEMENT);
  await mod.click('#action-submit');
  await mod.locator('#action-dialog').waitFor({ state: 'hidden' });
  await b.locator('#blocked').waitFor({ state: 'visible', timeout: 10000 });
  await assertFocus(b, 'blocked-title', 'being banned');
  const told = await said(b);
  assert.ok(told.some((t) => t.includes(STATEMENT)), `the ban's reason was announced: ${JSON.stringify(told)}`);
  await b.reload({ waitUntil: 'domcontentloaded' });
  await b.waitForFunction(() => window.duet && window.duet.state === 'landing');
  await start(b);
  await b.locator('#appeal-form').waitFor({ state: 'visible' });
  await audit.check(b, 'user: ban and appeal');
  await b.fill('#appeal-text', 'I am sorry, it will not happen again.');
  await b.click('#appeal-form button[type="submit"]');
  await b.waitForFunction(() => /sent/.test(document.getElementById('appeal-result').textContent));

  for (const [hash, name] of [['#/bans', 'bans'], ['#/appeals', 'appeals'], ['#/audit', 'audit'], ['#/team', 'team']]) {
    await view(mod, hash);
    await audit.check(mod, `admin: ${name}`);
  }
  console.log(audit.summary());
  assert.equal(audit.screens.size, 13);
  assert.ok(audit.rules.size > 40, `axe ran its WCAG rules (${audit.rules.size})`);
  assert.equal(audit.violations.length, 0, `axe-core violations:\n${audit.report()}`);
});
