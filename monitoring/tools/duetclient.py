#!/usr/bin/env python3
"""Synthetic duet visitors, standard library only (no pip packages).

A visitor creates a session (`POST /api/session`), opens the signaling WebSocket
(`/ws?token=…`), joins in text mode, and when matched chats, then presses Next; some
report their partner. Text mode needs no media, so this exercises sessions, placement,
matching, chat, reports, rate limits and their metrics without a browser.

Used by `scripts/cluster --load` and by `scripts/check-ops` (to make labelled metrics
appear before it compares metric names). Run it directly:

  monitoring/tools/duetclient.py --url http://127.0.0.1:18080 --url http://127.0.0.1:18082 \\
      --users 20 --seconds 30
"""

import argparse
import base64
import json
import os
import random
import socket
import struct
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request


class DuetError(Exception):
    pass


def http_json(method, url, body=None, token=None, timeout=10.0):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, {"code": "non_json", "message": raw[:200].decode(errors="replace")}


def new_device_id():
    return "synth-" + base64.urlsafe_b64encode(os.urandom(12)).decode().rstrip("=").replace("-", "x")


def create_session(base, device_id=None, region=None):
    body = {"accept_rules": True, "device_id": device_id or new_device_id()}
    if region:
        body["region"] = region
    status, resp = http_json("POST", base.rstrip("/") + "/api/session", body)
    if status != 200 and status != 201:
        raise DuetError(f"POST /api/session -> {status} {resp}")
    return resp


class WebSocket:
    """A minimal RFC 6455 client for ws:// URLs: text frames, ping/pong, close."""

    def __init__(self, url, timeout=10.0):
        u = urllib.parse.urlsplit(url)
        if u.scheme != "ws":
            raise DuetError(f"only ws:// URLs are supported: {url}")
        self.sock = socket.create_connection((u.hostname, u.port or 80), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        path = (u.path or "/") + (("?" + u.query) if u.query else "")
        req = (f"GET {path} HTTP/1.1\r\nHost: {u.hostname}:{u.port or 80}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
               f"Origin: http://{u.hostname}:{u.port or 80}\r\n\r\n")
        self.sock.sendall(req.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise DuetError("WebSocket handshake: connection closed")
            head += chunk
        head, self.buf = head.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0].decode(errors="replace")
        if " 101 " not in status + " ":
            raise DuetError(f"WebSocket handshake refused: {status}")
        self.closed = False

    def _recv_exact(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise DuetError("WebSocket closed by server")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _send_frame(self, opcode, payload):
        header = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def send(self, obj):
        self._send_frame(0x1, json.dumps(obj).encode())

    def recv(self, timeout):
        """The next text message as JSON, or None after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                b0, b1 = self._recv_exact(2)
            except socket.timeout:
                return None
            self.sock.settimeout(30)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._recv_exact(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._recv_exact(8))[0]
            payload = self._recv_exact(n)
            opcode = b0 & 0x0F
            if opcode == 0x9:
                self._send_frame(0xA, payload)
            elif opcode == 0x8:
                self.closed = True
                raise DuetError(f"WebSocket closed by server: {payload[2:].decode(errors='replace')}")
            elif opcode == 0x1:
                return json.loads(payload)

    def close(self):
        try:
            if not self.closed:
                self._send_frame(0x8, struct.pack("!H", 1000))
        except OSError:
            pass
        self.sock.close()


def ws_url(base, token):
    u = urllib.parse.urlsplit(base)
    scheme = "wss" if u.scheme == "https" else "ws"
    return f"{scheme}://{u.netloc}/ws?token={urllib.parse.quote(token)}"


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.match_times = []
        self.errors = []

    def add(self, key, n=1):
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + n

    def match(self, seconds):
        with self.lock:
            self.match_times.append(seconds)
            self.counts["matches"] = self.counts.get("matches", 0) + 1

    def error(self, msg):
        with self.lock:
            self.errors.append(msg)

    def summary(self):
        with self.lock:
            t = sorted(self.match_times)
            pct = (lambda p: t[min(len(t) - 1, int(p * len(t)))] if t else None)
            return {"counts": dict(self.counts), "time_to_match_s": {
                "n": len(t), "p50": pct(0.5), "p95": pct(0.95), "max": t[-1] if t else None},
                "errors": len(self.errors), "first_errors": self.errors[:5]}


def visitor(base, stop_at, stats, rng, report_share=0.1, interests=None):
    """One synthetic visitor: session, join, chat, Next, until `stop_at`."""
    try:
        s = create_session(base)
        stats.add("sessions")
        ws = WebSocket(ws_url(base, s["token"]))
    except (DuetError, OSError, KeyError) as e:
        stats.error(f"session/ws: {e}")
        return
    try:
        join = {"type": "join", "mode": "text", "interests": interests or [], "lang": "en"}
        ws.send(join)
        joined_at = time.monotonic()
        while time.monotonic() < stop_at:
            msg = ws.recv(timeout=max(0.1, stop_at - time.monotonic()))
            if msg is None:
                break
            t = msg.get("type")
            if t == "matched":
                stats.match(time.monotonic() - joined_at)
                ws.send({"type": "typing"})
                ws.send({"type": "chat", "text": rng.choice(["hi", "hello!", "where are you from?", "nice"])})
                stats.add("chat_sent")
                time.sleep(rng.uniform(0.2, 1.0))
                if rng.random() < report_share:
                    status, resp = http_json("POST", base.rstrip("/") + "/api/reports",
                                             {"category": "spam", "text": "synthetic report (load test)"},
                                             token=s["token"])
                    stats.add(f"report_{status}")
                ws.send({"type": "next"})
                stats.add("next")
                joined_at = time.monotonic()
            elif t == "partner_left":
                joined_at = time.monotonic()
            elif t == "error":
                stats.add(f"error_{msg.get('code')}")
            elif t == "chat":
                stats.add("chat_received")
        ws.send({"type": "stop"})
    except (DuetError, OSError, ValueError) as e:
        stats.error(f"ws: {e}")
    finally:
        ws.close()


def run_load(bases, users, seconds, report_share=0.1, seed=None):
    rng = random.Random(seed)
    stats = Stats()
    stop_at = time.monotonic() + seconds
    threads = []
    for i in range(users):
        base = bases[i % len(bases)]
        interests = rng.choice([[], ["music"], ["movies"], ["music", "games"]])
        th = threading.Thread(target=visitor, args=(base, stop_at, stats, random.Random(rng.random()),
                                                    report_share, interests), daemon=True)
        th.start()
        threads.append(th)
        time.sleep(min(0.05, seconds / max(users, 1) / 4))
    for th in threads:
        th.join(timeout=max(1.0, stop_at - time.monotonic() + 15))
    return stats.summary()


def main(argv):
    ap = argparse.ArgumentParser(description="Synthetic text-mode duet visitors (load and smoke tests).")
    ap.add_argument("--url", action="append", required=True, help="signaling base URL (repeat for several replicas)")
    ap.add_argument("--users", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--report-share", type=float, default=0.1, help="share of pairings that end in a report")
    ap.add_argument("--seed", type=int, default=None)
    a = ap.parse_args(argv)
    summary = run_load(a.url, a.users, a.seconds, a.report_share, a.seed)
    print(json.dumps(summary, indent=2))
    return 1 if summary["errors"] and not summary["counts"].get("matches") else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
