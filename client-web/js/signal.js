// The signaling WebSocket (`/ws?token=…`, proto/src/signal.rs ClientMsg /
// ServerMsg): join, chat, typing, next, stop; queued, widened, matched, chat,
// typing, partner_left, relocate, video_held, error. Reconnects by itself with backoff.

const MAX_RETRIES = 8;

export class Signal {
  /**
   * @param {string} token session JWT
   * @param {(msg: object) => void} onMessage
   * @param {(kind: 'open'|'reconnecting'|'reopened'|'failed', detail?: any) => void} onConn
   */
  constructor(token, onMessage, onConn) {
    this.token = token;
    this.onMessage = onMessage;
    this.onConn = onConn;
    this.ws = null;
    this.closed = false;
    this.retries = 0;
    this.opened = false;
    this.outbox = [];
  }

  url() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    return `${proto}//${location.host}/ws?token=${encodeURIComponent(this.token)}`;
  }

  open() {
    const ws = new WebSocket(this.url());
    this.ws = ws;
    ws.onopen = () => {
      const again = this.opened;
      this.opened = true;
      this.retries = 0;
      this.onConn(again ? 'reopened' : 'open');
      for (const m of this.outbox.splice(0)) ws.send(JSON.stringify(m));
    };
    ws.onmessage = (ev) => {
      let m;
      try { m = JSON.parse(ev.data); } catch { return; }
      if (m && typeof m.type === 'string') this.onMessage(m);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws || this.closed) return;
      this.ws = null;
      // 4001..4099 are final refusals (bad or expired token, banned); do not hammer.
      if (this.retries >= MAX_RETRIES || (ev.code >= 4000 && ev.code < 4100)) {
        this.onConn('failed', { code: ev.code, reason: ev.reason });
        return;
      }
      const delay = Math.min(400 * 2 ** this.retries, 8000);
      this.retries++;
      this.onConn('reconnecting', { inMs: delay, code: ev.code });
      this.timer = setTimeout(() => { if (!this.closed) this.open(); }, delay);
    };
    ws.onerror = () => { /* onclose follows */ };
  }

  /** Sends now, or when the socket first opens; while reconnecting, drops (the app re-joins). */
  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
    else if (!this.closed && !this.opened) this.outbox.push(msg);
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onopen = ws.onclose = ws.onerror = ws.onmessage = null;
      try {
        if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'stop' }));
        ws.close(1000, 'bye');
      } catch { /* already closed */ }
    }
  }
}
