// duet's user page: landing (rules, 18+, interests, language, mode, camera
// preview) and call screen (stranger's video, status, Next/Stop/mute/camera,
// report, text chat). One RTCPeerConnection per visit (media.js), the
// signaling WebSocket (signal.js), REST (api.js).
//
// Test hooks live on `window.duet` (read-only for the page's logic):
//   state, mode, pc, pcCreatedCount, pairingId, pairings, matchedCount,
//   marks {click, start, session, sfuOpen, offerSent, answered, iceConnected, mediaConnected,
//          next, nextSent, queued, matched, partnerLeft, firstFrame} (performance.now() times;
//          click and next are the input events' own timestamps), media {iceRestarts, rejoins, state},
//   lastError, events (last 200), relocations.

import { createSession, sendReport, sendAppeal, getStats, ApiError, utf8Bytes } from './api.js';
import { withChallenge } from './captcha.js';
import * as i18n from './i18n.js';
import { t } from './i18n.js';
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
// After the signaling socket reopened during a call: how long to wait for the
// server's `matched` (the call goes on) before queueing again.
const RESUME_GRACE_MS = 2000;
const LANGS = ['en', 'es', 'fr', 'de', 'it', 'pt', 'nl', 'pl', 'ru', 'uk', 'tr', 'ar', 'hi', 'id', 'ja', 'ko', 'zh'];

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

// ------------------------------------------------------------------ test hooks
const duet = {
  // 'loading' until init() has the page's language and its handlers: tests wait for 'landing'.
  state: 'loading',
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
  // Automatic screening's optional block (`video_held`): whose video is held now.
  partnerVideoHeld: false,
  myVideoHeld: false,
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

// Status and overlay texts are message keys (with their values), so a
// language switch can say the same thing again in the new language.
let statusMsg = null;
let overlayMsg = null;

function setStatus(key, { vars = {}, tone = '', speak = false } = {}) {
  statusMsg = { key, vars, tone };
  const text = t(key, vars);
  const s = $('status');
  s.textContent = text;
  s.dataset.tone = tone;
  duet.status = text;
  duet.statusKey = key;
  if (speak) announce(text, { urgent: tone === 'error' });
}

function setOverlay(key, vars = {}) {
  overlayMsg = key ? { key, vars } : null;
  const o = $('remote-overlay');
  if (key) {
    $('overlay-text').textContent = t(key, vars);
    o.hidden = false;
  } else {
    o.hidden = true;
  }
}

/** Texts the page set itself (not from data-i18n), said again after a language switch. */
function rerender() {
  if (statusMsg) setStatus(statusMsg.key, { vars: statusMsg.vars, tone: statusMsg.tone });
  if (overlayMsg) setOverlay(overlayMsg.key, overlayMsg.vars);
  renderMuteCam();
  setChatEnabled($('chat-input').getAttribute('aria-disabled') !== 'true');
  renderChips();
  fillChatLanguages();
  refreshStats();
  if (duet.camera === 'denied') showCameraError(cameraErrorText(lastCameraError));
  if (!$('blocked').hidden && lastBlocked) renderBlocked(lastBlocked);
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

let lastCameraError = null;

function cameraErrorText(e) {
  const name = e && e.name;
  if (!navigator.mediaDevices) return t('camera.insecure');
  if (name === 'NotAllowedError' || name === 'SecurityError' || name === 'PermissionDeniedError') return t('camera.denied');
  if (name === 'NotFoundError' || name === 'OverconstrainedError') return t('camera.notFound');
  if (name === 'NotReadableError' || name === 'AbortError') return t('camera.inUse');
  return t('camera.other', { name: name || 'error' });
}

function showCameraError(text) {
  const el = $('camera-error');
  el.textContent = text;
  el.hidden = !text;
  $('preview-box').classList.toggle('denied', !!text);
  $('preview-msg').textContent = text ? t('start.cameraUnavailable') : '';
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
  $('preview-msg').textContent = t('start.cameraStarting');
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
  lastCameraError = e;
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
  for (const [kind, sel, label] of [['videoinput', $('camera-select'), t('start.camera')], ['audioinput', $('mic-select'), t('start.microphone')]]) {
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
    x.setAttribute('aria-label', t('start.removeInterest', { interest: it }));
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
  $('interest-input').placeholder = interests.length >= MAX_INTERESTS ? t('start.interestsFull') : t('start.interestPlaceholder');
}

function saveInterests() {
  store('duet.interests', JSON.stringify(interests));
}

function addInterest(raw) {
  const it = normInterest(raw);
  if (!it) return false;
  if ([...it].length > MAX_INTEREST_CHARS) {
    announce(t('start.interestTooLong', { max: MAX_INTEREST_CHARS }));
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
// The chat language (for matching) — a code sent to the server, named in the page's language.
function fillChatLanguages() {
  const sel = $('lang-select');
  const value = sel.value;
  const any = document.createElement('option');
  any.value = '';
  any.textContent = t('start.anyLanguage');
  const opts = LANGS.map((code) => {
    const o = document.createElement('option');
    o.value = code;
    o.textContent = i18n.languageName(code);
    return o;
  });
  sel.replaceChildren(any, ...opts);
  sel.value = value;
}

function initLanguages() {
  const sel = $('lang-select');
  fillChatLanguages();
  const saved = load('duet.lang');
  const guess = i18n.current().split('-')[0];
  sel.value = saved !== null ? saved : (LANGS.includes(guess) ? guess : '');
  sel.addEventListener('change', () => store('duet.lang', sel.value));
}

// The page's own language: a switch in the top bar; no reload, nothing lost.
function initUiLanguage() {
  i18n.bindLanguageSelect($('ui-lang-select'));
  i18n.onChange((lang) => {
    duet.uiLang = lang;
    rerender();
  });
}

// ------------------------------------------------------------------ online count
let statsTimer = null;
async function refreshStats() {
  const s = await getStats();
  const el = $('online');
  if (s && typeof s.online === 'number') {
    el.textContent = t('online.count', { count: i18n.formatNumber(s.online) });
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

  /** `clickedAt`: the Start press's event time (the visitor's view of when it began). */
  async begin(clickedAt = performance.now()) {
    setState('starting');
    duet.mode = this.mode;
    duet.marks = { click: clickedAt, start: performance.now() };
    duet.pairingId = null;
    duet.pairings = [];
    duet.matchedCount = 0;
    const session = await withChallenge((token) => createSession(deviceId(), token), t);
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
    setStatus('status.looking', { speak: speak && !already });
    setOverlay('status.looking');
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
      // Steps of connecting, for the timing breakdown (the first of each per visit counts).
      onMark: (name) => { if (duet.marks[name] === undefined) duet.marks[name] = performance.now(); },
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
    setStatus(challenge ? 'captcha.cancelled' : 'status.lostServer', { tone: 'warn', speak: true });
    setOverlay('status.reconnecting');
    setChatEnabled(false);
    $('report-btn').disabled = true;
    if (this.media) { this.media.close(); this.media = null; }
    for (let attempt = 0; !this.ended; attempt++) {
      if (!challenge) await new Promise((r) => setTimeout(r, Math.min(500 * 2 ** attempt, 8000)));
      if (this.ended) break;
      try {
        // The server asked for a challenge: the new session carries the solved one.
        const session = await withChallenge((token) => createSession(deviceId(), token), t, { force: challenge && attempt === 0 });
        if (this.ended) break;
        if (this.signal) this.signal.close();
        this.session = session;
        duet.media.rejoins++;
        this.awaitingRecovery = true;
        this.signal = new Signal(session.token, (m) => this.onSignal(m), (k, d) => this.onSignalConn(k, d));
        this.signal.open();
        this.join();
        if (this.mode === 'video') this.startMedia(session.sfu);
        setStatus('status.reconnectingLooking', { tone: 'warn' });
        break;
      } catch (e) {
        if (e instanceof ApiError && e.code === 'banned') {
          this.end();
          showBlocked(e);
          break;
        }
        if (e && typeof e.code === 'string' && e.code.startsWith('captcha_')) {
          // Cancelled, or the challenge cannot be checked: say so and let the visitor decide.
          setStatus(e.code === 'captcha_cancelled' ? 'captcha.cancelled' : 'captcha.unavailable', { tone: 'error', speak: true });
          duet.lastError = { code: e.code, message: e.message };
          if (e.code === 'captcha_unavailable' && attempt < 8) {
            await new Promise((r) => setTimeout(r, 3000));
            continue;
          }
          break;
        }
        setStatus('status.stillReconnecting', { vars: { message: errorText(e) }, tone: 'warn' });
        if (attempt >= 8) {
          setStatus('status.reconnectFailed', { tone: 'error', speak: true });
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
          if (!this.paired) setStatus('status.reconnectedLooking', { tone: 'ok', speak: true });
        }
        break;
      case 'reconnecting':
        setStatus('status.videoInterrupted', { tone: 'warn', speak: true });
        if (this.paired) setOverlay('status.reconnecting');
        break;
      case 'recovered':
        setStatus(this.paired ? 'status.sameStranger' : 'status.reconnectedLooking', { tone: 'ok', speak: true });
        if (this.paired) setOverlay(null);
        break;
      case 'failed':
        duet.lastError = { code: 'media_failed', message: detail && detail.why };
        setStatus('status.videoFailed', { tone: 'error', speak: true });
        setOverlay('status.videoFailedShort');
        break;
      case 'lost':
        this.media = null;
        setStatus('status.mediaLost', { tone: 'warn', speak: true });
        if (this.paired) setOverlay('status.reconnecting');
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
      setStatus('status.lostServerShort', { tone: 'warn', speak: true });
    } else if (kind === 'reopened') {
      if (this.paired) {
        // If our pairing is still on (our signaling server died, the call did not),
        // the server says `matched` again at once with the same pairing; queue again
        // only if it does not.
        clearTimeout(this.resumeTimer);
        this.resumeTimer = setTimeout(() => {
          this.resumeTimer = null;
          if (!this.paired || this.ended) return;
          this.join({ speak: false });
          setStatus('status.reconnectedLooking', { tone: 'ok', speak: true });
        }, RESUME_GRACE_MS);
        return;
      }
      // Not in a call: queue again.
      this.join({ speak: false });
      setStatus('status.reconnectedLooking', { tone: 'ok', speak: true });
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
        duet.marks.queued = performance.now();
        break;
      case 'widened':
        if (!this.paired) {
          setStatus('status.widened', { speak: true });
          duet.widened = true;
        }
        break;
      case 'matched': {
        // The same pairing again: the call moved to another media server, or
        // our signaling connection came back with the call still on.
        const again = this.paired && m.pairing_id === duet.pairingId;
        clearTimeout(this.resumeTimer);
        this.resumeTimer = null;
        this.paired = true;
        duet.pairingId = m.pairing_id;
        if (!again) {
          duet.pairings.push(m.pairing_id);
          duet.matchedCount++;
        }
        duet.commonInterests = m.common_interests || [];
        if (!again) {
          duet.partnerVideoHeld = false;
          duet.myVideoHeld = false;
        }
        duet.marks.matched = performance.now();
        duet.marks.firstFrame = null;
        refreshStats();
        setState('matched');
        const shared = (m.common_interests || []).length
          ? new Intl.ListFormat(i18n.current(), { type: 'conjunction' }).format(m.common_interests) : '';
        if (again) {
          setStatus('status.sameStranger', { tone: 'ok', speak: true });
        } else {
          clearMessages();
          setStatus(shared ? 'status.connectedCommon' : 'status.connected', { vars: { interests: shared }, tone: 'ok', speak: true });
          addSystem(shared ? t('status.sayHiCommon', { interests: shared }) : t('status.sayHi'));
        }
        setChatEnabled(true);
        $('report-btn').disabled = false;
        // A stranger is here: what the person types now is their greeting.
        if (!again) focusChat();
        if (this.mode === 'video') {
          setOverlay('status.connectingVideo');
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
          if (speakMessages) announce(t('call.strangerSays', { text: m.text }));
        }
        break;
      case 'typing':
        showTyping();
        break;
      case 'partner_left': {
        clearTimeout(this.resumeTimer);
        this.resumeTimer = null;
        if (!this.paired) break; // e.g. the confirmation of our own report after we moved on
        duet.marks.partnerLeft = performance.now();
        this.paired = false;
        duet.pairingId = null;
        setState('left');
        hideTyping();
        setChatEnabled(false);
        if (m.reason === 'reported') {
          // Our own report ended the call; submitReport() takes it from here.
          setStatus('status.reportEnded', { tone: 'ok' });
          if (this.mode === 'video') setOverlay('status.callEnded');
          break;
        }
        const whyKey = {
          next: 'status.left.next',
          stop: 'status.left.next',
          disconnected: 'status.left.disconnected',
          ended: 'status.left.ended',
        }[m.reason] || 'status.left.next';
        setStatus('status.pressNext', { vars: { why: t(whyKey) }, speak: true });
        addSystem(`${t(whyKey)}.`);
        if (this.mode === 'video') setOverlay(whyKey);
        break;
      }
      case 'video_held':
        // Automatic screening's optional block: a moderator will look.
        if (!this.paired) break;
        if (m.mine) {
          duet.myVideoHeld = !!m.held;
          setStatus(m.held ? 'status.myVideoHeld' : 'status.myVideoBack', { tone: m.held ? 'warn' : 'ok', speak: true });
        } else {
          duet.partnerVideoHeld = !!m.held;
          setOverlay(m.held ? 'status.partnerVideoHeld' : null);
          setStatus(m.held ? 'status.partnerVideoHeld' : 'status.partnerVideoBack', { tone: m.held ? 'warn' : 'ok', speak: true });
        }
        break;
      case 'relocate':
        if (m.sfu && this.mode === 'video' && !this.recovering) {
          duet.relocations++;
          clearTimeout(this.lostTimer);
          this.lostTimer = null;
          // The new node's TURN relay, when the message names it.
          if (Array.isArray(m.ice_servers) && m.ice_servers.length) this.session.ice_servers = m.ice_servers;
          setStatus('status.moving', { tone: 'warn', speak: true });
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
      setStatus('status.slowDown', { tone: 'warn', speak: true });
    } else if (m.code === 'captcha_required') {
      // Asked on join or Next: solve the challenge, then continue with a new session that carries it.
      this.recoverVisit('captcha_required', { challenge: true });
    } else {
      setStatus('status.error', { vars: { code: m.code }, tone: 'error', speak: true });
    }
  }

  /** `at`: the key press or click's event time (what the visitor did, before any of our work). */
  next({ speak = true, at = performance.now() } = {}) {
    if (!this.signal || this.ended) return;
    duet.marks.next = at;
    duet.marks.firstFrame = null;
    duet.marks.queued = duet.marks.matched = duet.marks.partnerLeft = null;
    this.signal.send({ type: 'next' });
    duet.marks.nextSent = performance.now();
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
  renderMuteCam();
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
  input.placeholder = on ? t('call.messagePlaceholder') : t('call.waitingPlaceholder');
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
  label.textContent = who === 'me' ? t('call.you') : t('call.stranger');
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

/** The mute and camera buttons say what pressing them does, from their aria-pressed state. */
function renderMuteCam() {
  const muted = $('mute-btn').getAttribute('aria-pressed') === 'true';
  const off = $('cam-btn').getAttribute('aria-pressed') === 'true';
  $('mute-btn').textContent = muted ? t('call.unmute') : t('call.mute');
  $('cam-btn').textContent = off ? t('call.videoOn') : t('call.videoOff');
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
  renderMuteCam();
  if (spoken) announce(muted ? t('call.micMuted') : t('call.micOn'));
}

function toggleCamera({ spoken = false } = {}) {
  if (!visit || !visit.stream) return;
  const t = visit.stream.getVideoTracks()[0];
  if (!t) return;
  t.enabled = !t.enabled;
  const off = !t.enabled;
  $('cam-btn').setAttribute('aria-pressed', String(off));
  renderMuteCam();
  document.body.classList.toggle('cam-off', off);
  if (spoken) announce(off ? t('call.cameraOff') : t('call.cameraOn'));
}

function stopVisit() {
  if (visit) visit.end();
  visit = null;
  setState('stopped');
  duet.marks.stop = performance.now();
  show('landing');
  $('remote-video').srcObject = null;
  $('start-btn').disabled = false;
  announce(t('call.stopped'));
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
    err.textContent = t('report.chooseCategory');
    err.hidden = false;
    return;
  }
  if (utf8Bytes(text) > MAX_REPORT_BYTES) {
    err.textContent = t('report.tooLong', { max: i18n.formatNumber(MAX_REPORT_BYTES) });
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
    addSystem(t('report.sentSystem'));
    setStatus('report.sentStatus', { tone: 'ok', speak: true });
  } catch (ex) {
    const msg = ex instanceof ApiError && ex.code === 'rate_limited' ? t('report.tooMany') : errorText(ex);
    duet.lastReport = { status: ex.status || 0, error: msg };
    err.textContent = t('report.failed', { message: msg });
    err.hidden = false;
    $('report-submit').disabled = false;
  }
}

// ------------------------------------------------------------------ blocked screen
let appealToken = null;

let lastBlocked = null;

function fmtTime(unix) {
  try {
    return i18n.formatDateTime(new Date(unix * 1000));
  } catch {
    return new Date(unix * 1000).toISOString();
  }
}

/** A server error as text in the page's language: known codes are translated, others keep the server's words. */
function errorText(e) {
  const known = {
    network: 'error.network',
    no_capacity: 'error.noCapacity',
    unavailable: 'error.unavailable',
    captcha_unavailable: 'captcha.unavailable',
    captcha_invalid: 'captcha.invalid',
    captcha_cancelled: 'captcha.cancelled',
    rate_limited: 'status.slowDown',
  };
  return e && known[e.code] ? t(known[e.code]) : (e && e.message) || String(e);
}

function showBlocked(err) {
  setState(err.code === 'banned' ? 'banned' : 'blocked');
  duet.lastError = { code: err.code, message: err.message, ban: err.ban || null };
  show('blocked');
  lastBlocked = err;
  renderBlocked(err);
  // The focus on the heading reads it; the announcement adds what it does not say.
  const parts = [$('blocked-msg').textContent];
  if (!$('ban-details').hidden) {
    parts.push(`${t('blocked.reason')}: ${$('ban-reason').textContent}.`, `${t('blocked.until')}: ${$('ban-expiry').textContent}.`);
  }
  if (!$('appeal-form').hidden) parts.push(t('blocked.canAppeal'));
  $('blocked-title').focus();
  announce(parts.join(' '));
}

function renderBlocked(err) {
  const ban = err.ban;
  const details = $('ban-details');
  const form = $('appeal-form');
  form.hidden = true;
  details.hidden = true;
  appealToken = null;
  if (err.code === 'banned') {
    $('blocked-title').textContent = t('blocked.bannedTitle');
    // The moderator's statement of reasons is shown as written, under "Reason".
    $('blocked-msg').textContent = t('blocked.bannedMessage');
    if (ban) {
      details.hidden = false;
      $('ban-reason').textContent = ban.reason || '—';
      $('ban-expiry').textContent = ban.expires_at ? fmtTime(ban.expires_at) : t('blocked.permanent');
      const st = ban.appeal_status;
      for (const el of document.querySelectorAll('.appeal-status-row')) el.hidden = !st;
      $('ban-appeal-status').textContent = st ? ({ pending: t('blocked.appealPending'), upheld: t('blocked.appealUpheld'), lifted: t('blocked.appealLifted') }[st] || st) : '';
      if (ban.can_appeal && ban.appeal_token) {
        appealToken = ban.appeal_token;
        form.hidden = false;
        $('appeal-result').textContent = '';
      }
    }
  } else if (err.code === 'rate_limited') {
    $('blocked-title').textContent = t('blocked.rateTitle');
    $('blocked-msg').textContent = err.retryAfter
      ? t('blocked.rateMessageWait', { seconds: i18n.formatNumber(err.retryAfter) }) : t('blocked.rateMessage');
  } else {
    $('blocked-title').textContent = t('blocked.errorTitle');
    $('blocked-msg').textContent = errorText(err) || t('blocked.errorMessage');
  }
}

async function submitAppeal(e) {
  e.preventDefault();
  const text = $('appeal-text').value.trim();
  const out = $('appeal-result');
  if (!text) { out.textContent = t('appeal.empty'); announce(out.textContent, { urgent: true }); return; }
  if (utf8Bytes(text) > 1024) { out.textContent = t('appeal.tooLong'); announce(out.textContent, { urgent: true }); return; }
  if (!appealToken) return;
  try {
    await sendAppeal(appealToken, text);
    out.textContent = t('appeal.sent');
    $('appeal-form').querySelector('button[type="submit"]').disabled = true;
    $('appeal-text').disabled = true;
  } catch (ex) {
    out.textContent = ex.status === 404 || ex.status === 405
      ? t('appeal.unavailable')
      : t('appeal.failed', { message: errorText(ex) });
  }
  announce(out.textContent);
}

// ------------------------------------------------------------------ start
async function onStart(e) {
  e.preventDefault();
  const err = $('landing-error');
  err.hidden = true;
  if (!$('accept').checked) {
    err.textContent = t('start.mustAccept');
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
      ? t('start.needCamera')
      : t('start.cameraStillStarting');
    err.hidden = false;
    announce(err.textContent, { urgent: true });
    return;
  }
  $('start-btn').disabled = true;
  if (visit) visit.end();
  visit = new Visit(mode, mode === 'video' ? localStream : null);
  try {
    await visit.begin(e.timeStamp);
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
      err.textContent = t('start.couldNotStart', { message: errorText(ex) });
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
    visit.next({ at: e.timeStamp });
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

async function init() {
  duet.uiLang = await i18n.init();
  initUiLanguage();
  initLanguages();
  initInterests();
  const savedMode = load('duet.mode');
  if (params.get('mode') === 'text' || params.get('mode') === 'video') setMode(params.get('mode'));
  else setMode(savedMode === 'text' ? 'text' : 'video');
  for (const r of document.querySelectorAll('input[name="mode"]')) r.addEventListener('change', onModeChange);
  $('camera-select').addEventListener('change', () => startPreview($('camera-select').value, $('mic-select').value));
  $('mic-select').addEventListener('change', () => startPreview($('camera-select').value, $('mic-select').value));
  $('start-form').addEventListener('submit', onStart);
  $('next-btn').addEventListener('click', (e) => visit && visit.next({ at: e.timeStamp }));
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
