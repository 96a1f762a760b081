// duet's user page: landing (rules, 18+, interests, language, mode, camera
// preview) and call screen (stranger's video, status, Next/Stop/mute/camera,
// report, text chat). One RTCPeerConnection per visit (media.js), the
// signaling WebSocket (signal.js), REST (api.js).
//
// Test hooks live on `window.duet` (read-only for the page's logic):
//   state, mode, pc, pcCreatedCount, pairingId, pairings, matchedCount,
//   marks {start, session, matched, next, firstFrame}, media {iceRestarts, rejoins, state},
//   lastError, events (last 200), relocations.

import { createSession, sendReport, sendAppeal, getStats, ApiError, utf8Bytes } from './api.js';
import { withChallenge } from './captcha.js';
import { Signal } from './signal.js';
import { MediaLink } from './media.js';
import { announce, trackDeliberateFocus, focusedOnPurpose, typedChar, typeInto, ownsTyping, keepFocusIn } from './a11y.js';

const MAX_INTERESTS = 10;
const MAX_INTEREST_CHARS = 32;
const MAX_CHAT_CHARS = 500;
const MAX_REPORT_BYTES = 1024;
const TYPING_SEND_EVERY_MS = 2000;
const TYPING_SHOW_MS = 3500;
// When the media server drops us, signaling normally moves us to another one
// (`relocate`) within a few seconds, keeping the partner; start over only if not.
const RELOCATE_GRACE_MS = 6000;
const LANGS = ['en', 'es', 'fr', 'de', 'it', 'pt', 'nl', 'pl', 'ru', 'uk', 'tr', 'ar', 'hi', 'id', 'ja', 'ko', 'zh'];

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

// ------------------------------------------------------------------ test hooks
const duet = {
  state: 'landing',
  mode: null,
  pc: null,
  pcCreatedCount: 0,
  pairingId: null,
  pairings: [],
  matchedCount: 0,
  commonInterests: [],
  marks: {},
  media: { iceRestarts: 0, rejoins: 0, state: null, events: [] },
  lastError: null,
  relocations: 0,
  events: [],
  status: '',
  // For the e2e suite: exercise the recovery paths on demand.
  test: {
    restartIce: () => visit && visit.media && visit.media._iceRestart('requested by test'),
    dropMediaSocket: () => visit && visit.media && visit.media.ws && visit.media.ws.close(4000, 'test'),
  },
};
window.duet = duet;

function log(kind, detail) {
  duet.events.push({ t: Math.round(performance.now()), kind, detail });
  if (duet.events.length > 200) duet.events.shift();
}

// ------------------------------------------------------------------ storage
function store(key, value) {
  try { localStorage.setItem(key, value); } catch { /* private mode */ }
}
function load(key) {
  try { return localStorage.getItem(key); } catch { return null; }
}

function deviceId() {
  let id = load('duet.device_id');
  if (!id || !/^[A-Za-z0-9_-]{8,64}$/.test(id)) {
    const b = new Uint8Array(16);
    crypto.getRandomValues(b);
    id = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
    store('duet.device_id', id);
  }
  return id;
}

// ------------------------------------------------------------------ a11y + status
// Whether the stranger's messages are read aloud (the person can turn it off).
let speakMessages = true;

function setStatus(text, { tone = '', speak = false } = {}) {
  const s = $('status');
  s.textContent = text;
  s.dataset.tone = tone;
  duet.status = text;
  if (speak) announce(text, { urgent: tone === 'error' });
}

function setOverlay(text) {
  const o = $('remote-overlay');
  if (text) {
    $('overlay-text').textContent = text;
    o.hidden = false;
  } else {
    o.hidden = true;
  }
}

function show(screen) {
  for (const id of ['landing', 'call', 'blocked']) $(id).hidden = id !== screen;
  document.body.dataset.screen = screen;
}

function setState(s) {
  duet.state = s;
  document.body.dataset.state = s;
  log('state', s);
}

// ------------------------------------------------------------------ landing: mode
function currentMode() {
  return document.querySelector('input[name="mode"]:checked').value;
}

function setMode(mode) {
  const r = document.querySelector(`input[name="mode"][value="${mode}"]`);
  if (r) r.checked = true;
  onModeChange();
}

function onModeChange() {
  const mode = currentMode();
  store('duet.mode', mode);
  $('preview-box').hidden = mode !== 'video';
  if (mode === 'video') startPreview();
  else stopPreview();
}

// ------------------------------------------------------------------ landing: camera preview
let localStream = null;
let previewGen = 0;

function cameraErrorText(e) {
  const name = e && e.name;
  if (!navigator.mediaDevices) {
    return 'Video chat needs a secure (https) connection, which this page does not have. You can still chat by text.';
  }
  if (name === 'NotAllowedError' || name === 'SecurityError' || name === 'PermissionDeniedError') {
    return 'Camera and microphone access was denied. To video chat, allow the camera and microphone for this site in your browser’s settings and reload. You can still chat by text.';
  }
  if (name === 'NotFoundError' || name === 'OverconstrainedError') {
    return 'No camera or microphone was found. Plug one in and reload, or chat by text.';
  }
  if (name === 'NotReadableError' || name === 'AbortError') {
    return 'Your camera or microphone is in use by another app. Close it and reload, or chat by text.';
  }
  return `Your camera could not be started (${name || 'error'}). You can still chat by text.`;
}

function showCameraError(text) {
  const el = $('camera-error');
  el.textContent = text;
  el.hidden = !text;
  $('preview-box').classList.toggle('denied', !!text);
  $('preview-msg').textContent = text ? 'Camera unavailable' : '';
  $('preview-msg').hidden = !text;
  if (text) announce(text);
}

async function getMedia(camId, micId) {
  const video = camId ? { deviceId: { exact: camId } } : { width: { ideal: 640 }, height: { ideal: 480 } };
  const audio = micId ? { deviceId: { exact: micId } } : { echoCancellation: true, noiseSuppression: true };
  return navigator.mediaDevices.getUserMedia({ video, audio });
}

async function startPreview(camId, micId) {
  const gen = ++previewGen;
  showCameraError('');
  $('preview-msg').hidden = false;
  $('preview-msg').textContent = 'Starting your camera…';
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    onCameraFailed(null);
    return;
  }
  try {
    const s = await getMedia(camId, micId);
    if (gen !== previewGen || currentMode() !== 'video') {
      s.getTracks().forEach((t) => t.stop());
      return;
    }
    if (localStream) localStream.getTracks().forEach((t) => t.stop());
    localStream = s;
    $('preview').srcObject = s;
    $('preview-msg').hidden = true;
    duet.camera = 'on';
    await fillDevices();
  } catch (e) {
    if (gen !== previewGen) return;
    onCameraFailed(e);
  }
}

function onCameraFailed(e) {
  duet.camera = 'denied';
  duet.cameraError = e ? e.name : 'unavailable';
  log('camera', duet.cameraError);
  localStream = null;
  showCameraError(cameraErrorText(e));
  // Fall back to text chat, which needs no camera at all.
  const text = document.querySelector('input[name="mode"][value="text"]');
  text.checked = true;
  store('duet.mode', 'video'); // keep the wish for video for the next visit
  $('preview-box').hidden = false; // keep the explanation visible
  $('preview').srcObject = null;
}

function stopPreview() {
  previewGen++;
  if (localStream) localStream.getTracks().forEach((t) => t.stop());
  localStream = null;
  $('preview').srcObject = null;
  if (duet.camera !== 'denied') showCameraError('');
}

async function fillDevices() {
  let devices = [];
  try { devices = await navigator.mediaDevices.enumerateDevices(); } catch { return; }
  const cur = {
    videoinput: localStream && localStream.getVideoTracks()[0]?.getSettings().deviceId,
    audioinput: localStream && localStream.getAudioTracks()[0]?.getSettings().deviceId,
  };
  for (const [kind, sel, label] of [['videoinput', $('camera-select'), 'Camera'], ['audioinput', $('mic-select'), 'Microphone']]) {
    sel.replaceChildren();
    let n = 0;
    for (const d of devices.filter((x) => x.kind === kind)) {
      const o = document.createElement('option');
      o.value = d.deviceId;
      o.textContent = d.label || `${label} ${++n}`;
      if (d.deviceId === cur[kind]) o.selected = true;
      sel.append(o);
    }
    sel.disabled = sel.options.length < 2;
  }
}

// ------------------------------------------------------------------ landing: interests
let interests = [];

function normInterest(s) {
  return s.trim().replace(/\s+/g, ' ').toLowerCase();
}

function renderChips() {
  const ul = $('chips');
  ul.replaceChildren();
  for (const it of interests) {
    const li = document.createElement('li');
    li.className = 'chip';
    const span = document.createElement('span');
    span.textContent = it;
    const x = document.createElement('button');
    x.type = 'button';
    x.className = 'chip-x';
    x.textContent = '×';
    x.setAttribute('aria-label', `Remove interest ${it}`);
    x.addEventListener('click', () => {
      interests = interests.filter((i) => i !== it);
      saveInterests();
      renderChips();
      $('interest-input').focus();
    });
    li.append(span, x);
    ul.append(li);
  }
  $('interest-input').disabled = interests.length >= MAX_INTERESTS;
  $('interest-input').placeholder = interests.length >= MAX_INTERESTS ? 'That’s 10 — remove one to add another' : 'Type an interest and press Enter';
}

function saveInterests() {
  store('duet.interests', JSON.stringify(interests));
}

function addInterest(raw) {
  const it = normInterest(raw);
  if (!it) return false;
  if ([...it].length > MAX_INTEREST_CHARS) {
    announce(`Interests can be at most ${MAX_INTEREST_CHARS} characters.`);
    return false;
  }
  if (interests.length >= MAX_INTERESTS || interests.includes(it)) return false;
  interests.push(it);
  saveInterests();
  renderChips();
  return true;
}

function initInterests() {
  try {
    const saved = JSON.parse(load('duet.interests') || '[]');
    if (Array.isArray(saved)) {
      interests = saved.filter((s) => typeof s === 'string').map(normInterest).filter((s) => s && [...s].length <= MAX_INTEREST_CHARS).slice(0, MAX_INTERESTS);
    }
  } catch { interests = []; }
  const input = $('interest-input');
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' || e.key === ',') {
      e.preventDefault();
      if (addInterest(input.value)) input.value = '';
    } else if (e.key === 'Backspace' && !input.value && interests.length) {
      interests.pop();
      saveInterests();
      renderChips();
    }
  });
  input.addEventListener('blur', () => { if (addInterest(input.value)) input.value = ''; });
  renderChips();
}

// ------------------------------------------------------------------ landing: language
function initLanguages() {
  const sel = $('lang-select');
  let names = null;
  try { names = new Intl.DisplayNames([navigator.language || 'en'], { type: 'language' }); } catch { names = null; }
  const any = document.createElement('option');
  any.value = '';
  any.textContent = 'Any language';
  sel.append(any);
  for (const code of LANGS) {
    const o = document.createElement('option');
    o.value = code;
    let name = code;
    try { name = (names && names.of(code)) || code; } catch { /* keep the code */ }
    o.textContent = name.charAt(0).toUpperCase() + name.slice(1);
    sel.append(o);
  }
  const saved = load('duet.lang');
  const guess = (navigator.language || 'en').split('-')[0];
  sel.value = saved !== null ? saved : (LANGS.includes(guess) ? guess : '');
  sel.addEventListener('change', () => store('duet.lang', sel.value));
}

// ------------------------------------------------------------------ online count
let statsTimer = null;
async function refreshStats() {
  const s = await getStats();
  const el = $('online');
  if (s && typeof s.online === 'number') {
    el.textContent = `${s.online} online`;
    el.hidden = false;
  } else {
    el.hidden = true;
  }
}

// ------------------------------------------------------------------ the visit
let visit = null;

class Visit {
  constructor(mode, stream) {
    this.mode = mode;
    this.stream = stream;
    this.session = null;
    this.signal = null;
    this.media = null;
    this.paired = false;
    this.lastTypingSent = -Infinity;
    this.typingTimer = null;
    this.ended = false;
    this.remoteStream = new MediaStream();
  }

  async begin() {
    setState('starting');
    duet.mode = this.mode;
    duet.marks = { start: performance.now() };
    duet.pairingId = null;
    duet.pairings = [];
    duet.matchedCount = 0;
    const session = await withChallenge((token) => createSession(deviceId(), token));
    if (this.ended) return;
    duet.marks.session = performance.now();
    this.session = session;
    duet.session = { participant_id: session.participant_id, node_id: session.sfu && session.sfu.node_id, policy: this.policy() };
    log('session', duet.session);
    enterCall(this.mode, this.stream);
    if (session.notice) {
      // One-time message from the service, e.g. an accepted appeal.
      duet.notice = session.notice;
      addSystem(session.notice);
      announce(session.notice);
    }
    this.signal = new Signal(session.token, (m) => this.onSignal(m), (k, d) => this.onSignalConn(k, d));
    this.signal.open();
    this.join();
    if (this.mode === 'video') this.startMedia(session.sfu);
  }

  policy() {
    const forced = params.get('relay');
    if (forced === '1' || forced === 'true') return 'relay';
    return this.session && this.session.ice_transport_policy === 'relay' ? 'relay' : 'all';
  }

  join({ speak = true } = {}) {
    const lang = $('lang-select').value || null;
    this.signal.send({ type: 'join', mode: this.mode, interests: interests.slice(0, MAX_INTERESTS), lang });
    this.toQueued({ speak });
  }

  toQueued({ speak = true } = {}) {
    this.paired = false;
    duet.pairingId = null;
    // Pressing Next again while already looking is not news.
    const already = duet.state === 'queued';
    setState('queued');
    setStatus('Looking for someone…', { speak: speak && !already });
    setOverlay('Looking for someone…');
    setChatEnabled(false);
    $('report-btn').disabled = true;
    hideTyping();
  }

  startMedia(placement) {
    const remote = $('remote-video');
    this.remoteStream = new MediaStream();
    remote.srcObject = this.remoteStream;
    this.media = new MediaLink({
      placement,
      iceServers: (this.session.ice_servers || []).map((s) => ({ urls: s.urls, username: s.username, credential: s.credential })),
      policy: this.policy(),
      stream: this.stream,
      onPc: (pc) => {
        duet.pc = pc;
        duet.pcCreatedCount++;
        // Fresh connection, fresh remote tracks.
        this.remoteStream = new MediaStream();
        remote.srcObject = this.remoteStream;
      },
      onTrack: (track) => {
        this.remoteStream.addTrack(track);
        remote.srcObject = this.remoteStream;
        remote.play().catch(() => { /* autoplay: starts on the next gesture */ });
      },
      onEvent: (kind, detail) => this.onMediaEvent(kind, detail),
    });
    this.media.start();
  }

  /**
   * The SFU dropped us (its WebSocket closed, or signaling said our media
   * left): start over with a new session — new placement, new peer
   * connection, new signaling socket — and queue again. Says so on screen.
   */
  async recoverVisit(why, { challenge = false } = {}) {
    if (this.ended || this.recovering) return;
    this.recovering = true;
    clearTimeout(this.lostTimer);
    this.lostTimer = null;
    this.paired = false;
    duet.pairingId = null;
    log('recover', why);
    setState('reconnecting');
    if (challenge) {
      setStatus('Please solve the quick check to continue.', { tone: 'warn', speak: true });
    } else {
      setStatus('Connection to the server lost — reconnecting…', { tone: 'warn', speak: true });
    }
    setOverlay('Reconnecting…');
    setChatEnabled(false);
    $('report-btn').disabled = true;
    if (this.media) { this.media.close(); this.media = null; }
    for (let attempt = 0; !this.ended; attempt++) {
      if (!challenge) await new Promise((r) => setTimeout(r, Math.min(500 * 2 ** attempt, 8000)));
      if (this.ended) break;
      try {
        // The server asked for a challenge: the new session carries the solved one.
        const session = await withChallenge((token) => createSession(deviceId(), token), undefined, { force: challenge && attempt === 0 });
        if (this.ended) break;
        if (this.signal) this.signal.close();
        this.session = session;
        duet.media.rejoins++;
        this.awaitingRecovery = true;
        this.signal = new Signal(session.token, (m) => this.onSignal(m), (k, d) => this.onSignalConn(k, d));
        this.signal.open();
        this.join();
        if (this.mode === 'video') this.startMedia(session.sfu);
        setStatus('Reconnecting — looking for someone…', { tone: 'warn' });
        break;
      } catch (e) {
        if (e instanceof ApiError && e.code === 'banned') {
          this.end();
          showBlocked(e);
          break;
        }
        if (e && typeof e.code === 'string' && e.code.startsWith('captcha_')) {
          // Cancelled, or the challenge cannot be checked: say so and let the visitor decide.
          setStatus(e.message, { tone: 'error', speak: true });
          duet.lastError = { code: e.code, message: e.message };
          if (e.code === 'captcha_unavailable' && attempt < 8) {
            await new Promise((r) => setTimeout(r, 3000));
            continue;
          }
          break;
        }
        setStatus(`Still reconnecting (${e.message})…`, { tone: 'warn' });
        if (attempt >= 8) {
          setStatus('We could not reconnect. Check your network, then press Stop and Start again.', { tone: 'error', speak: true });
          duet.lastError = { code: 'reconnect_failed', message: e.message };
          break;
        }
      }
    }
    this.recovering = false;
  }

  onMediaEvent(kind, detail) {
    duet.media.state = kind;
    duet.media.events.push({ t: Math.round(performance.now()), kind, detail });
    if (this.media && kind === 'reconnecting') duet.media.iceRestarts++;
    log('media', { kind, detail });
    switch (kind) {
      case 'connected':
        duet.marks.mediaConnected = performance.now();
        if (this.awaitingRecovery) {
          this.awaitingRecovery = false;
          if (!this.paired) setStatus('Reconnected — looking for someone…', { tone: 'ok', speak: true });
        }
        break;
      case 'reconnecting':
        setStatus('Video connection interrupted — reconnecting…', { tone: 'warn', speak: true });
        if (this.paired) setOverlay('Reconnecting…');
        break;
      case 'recovered':
        setStatus(this.paired ? 'Reconnected — you are still with the same stranger' : 'Reconnected — looking for someone…', { tone: 'ok', speak: true });
        if (this.paired) setOverlay(null);
        break;
      case 'failed':
        duet.lastError = { code: 'media_failed', message: detail && detail.why };
        setStatus('We couldn’t connect your video. Check your network; retrying…', { tone: 'error', speak: true });
        setOverlay('Video connection failed');
        break;
      case 'lost':
        this.media = null;
        setStatus('Connection to the media server lost — reconnecting…', { tone: 'warn', speak: true });
        if (this.paired) setOverlay('Reconnecting…');
        clearTimeout(this.lostTimer);
        this.lostTimer = setTimeout(() => {
          this.lostTimer = null;
          this.recoverVisit(detail && detail.why);
        }, RELOCATE_GRACE_MS);
        break;
      case 'error':
        duet.lastError = detail;
        break;
      default:
        break;
    }
  }

  onSignalConn(kind, detail) {
    log('signal', { kind, detail });
    if (kind === 'reconnecting') {
      setStatus('Lost the connection to the server — reconnecting…', { tone: 'warn', speak: true });
    } else if (kind === 'reopened') {
      // The server ended our pairing when the socket dropped: queue again.
      this.join({ speak: false });
      setStatus('Reconnected — looking for someone…', { tone: 'ok', speak: true });
    } else if (kind === 'failed') {
      duet.lastError = { code: 'signal_failed', message: `closed ${detail && detail.code}` };
      this.recoverVisit('signaling closed');
    }
  }

  onSignal(m) {
    log('recv', m.type);
    switch (m.type) {
      case 'queued':
        // We show "Looking for someone…" ourselves when we join or press Next.
        break;
      case 'widened':
        if (!this.paired) {
          setStatus('No one with your interests yet — widening to everyone', { speak: true });
          duet.widened = true;
        }
        break;
      case 'matched': {
        // The same pairing again: the call moved to another media server.
        const again = this.paired && m.pairing_id === duet.pairingId;
        this.paired = true;
        duet.pairingId = m.pairing_id;
        if (!again) {
          duet.pairings.push(m.pairing_id);
          duet.matchedCount++;
        }
        duet.commonInterests = m.common_interests || [];
        duet.marks.matched = performance.now();
        duet.marks.firstFrame = null;
        refreshStats();
        setState('matched');
        const common = (m.common_interests || []).length ? ` — you both like ${m.common_interests.join(', ')}` : '';
        if (again) {
          setStatus('Reconnected — you are still with the same stranger', { tone: 'ok', speak: true });
        } else {
          clearMessages();
          setStatus(`Connected${common}`, { tone: 'ok', speak: true });
          addSystem(`You’re now chatting with a random stranger${common}. Say hi!`);
        }
        setChatEnabled(true);
        $('report-btn').disabled = false;
        // A stranger is here: what the person types now is their greeting.
        if (!again) focusChat();
        if (this.mode === 'video') {
          setOverlay('Connecting video…');
          watchFirstFrame();
        } else {
          setOverlay(null);
        }
        break;
      }
      case 'chat':
        if (typeof m.text === 'string') {
          hideTyping();
          addMessage('them', m.text);
          if (speakMessages) announce(`Stranger says: ${m.text}`);
        }
        break;
      case 'typing':
        showTyping();
        break;
      case 'partner_left': {
        if (!this.paired) break; // e.g. the confirmation of our own report after we moved on
        this.paired = false;
        duet.pairingId = null;
        setState('left');
        hideTyping();
        setChatEnabled(false);
        if (m.reason === 'reported') {
          // Our own report ended the call; submitReport() takes it from here.
          setStatus('Report sent — the call was ended.', { tone: 'ok' });
          if (this.mode === 'video') setOverlay('Call ended');
          break;
        }
        const why = {
          next: 'Stranger left',
          stop: 'Stranger left',
          disconnected: 'Stranger left (disconnected)',
          ended: 'The chat was ended',
        }[m.reason] || 'Stranger left';
        setStatus(`${why}. Press Next (Esc) to meet someone new.`, { speak: true });
        addSystem(`${why}.`);
        if (this.mode === 'video') setOverlay(why);
        break;
      }
      case 'relocate':
        if (m.sfu && this.mode === 'video' && !this.recovering) {
          duet.relocations++;
          clearTimeout(this.lostTimer);
          this.lostTimer = null;
          // The new node's TURN relay, when the message names it.
          if (Array.isArray(m.ice_servers) && m.ice_servers.length) this.session.ice_servers = m.ice_servers;
          setStatus('Moving your call to another server…', { tone: 'warn', speak: true });
          if (this.media) this.media.close();
          this.startMedia(m.sfu);
        }
        break;
      case 'error':
        this.onServerError(m);
        break;
      default:
        break;
    }
  }

  onServerError(m) {
    duet.lastError = { code: m.code, message: m.message };
    log('error', duet.lastError);
    if (m.code === 'banned') {
      this.end();
      showBlocked({ code: 'banned', message: m.message, ban: m.ban });
    } else if (m.code === 'media_disconnected') {
      // Our media left the SFU; the server took us out of the queue/pairing.
      if (this.mode === 'video') this.recoverVisit('media_disconnected');
    } else if (m.code === 'rate_limited') {
      setStatus(`Slow down: ${m.message || 'too many messages'}. Try again in a moment.`, { tone: 'warn', speak: true });
    } else if (m.code === 'captcha_required') {
      // Asked on join or Next: solve the challenge, then continue with a new session that carries it.
      this.recoverVisit('captcha_required', { challenge: true });
    } else {
      setStatus(m.message || `Error: ${m.code}`, { tone: 'error', speak: true });
    }
  }

  next({ speak = true } = {}) {
    if (!this.signal || this.ended) return;
    duet.marks.next = performance.now();
    duet.marks.firstFrame = null;
    this.signal.send({ type: 'next' });
    clearMessages();
    this.toQueued({ speak });
    focusChat();
  }

  sendChat(text) {
    if (!this.paired || !text) return false;
    this.signal.send({ type: 'chat', text });
    addMessage('me', text);
    this.lastTypingSent = -Infinity;
    return true;
  }

  typing() {
    const now = performance.now();
    if (!this.paired || now - this.lastTypingSent < TYPING_SEND_EVERY_MS) return;
    this.lastTypingSent = now;
    this.signal.send({ type: 'typing' });
  }

  end() {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.lostTimer);
    if (this.signal) this.signal.close();
    if (this.media) this.media.close();
    this.signal = null;
    this.media = null;
    duet.pc = null;
  }
}

// ------------------------------------------------------------------ call screen
function enterCall(mode, stream) {
  show('call');
  document.body.dataset.mode = mode;
  $('local-video').srcObject = stream || null;
  if (stream) for (const t of stream.getTracks()) t.enabled = true;
  $('mute-btn').setAttribute('aria-pressed', 'false');
  $('cam-btn').setAttribute('aria-pressed', 'false');
  $('mute-btn').textContent = 'Mute';
  $('cam-btn').textContent = 'Video off';
  document.body.classList.remove('cam-off');
  clearMessages();
  // The chat input holds the focus for the whole visit (read-only while
  // looking), so typing and Enter always mean a message, never Next.
  setChatEnabled(false);
  focusChat();
}

function watchFirstFrame() {
  const v = $('remote-video');
  const matchedAt = duet.marks.matched;
  const done = () => {
    if (duet.marks.matched !== matchedAt || duet.state !== 'matched') return;
    if (!duet.marks.firstFrame) {
      duet.marks.firstFrame = performance.now();
      log('first-frame', Math.round(duet.marks.firstFrame - matchedAt));
      setOverlay(null);
    }
  };
  if ('requestVideoFrameCallback' in HTMLVideoElement.prototype) {
    v.requestVideoFrameCallback(() => done());
  } else {
    v.addEventListener('timeupdate', done, { once: true });
  }
}

// Read-only rather than disabled while no one is there: a disabled input
// would drop the focus every time a stranger leaves.
function setChatEnabled(on) {
  const input = $('chat-input');
  input.readOnly = !on;
  input.setAttribute('aria-disabled', String(!on));
  input.placeholder = on ? 'Type a message, Enter to send' : 'Waiting for a stranger…';
  $('send-btn').disabled = !on;
}

// On a touch screen a focused input pops up the on-screen keyboard over the
// stranger's video; there the person taps the input when they want to type.
const touchOnly = window.matchMedia('(hover: none) and (pointer: coarse)').matches;

function focusChat() {
  if (touchOnly || $('report-dialog').open || document.body.dataset.screen !== 'call') return;
  const input = $('chat-input');
  if (document.activeElement !== input) input.focus();
}

function clearMessages() {
  $('messages').replaceChildren();
}

function addMessage(who, text) {
  const li = document.createElement('li');
  li.className = `msg ${who}`;
  const label = document.createElement('span');
  label.className = 'who';
  label.textContent = who === 'me' ? 'You' : 'Stranger';
  const body = document.createElement('span');
  body.className = 'text';
  body.textContent = text;
  li.append(label, body);
  $('messages').append(li);
  li.scrollIntoView({ block: 'end' });
}

function addSystem(text) {
  const li = document.createElement('li');
  li.className = 'msg system';
  li.textContent = text;
  $('messages').append(li);
}

let typingHide = null;
function showTyping() {
  $('typing').hidden = false;
  clearTimeout(typingHide);
  typingHide = setTimeout(hideTyping, TYPING_SHOW_MS);
}
function hideTyping() {
  clearTimeout(typingHide);
  $('typing').hidden = true;
}

// `spoken`: from the keyboard shortcut, where the focus is not on the button
// (a screen reader reads a focused button's new state by itself).
function toggleMute({ spoken = false } = {}) {
  if (!visit || !visit.stream) return;
  const t = visit.stream.getAudioTracks()[0];
  if (!t) return;
  t.enabled = !t.enabled;
  const muted = !t.enabled;
  $('mute-btn').setAttribute('aria-pressed', String(muted));
  $('mute-btn').textContent = muted ? 'Unmute' : 'Mute';
  if (spoken) announce(muted ? 'Microphone muted' : 'Microphone on');
}

function toggleCamera({ spoken = false } = {}) {
  if (!visit || !visit.stream) return;
  const t = visit.stream.getVideoTracks()[0];
  if (!t) return;
  t.enabled = !t.enabled;
  const off = !t.enabled;
  $('cam-btn').setAttribute('aria-pressed', String(off));
  $('cam-btn').textContent = off ? 'Video on' : 'Video off';
  document.body.classList.toggle('cam-off', off);
  if (spoken) announce(off ? 'Camera off' : 'Camera on');
}

function stopVisit() {
  if (visit) visit.end();
  visit = null;
  setState('stopped');
  duet.marks.stop = performance.now();
  show('landing');
  $('remote-video').srcObject = null;
  $('start-btn').disabled = false;
  announce('Chat stopped. Press Start to talk to someone new.');
  $('start-btn').focus();
  if (currentMode() === 'video' && !localStream) startPreview();
}

// ------------------------------------------------------------------ report dialog
// Closed with the same stranger still there, the focus goes back to Report;
// once the call moved on (the report was sent), to the chat input.
const reportDialog = keepFocusIn($('report-dialog'), {
  returnTo: () => (duet.state === 'matched' ? null : $('chat-input')),
});

function openReport() {
  if (!visit || !visit.session) return;
  $('report-form').reset();
  $('report-count').textContent = '0';
  $('report-error').hidden = true;
  $('report-submit').disabled = false;
  reportDialog.open();
}

async function submitReport(e) {
  e.preventDefault();
  const form = $('report-form');
  const cat = form.querySelector('input[name="category"]:checked');
  const text = $('report-text').value.trim();
  const err = $('report-error');
  if (!cat) {
    err.textContent = 'Choose what happened.';
    err.hidden = false;
    return;
  }
  if (utf8Bytes(text) > MAX_REPORT_BYTES) {
    err.textContent = `Details can be at most ${MAX_REPORT_BYTES} bytes.`;
    err.hidden = false;
    return;
  }
  if (!visit || !visit.session) return;
  $('report-submit').disabled = true;
  try {
    const res = await sendReport(visit.session.token, cat.value, text);
    duet.lastReport = { status: res.status, id: res.data && res.data.report_id, category: cat.value };
    log('report', duet.lastReport);
    $('report-dialog').close();
    // The server ended the call; go on to the next stranger (never this one again).
    if (duet.state !== 'queued') visit.next({ speak: false });
    addSystem('Thanks — your report was sent to the moderators.');
    setStatus('Thanks — your report was sent. You won’t meet this person again. Looking for someone…', { tone: 'ok', speak: true });
  } catch (ex) {
    const msg = ex instanceof ApiError
      ? (ex.code === 'rate_limited' ? 'Too many reports — please wait a moment.' : ex.message)
      : String(ex);
    duet.lastReport = { status: ex.status || 0, error: msg };
    err.textContent = `The report could not be sent: ${msg}`;
    err.hidden = false;
    $('report-submit').disabled = false;
  }
}

// ------------------------------------------------------------------ blocked screen
let appealToken = null;

function fmtTime(unix) {
  try {
    return new Date(unix * 1000).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
  } catch {
    return new Date(unix * 1000).toISOString();
  }
}

function showBlocked(err) {
  setState(err.code === 'banned' ? 'banned' : 'blocked');
  duet.lastError = { code: err.code, message: err.message, ban: err.ban || null };
  show('blocked');
  const ban = err.ban;
  const details = $('ban-details');
  const form = $('appeal-form');
  form.hidden = true;
  details.hidden = true;
  appealToken = null;
  if (err.code === 'banned') {
    $('blocked-title').textContent = 'You have been banned from duet';
    $('blocked-msg').textContent = err.message || 'A moderator banned this device or network for breaking the rules.';
    if (ban) {
      details.hidden = false;
      $('ban-reason').textContent = ban.reason || '—';
      $('ban-expiry').textContent = ban.expires_at ? fmtTime(ban.expires_at) : 'Permanent';
      const st = ban.appeal_status;
      for (const el of document.querySelectorAll('.appeal-status-row')) el.hidden = !st;
      $('ban-appeal-status').textContent = st ? ({ pending: 'Pending — a moderator will decide', upheld: 'Upheld — the ban stays', lifted: 'Lifted' }[st] || st) : '';
      if (ban.can_appeal && ban.appeal_token) {
        appealToken = ban.appeal_token;
        form.hidden = false;
        $('appeal-result').textContent = '';
      }
    }
  } else if (err.code === 'rate_limited') {
    $('blocked-title').textContent = 'Too many attempts';
    const wait = err.retryAfter ? ` (about ${err.retryAfter} s)` : '';
    $('blocked-msg').textContent = `Too many new chats in a short time. Please wait a moment${wait} and try again.`;
  } else {
    $('blocked-title').textContent = 'Something went wrong';
    $('blocked-msg').textContent = err.message || 'Please try again.';
  }
  // The focus on the heading reads it; the announcement adds what it does not say.
  const parts = [$('blocked-msg').textContent];
  if (!details.hidden) parts.push(`Reason: ${$('ban-reason').textContent}.`, `Until: ${$('ban-expiry').textContent}.`);
  if (!form.hidden) parts.push('You can appeal below.');
  $('blocked-title').focus();
  announce(parts.join(' '));
}

async function submitAppeal(e) {
  e.preventDefault();
  const text = $('appeal-text').value.trim();
  const out = $('appeal-result');
  if (!text) { out.textContent = 'Write why the ban should be lifted.'; announce(out.textContent, { urgent: true }); return; }
  if (utf8Bytes(text) > 1024) { out.textContent = 'At most 1024 bytes.'; announce(out.textContent, { urgent: true }); return; }
  if (!appealToken) return;
  try {
    await sendAppeal(appealToken, text);
    out.textContent = 'Your appeal was sent. A different moderator will decide; you will see the outcome on your next visit.';
    $('appeal-form').querySelector('button[type="submit"]').disabled = true;
    $('appeal-text').disabled = true;
  } catch (ex) {
    out.textContent = ex.status === 404 || ex.status === 405
      ? 'Appeals are not available yet on this server.'
      : `The appeal could not be sent: ${ex.message}`;
  }
  announce(out.textContent);
}

// ------------------------------------------------------------------ start
async function onStart(e) {
  e.preventDefault();
  const err = $('landing-error');
  err.hidden = true;
  if (!$('accept').checked) {
    err.textContent = 'Please confirm that you are 18 or older and accept the rules.';
    err.hidden = false;
    $('accept').focus();
    announce(err.textContent, { urgent: true });
    return;
  }
  const pending = $('interest-input').value;
  if (pending && addInterest(pending)) $('interest-input').value = '';
  const mode = currentMode();
  if (mode === 'video' && !localStream) {
    err.textContent = duet.camera === 'denied'
      ? 'Video needs your camera. Allow it, or choose “Text only”.'
      : 'Your camera is still starting — try again in a second.';
    err.hidden = false;
    announce(err.textContent, { urgent: true });
    return;
  }
  $('start-btn').disabled = true;
  if (visit) visit.end();
  visit = new Visit(mode, mode === 'video' ? localStream : null);
  try {
    await visit.begin();
  } catch (ex) {
    visit.end();
    visit = null;
    $('start-btn').disabled = false;
    if (ex instanceof ApiError && (ex.code === 'banned' || ex.code === 'rate_limited')) {
      showBlocked(ex);
    } else {
      setState('error');
      duet.lastError = { code: ex.code || 'error', message: ex.message };
      show('landing');
      err.textContent = `Could not start: ${ex.message}`;
      err.hidden = false;
      announce(err.textContent, { urgent: true });
    }
  }
}

function onKey(e) {
  if (document.body.dataset.screen !== 'call' || !visit) return;
  if ($('report-dialog').open) return;
  if (e.key === 'Escape') {
    e.preventDefault();
    visit.next();
  } else if (e.altKey && e.code === 'KeyM') {
    e.preventDefault();
    toggleMute({ spoken: true });
  } else if (e.altKey && e.code === 'KeyV') {
    e.preventDefault();
    toggleCamera({ spoken: true });
  } else {
    keyToChat(e);
  }
}

// On the call screen, typing is talking: a printable key pressed anywhere but
// in a field goes to the chat input, and Enter on a button that was only
// clicked (not reached with Tab) sends the message instead of pressing Next
// or Stop under the person's fingers.
function keyToChat(e) {
  const input = $('chat-input');
  const at = e.target;
  if (at === input || ownsTyping(at)) return;
  const meant = focusedOnPurpose(at);
  const ch = typedChar(e);
  if (e.key === 'Enter' && !meant && !e.ctrlKey && !e.metaKey && !e.altKey) {
    e.preventDefault();
    focusChat();
    if (input.value.trim()) $('chat-form').requestSubmit();
  } else if (ch && !(meant && ch === ' ')) {
    e.preventDefault();
    focusChat();
    if (!input.readOnly) typeInto(input, ch);
  }
}

function init() {
  initLanguages();
  initInterests();
  const savedMode = load('duet.mode');
  if (params.get('mode') === 'text' || params.get('mode') === 'video') setMode(params.get('mode'));
  else setMode(savedMode === 'text' ? 'text' : 'video');
  for (const r of document.querySelectorAll('input[name="mode"]')) r.addEventListener('change', onModeChange);
  $('camera-select').addEventListener('change', () => startPreview($('camera-select').value, $('mic-select').value));
  $('mic-select').addEventListener('change', () => startPreview($('camera-select').value, $('mic-select').value));
  $('start-form').addEventListener('submit', onStart);
  $('next-btn').addEventListener('click', () => visit && visit.next());
  $('stop-btn').addEventListener('click', stopVisit);
  $('mute-btn').addEventListener('click', () => toggleMute());
  $('cam-btn').addEventListener('click', () => toggleCamera());
  $('report-btn').addEventListener('click', openReport);
  $('report-form').addEventListener('submit', submitReport);
  $('report-cancel').addEventListener('click', () => $('report-dialog').close());
  speakMessages = load('duet.speak_messages') !== 'off';
  $('speak-messages').checked = speakMessages;
  $('speak-messages').addEventListener('change', () => {
    speakMessages = $('speak-messages').checked;
    store('duet.speak_messages', speakMessages ? 'on' : 'off');
  });
  $('report-text').addEventListener('input', () => {
    const n = utf8Bytes($('report-text').value);
    $('report-count').textContent = String(n);
    $('report-count').parentElement.classList.toggle('over', n > MAX_REPORT_BYTES);
  });
  $('appeal-text').addEventListener('input', () => { $('appeal-count').textContent = String(utf8Bytes($('appeal-text').value)); });
  $('appeal-form').addEventListener('submit', submitAppeal);
  $('blocked-back').addEventListener('click', () => { show('landing'); setState('landing'); $('start-btn').focus(); });
  $('chat-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const input = $('chat-input');
    const text = input.value.trim().slice(0, MAX_CHAT_CHARS);
    if (visit && visit.sendChat(text)) input.value = '';
  });
  $('chat-input').addEventListener('input', () => visit && visit.typing());
  document.addEventListener('keydown', onKey);
  trackDeliberateFocus();
  window.addEventListener('pagehide', () => { if (visit) visit.end(); });
  show('landing');
  setState('landing');
  refreshStats();
  statsTimer = setInterval(() => { if (!document.hidden) refreshStats(); }, 20000);
}

init();
