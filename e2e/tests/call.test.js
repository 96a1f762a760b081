// Video calls through the real server: pairing, media both ways through our
// TURN relay, and Next switching partners inside the SFU without a new
// peer connection. Prints the two timings (Start → first frame, Next → first
// frame of the new partner).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startDuet } from '../lib/server.js';
import {
  launch, openPage, start, waitState, waitMatchedCount, rtcStats, waitStats, sampleRemoteFrames,
  waitRemoteColor, screenshot, pageLog, median,
  consoleProblems,
} from '../lib/browser.js';

let server;
const browsers = {};
const startTimes = [];

before(async () => {
  server = await startDuet({ name: 'call', args: ['--widen-after-secs', '1'] });
  [browsers.red, browsers.blue, browsers.yellow] = await Promise.all([
    launch({ color: 'red' }), launch({ color: 'blue' }), launch({ color: 'yellow' }),
  ]);
});

after(async () => {
  await Promise.all(Object.values(browsers).map((b) => b && b.close().catch(() => {})));
  if (server) await server.stop();
});

async function waitMediaConnected(page) {
  await page.waitForFunction(() => window.duet.marks.mediaConnected, null, { timeout: 20000 }).catch(async (e) => {
    throw new Error(`media never connected: ${e.message}\n${await pageLog(page)}`);
  });
}

/** A user in `browser` who started and waits in the queue with media connected. */
async function waitingUser(browser, query = '') {
  const page = await openPage(browser, server.base + query);
  await sampleRemoteFrames(page);
  await start(page);
  await waitState(page, 'queued');
  await waitMediaConnected(page);
  return page;
}

test('two users are paired and each decodes the other\'s video and receives audio through our TURN relay', async () => {
  const b = await waitingUser(browsers.blue, '?relay=1');
  const a = await openPage(browsers.red, server.base + '?relay=1');
  await sampleRemoteFrames(a);
  await fillLandingForScreenshot(a);
  await start(a);
  await Promise.all([waitMatchedCount(a, 1), waitMatchedCount(b, 1)]);
  const [pa, pb] = await Promise.all([a.evaluate(() => window.duet.pairingId), b.evaluate(() => window.duet.pairingId)]);
  assert.ok(pa, 'A has a pairing id');
  assert.equal(pa, pb, 'both users are in the same pairing');

  for (const [name, page] of [['A', a], ['B', b]]) {
    const s = await waitStats(page, (x) => x.video && x.video.framesDecoded > 0 && x.audio && x.audio.packetsReceived > 0 && x.local,
      { what: `${name} decoding video and receiving audio` });
    assert.ok(s.video.framesDecoded > 0, `${name} decoded frames`);
    assert.ok(s.audio.packetsReceived > 0, `${name} received audio packets`);
    assert.equal(s.local.candidateType, 'relay', `${name}'s selected pair uses a relay candidate (${JSON.stringify(s.local)})`);
    console.log(`${name}: framesDecoded=${s.video.framesDecoded} audioPackets=${s.audio.packetsReceived} local=${JSON.stringify(s.local)} remote=${JSON.stringify(s.remote)}`);
  }
  // Each sees the other's camera, not its own: A's is red, B's blue.
  const hitA = await waitRemoteColor(a, 'blue');
  await waitRemoteColor(b, 'red');
  // What the SFU negotiated with a real browser: RTX both ways, and the
  // header extensions it carries across legs.
  const negotiated = await a.evaluate(() => window.duet.pc.remoteDescription.sdp);
  assert.match(negotiated, /a=rtpmap:\d+ rtx\/90000/, 'RTX accepted');
  assert.match(negotiated, /a=ssrc-group:FID \d+ \d+/, "the SFU's video track names its RTX stream");
  for (const uri of ['urn:3gpp:video-orientation', 'abs-send-time', 'ssrc-audio-level']) {
    assert.ok(negotiated.includes(uri), `${uri} negotiated`);
  }
  const sent = await rtcStats(a);
  assert.ok(sent.outVideo && sent.outVideo.rtxSsrc, `A retransmits to the SFU on an RTX stream (${JSON.stringify(sent.outVideo)})`);
  // Chromium lists AES-CM-SHA1 first; the SFU picks by its own preference.
  assert.match(String(sent.srtpCipher), /^(SRTP_)?AEAD_AES_(128|256)_GCM$/, `SRTP is an AEAD GCM profile (srtpCipher=${sent.srtpCipher}, dtlsCipher=${sent.dtlsCipher})`);
  console.log(`A: srtpCipher=${sent.srtpCipher} dtlsCipher=${sent.dtlsCipher}`);
  const marks = await a.evaluate(() => window.duet.marks);
  startTimes.push(hitA.t - marks.start);
  // The page noticed the first frame itself and took the "Connecting video…" overlay away.
  await a.waitForFunction(() => document.getElementById('remote-overlay').hidden, null, { timeout: 5000 });
  await a.fill('#chat-input', 'hi from A');
  await a.press('#chat-input', 'Enter');
  await b.waitForSelector('#messages li.them:has-text("hi from A")');
  console.log(`screenshot: ${await screenshot(a, 'call-screen')}`);
  await b.setViewportSize({ width: 390, height: 844 });
  await b.waitForTimeout(300);
  console.log(`screenshot: ${await screenshot(b, 'call-screen-phone')}`);

  // More Start → first-frame runs: B waits again, a fresh user (new device) starts.
  let cur = a;
  for (let run = 0; run < 2; run++) {
    await cur.click('#stop-btn');
    await waitState(b, 'left');
    await b.click('#next-btn');
    await waitState(b, 'queued');
    await cur.context().close();
    cur = await openPage(browsers.red, server.base + '?relay=1');
    await sampleRemoteFrames(cur);
    await start(cur);
    await waitMatchedCount(cur, 1);
    const hit = await waitRemoteColor(cur, 'blue');
    const m = await cur.evaluate(() => window.duet.marks);
    startTimes.push(hit.t - m.start);
  }
  await cur.context().close();
  const ms = startTimes.map((x) => Math.round(x));
  console.log(`TIMING start_to_first_frame_ms median=${median(ms)} runs=[${ms.join(', ')}] (relay via TURN/UDP on loopback)`);
  await b.context().close();
});

async function fillLandingForScreenshot(page) {
  for (const it of ['music', 'travel']) {
    await page.fill('#interest-input', it);
    await page.press('#interest-input', 'Enter');
  }
  await page.waitForFunction(() => window.duet.camera === 'on');
  await page.waitForTimeout(300);
  console.log(`screenshot: ${await screenshot(page, 'landing', { fullPage: true })}`);
  // Remove them again: interests would delay matching until the widen period.
  await page.evaluate(() => localStorage.removeItem('duet.interests'));
  for (let i = 0; i < 2; i++) await page.click('.chip-x');
}

test('Next switches A to a waiting third user inside the SFU with no new peer connection, and A decodes the new user\'s video', async () => {
  const a = await waitingUser(browsers.red);
  const b = await openPage(browsers.blue, server.base);
  await sampleRemoteFrames(b);
  await start(b);
  await Promise.all([waitMatchedCount(a, 1), waitMatchedCount(b, 1)]);
  await waitRemoteColor(a, 'blue');
  await a.evaluate(() => { window.__pc0 = window.duet.pc; });
  assert.equal(await a.evaluate(() => window.duet.pcCreatedCount), 1);

  const nextTimes = [];
  let previous = b;
  const partners = [['yellow', browsers.yellow], ['blue', browsers.blue], ['yellow', browsers.yellow]];
  for (const [color, browser] of partners) {
    const c = await waitingUser(browser);
    const before = await rtcStats(a);
    const k = await a.evaluate(() => window.duet.matchedCount);
    await a.keyboard.press('Escape'); // Esc = Next
    await waitMatchedCount(a, k + 1).catch(async (e) => { throw new Error(`A was not paired again after Next: ${e.message}\nA: ${await pageLog(a)}\nC: ${await pageLog(c)}`); });
    const [pa, pc] = [await a.evaluate(() => window.duet.pairingId), await c.evaluate(() => window.duet.pairingId)];
    assert.equal(pa, pc, 'A is paired with the user who was waiting');
    const nextAt = await a.evaluate(() => window.duet.marks.next);
    const hit = await waitRemoteColor(a, color, { after: nextAt });
    nextTimes.push(hit.t - nextAt);
    await waitRemoteColor(c, 'red');
    const afterStats = await waitStats(a, (s) => s.video.framesDecoded > before.video.framesDecoded + 5, { what: 'A decoding more frames after Next' });
    assert.ok(afterStats.video.framesDecoded > before.video.framesDecoded, 'framesDecoded increased after the switch');
    assert.equal(await a.evaluate(() => window.duet.pcCreatedCount), 1, 'no new RTCPeerConnection in A\'s page');
    assert.ok(await a.evaluate(() => window.duet.pc === window.__pc0), 'A still uses its first RTCPeerConnection');
    assert.equal(afterStats.connectionState, 'connected');
    await waitState(previous, 'left');
    await previous.context().close();
    previous = c;
  }
  const ms = nextTimes.map((x) => Math.round(x));
  console.log(`TIMING next_to_first_frame_ms median=${median(ms)} runs=[${ms.join(', ')}] (Next pressed → first frame of the new partner presented)`);
  if (startTimes.length) {
    const st = startTimes.map((x) => Math.round(x));
    console.log(`TIMING start_to_first_frame_ms median=${median(st)} runs=[${st.join(', ')}]`);
  }
  await previous.context().close();
  await a.context().close();
});

test('the page recovers by itself: an ICE restart keeps the same call, and a lost media server connection rejoins with a new session', async () => {
  const a = await waitingUser(browsers.red);
  const b = await openPage(browsers.blue, server.base);
  await sampleRemoteFrames(b);
  await start(b);
  await Promise.all([waitMatchedCount(a, 1), waitMatchedCount(b, 1)]);
  await waitRemoteColor(a, 'blue');

  // ICE restart over the SFU WebSocket: same peer connection, media goes on.
  const s0 = await rtcStats(a);
  await a.evaluate(() => window.duet.test.restartIce());
  await a.waitForFunction(() => window.duet.media.events.some((e) => e.kind === 'reconnecting' && e.detail && e.detail.how === 'ice-restart'));
  const s1 = await waitStats(a, (s) => s.connectionState === 'connected' && s.video.framesDecoded > s0.video.framesDecoded + 20, { what: 'frames after the ICE restart' });
  assert.equal(await a.evaluate(() => window.duet.pcCreatedCount), 1, 'an ICE restart keeps the peer connection');
  assert.equal(await a.evaluate(() => window.duet.state), 'matched', 'still with the same partner');
  console.log(`ICE restart: framesDecoded ${s0.video.framesDecoded} → ${s1.video.framesDecoded}, still connected`);

  // The media server's WebSocket goes away: the SFU forgets A; the page starts over and says so.
  await a.evaluate(() => window.duet.test.dropMediaSocket());
  await a.waitForFunction(() => /reconnect/i.test(window.duet.status), null, { timeout: 10000 });
  console.log(`status while recovering: "${await a.evaluate(() => window.duet.status)}"`);
  await waitState(b, 'left');
  await b.context().close();
  await a.waitForFunction(() => window.duet.pcCreatedCount === 2 && window.duet.marks.mediaConnected && window.duet.state === 'queued', null, { timeout: 20000 })
    .catch(async (e) => { throw new Error(`A did not rejoin: ${e.message}\n${await pageLog(a)}`); });
  // And it works: a new user meets A and each sees the other.
  const c = await openPage(browsers.yellow, server.base);
  await sampleRemoteFrames(c);
  await start(c);
  await Promise.all([waitMatchedCount(a, 2), waitMatchedCount(c, 1)]);
  await waitRemoteColor(a, 'yellow', { after: await a.evaluate(() => window.duet.marks.matched) });
  await waitRemoteColor(c, 'red');
  await a.context().close();
  await c.context().close();
});

test('the page raised no script errors and no Content-Security-Policy refusals', () => {
  assert.deepEqual(consoleProblems(), []);
});
