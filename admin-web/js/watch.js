// Watch live: signaling admits us as a hidden, receive-only watcher on the
// pair's SFU node and gives a URL and a watcher token; we open our own
// RTCPeerConnection to that node's client WebSocket (proto sfu_ws: offer /
// answer / candidates), offering two audio and two video m-sections, all
// recvonly: the node sends side A on the first pair and side B on the
// second. We send nothing; the two users see no one.

import * as api from './api.js';
import { t } from '/js/i18n.js';
import { $, toast, errorText } from './ui.js';

const PING_MS = 15000;
let current = null;

export function watching() {
  return current;
}

/** The status line: `code` is one of watch.* (connecting, live, …); the hook keeps the code, not the words. */
function setStatus(code, vars) {
  $('watch-status').textContent = t(`watch.${code}`, vars);
  window.admin.watch.status = code;
}

export async function startWatch(pairing) {
  if (current) await stopWatch();
  const info = await api.post(`/api/admin/pairings/${encodeURIComponent(pairing.pairing_id)}/watch`, {});
  const d = $('watch-dialog');
  $('watch-a-cap').textContent = `A · ${info.sides.a}`;
  $('watch-b-cap').textContent = `B · ${info.sides.b}`;
  const videos = [$('watch-a'), $('watch-b')];
  const streams = [new MediaStream(), new MediaStream()];
  videos.forEach((v, i) => { v.srcObject = streams[i]; v.muted = false; });
  $('watch-mute').setAttribute('aria-pressed', 'false');
  $('watch-mute').textContent = t('watch.mute');

  const pc = new RTCPeerConnection({
    iceServers: info.ice_servers,
    iceTransportPolicy: info.ice_transport_policy,
    bundlePolicy: 'max-bundle',
    rtcpMuxPolicy: 'require',
  });
  for (const kind of ['audio', 'video', 'audio', 'video']) pc.addTransceiver(kind, { direction: 'recvonly' });
  pc.ontrack = (e) => {
    const i = pc.getTransceivers().indexOf(e.transceiver);
    const slot = i < 2 ? 0 : 1;
    streams[slot].addTrack(e.track);
    videos[slot].srcObject = streams[slot];
    videos[slot].play().catch(() => { /* autoplay policy: the user clicked Watch */ });
  };
  const sep = info.sfu.url.includes('?') ? '&' : '?';
  const ws = new WebSocket(`${info.sfu.url}${sep}token=${encodeURIComponent(info.sfu.token)}`);
  const w = { info, pc, ws, ping: null, closed: false };
  current = w;
  window.admin.watch = { pc, status: 'connecting', watchId: info.watch_id, pairingId: info.pairing_id };
  const send = (m) => { if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(m)); };
  pc.onicecandidate = (e) => {
    if (e.candidate && e.candidate.candidate) {
      send({ type: 'candidate', candidate: { candidate: e.candidate.candidate, sdpMid: e.candidate.sdpMid ?? undefined, sdpMLineIndex: e.candidate.sdpMLineIndex ?? undefined } });
    }
  };
  pc.onconnectionstatechange = () => {
    const s = pc.connectionState;
    setStatus({ connected: 'live', disconnected: 'interrupted', failed: 'failed', closed: 'stopped' }[s] || 'connecting');
  };
  ws.onopen = async () => {
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    send({ type: 'offer', sdp: pc.localDescription.sdp });
    w.ping = setInterval(() => send({ type: 'ping' }), PING_MS);
  };
  ws.onmessage = async (ev) => {
    let m;
    try { m = JSON.parse(ev.data); } catch { return; }
    if (m.type === 'answer') await pc.setRemoteDescription({ type: 'answer', sdp: m.sdp });
    else if (m.type === 'candidate' && m.candidate) {
      try { await pc.addIceCandidate(m.candidate); } catch { /* the SFU is ICE-lite: its checks find us anyway */ }
    } else if (m.type === 'error') {
      setStatus('refused', { detail: m.message || m.code });
    }
  };
  ws.onclose = () => {
    if (!w.closed) setStatus('ended');
  };
  $('watch-stop').onclick = () => stopWatch();
  $('watch-mute').onclick = () => {
    const muted = !videos[0].muted;
    videos.forEach((v) => { v.muted = muted; });
    $('watch-mute').setAttribute('aria-pressed', String(muted));
    $('watch-mute').textContent = muted ? t('watch.unmute') : t('watch.mute');
  };
  d.oncancel = (e) => { e.preventDefault(); stopWatch(); };
  setStatus('connecting');
  if (!d.open) d.showModal();
  return w;
}

export async function stopWatch() {
  const w = current;
  if (!w) return;
  current = null;
  w.closed = true;
  clearInterval(w.ping);
  try { w.ws.close(1000, 'bye'); } catch { /* closed */ }
  try { w.pc.close(); } catch { /* closed */ }
  for (const id of ['watch-a', 'watch-b']) $(id).srcObject = null;
  const d = $('watch-dialog');
  if (d.open) d.close();
  window.admin.watch = { pc: null, status: 'stopped', watchId: null };
  try {
    await api.del(`/api/admin/watches/${encodeURIComponent(w.info.watch_id)}`);
  } catch (e) {
    if (e.status !== 404) toast(t('watch.stopFailed', { detail: errorText(e) }), true);
  }
}
