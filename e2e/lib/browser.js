// Debian's Chromium driven by playwright-core, with fake camera/mic, and
// helpers that read WebRTC state from the page's test hooks (window.duet).
import { chromium } from 'playwright-core';
import { writeFileSync, mkdtempSync, chmodSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { artifactsDir } from './paths.js';
import { watchSockets } from './wscheck.js';

export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

const BASE_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-device-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--autoplay-policy=no-user-gesture-required',
  // Background tabs/contexts must keep decoding and running timers.
  '--disable-background-timer-throttling',
  '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
];

// Distinct solid colours per fake camera, so a test can tell whose video it sees.
export const COLORS = {
  red: [220, 40, 40],
  blue: [40, 70, 230],
  yellow: [235, 215, 40],
  green: [40, 200, 80],
};

let tmp = null;
function tmpDir() {
  if (!tmp) tmp = mkdtempSync(join(tmpdir(), 'duet-e2e-chromium-'));
  return tmp;
}

/** A Y4M clip (I420) of one colour with a small moving white square in the top-left corner. */
export function colorClip(name) {
  const path = join(tmpDir(), `${name}.y4m`);
  if (existsSync(path)) return path;
  const [r, g, b] = COLORS[name];
  const W = 320, H = 240, N = 20;
  const Y = Math.round(16 + (65.738 * r + 129.057 * g + 25.064 * b) / 256);
  const U = Math.round(128 + (-37.945 * r - 74.494 * g + 112.439 * b) / 256);
  const V = Math.round(128 + (112.439 * r - 94.154 * g - 18.285 * b) / 256);
  const header = Buffer.from(`YUV4MPEG2 W${W} H${H} F20:1 Ip A1:1 C420jpeg\n`);
  const frames = [header];
  for (let f = 0; f < N; f++) {
    const y = Buffer.alloc(W * H, Y);
    const x0 = 4 + f * 3, y0 = 4;
    for (let yy = y0; yy < y0 + 16; yy++) for (let xx = x0; xx < x0 + 16; xx++) y[yy * W + xx] = 235;
    frames.push(Buffer.from('FRAME\n'), y, Buffer.alloc((W / 2) * (H / 2), U), Buffer.alloc((W / 2) * (H / 2), V));
  }
  writeFileSync(path, Buffer.concat(frames));
  return path;
}

/** An executable that starts Chromium inside a network namespace. */
function netnsWrapper(netns) {
  const path = join(tmpDir(), `chromium-in-${netns}.sh`);
  writeFileSync(path, `#!/bin/sh\nexec ip netns exec ${netns} ${CHROMIUM} "$@"\n`);
  chmodSync(path, 0o755);
  return path;
}

/**
 * @param {object} [o]
 * @param {string} [o.color]        fake camera colour (COLORS key); default Chromium's own pattern
 * @param {boolean} [o.grantMedia]  auto-accept camera/mic prompts (default true)
 * @param {string} [o.netns]        run the browser inside this network namespace
 * @param {string[]} [o.args]
 */
export async function launch(o = {}) {
  const args = [...BASE_ARGS, ...(o.args || [])];
  if (o.grantMedia !== false) args.push('--use-fake-ui-for-media-stream');
  else args.push('--deny-permission-prompts');
  if (o.color) args.push(`--use-file-for-fake-video-capture=${colorClip(o.color)}`);
  return chromium.launch({
    executablePath: o.netns ? netnsWrapper(o.netns) : CHROMIUM,
    headless: true,
    args,
    timeout: 30000,
  });
}

const problems = [];
/** Page errors and CSP refusals seen on any page so far (the page must have none). */
export function consoleProblems() {
  return problems.slice();
}

/** Opens the page in a fresh context (fresh device id), collecting console errors. */
export async function openPage(browser, url, o = {}) {
  const context = await browser.newContext({ viewport: o.viewport || { width: 1280, height: 800 }, ...(o.context || {}) });
  const page = await context.newPage();
  page.consoleLines = [];
  page.on('console', (m) => {
    const line = `${m.type()}: ${m.text()}`;
    page.consoleLines.push(line);
    if (/Content Security Policy|Refused to (execute|apply|load|connect)/i.test(line)) problems.push(line);
  });
  page.on('pageerror', (e) => {
    page.consoleLines.push(`pageerror: ${e.message}`);
    problems.push(`pageerror: ${e.message}`);
  });
  // Every /ws and /sfu/ws frame must match the server's WebSocket schema.
  watchSockets(page, url);
  await page.goto(url, { waitUntil: 'domcontentloaded' });
  await page.waitForFunction(() => window.duet && window.duet.state === 'landing');
  return page;
}

/** Landing → Start, in the given mode, with optional interests. */
export async function start(page, { mode = 'video', interests = [] } = {}) {
  await page.check(`input[name="mode"][value="${mode}"]`);
  if (mode === 'video') await page.waitForFunction(() => window.duet.camera === 'on', null, { timeout: 15000 });
  for (const it of interests) {
    await page.fill('#interest-input', it);
    await page.press('#interest-input', 'Enter');
  }
  await page.check('#accept');
  await page.click('#start-btn');
}

export function waitState(page, state, timeout = 20000) {
  return page.waitForFunction((s) => window.duet.state === s, state, { timeout });
}

export function waitMatchedCount(page, n, timeout = 20000) {
  return page.waitForFunction((k) => window.duet.state === 'matched' && window.duet.matchedCount >= k, n, { timeout });
}

/** What the page's peer connection says about media and the selected ICE pair. */
export async function rtcStats(page) {
  return page.evaluate(async () => {
    const pc = window.duet.pc;
    if (!pc) return null;
    const r = await pc.getStats();
    const out = { video: null, audio: null, outVideo: null, pair: null, local: null, remote: null, srtpCipher: null, dtlsCipher: null, connectionState: pc.connectionState };
    let selectedPairId = null;
    r.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') out.video = { framesDecoded: s.framesDecoded || 0, packetsReceived: s.packetsReceived || 0, keyFramesDecoded: s.keyFramesDecoded || 0, frameWidth: s.frameWidth, codecId: s.codecId, packetsLost: s.packetsLost || 0, nackCount: s.nackCount || 0, retransmittedPacketsReceived: s.retransmittedPacketsReceived || 0 };
      if (s.type === 'inbound-rtp' && s.kind === 'audio') out.audio = { packetsReceived: s.packetsReceived || 0, totalSamplesReceived: s.totalSamplesReceived || 0 };
      if (s.type === 'outbound-rtp' && s.kind === 'video') out.outVideo = { framesEncoded: s.framesEncoded || 0, packetsSent: s.packetsSent || 0, rtxSsrc: s.rtxSsrc, targetBitrate: s.targetBitrate, nackCount: s.nackCount || 0, retransmittedPacketsSent: s.retransmittedPacketsSent || 0 };
      if (s.type === 'transport' && s.selectedCandidatePairId) selectedPairId = s.selectedCandidatePairId;
      if (s.type === 'transport' && s.srtpCipher) { out.srtpCipher = s.srtpCipher; out.dtlsCipher = s.dtlsCipher; }
    });
    if (!selectedPairId) r.forEach((s) => { if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') selectedPairId = s.id; });
    if (selectedPairId) {
      const p = r.get(selectedPairId);
      out.pair = { state: p.state, bytesReceived: p.bytesReceived, bytesSent: p.bytesSent };
      const l = r.get(p.localCandidateId);
      const rc = r.get(p.remoteCandidateId);
      if (l) out.local = { candidateType: l.candidateType, relayProtocol: l.relayProtocol, protocol: l.protocol, address: l.address, url: l.url };
      if (rc) out.remote = { candidateType: rc.candidateType, protocol: rc.protocol, address: rc.address, port: rc.port };
    }
    return out;
  });
}

/** Polls rtcStats until pred(stats) holds. */
export async function waitStats(page, pred, { timeout = 20000, what = 'stats condition' } = {}) {
  const t0 = Date.now();
  let last = null;
  while (Date.now() - t0 < timeout) {
    last = await rtcStats(page);
    if (last && pred(last)) return last;
    await page.waitForTimeout(100);
  }
  throw new Error(`timed out waiting for ${what}; last stats: ${JSON.stringify(last)}; page events: ${JSON.stringify(await page.evaluate(() => window.duet.events.slice(-15)).catch(() => null))}`);
}

/**
 * Starts sampling the remote video's colour on every presented frame
 * (requestVideoFrameCallback): window.__frames = [{t, recv, rtp, rgb}] (last 400), where `t` is
 * the frame's presentation time and `recv` the time its last packet arrived (page clock,
 * performance.now()).
 */
export async function sampleRemoteFrames(page) {
  await page.evaluate(() => {
    if (window.__sampling) return;
    window.__sampling = true;
    window.__frames = [];
    const v = document.getElementById('remote-video');
    const c = document.createElement('canvas');
    c.width = 32; c.height = 24;
    const ctx = c.getContext('2d', { willReadFrequently: true });
    const tick = (now, meta) => {
      try {
        if (v.videoWidth) {
          ctx.drawImage(v, 0, 0, 32, 24);
          const d = ctx.getImageData(12, 10, 16, 12).data;
          let r = 0, g = 0, b = 0;
          const n = d.length / 4;
          for (let i = 0; i < d.length; i += 4) { r += d[i]; g += d[i + 1]; b += d[i + 2]; }
          window.__frames.push({
            t: (meta && meta.presentationTime) || now,
            recv: meta && meta.receiveTime,
            rtp: meta && meta.rtpTimestamp,
            rgb: [Math.round(r / n), Math.round(g / n), Math.round(b / n)],
          });
          if (window.__frames.length > 400) window.__frames.shift();
        }
      } catch { /* not yet decodable */ }
      v.requestVideoFrameCallback(tick);
    };
    v.requestVideoFrameCallback(tick);
  });
}

export function colorDistance(a, b) {
  return Math.hypot(a[0] - b[0], a[1] - b[1], a[2] - b[2]);
}

/** Name of the COLORS entry nearest to rgb (or null if none is close). */
export function nearestColor(rgb) {
  let best = null, bestD = Infinity;
  for (const [name, c] of Object.entries(COLORS)) {
    const d = colorDistance(rgb, c);
    if (d < bestD) { best = name; bestD = d; }
  }
  return bestD < 90 ? best : null;
}

/** Waits until the remote video shows colour `name`; returns the first such frame's time (page clock) after `after`. */
export async function waitRemoteColor(page, name, { after = 0, timeout = 20000 } = {}) {
  const t0 = Date.now();
  let frames = [];
  while (Date.now() - t0 < timeout) {
    frames = await page.evaluate((a) => (window.__frames || []).filter((f) => f.t > a), after);
    const hit = frames.find((f) => nearestColor(f.rgb) === name);
    if (hit) return hit;
    await page.waitForTimeout(100);
  }
  const seen = [...new Set(frames.slice(-20).map((f) => `${f.rgb}`))];
  throw new Error(`remote video never showed ${name} (${COLORS[name]}) after t=${after}; last colours seen: ${seen.join(' | ') || 'none'}`);
}

export async function screenshot(page, name, opts = {}) {
  const path = join(artifactsDir, `${name}.png`);
  await page.screenshot({ path, ...opts });
  return path;
}

export async function pageLog(page) {
  return page.evaluate(() => JSON.stringify({ state: window.duet.state, status: window.duet.status, lastError: window.duet.lastError, media: window.duet.media, events: window.duet.events.slice(-30) })).catch((e) => String(e));
}

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * Two users in network namespaces, paired: launches one browser per namespace (red and blue cameras), opens
 * the page at `origin` in each, the first starts and waits, the second starts; resolves with both pages once
 * they are matched. Launched browsers are pushed onto `browsers` for the caller to close.
 */
export async function pairInNamespaces(origin, [nsA, nsB], browsers, extraArgs = []) {
  const args = [`--unsafely-treat-insecure-origin-as-secure=${origin}`, ...extraArgs];
  const [ba, bb] = await Promise.all([
    launch({ netns: nsA, color: 'red', args }),
    launch({ netns: nsB, color: 'blue', args }),
  ]);
  browsers.push(ba, bb);
  const a = await openPage(ba, `${origin}/`);
  const b = await openPage(bb, `${origin}/`);
  await sampleRemoteFrames(a);
  await sampleRemoteFrames(b);
  await start(a);
  await waitState(a, 'queued');
  await start(b);
  await Promise.all([waitMatchedCount(a, 1), waitMatchedCount(b, 1)]);
  return [a, b];
}
