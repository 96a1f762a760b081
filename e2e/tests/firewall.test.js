// Firewalled users, in network namespaces: the server in one, each browser
// in its own (so their traffic really crosses the firewall, not `lo`).
//  - user U's network drops all UDP: media must go through TURN over TCP;
//  - user T may reach only the server's HTTP port and its TURN/TLS port:
//    media must go through `turns:`.
// They call each other, so the call proves both at once.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { X509Certificate, createHash } from 'node:crypto';
import { startDuet } from '../lib/server.js';
import { createTopology, canUseNetns } from '../lib/netns.js';
import {
  pairInNamespaces, waitStats, waitRemoteColor, pageLog, screenshot, consoleProblems,
} from '../lib/browser.js';

const why = canUseNetns();
let topo;
let server;
const browsers = [];

/** base64(sha256(SubjectPublicKeyInfo)) — what --ignore-certificate-errors-spki-list takes. */
function spkiHash(certPath) {
  const cert = new X509Certificate(readFileSync(certPath));
  const der = cert.publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(der).digest('base64');
}

before(async () => {
  if (why) return;
  topo = createTopology(['u', 't']);
  server = await startDuet({ name: 'firewall', netns: topo.server.ns, ip: topo.server.ip, args: ['--widen-after-secs', '1'] });
  const port = (a) => Number(a.split(':').pop());
  const http = port(server.ready.http);
  const tls = port(server.ready.turn_tls);
  // U: no UDP at all.
  topo.firewall('u', ['meta l4proto udp drop']);
  // T: to the server, only TCP to the HTTP port (page, WebSockets) and to TURN/TLS.
  topo.firewall('t', [
    `ip daddr ${topo.server.ip} tcp dport { ${http}, ${tls} } accept`,
    `ip daddr ${topo.server.ip} drop`,
  ]);
}, { timeout: 60000 });

after(async () => {
  await Promise.all(browsers.map((b) => b.close().catch(() => {})));
  if (server) await server.stop();
  if (topo) topo.cleanup();
});

test('a browser whose network drops UDP connects through TURN over TCP, and one that reaches only the TLS port connects through turns:', { skip: why ? `network namespaces unavailable: ${why}` : false, timeout: 120000 }, async () => {
  const origin = `http://${server.ready.http}`;
  const certArgs = [`--ignore-certificate-errors-spki-list=${spkiHash(server.ready.tls_cert)}`];
  const [u, t] = await pairInNamespaces(origin, [topo.clients.u.ns, topo.clients.t.ns], browsers, certArgs);

  const su = await waitStats(u, (s) => s.video && s.video.framesDecoded > 0 && s.local, { timeout: 45000, what: 'U (no UDP) decoding video' })
    .catch(async (e) => { throw new Error(`${e.message}\nU: ${await pageLog(u)}`); });
  const st = await waitStats(t, (s) => s.video && s.video.framesDecoded > 0 && s.local, { timeout: 45000, what: 'T (TLS only) decoding video' })
    .catch(async (e) => { throw new Error(`${e.message}\nT: ${await pageLog(t)}`); });
  console.log(`U (UDP dropped): local=${JSON.stringify(su.local)} framesDecoded=${su.video.framesDecoded}`);
  console.log(`T (TLS port only): local=${JSON.stringify(st.local)} framesDecoded=${st.video.framesDecoded}`);
  assert.equal(su.local.candidateType, 'relay');
  assert.equal(su.local.relayProtocol, 'tcp', 'U relays over TCP');
  assert.equal(st.local.candidateType, 'relay');
  assert.equal(st.local.relayProtocol, 'tls', 'T relays over TLS (turns:)');
  await waitRemoteColor(u, 'blue');
  await waitRemoteColor(t, 'red');
  console.log(`screenshot: ${await screenshot(t, 'firewalled-call')}`);
});

test('the page raised no script errors and no Content-Security-Policy refusals', () => {
  assert.deepEqual(consoleProblems(), []);
});
