// Next and Start as a person sees them. Three users with solid-colour
// cameras (red A, blue, yellow): A presses Next (Esc) again and again while
// the other two take turns waiting, through our TURN relay (relay-only ICE)
// and then directly. Each Next must show the new partner's colour and, once
// it did, never the previous partner's again. Start: the second visitor's
// click until both see each other.
//
// Timed the way a person sees it: from the key press (the event's own time)
// to the first presented frame whose pixels are the new partner's colour
// (requestVideoFrameCallback + canvas sampling). The page's marks and the
// server's timing events (target duet::timing) share the machine's clock, so
// the suite prints where the time goes as p50/p95 tables (TIMING lines; no
// timing assertions — docs/benchmarks.md has the figures).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { loadavg } from 'node:os';
import { startDuet } from '../lib/server.js';
import {
  launch, openPage, start, waitState, waitMatchedCount, sampleRemoteFrames, waitRemoteColor, nearestColor,
  pageLog, consoleProblems,
} from '../lib/browser.js';
import { timeOrigin, firstEvent, stageTable, summary } from '../lib/timing.js';

const NEXTS = Number(process.env.DUET_E2E_NEXTS || 20);
const STARTS = Number(process.env.DUET_E2E_STARTS || 5);

let server;
const browsers = {};

before(async () => {
  // Cooldown 0: the same three people meet again and again.
  server = await startDuet({
    name: 'next',
    args: ['--cooldown-secs', '0', '--widen-after-secs', '1'],
    log: 'info,duet::timing=debug',
  });
  [browsers.red, browsers.blue, browsers.yellow] = await Promise.all([
    launch({ color: 'red' }), launch({ color: 'blue' }), launch({ color: 'yellow' }),
  ]);
});

after(async () => {
  await Promise.all(Object.values(browsers).map((b) => b && b.close().catch(() => {})));
  if (server) await server.stop();
});

const load = () => loadavg().map((x) => x.toFixed(2)).join(' ');

async function waitMediaConnected(page) {
  await page.waitForFunction(() => window.duet.marks.mediaConnected, null, { timeout: 20000 }).catch(async (e) => {
    throw new Error(`media never connected: ${e.message}\n${await pageLog(page)}`);
  });
}

/** A user who started and waits in the queue with media connected. */
async function waitingUser(browser, query) {
  const page = await openPage(browser, server.base + query);
  await sampleRemoteFrames(page);
  await start(page);
  await waitState(page, 'queued');
  await waitMediaConnected(page);
  return page;
}

const pid = (page) => page.evaluate(() => window.duet.session.participant_id);
const marksOf = (page) => page.evaluate(() => ({ ...window.duet.marks }));

/** Server events a run's breakdown needs, as Unix ms (or undefined). */
function serverSide(events, from, { me, other, pairing, oldPairing }) {
  const at = (e) => (e ? e.at : undefined);
  const link = firstEvent(events, from, (e) => e.message === 'link applied'
    && ((e.a === me && e.b === other) || (e.a === other && e.b === me)));
  const linkAt = link ? link.at : from;
  const done = (sink) => firstEvent(events, linkAt, (e) => e.message === 'switch: first keyframe forwarded' && e.sink === sink);
  const mine = done(me);
  const theirs = done(other);
  return {
    nextReceived: at(firstEvent(events, from, (e) => e.message === 'next received' && e.participant === me)),
    queued: at(firstEvent(events, from, (e) => e.message === 'queued' && e.participant === me)),
    unlinked: oldPairing ? at(firstEvent(events, from, (e) => e.message === 'unlinked' && e.pairing === oldPairing)) : undefined,
    matched: at(firstEvent(events, from, (e) => e.message === 'matched' && e.pairing === pairing)),
    linkApplied: at(link),
    pliToOther: at(firstEvent(events, linkAt, (e) => e.message === 'keyframe requested' && e.source === other)),
    linked: at(firstEvent(events, from, (e) => e.message === 'linked' && e.pairing === pairing)),
    matchedSent: at(firstEvent(events, from, (e) => e.message === 'matched sent' && e.pairing === pairing)),
    firstPacketForMe: mine ? mine.at - (mine.keyframe_ms - mine.first_packet_ms) : undefined,
    keyframeToMe: at(mine),
    keyframeToOther: at(theirs),
  };
}

/**
 * `n` Nexts by A (red) through the SFU, the other two taking turns waiting;
 * `query` picks the ICE policy (`?relay=1`: relay-only). Returns the runs.
 */
async function nexts(n, query) {
  const a = await waitingUser(browsers.red, query);
  const first = await openPage(browsers.blue, server.base + query);
  await sampleRemoteFrames(first);
  await start(first);
  await Promise.all([waitMatchedCount(a, 1), waitMatchedCount(first, 1)]);
  await waitRemoteColor(a, 'blue');
  await a.evaluate(() => { window.__pc0 = window.duet.pc; });
  let partner = { page: first, color: 'blue', pid: await pid(first) };
  const w = await waitingUser(browsers.yellow, query);
  let waiting = { page: w, color: 'yellow', pid: await pid(w) };
  const me = await pid(a);
  const origin = await timeOrigin(a);
  const runs = [];
  for (let i = 0; i < n; i++) {
    const prev = partner;
    const next = waiting;
    const oldPairing = await a.evaluate(() => window.duet.pairingId);
    const k = await a.evaluate(() => window.duet.matchedCount);
    await a.keyboard.press('Escape'); // Esc = Next
    await waitMatchedCount(a, k + 1).catch(async (e) => {
      throw new Error(`A was not paired again after Next: ${e.message}\nA: ${await pageLog(a)}\nnext: ${await pageLog(next.page)}`);
    });
    const pairing = await a.evaluate(() => window.duet.pairingId);
    assert.equal(pairing, await next.page.evaluate(() => window.duet.pairingId), 'A is paired with the user who was waiting');
    const marks = await marksOf(a);
    const hit = await waitRemoteColor(a, next.color, { after: marks.next });
    // How long a frame takes from its arrival to the screen before the Next (the receiver's own delay).
    const steady = await a.evaluate((t) => {
      const d = window.__frames.filter((f) => f.t < t && f.t > t - 1000 && Number.isFinite(f.recv)).map((f) => f.t - f.recv).sort((x, y) => x - y);
      return d.length ? d[Math.floor(d.length / 2)] : null;
    }, marks.next);
    runs.push({ origin, marks, hit, steady, me, other: next.pid, pairing, oldPairing });
    // The new partner sees A too.
    await waitRemoteColor(next.page, 'red', { after: await next.page.evaluate(() => window.duet.marks.matched) });
    // The previous partner was told, and looks for someone else.
    await waitState(prev.page, 'left');
    await prev.page.click('#next-btn');
    await waitState(prev.page, 'queued');
    // Once the new partner showed, A never shows the previous one again.
    await a.waitForFunction((t) => window.__frames.filter((f) => f.t > t).length >= 6, hit.t, { timeout: 10000 });
    const shown = await a.evaluate((t) => window.__frames.filter((f) => f.t >= t).map((f) => f.rgb), hit.t);
    for (const rgb of shown) {
      assert.notEqual(nearestColor(rgb), prev.color, `Next ${i + 1}: A showed the previous partner (${prev.color}) after the new one (${next.color})`);
      assert.equal(nearestColor(rgb), next.color, `Next ${i + 1}: A shows ${next.color} after the switch, saw ${rgb}`);
    }
    partner = next;
    waiting = prev;
  }
  assert.equal(await a.evaluate(() => window.duet.pcCreatedCount), 1, 'no new RTCPeerConnection in A\'s page');
  assert.ok(await a.evaluate(() => window.duet.pc === window.__pc0), 'A still uses its first RTCPeerConnection');
  for (const p of [a, partner.page, waiting.page]) await p.context().close();
  return runs;
}

function nextTable(runs, events) {
  const rows = runs.map((r) => {
    const key = r.origin + r.marks.next;
    const s = serverSide(events, key - 5, r);
    const page = (t) => (Number.isFinite(t) ? r.origin + t - key : NaN);
    const srv = (t) => (t === undefined ? NaN : t - key);
    return {
      nextSent: page(r.marks.nextSent),
      nextReceived: srv(s.nextReceived),
      unlinked: srv(s.unlinked),
      queued: srv(s.queued),
      matched: srv(s.matched),
      linkApplied: srv(s.linkApplied),
      pli: srv(s.pliToOther),
      linked: srv(s.linked),
      pageQueued: page(r.marks.queued),
      pageMatched: page(r.marks.matched),
      firstPacket: srv(s.firstPacketForMe),
      keyframe: srv(s.keyframeToMe),
      received: page(r.hit.recv),
      shown: page(r.hit.t),
      firstDelay: r.hit.t - r.hit.recv,
      steadyDelay: r.steady ?? NaN,
    };
  });
  const col = (k) => rows.map((x) => x[k]);
  return {
    shown: col('shown'),
    table: stageTable([
      ['page: `next` sent', col('nextSent')],
      ['signaling: next received', col('nextReceived')],
      ['signaling: queued again', col('queued')],
      ['signaling: matched', col('matched')],
      ['SFU: link applied', col('linkApplied')],
      ["SFU: PLI sent to the new partner", col('pli')],
      ['signaling: link answered', col('linked')],
      ['signaling: old pair unlinked', col('unlinked')],
      ['page: `queued` received', col('pageQueued')],
      ['page: `matched` received', col('pageMatched')],
      ["SFU: new partner's first video packet", col('firstPacket')],
      ["SFU: new partner's keyframe forwarded", col('keyframe')],
      ['page: that frame received (rVFC receiveTime)', col('received')],
      ["page: new partner's colour presented", col('shown')],
      ['(that frame: received → presented)', col('firstDelay')],
      ['(before the Next: received → presented, median per frame)', col('steadyDelay')],
    ]),
  };
}

async function settle() {
  // The server's log reaches its file through a pipe.
  await new Promise((r) => setTimeout(r, 300));
}

test('Next shows the new partner\'s colour, never the previous partner\'s after the switch, relay-only and direct', async () => {
  for (const [label, query] of [['relay-only (TURN/UDP on loopback)', '?relay=1'], ['direct (host UDP on loopback)', '']]) {
    const before = load();
    const runs = await nexts(NEXTS, query);
    await settle();
    const { shown, table } = nextTable(runs, server.timingEvents());
    console.log(`TIMING next_to_new_colour_ms ${label}: ${summary(shown)} (load average before ${before}, after ${load()})`);
    console.log(`Next, ${label}: ms after the key press\n${table}`);
  }
});

test('Start: both visitors see each other after the second one\'s click (relay-only)', async () => {
  const before = load();
  const b = await waitingUser(browsers.blue, '?relay=1');
  const bOrigin = await timeOrigin(b);
  const bPid = await pid(b);
  const runs = [];
  for (let i = 0; i < STARTS; i++) {
    const a = await openPage(browsers.red, server.base + '?relay=1');
    await sampleRemoteFrames(a);
    const k = await b.evaluate(() => window.duet.matchedCount);
    await start(a);
    await Promise.all([waitMatchedCount(a, 1), waitMatchedCount(b, k + 1)]);
    const hitA = await waitRemoteColor(a, 'blue', { after: await a.evaluate(() => window.duet.marks.click) });
    const hitB = await waitRemoteColor(b, 'red', { after: await b.evaluate(() => window.duet.marks.matched) });
    // Read once both see each other: the connection's marks come after `matched`.
    const m = await marksOf(a);
    runs.push({
      origin: await timeOrigin(a), marks: m, hitA, hitB, me: await pid(a), other: bPid,
      pairing: await a.evaluate(() => window.duet.pairingId),
    });
    await a.click('#stop-btn');
    await waitState(b, 'left');
    await b.click('#next-btn');
    await waitState(b, 'queued');
    await a.context().close();
  }
  await b.context().close();
  await settle();
  const events = server.timingEvents();
  const rows = runs.map((r) => {
    const click = r.origin + r.marks.click;
    const s = serverSide(events, click - 5, r);
    const page = (t) => (Number.isFinite(t) ? r.origin + t - click : NaN);
    const srv = (t) => (t === undefined ? NaN : t - click);
    const aSees = page(r.hitA.t);
    const bSees = bOrigin + r.hitB.t - click;
    return {
      session: page(r.marks.session), sfuOpen: page(r.marks.sfuOpen), offerSent: page(r.marks.offerSent),
      answered: page(r.marks.answered), queued: srv(s.queued), matched: srv(s.matched), linked: srv(s.linked),
      pageMatched: page(r.marks.matched), ice: page(r.marks.iceConnected), connected: page(r.marks.mediaConnected),
      keyframeToA: srv(s.keyframeToMe), keyframeToB: srv(s.keyframeToOther), aSees, bSees, both: Math.max(aSees, bSees),
    };
  });
  const col = (k) => rows.map((x) => x[k]);
  console.log(`TIMING start_both_see_each_other_ms relay-only: ${summary(col('both'))} (load average before ${before}, after ${load()})`);
  console.log(`Start, relay-only: ms after the second visitor's click\n${stageTable([
    ['page: session created', col('session')],
    ['page: SFU WebSocket open', col('sfuOpen')],
    ['page: offer sent', col('offerSent')],
    ['signaling: queued', col('queued')],
    ['signaling: matched', col('matched')],
    ['signaling: link answered', col('linked')],
    ['page: `matched` received', col('pageMatched')],
    ['page: answer applied', col('answered')],
    ['page: ICE connected', col('ice')],
    ['page: peer connection connected', col('connected')],
    ["SFU: waiting visitor's keyframe forwarded to the new one", col('keyframeToA')],
    ["SFU: new visitor's keyframe forwarded to the waiting one", col('keyframeToB')],
    ['page: new visitor sees the waiting one', col('aSees')],
    ['page: waiting visitor sees the new one', col('bSees')],
    ['both see each other', col('both')],
  ])}`);
});

test('the pages raised no script errors and no Content-Security-Policy refusals', () => {
  assert.deepEqual(consoleProblems(), []);
});
