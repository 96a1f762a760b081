// Moderation end to end. Moderators are made with the real CLI
// (`duet admin create-moderator --password-stdin`) against the test server's
// SQLite database while `duet up` runs. A moderator logs in, sees both
// sides' snapshots of a call on the wall (images that decode, of the right
// colours), watches live (video frames decoded in the moderator's page)
// while the users' pages show no third participant, ends the call, and bans
// the device its partner then reports. That device is refused at once and
// on its next session, with the written statement of reasons; it appeals;
// a second (senior) moderator upholds; the decision is in the audit log and
// the person sees it on their next visit.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startDuet } from '../lib/server.js';
import {
  launch, openPage, start, waitState, waitMatchedCount, sampleRemoteFrames, waitRemoteColor, screenshot, pageLog,
  consoleProblems, nearestColor,
} from '../lib/browser.js';
import { createModerator, openAdmin, login, view, watchStats, adminProblems } from '../lib/admin.js';

const PASSWORD = 'correct horse battery staple';
const STATEMENT = 'You insulted and harassed the person you were talking to. duet does not allow this.';
let server;
const browsers = {};

before(async () => {
  server = await startDuet({ name: 'moderation', args: ['--widen-after-secs', '1', '--cooldown-secs', '0'] });
  await createModerator(server, 'mia@example.org', 'moderator', PASSWORD);
  await createModerator(server, 'sam@example.org', 'senior', PASSWORD);
  [browsers.red, browsers.blue, browsers.yellow, browsers.mod] = await Promise.all([
    launch({ color: 'red' }), launch({ color: 'blue' }), launch({ color: 'yellow' }), launch({ color: 'green' }),
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

/** What a user's page has of WebRTC: transceivers, receivers, inbound video streams. */
function peerShape(page) {
  return page.evaluate(async () => {
    const pc = window.duet.pc;
    const stats = await pc.getStats();
    let inboundVideo = 0;
    stats.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') inboundVideo++; });
    return {
      transceivers: pc.getTransceivers().length,
      receivers: pc.getReceivers().length,
      inboundVideo,
      remoteTracks: document.getElementById('remote-video').srcObject?.getTracks().length ?? 0,
    };
  });
}

/** Mean colour of the middle of an <img> (decoded, same-origin blob:). */
function imageColor(page, selector) {
  return page.evaluate((sel) => {
    const img = document.querySelector(sel);
    const c = document.createElement('canvas');
    c.width = 32; c.height = 24;
    const ctx = c.getContext('2d', { willReadFrequently: true });
    ctx.drawImage(img, 0, 0, 32, 24);
    const d = ctx.getImageData(12, 10, 16, 12).data;
    let r = 0, g = 0, b = 0;
    for (let i = 0; i < d.length; i += 4) { r += d[i]; g += d[i + 1]; b += d[i + 2]; }
    const n = d.length / 4;
    return [Math.round(r / n), Math.round(g / n), Math.round(b / n)];
  }, selector);
}

/** Sends a chat line from `from` and waits until `to` shows it. */
async function chat(from, to, text) {
  await from.fill('#chat-input', text);
  await from.press('#chat-input', 'Enter');
  await to.waitForFunction((t) => document.getElementById('messages').textContent.includes(t), text);
}

/** Lets a toast go before a screenshot. */
async function noToast(page) {
  await page.locator('#toast').waitFor({ state: 'hidden', timeout: 6000 });
}

let a; let b; let mod; let pairing;

test('a moderator sees both snapshots of a live call, watches it unseen and ends it', async () => {
  a = await user(browsers.red);
  b = await user(browsers.blue);
  await start(a);
  await waitState(a, 'queued');
  await start(b);
  await Promise.all([waitMatchedCount(a, 1), waitMatchedCount(b, 1)]);
  await Promise.all([waitRemoteColor(a, 'blue'), waitRemoteColor(b, 'red')]);
  pairing = await a.evaluate(() => window.duet.pairingId);
  const shapeBefore = [await peerShape(a), await peerShape(b)];
  await chat(b, a, 'you are pathetic, nobody wants to see your ugly face');
  await chat(a, b, 'please stop that');
  await chat(b, a, 'make me, loser');
  // A second call (yellow and green), so the wall is a wall.
  const y = await user(browsers.yellow);
  const g = await user(browsers.mod);
  await start(y);
  await waitState(y, 'queued');
  await start(g);
  await Promise.all([waitMatchedCount(y, 1), waitMatchedCount(g, 1)]);
  const other = await y.evaluate(() => window.duet.pairingId);

  mod = await openAdmin(browsers.mod, server.base);
  await login(mod, 'mia@example.org', PASSWORD);
  await mod.waitForFunction(() => window.admin.view === 'wall');
  // The call is on the wall with both sides' snapshots, fetched through signaling.
  await mod.waitForFunction((ps) => ps.every((p) => window.admin.wall.pairings.includes(p)), [pairing, other], { timeout: 15000 });
  const card = `.call[data-pairing="${pairing}"]`;
  await mod.waitForFunction((sel) => {
    const imgs = [...document.querySelectorAll(`${sel} .shot img`)];
    return imgs.length === 2 && imgs.every((i) => !i.hidden && i.complete && i.naturalWidth > 0);
  }, card, { timeout: 20000 });
  const sizes = await mod.$$eval(`${card} .shot img`, (imgs) => imgs.map((i) => [i.naturalWidth, i.naturalHeight]));
  for (const [w, h] of sizes) assert.ok(w > 0 && h > 0, `a snapshot decodes (${w}x${h})`);
  assert.ok(await mod.$eval(`${card} .shot`, (s) => s.classList.contains('blurred')), 'blurred until clicked');
  const colors = [await imageColor(mod, `${card} .shot:nth-child(1) img`), await imageColor(mod, `${card} .shot:nth-child(2) img`)];
  assert.deepEqual(colors.map(nearestColor).sort(), ['blue', 'red'], `the snapshots show the two cameras (${JSON.stringify(colors)})`);
  // Revealing one is recorded.
  const [view1] = await Promise.all([
    mod.waitForResponse((r) => r.url().endsWith(`/api/admin/pairings/${pairing}/view`)),
    mod.click(`${card} .shot:nth-child(1)`),
  ]);
  assert.equal(view1.status(), 204);
  // Snapshots keep refreshing while the wall is open.
  const loaded = await mod.evaluate(() => window.admin.wall.loaded);
  await mod.waitForFunction((n) => window.admin.wall.loaded >= n + 2, loaded, { timeout: 30000 }).catch(async (e) => {
    throw new Error(`the wall stopped refreshing: ${e.message} ${JSON.stringify(await mod.evaluate(() => ({ wall: window.admin.wall, sub: document.getElementById('wall-sub').textContent, err: window.admin.lastError })))}`);
  });
  await mod.waitForFunction((p) => [...document.querySelectorAll(`.call[data-pairing="${p}"] .shot img`)].every((i) => i.naturalWidth > 0), other);
  console.log(`screenshot: ${await screenshot(mod, 'admin-wall')}`);
  // The second call leaves (fewer encoders for the rest of the test).
  await Promise.all([y.context().close(), g.context().close()]);

  // Watch live: frames from both sides decode in the moderator's page.
  await mod.click(`${card} button:has-text("Watch live")`);
  await mod.locator('#watch-dialog').waitFor({ state: 'visible' });
  const t0 = Date.now();
  let stats = null;
  while (Date.now() - t0 < 20000) {
    stats = await watchStats(mod);
    if (stats && stats.video.length === 2 && stats.video.every((v) => v.framesDecoded > 0)) break;
    await mod.waitForTimeout(200);
  }
  assert.ok(stats && stats.video.length === 2 && stats.video.every((v) => v.framesDecoded > 0),
    `the watcher decodes both sides' video: ${JSON.stringify(stats)} (${await mod.evaluate(() => window.admin.watch.status)})`);
  assert.equal(stats.state, 'connected');
  await mod.waitForFunction(() => window.admin.watch.status === 'live');
  await mod.waitForTimeout(500);
  console.log(`screenshot: ${await screenshot(mod, 'admin-watch')}`);
  // The users see no third participant: same transceivers, receivers and
  // streams as before, and still each other.
  const shapeDuring = [await peerShape(a), await peerShape(b)];
  assert.deepEqual(shapeDuring, shapeBefore, 'the users\' peer connections are unchanged while watched');
  const now = await a.evaluate(() => performance.now());
  await waitRemoteColor(a, 'blue', { after: now });
  await waitRemoteColor(b, 'red', { after: await b.evaluate(() => performance.now()) });
  assert.equal(await a.evaluate(() => window.duet.state), 'matched');
  await mod.click('#watch-stop');
  await mod.locator('#watch-dialog').waitFor({ state: 'hidden' });
  await mod.waitForFunction(() => window.admin.watch.status === 'stopped');

  // End the call: both sides are told.
  await mod.click(`${card} button:has-text("End call")`);
  await mod.locator('#ask-dialog').waitFor({ state: 'visible' });
  const [end] = await Promise.all([
    mod.waitForResponse((r) => r.url().endsWith(`/api/admin/pairings/${pairing}/end`)),
    mod.click('#ask-ok'),
  ]);
  assert.equal(end.status(), 204);
  await Promise.all([waitState(a, 'left'), waitState(b, 'left')]).catch(async (e) => {
    throw new Error(`the users were not separated: ${e.message}\nA: ${await pageLog(a)}\nB: ${await pageLog(b)}`);
  });
  assert.match(await b.textContent('#status'), /ended/i);
  await mod.waitForFunction((p) => !document.querySelector(`.call[data-pairing="${p}"]`), pairing);
});

test('the reported device is banned from the queue, refused with the statement at once and on its next session', async () => {
  // Another report first (a text chat, spam): the queue has two, the more severe on top.
  const c = await openPage(browsers.yellow, server.base);
  const d = await openPage(browsers.yellow, server.base);
  await start(c, { mode: 'text' });
  await waitState(c, 'queued');
  await start(d, { mode: 'text' });
  await Promise.all([waitMatchedCount(c, 1), waitMatchedCount(d, 1)]);
  await chat(d, c, 'cheap followers at best-followers.example, dm me');
  await c.click('#report-btn');
  await c.locator('#report-dialog').waitFor({ state: 'visible' });
  await c.check('input[name="category"][value="spam"]');
  await c.fill('#report-text', 'Advertising');
  await c.click('#report-submit');
  await c.locator('#report-dialog').waitFor({ state: 'hidden' });

  // A reports B (their last pairing, within the report window).
  await a.click('#report-btn');
  await a.locator('#report-dialog').waitFor({ state: 'visible' });
  await a.check('input[name="category"][value="harassment"]');
  await a.fill('#report-text', 'Kept insulting me, then the call was cut.');
  const [resp] = await Promise.all([
    a.waitForResponse((r) => r.url().endsWith('/api/reports') && r.request().method() === 'POST'),
    a.click('#report-submit'),
  ]);
  assert.equal(resp.status(), 201, await resp.text().catch(() => ''));

  await view(mod, '#/reports');
  await mod.waitForFunction(() => window.admin.reports.length === 2 && window.admin.report);
  const report = await mod.evaluate(() => window.admin.report.report);
  assert.equal(report.category, 'harassment', 'the more severe report is first');
  const lines = await mod.evaluate(() => window.admin.report.transcript.map((l) => l.text));
  assert.deepEqual(lines, ['you are pathetic, nobody wants to see your ugly face', 'please stop that', 'make me, loser']);
  const bDevice = await b.evaluate(() => localStorage.getItem('duet.device_id'));
  assert.equal(report.reported_device, bDevice, 'the report names B\'s device');
  // The stored snapshot decodes once revealed (an audited evidence view).
  await mod.click('.snaps .shot');
  await mod.waitForFunction(() => {
    const i = document.querySelector('.snaps .shot img');
    return i && !i.hidden && i.complete && i.naturalWidth > 0;
  }, null, { timeout: 10000 });
  assert.equal(nearestColor(await imageColor(mod, '.snaps .shot img')), 'blue', 'the evidence shows the reported (blue) side');
  await noToast(mod);
  console.log(`screenshot: ${await screenshot(mod, 'admin-queue')}`);

  // Ban: a moderator may not make it permanent; 1 day with the harassment template.
  await mod.click('#report-ban');
  await mod.locator('#action-dialog').waitFor({ state: 'visible' });
  assert.equal(await mod.inputValue('#action-template'), 'harassment');
  assert.ok(await mod.isDisabled('input[name="action-duration"][value="permanent"]'), 'permanent is for seniors');
  await mod.check('input[name="action-duration"][value="86400"]');
  await mod.fill('#action-statement', STATEMENT);
  console.log(`screenshot: ${await screenshot(mod, 'admin-ban-dialog')}`);
  const [act] = await Promise.all([
    mod.waitForResponse((r) => r.url().endsWith('/action') && r.request().method() === 'POST'),
    mod.click('#action-submit'),
  ]);
  assert.equal(act.status(), 200, await act.text().catch(() => ''));
  await mod.locator('#action-dialog').waitFor({ state: 'hidden' });
  await mod.waitForFunction(() => window.admin.reports.length === 1, null, { timeout: 10000 });

  // B's open page is refused at once, with the statement.
  await b.locator('#blocked').waitFor({ state: 'visible', timeout: 10000 }).catch(async (e) => {
    throw new Error(`B was not told: ${e.message}\n${await pageLog(b)}`);
  });
  assert.equal((await b.textContent('#ban-reason')).trim(), STATEMENT);
  // B's next session is refused with the statement, and offers one appeal.
  await b.reload({ waitUntil: 'domcontentloaded' });
  await b.waitForFunction(() => window.duet && window.duet.state === 'landing');
  const [session] = await Promise.all([
    b.waitForResponse((r) => r.url().endsWith('/api/session')),
    start(b),
  ]);
  assert.equal(session.status(), 403);
  const body = await session.json();
  assert.equal(body.code, 'banned');
  assert.equal(body.ban.reason, STATEMENT);
  assert.ok(body.ban.appeal_token, 'the refusal carries an appeal token');
  await b.locator('#blocked').waitFor({ state: 'visible' });
  assert.equal(await b.evaluate(() => window.duet.state), 'banned');
  assert.equal((await b.textContent('#ban-reason')).trim(), STATEMENT);
  assert.ok(await b.isVisible('#appeal-form'), 'the appeal form is offered');
  console.log(`screenshot: ${await screenshot(b, 'banned-refusal')}`);

  // The appeal (≤ 1 KB), once.
  await b.fill('#appeal-text', 'I am sorry, I lost my temper. It will not happen again.');
  const [ap] = await Promise.all([
    b.waitForResponse((r) => r.url().endsWith('/api/appeals')),
    b.click('#appeal-form button[type="submit"]'),
  ]);
  assert.equal(ap.status(), 201, await ap.text().catch(() => ''));
  assert.match(await b.textContent('#appeal-result'), /sent/i);
});

test('a second moderator decides the appeal; the decision is audited and shown to the person', async () => {
  // The banning moderator cannot decide it.
  await view(mod, '#/appeals');
  await mod.waitForFunction(() => window.admin.appeals.length === 1);
  assert.ok(await mod.isDisabled('.appeal button:has-text("Lift ban")'));
  assert.match(await mod.textContent('.appeal .decide'), /senior/i);

  const sam = await openAdmin(browsers.mod, server.base);
  await login(sam, 'sam@example.org', PASSWORD);
  await view(sam, '#/appeals');
  await sam.waitForFunction(() => window.admin.appeals.length === 1);
  await sam.click('.appeal button:has-text("Show the evidence")');
  await sam.locator('.appeal .more a').waitFor();
  await sam.fill('.appeal .decide input', 'The transcript shows repeated insults; the ban is proportionate.');
  console.log(`screenshot: ${await screenshot(sam, 'admin-appeals')}`);
  const [dec] = await Promise.all([
    sam.waitForResponse((r) => r.url().endsWith('/decision')),
    sam.click('.appeal button:has-text("Uphold ban")'),
  ]);
  assert.equal(dec.status(), 200, await dec.text().catch(() => ''));
  assert.equal((await dec.json()).status, 'upheld');
  await view(sam, '#/bans');
  await sam.waitForFunction(() => document.querySelectorAll('#bans-table tbody tr').length === 1);
  assert.match(await sam.textContent('#bans-table tbody tr'), /upheld/i);
  await noToast(sam);
  console.log(`screenshot: ${await screenshot(sam, 'admin-blocklist')}`);

  // In the audit log, filtered by action.
  await view(sam, '#/audit');
  await sam.selectOption('#audit-action', 'appeal_decide');
  await sam.waitForFunction(() => window.admin.audit.length === 1 && window.admin.audit[0] === 'appeal_decide');
  const row = await sam.textContent('#audit-table tbody tr');
  assert.match(row, /sam@example\.org/);
  assert.match(row, /upheld/i);
  // Every step before it is there too, by who did it.
  await sam.selectOption('#audit-action', '');
  await sam.waitForFunction(() => window.admin.audit.length > 5);
  const actions = await sam.evaluate(() => window.admin.audit);
  for (const a of ['login', 'view_wall', 'view_snapshot', 'watch_start', 'watch_stop', 'end_call', 'view_report', 'view_report_snapshot', 'report_ban', 'view_appeal', 'appeal_decide']) {
    assert.ok(actions.includes(a), `${a} is in the audit log (${actions.join(', ')})`);
  }
  await noToast(sam);
  console.log(`screenshot: ${await screenshot(sam, 'admin-audit')}`);
  await view(sam, '#/analytics');
  await sam.waitForFunction(() => window.admin.analytics && window.admin.analytics.pairings_total >= 3);
  const stats = await sam.evaluate(() => window.admin.analytics);
  assert.equal(stats.reports_total, 2);
  assert.ok(stats.reports_per_1000_pairings > 0);
  console.log(`screenshot: ${await screenshot(sam, 'admin-analytics')}`);

  // B's next visit shows the outcome.
  await b.reload({ waitUntil: 'domcontentloaded' });
  await b.waitForFunction(() => window.duet && window.duet.state === 'landing');
  await start(b);
  await b.locator('#blocked').waitFor({ state: 'visible' });
  assert.match(await b.textContent('#ban-appeal-status'), /upheld/i);
  assert.ok(await b.isHidden('#appeal-form'), 'no second appeal');
});

test('the pages raised no script errors and no Content-Security-Policy refusals', () => {
  assert.deepEqual(consoleProblems(), []);
  assert.deepEqual(adminProblems(), []);
});
