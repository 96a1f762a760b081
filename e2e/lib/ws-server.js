// A minimal WebSocket server side (RFC 6455, text frames only) on node:http,
// so the dev mock needs no package besides playwright-core.
import { createHash } from 'node:crypto';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

export function acceptWebSocket(req, socket, onOpen) {
  const key = req.headers['sec-websocket-key'];
  if (!key) { socket.destroy(); return; }
  const accept = createHash('sha1').update(key + GUID).digest('base64');
  socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
    `Sec-WebSocket-Accept: ${accept}\r\n\r\n`);
  const conn = {
    handlers: { message: () => {}, close: () => {} },
    on(ev, fn) { this.handlers[ev] = fn; },
    send(text) {
      const payload = Buffer.from(text);
      let header;
      if (payload.length < 126) header = Buffer.from([0x81, payload.length]);
      else if (payload.length < 65536) { header = Buffer.alloc(4); header[0] = 0x81; header[1] = 126; header.writeUInt16BE(payload.length, 2); }
      else { header = Buffer.alloc(10); header[0] = 0x81; header[1] = 127; header.writeBigUInt64BE(BigInt(payload.length), 2); }
      if (!socket.destroyed) socket.write(Buffer.concat([header, payload]));
    },
    close() { if (!socket.destroyed) { socket.write(Buffer.from([0x88, 0])); socket.end(); } },
  };
  let buf = Buffer.alloc(0);
  let closed = false;
  const finish = () => { if (!closed) { closed = true; conn.handlers.close(); } };
  socket.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    for (;;) {
      if (buf.length < 2) return;
      const op = buf[0] & 0x0f;
      const masked = buf[1] & 0x80;
      let len = buf[1] & 0x7f;
      let off = 2;
      if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); off = 4; }
      else if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); off = 10; }
      const maskOff = off;
      if (masked) off += 4;
      if (buf.length < off + len) return;
      const data = Buffer.from(buf.subarray(off, off + len));
      if (masked) for (let i = 0; i < len; i++) data[i] ^= buf[maskOff + (i % 4)];
      buf = buf.subarray(off + len);
      if (op === 0x1) conn.handlers.message(data.toString('utf8'));
      else if (op === 0x8) { conn.close(); finish(); return; }
      else if (op === 0x9) socket.write(Buffer.concat([Buffer.from([0x8a, data.length]), data]));
    }
  });
  socket.on('close', finish);
  socket.on('error', finish);
  onOpen(conn);
}
