// The visit's one RTCPeerConnection to its SFU node, and the node's client
// WebSocket (`/sfu/ws?token=…`, proto/src/sfu_ws.rs): the browser offers once
// (sendrecv audio + video), the SFU answers, candidates trickle both ways.
// Partner switches happen inside the SFU, so the connection is kept across
// Next. When the connection drops it recovers by itself with ICE restart
// offers over the same WebSocket (the SFU answers them in place). If the
// WebSocket itself is gone, the SFU has dropped the participant and its
// admission, so the link reports 'lost' and the page starts a new session
// (new placement, new peer connection) — see main.js recoverVisit().

const PING_MS = 15000;
const DISCONNECTED_GRACE_MS = 2500;
const RESTART_TIMEOUT_MS = 8000;
const MAX_RESTARTS = 6;

export class MediaLink {
  /**
   * @param {object} o
   * @param {{url:string, token:string, node_id:string}} o.placement
   * @param {RTCIceServer[]} o.iceServers
   * @param {'all'|'relay'} o.policy
   * @param {MediaStream|null} o.stream   local camera/mic (null: receive only)
   * @param {(pc: RTCPeerConnection) => void} o.onPc           a new peer connection was made
   * @param {(track: MediaStreamTrack) => void} o.onTrack      a remote track arrived
   * @param {(kind: string, detail?: any) => void} o.onEvent  connecting|connected|reconnecting|recovered|failed|lost|error
   * @param {(name: string) => void} [o.onMark]  a step of connecting happened: sfuOpen|offerSent|answered|iceConnected
   */
  constructor(o) {
    this.o = o;
    this.pc = null;
    this.ws = null;
    this.closed = false;
    this.iceRestarts = 0;
    this.totalIceRestarts = 0;
    this.everConnected = false;
    this.recovering = false;
    this.timers = new Set();
    this.pendingRemote = [];
    this.pendingLocal = [];
    this.answered = false;
    this.generation = 0;
  }

  start() {
    this.o.onEvent('connecting');
    if (!this.o.onMark) this.o.onMark = () => {};
    this._connect();
  }

  close() {
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this._teardown();
  }

  /** Replace the local track of one kind without renegotiation. */
  async replaceTrack(kind, track) {
    if (!this.pc) return;
    for (const tr of this.pc.getTransceivers()) {
      if (tr.receiver.track && tr.receiver.track.kind === kind && tr.sender) {
        await tr.sender.replaceTrack(track);
      }
    }
  }

  // ---------------------------------------------------------------- internals

  _later(ms, fn) {
    const t = setTimeout(() => { this.timers.delete(t); fn(); }, ms);
    this.timers.add(t);
    return t;
  }

  _teardown() {
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onopen = ws.onclose = ws.onerror = ws.onmessage = null;
      try { ws.close(1000, 'bye'); } catch { /* already closed */ }
    }
    if (this.pingTimer) { clearInterval(this.pingTimer); this.pingTimer = null; }
    const pc = this.pc;
    if (pc) {
      pc.onicecandidate = pc.onconnectionstatechange = pc.oniceconnectionstatechange = pc.ontrack = null;
      try { pc.close(); } catch { /* already closed */ }
    }
  }

  _connect() {
    const gen = ++this.generation;
    this._teardown();
    this.answered = false;
    this.pendingRemote = [];
    this.pendingLocal = [];

    const pc = new RTCPeerConnection({
      iceServers: this.o.iceServers,
      iceTransportPolicy: this.o.policy,
      bundlePolicy: 'max-bundle',
      rtcpMuxPolicy: 'require',
    });
    this.pc = pc;
    const stream = this.o.stream;
    for (const kind of ['audio', 'video']) {
      const track = stream ? stream.getTracks().find((t) => t.kind === kind) : null;
      pc.addTransceiver(track || kind, {
        direction: stream ? 'sendrecv' : 'recvonly',
        streams: stream ? [stream] : [],
      });
    }
    pc.ontrack = (e) => this.o.onTrack(e.track, pc);
    pc.onicecandidate = (e) => {
      if (gen !== this.generation) return;
      if (e.candidate && e.candidate.candidate) {
        this._send({
          type: 'candidate',
          candidate: {
            candidate: e.candidate.candidate,
            sdpMid: e.candidate.sdpMid ?? undefined,
            sdpMLineIndex: e.candidate.sdpMLineIndex ?? undefined,
          },
        }, true);
      } else if (!e.candidate) {
        this._send({ type: 'end_of_candidates' }, true);
      }
    };
    pc.onconnectionstatechange = () => this._onPcState(pc, gen);
    pc.oniceconnectionstatechange = () => {
      if (gen === this.generation && pc.iceConnectionState === 'connected') this.o.onMark('iceConnected');
    };
    this.o.onPc(pc);

    const sep = this.o.placement.url.includes('?') ? '&' : '?';
    const url = this.o.placement.url + sep + 'token=' + encodeURIComponent(this.o.placement.token);
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (e) {
      this._lost(`cannot open the media server's WebSocket: ${e.message}`);
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (gen !== this.generation) return;
      this.o.onMark('sfuOpen');
      this._offer(false).catch((e) => this.o.onEvent('error', { code: 'offer', message: String(e) }));
      this.pingTimer = setInterval(() => this._send({ type: 'ping' }), PING_MS);
    };
    ws.onmessage = (ev) => {
      if (gen !== this.generation) return;
      let m;
      try { m = JSON.parse(ev.data); } catch { return; }
      this._onMessage(m).catch((e) => this.o.onEvent('error', { code: 'sfu_message', message: String(e) }));
    };
    ws.onclose = (ev) => {
      if (gen !== this.generation || this.closed) return;
      this.ws = null;
      this._lost(`media server closed the connection (${ev.code}${ev.reason ? ' ' + ev.reason : ''})`);
    };
    ws.onerror = () => { /* onclose follows */ };
  }

  _send(msg, queueIfClosed = false) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(msg));
    } else if (queueIfClosed) {
      this.pendingLocal.push(msg);
    }
  }

  async _offer(iceRestart) {
    const pc = this.pc;
    const offer = await pc.createOffer(iceRestart ? { iceRestart: true } : undefined);
    await pc.setLocalDescription(offer);
    this.answered = false;
    this._send({ type: 'offer', sdp: pc.localDescription.sdp });
    this.o.onMark('offerSent');
    for (const c of this.pendingLocal.splice(0)) this._send(c);
  }

  async _onMessage(m) {
    const pc = this.pc;
    switch (m.type) {
      case 'answer': {
        await pc.setRemoteDescription({ type: 'answer', sdp: m.sdp });
        this.answered = true;
        this.o.onMark('answered');
        for (const c of this.pendingRemote.splice(0)) await this._addRemote(c);
        break;
      }
      case 'candidate':
        if (!pc.remoteDescription) this.pendingRemote.push(m.candidate);
        else await this._addRemote(m.candidate);
        break;
      case 'state':
        this.sfuState = m.state;
        if (m.state === 'failed' && !this.recovering) this._iceRestart('media server reports failure');
        break;
      case 'pong':
        break;
      case 'error':
        this.o.onEvent('error', { code: m.code, message: m.message });
        break;
      default:
        break;
    }
  }

  async _addRemote(c) {
    try {
      await this.pc.addIceCandidate(c);
    } catch (e) {
      // A bad candidate from the server is not fatal; others may work.
      console.warn('duet: addIceCandidate failed', e);
    }
  }

  _onPcState(pc, gen) {
    if (gen !== this.generation || this.closed) return;
    const s = pc.connectionState;
    if (s === 'connected') {
      if (this.restartTimer) { clearTimeout(this.restartTimer); this.timers.delete(this.restartTimer); this.restartTimer = null; }
      if (this.discTimer) { clearTimeout(this.discTimer); this.timers.delete(this.discTimer); this.discTimer = null; }
      const wasRecovering = this.recovering;
      this.recovering = false;
      this.iceRestarts = 0;
      this.everConnected = true;
      this.o.onEvent(wasRecovering ? 'recovered' : 'connected');
    } else if (s === 'disconnected') {
      if (!this.discTimer) {
        this.discTimer = this._later(DISCONNECTED_GRACE_MS, () => {
          this.discTimer = null;
          if (this.pc === pc && pc.connectionState !== 'connected') this._iceRestart('connection interrupted');
        });
      }
    } else if (s === 'failed') {
      if (!this.restartTimer) this._iceRestart(this.everConnected ? 'connection failed' : 'could not connect to the media server');
    }
  }

  _iceRestart(why) {
    if (this.closed) return;
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
      this._lost(why);
      return;
    }
    if (this.iceRestarts >= MAX_RESTARTS) {
      this.o.onEvent('failed', { why });
      this._lost(why);
      return;
    }
    this.recovering = true;
    this.iceRestarts++;
    this.totalIceRestarts++;
    this.o.onEvent('reconnecting', { why, how: 'ice-restart', attempt: this.iceRestarts });
    const pc = this.pc;
    this._offer(true).catch((e) => this._lost(`ICE restart failed: ${e}`));
    if (this.restartTimer) { clearTimeout(this.restartTimer); this.timers.delete(this.restartTimer); }
    this.restartTimer = this._later(RESTART_TIMEOUT_MS, () => {
      this.restartTimer = null;
      if (this.pc === pc && pc.connectionState !== 'connected') this._iceRestart('ICE restart did not reconnect');
    });
  }

  /** The SFU no longer has us: stop, and let the page start over. */
  _lost(why) {
    if (this.closed) return;
    this.close();
    this.o.onEvent('lost', { why });
  }
}
