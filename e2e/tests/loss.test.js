// A lossy network, in network namespaces: once the call is up, user L's
// network drops 10 % of UDP datagrams each way. Losses on both legs are
// repaired through the SFU with RTX (RFC 4588): the SFU NACKs what L's uplink lost and L's Chromium
// retransmits on its RTX stream; L's Chromium NACKs what its downlink lost
// and the SFU's NACK responder answers on the RTX stream it negotiated.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startDuet } from '../lib/server.js';
import { createTopology, canUseNetns } from '../lib/netns.js';
import {
  pairInNamespaces, waitStats, waitRemoteColor, pageLog, consoleProblems,
} from '../lib/browser.js';

const why = canUseNetns();
let topo;
let server;
const browsers = [];

before(async () => {
  if (why) return;
  topo = createTopology(['l', 'c']);
  server = await startDuet({ name: 'loss', netns: topo.server.ns, ip: topo.server.ip, args: ['--widen-after-secs', '1'] });
}, { timeout: 60000 });

/** L loses one UDP datagram in ten, each way (nftables' random number, no netem needed). */
function makeLossy() {
  const lose = 'meta l4proto udp numgen random mod 100 < 10 drop';
  topo.firewall('l', [lose], { input: [lose] });
}

after(async () => {
  await Promise.all(browsers.map((b) => b.close().catch(() => {})));
  if (server) await server.stop();
  if (topo) topo.cleanup();
});

test('on a lossy network both directions are repaired with RTX retransmissions through the SFU, and video keeps decoding', { skip: why ? `network namespaces unavailable: ${why}` : false, timeout: 150000 }, async () => {
  const origin = `http://${server.ready.http}`;
  const [l, c] = await pairInNamespaces(origin, [topo.clients.l.ns, topo.clients.c.ns], browsers);
  await waitRemoteColor(l, 'blue');
  await waitRemoteColor(c, 'red');
  // The loss starts once the call is up: this test is about repairing a
  // call's media, and a lost first keyframe only delays the first frame (a
  // CI run waited 20 s on a black picture).
  makeLossy();

  // Both halves of each repair: a NACK and a retransmission. (Chromium also
  // counts its RTX bandwidth probes as retransmissions, so a retransmission
  // alone does not show that the SFU asked for one.)
  const repaired = await waitStats(l, (s) => s.video && s.outVideo
    && s.video.nackCount > 0 && s.video.retransmittedPacketsReceived > 0
    && s.outVideo.nackCount > 0 && s.outVideo.retransmittedPacketsSent > 0,
  { timeout: 60000, what: "NACKs and retransmissions both ways on L's lossy network" })
    .catch(async (e) => { throw new Error(`${e.message}\nL: ${await pageLog(l)}`); });
  console.log(`L (10 % loss each way): inbound ${JSON.stringify(repaired.video)} outbound ${JSON.stringify(repaired.outVideo)}`);
  assert.ok(repaired.video.nackCount > 0, 'L asked the SFU for what its downlink lost');
  assert.ok(repaired.outVideo.nackCount > 0, 'the SFU asked L for what its uplink lost');
  assert.ok(repaired.outVideo.rtxSsrc, 'L retransmits on its RTX stream');
  // And the call is watchable: frames keep coming on both sides.
  const before = repaired.video.framesDecoded;
  await waitStats(l, (s) => s.video.framesDecoded > before + 30, { what: 'L keeps decoding' });
  const cs = await waitStats(c, (s) => s.video && s.video.framesDecoded > 30, { what: 'C decodes L' });
  console.log(`C (clean network) receiving L: ${JSON.stringify(cs.video)}`);
});

test('the page raised no script errors and no Content-Security-Policy refusals', () => {
  assert.deepEqual(consoleProblems(), []);
});
