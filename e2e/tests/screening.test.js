// Automatic screening end to end, with a model the test builds itself (a
// tiny ONNX graph whose `red` score is the picture's redness; see
// lib/onnx.js). `duet up` screens in-process every 3 s. Two calls run: blue
// with yellow (older), then red with blue. The red side is flagged by its
// first samples after the match, the wall lists that call first with its
// score, an automatic report with the red snapshot is in the queue, the
// audit log has the screener's entries, nobody is banned; the blue and
// yellow sides stay clear. A moderator clears the flag: it is audited and
// the call drops back to its place. With the optional video hold on (a
// second server), the red side's video stops reaching the stranger, whose
// page says why, until a moderator clears it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startDuet } from '../lib/server.js';
import {
  launch, openPage, start, waitState, waitMatchedCount, waitRemoteColor, waitStats, rtcStats, sampleRemoteFrames,
  screenshot, nearestColor, consoleProblems,
} from '../lib/browser.js';
import { createModerator, openAdmin, login, view, adminProblems } from '../lib/admin.js';
import { writeColourModel } from '../lib/onnx.js';

const PASSWORD = 'correct horse battery staple';
const EVERY_SECS = 3;
let server;
let modelDir;
const browsers = {};

/** `duet up` screening every few seconds with the colour model, and a moderator. */
async function screeningServer(name, extra = []) {
  // red frames score ~0.71 (high); yellow ~0.42 and blue below 0 stay clear.
  const { model, config } = writeColourModel(modelDir, { review: 0.55, high: 0.62 });
  const s = await startDuet({
    name,
    args: [
      '--widen-after-secs', '1', '--cooldown-secs', '0',
      '--screen-model', model, '--screen-model-config', config,
      '--screen-every-secs', String(EVERY_SECS), '--screen-first-after-ms', '1000', '--screen-workers', '1',
      ...extra,
    ],
  });
  await createModerator(s, 'ria@example.org', 'moderator', PASSWORD);
  return s;
}

before(async () => {
  modelDir = mkdtempSync(join(tmpdir(), 'duet-e2e-model-'));
  server = await screeningServer('screening');
  [browsers.red, browsers.blue, browsers.yellow] = await Promise.all([
    launch({ color: 'red' }), launch({ color: 'blue' }), launch({ color: 'yellow' }),
  ]);
});

after(async () => {
  await Promise.all(Object.values(browsers).map((b) => b && b.close().catch(() => {})));
  if (server) await server.stop();
  if (modelDir) rmSync(modelDir, { recursive: true, force: true });
});

/** The moderator API of `srv` from the test itself (a token of its own). */
async function modApi(srv = server) {
  const r = await fetch(new URL('api/admin/login', srv.base), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: 'ria@example.org', password: PASSWORD }),
  });
  assert.equal(r.status, 200);
  const { token } = await r.json();
  return async (path, method = 'GET') => {
    const res = await fetch(new URL(path.slice(1), srv.base), { method, headers: { authorization: `Bearer ${token}` } });
    return res.status === 204 ? null : res.json();
  };
}

/** A call between two fresh pages of `x` and `y` on `srv`: resolves to the pages and the pairing id. */
async function call(x, y, [colorX, colorY], srv = server) {
  const p = await openPage(x, srv.base);
  const q = await openPage(y, srv.base);
  await Promise.all([sampleRemoteFrames(p), sampleRemoteFrames(q)]);
  await start(p);
  await waitState(p, 'queued');
  await start(q);
  await Promise.all([waitMatchedCount(p, 1), waitMatchedCount(q, 1)]);
  await Promise.all([waitRemoteColor(p, colorY), waitRemoteColor(q, colorX)]);
  return { p, q, pairing: await p.evaluate(() => window.duet.pairingId) };
}

test('a red camera is flagged at its first samples, tops the wall, is reported with its snapshot and audited, and nobody is banned', async () => {
  const older = await call(browsers.blue, browsers.yellow, ['blue', 'yellow']);
  const flagged = await call(browsers.red, browsers.blue, ['red', 'blue']);
  const redDevice = await flagged.p.evaluate(() => localStorage.getItem('duet.device_id'));
  const api = await modApi();

  // The automatic report appears (a hang guard, not a timing assertion).
  let auto;
  for (let i = 0; i < 60 && !auto; i++) {
    const q = await api('/api/admin/reports?status=open');
    auto = q.reports.find((r) => r.reporter_device === '(screening)');
    if (!auto) await new Promise((r) => setTimeout(r, 500));
  }
  assert.ok(auto, 'an automatic report was filed');
  assert.equal(auto.pairing_id, flagged.pairing);
  assert.equal(auto.reported_device, redDevice, 'it names the red side');
  assert.equal(auto.snapshot_count, 1);
  const detail = await api(`/api/admin/reports/${auto.id}`);
  const strongest = detail.screening[0];
  assert.equal(strongest.model, 'colour-test');
  assert.equal(strongest.category, 'red');
  assert.ok(strongest.score >= 0.62 && strongest.score <= 1, `score ${strongest.score}`);
  // Slot 0 is the first sample after the match, slot 1 one period later.
  assert.ok(Math.min(...detail.screening.map((s) => s.slot)) <= 1, `flagged at slot ${strongest.slot}, within one period`);

  // The wall: the flagged call first, with its score; the older call unflagged after it.
  const wall = await api('/api/admin/wall');
  assert.deepEqual(wall.pairings.map((p) => p.pairing_id).slice(0, 2), [flagged.pairing, older.pairing]);
  assert.equal(wall.pairings[0].screening.level, 'high');
  assert.equal(wall.pairings[0].screening.report_id, auto.id);
  assert.equal(wall.pairings[1].screening, null, 'blue and yellow stay below review');

  const mod = await openAdmin(browsers.yellow, server.base);
  await login(mod, 'ria@example.org', PASSWORD);
  await mod.waitForFunction((p) => window.admin.view === 'wall' && window.admin.wall.pairings[0] === p, flagged.pairing, { timeout: 15000 });
  const first = await mod.getAttribute('#wall-grid .call:first-child', 'data-pairing');
  assert.equal(first, flagged.pairing, 'the flagged call is the first card');
  assert.equal(await mod.getAttribute('#wall-grid .call:first-child', 'data-risk'), 'high');
  assert.match(await mod.textContent('#wall-grid .call:first-child .risk'), /screening: red 0\.\d\d \(high, side A\)/);
  console.log(`screenshot: ${await screenshot(mod, 'screening-wall')}`);

  // The report's stored snapshot is the red camera.
  await view(mod, `#/reports/${auto.id}`);
  await mod.waitForFunction((id) => window.admin.report && window.admin.report.report.id === id, auto.id);
  await mod.click('.snaps .shot');
  await mod.waitForFunction(() => {
    const i = document.querySelector('.snaps .shot img');
    return i && !i.hidden && i.complete && i.naturalWidth > 0;
  }, null, { timeout: 10000 });
  const rgb = await mod.evaluate(() => {
    const img = document.querySelector('.snaps .shot img');
    const c = document.createElement('canvas');
    c.width = 32; c.height = 24;
    const ctx = c.getContext('2d', { willReadFrequently: true });
    ctx.drawImage(img, 0, 0, 32, 24);
    const d = ctx.getImageData(12, 10, 16, 12).data;
    let r = 0, g = 0, b = 0;
    for (let i = 0; i < d.length; i += 4) { r += d[i]; g += d[i + 1]; b += d[i + 2]; }
    const n = d.length / 4;
    return [r / n, g / n, b / n].map(Math.round);
  });
  assert.equal(nearestColor(rgb), 'red', `the evidence is the red camera (${rgb})`);
  console.log(`screenshot: ${await screenshot(mod, 'screening-report')}`);

  // The screener's entries in the audit log; no ban.
  const flags = await api('/api/admin/audit?action=screen_flag');
  assert.ok(flags.entries.length >= 1);
  assert.ok(flags.entries.every((e) => e.actor === 'screener:up' && e.target_id === flagged.pairing), JSON.stringify(flags.entries));
  assert.equal(flags.entries[0].details.model, 'colour-test');
  const reports = await api('/api/admin/audit?action=screen_report');
  assert.deepEqual(reports.entries.map((e) => e.target_id), [auto.id]);
  const bans = await api('/api/admin/bans?state=all');
  assert.equal(bans.total, 0, 'screening never bans');
  // Both calls still run: screening does not end calls either.
  assert.equal(await flagged.p.evaluate(() => window.duet.state), 'matched');

  // A moderator clears the flag: audited, and the call is back in its place.
  await view(mod, '#/wall');
  await mod.waitForFunction((p) => window.admin.wall.pairings[0] === p, flagged.pairing, { timeout: 15000 });
  await mod.click('#wall-grid .call:first-child button:has-text("Clear flag")');
  await mod.click('#ask-ok');
  await mod.waitForFunction((p) => window.admin.wall.pairings[0] === p, older.pairing, { timeout: 15000 });
  const cleared = await api('/api/admin/audit?action=screen_clear');
  assert.equal(cleared.entries[0].actor, 'ria@example.org');
  assert.equal(cleared.entries[0].target_id, flagged.pairing);
  assert.deepEqual(consoleProblems(), []);
  assert.deepEqual(adminProblems(), []);
  await Promise.all([older.p, older.q, flagged.p, flagged.q, mod].map((x) => x.context().close()));
});

test('with the video hold on, the stranger stops receiving the flagged video and is told why, until a moderator clears it', async () => {
  const held = await screeningServer('screening-hold', ['--screen-hold-video', 'on']);
  try {
    const { p: red, q: stranger, pairing } = await call(browsers.red, browsers.blue, ['red', 'blue'], held);
    // The first high sample holds the red side's video (a hang guard, not a timing assertion).
    await stranger.waitForFunction(() => window.duet.partnerVideoHeld === true, null, { timeout: 30000 });
    await red.waitForFunction(() => window.duet.myVideoHeld === true, null, { timeout: 10000 });
    assert.ok(await stranger.isVisible('#remote-overlay'), 'the stranger sees a notice over the video');
    assert.match(await stranger.textContent('#overlay-text'), /moderator/i);
    assert.match(await red.textContent('#status'), /moderator/i);
    console.log(`screenshot: ${await screenshot(stranger, 'screening-hold-stranger')}`);
    // No more frames reach the stranger; the red side still receives blue, and audio flows both ways.
    await stranger.waitForTimeout(700);
    const before = await rtcStats(stranger);
    const redBefore = await rtcStats(red);
    await stranger.waitForTimeout(2000);
    const after = await rtcStats(stranger);
    assert.equal(after.video.framesDecoded, before.video.framesDecoded, 'the held video no longer reaches the stranger');
    assert.ok(after.audio.packetsReceived > before.audio.packetsReceived, 'audio goes on');
    await waitStats(red, (s) => s.video.framesDecoded > redBefore.video.framesDecoded, { what: 'red still receives video' });
    const bans = await (await modApi(held))('/api/admin/bans?state=all');
    assert.equal(bans.total, 0, 'a hold is not a ban');

    // A moderator clears it: the video comes back and both pages say so.
    const api = await modApi(held);
    await api(`/api/admin/pairings/${pairing}/screening/clear`, 'POST');
    await stranger.waitForFunction(() => window.duet.partnerVideoHeld === false, null, { timeout: 10000 });
    await waitStats(stranger, (s) => s.video.framesDecoded > after.video.framesDecoded + 5, { what: 'video back after the clear' });
    await waitRemoteColor(stranger, 'red', { after: await stranger.evaluate(() => performance.now()) });
    assert.ok(!(await stranger.isVisible('#remote-overlay')), 'the notice is gone');
    await red.waitForFunction(() => window.duet.myVideoHeld === false, null, { timeout: 10000 });
  } finally {
    await held.stop();
  }
});
