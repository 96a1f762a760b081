// Video calls through the real server: pairing, media both ways through our
// TURN relay, and the page's own recovery. Next (partner switches inside the
// SFU, no new peer connection) and the Start/Next timings are in next.test.js.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startDuet } from '../lib/server.js';
import {
  launch, openPage, start, waitState, waitMatchedCount, rtcStats, waitStats, sampleRemoteFrames,
  waitRemoteColor, screenshot, pageLog,
  consoleProblems,
} from '../lib/browser.js';

let server;
const browsers = {};

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
  await waitRemoteColor(a, 'blue');
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
  // The page noticed the first frame itself and took the "Connecting video…" overlay away.
  await a.waitForFunction(() => document.getElementById('remote-overlay').hidden, null, { timeout: 5000 });
  await a.fill('#chat-input', 'hi from A');
  await a.press('#chat-input', 'Enter');
  await b.waitForSelector('#messages li.them:has-text("hi from A")');
  console.log(`screenshot: ${await screenshot(a, 'call-screen')}`);
  await b.setViewportSize({ width: 390, height: 844 });
  await b.waitForTimeout(300);
  console.log(`screenshot: ${await screenshot(b, 'call-screen-phone')}`);

  await a.context().close();
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
