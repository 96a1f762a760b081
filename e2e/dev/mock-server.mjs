// Dev-only stand-in for signaling (REST + /ws, no media) to work on the page's
// layout and text flows while the real server is not there. The e2e suite
// always runs against the real `duet up`.
//   node dev/mock-server.mjs [port]
// A device id starting with "banned" is refused with a ban notice; "limited" gets 429.
import http from 'node:http';
import { readFile } from 'node:fs/promises';
import { extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomUUID } from 'node:crypto';
import { acceptWebSocket } from '../lib/ws-server.js';

const root = fileURLToPath(new URL('../../client-web/', import.meta.url));
// Also callable like `duet up --http-listen IP:PORT …` (DUET_BIN=dev/fake-duet) to dry-run the suite's text tests.
const argv = process.argv.slice(2);
const hl = argv.indexOf('--http-listen');
const [host, port] = hl >= 0 ? [argv[hl + 1].split(':')[0], Number(argv[hl + 1].split(':')[1])] : [argv[1] || '127.0.0.1', Number(argv[0] || 8090)];
const types = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.css': 'text/css', '.svg': 'image/svg+xml' };
const sessions = new Map(); // token -> {device, conn, mode, partner, interests}
const queue = [];
const reported = new Set();

function json(res, status, body) {
  res.writeHead(status, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify(body));
}

function send(s, m) { if (s && s.conn) s.conn.send(JSON.stringify(m)); }

function tryMatch(s) {
  const i = queue.findIndex((o) => o !== s && o.mode === s.mode && !reported.has(`${o.device}|${s.device}`) && !reported.has(`${s.device}|${o.device}`));
  if (i < 0) { if (!queue.includes(s)) queue.push(s); return; }
  const o = queue.splice(i, 1)[0];
  const me = queue.indexOf(s); if (me >= 0) queue.splice(me, 1);
  s.partner = o; o.partner = s;
  const pairing_id = randomUUID().replaceAll('-', '');
  const common = s.interests.filter((x) => o.interests.includes(x));
  send(s, { type: 'matched', pairing_id, common_interests: common });
  send(o, { type: 'matched', pairing_id, common_interests: common });
}

function leave(s, reason) {
  const i = queue.indexOf(s); if (i >= 0) queue.splice(i, 1);
  if (s.partner) { const p = s.partner; p.partner = null; s.partner = null; send(p, { type: 'partner_left', reason }); }
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, 'http://x');
  res.setHeader('Content-Security-Policy', "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'");
  if (url.pathname === '/api/session' && req.method === 'POST') {
    let body = '';
    for await (const c of req) body += c;
    const b = JSON.parse(body || '{}');
    if (!b.accept_rules) return json(res, 400, { code: 'bad_request', message: 'accept the rules' });
    if (String(b.device_id).startsWith('banned')) {
      return json(res, 403, { code: 'banned', message: 'This device is banned.', ban: { ban_id: 'b1', reason: 'Nudity in a video chat (rule 2).', expires_at: Math.floor(Date.now() / 1000) + 86400 * 3, can_appeal: true, appeal_token: 'appeal-xyz' } });
    }
    if (String(b.device_id).startsWith('limited')) return json(res, 429, { code: 'rate_limited', message: 'Too many sessions' });
    const token = randomUUID();
    sessions.set(token, { device: b.device_id, conn: null, partner: null, interests: [] });
    return json(res, 200, { session_id: token, token, participant_id: 'p' + token.slice(0, 8), expires_at: 0,
      sfu: { node_id: 'mock', region: 'dev', url: `ws://${req.headers.host}/sfu/ws`, token: 'x' }, ice_servers: [], ice_transport_policy: 'all' });
  }
  if (url.pathname === '/api/reports' && req.method === 'POST') {
    const s = sessions.get((req.headers.authorization || '').replace('Bearer ', ''));
    if (!s) return json(res, 401, { code: 'unauthorized', message: 'no session' });
    const p = s.partner;
    if (!p) return json(res, 409, { code: 'no_partner', message: 'No one to report' });
    reported.add(`${s.device}|${p.device}`);
    leave(s, 'ended');
    send(s, { type: 'partner_left', reason: 'reported' });
    return json(res, 201, { report_id: randomUUID() });
  }
  if (url.pathname === '/api/appeals') return json(res, 201, { ok: true });
  if (url.pathname === '/api/stats') return json(res, 200, { online: sessions.size, waiting_video: 0, waiting_text: 0 });
  let path = normalize(url.pathname === '/' ? '/index.html' : url.pathname);
  try {
    const data = await readFile(join(root, path));
    res.writeHead(200, { 'Content-Type': types[extname(path)] || 'application/octet-stream' });
    res.end(data);
  } catch {
    res.writeHead(404); res.end('not found');
  }
});

server.on('upgrade', (req, socket) => {
  const url = new URL(req.url, 'http://x');
  if (url.pathname === '/sfu/ws') { acceptWebSocket(req, socket, () => {}); return; }
  const s = sessions.get(url.searchParams.get('token'));
  if (url.pathname !== '/ws' || !s) { socket.destroy(); return; }
  acceptWebSocket(req, socket, (conn) => {
    s.conn = conn;
    conn.on('message', (text) => {
      const m = JSON.parse(text);
      if (m.type === 'join') {
        s.mode = m.mode; s.interests = m.interests || [];
        send(s, { type: 'queued', mode: m.mode });
        tryMatch(s);
      } else if (m.type === 'chat' && s.partner) send(s.partner, { type: 'chat', text: m.text });
      else if (m.type === 'typing' && s.partner) send(s.partner, { type: 'typing' });
      else if (m.type === 'next') { leave(s, 'next'); send(s, { type: 'queued', mode: s.mode }); tryMatch(s); }
      else if (m.type === 'stop') leave(s, 'stop');
    });
    conn.on('close', () => leave(s, 'disconnected'));
  });
});

server.listen(port, host, () => {
  const a = `${host}:${server.address().port}`;
  console.log(`duet ready ${JSON.stringify({ http: a, internal: a, media: a, turn_udp: null, turn_tcp: null, turn_tls: null, tls_cert: '' })}`);
});
