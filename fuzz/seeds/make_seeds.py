#!/usr/bin/env python3
"""Writes the committed seed corpora of fuzz/seeds/<target>/ that are not
captures: well-formed examples of every message and body, in each target's
input format, and the captured datagrams (captures/*.bin: Chromium's, picked
out of a loopback capture by extract_pcap.py) wrapped for the targets that take operation lists.

Run from anywhere: python3 fuzz/seeds/make_seeds.py
"""

import base64
import hashlib
import hmac
import json
import pathlib
import struct

SEEDS = pathlib.Path(__file__).resolve().parent
ROOT = SEEDS.parent.parent
TESTDATA = ROOT / "sfu/src/endpoint/testdata"
CAPTURES = SEEDS / "captures"
SAMPLES = SEEDS / "samples"


def write(target, name, data):
    d = SEEDS / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / name).write_bytes(data)


def js(v):
    return json.dumps(v, separators=(",", ":"))


def sdp_seeds():
    for f in sorted(TESTDATA.glob("*.sdp")):
        write("sdp_offer", f.stem, f.read_text())


def sfu_ws_seeds():
    offer = (TESTDATA / "chromium-user-offer.sdp").read_text()
    write("sfu_ws", "offer", js({"type": "offer", "sdp": offer}))
    write("sfu_ws", "candidate", js({"type": "candidate", "candidate": {
        "candidate": "candidate:1 1 udp 2122260223 192.0.2.9 50000 typ host generation 0 ufrag 5TIo",
        "sdpMid": "0", "sdpMLineIndex": 0}}))
    write("sfu_ws", "end_of_candidates", js({"type": "end_of_candidates"}))
    write("sfu_ws", "ping", js({"type": "ping"}))


def signal_ws_seeds():
    write("signal_ws", "join", js({"type": "join", "mode": "video", "interests": ["Music", "chess"], "lang": "en-GB"}))
    write("signal_ws", "join_text", js({"type": "join", "mode": "text"}))
    write("signal_ws", "chat", js({"type": "chat", "text": "hi \u00e9\u00e8 \U0001F600\u200b!"}))
    for t in ["typing", "next", "stop"]:
        write("signal_ws", t, js({"type": t}))
    write("signal_ws", "unknown", js({"type": "hello"}))


REST = [
    {"accept_rules": True, "device_id": "dev_0123456789", "region": "eu"},
    {"category": "harassment", "text": "they were rude"},
    {"appeal_token": "tok.en.sig", "text": "please reconsider"},
    {"email": "mod@example.org", "password": "correct horse battery staple"},
    {"action": "ban", "duration_secs": 86400, "template": "nudity", "statement": "seen on camera"},
    {"kind": "device", "value": "dev_0123456789", "reason": "spam", "template": "spam", "duration_secs": 3600},
    {"ids": ["1", "2"], "reason": "appeal accepted"},
    {"decision": "accept", "reason": "mistaken identity"},
    {"side": "a"},
    {"email": "new@example.org", "role": "moderator", "password": "a long enough password"},
    {"role": "admin", "disabled": False, "unlock": True, "password": None},
    {"retention_dismissed_days": 30, "retention_actioned_days": 365, "wall_keyframe_interval_ms": 2000},
    {"screener": "screen-1", "samples": [{"pairing_id": "p1", "side": "a", "slot": 3}], "ttl_ms": 5000},
    {"screener": "screen-1", "model": "nudenet-320n", "sample": {"pairing_id": "p1", "side": "b", "slot": 3},
     "participant": "part-1", "scores": [{"category": "nudity", "score": 0.25, "level": "clear",
                                         "report_category": "nudity"}],
     "snapshot_webp_b64": base64.b64encode(b"RIFF\x0c\x00\x00\x00WEBPVP8 ").decode(), "snapshot_age_ms": 120},
    {"participant_id": "part-1", "role": "user"},
    {"held": True},
    {"a": "part-1", "b": "part-2"},
    {"watcher": "mod-1", "a": "part-1", "b": "part-2", "stop": False},
    {"interval_ms": 2000},
]


def rest_seeds():
    for i, body in enumerate(REST):
        write("rest_bodies", f"type{i:02}", bytes([i]) + js(body).encode())


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=")


def jwt(claims, secret=b"fuzz-secret-of-32-bytes-or-more!"):
    head = b64url(js({"typ": "JWT", "alg": "HS256"}).encode())
    body = b64url(js(claims).encode())
    sig = hmac.new(secret, head + b"." + body, hashlib.sha256).digest()
    return (head + b"." + body + b"." + b64url(sig)).decode()


def token_seeds():
    session = {"sub": "s1", "aud": "duet-session", "exp": 4_000_000_000, "iat": 1_700_000_000,
               "device": "dev_0123456789", "participant": "part-1", "node": "sfu-1",
               "tp": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    write("proto_tokens", "session_claims", js(session))
    write("proto_tokens", "session_token", jwt(session))
    write("proto_tokens", "traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    write("proto_tokens", "turn_username", "1700003600:part-1")


def config_seeds():
    up = (b"http-listen = \"127.0.0.1:8080\"\npublic-ip = \"203.0.113.7\"\nmedia-listen = \"0.0.0.0:50000\"\n"
          b"turn-listen-udp = \"0.0.0.0:3478\"\nrelay-ports = \"40000-60000\"\nlog-format = \"json\"\n")
    write("config_toml", "up", b"\x00" + up)
    write("config_toml", "sfu", b"\x02" + up)
    write("config_toml", "turn", b"\x03" + b"relay-ip = \"127.0.0.1\"\nrelay-ports = \"40000-40100\"\n"
          b"allow-peer = [\"127.0.0.1/32\"]\n")
    write("config_toml", "screen_model", b"\x04" + (ROOT / "screen/models/nudenet-320n.toml").read_bytes())


def ops(records):
    """Operation list of sfu_node: [op][len u16 BE][bytes]."""
    out = b""
    for op, data in records:
        out += bytes([op]) + struct.pack(">H", len(data)) + data
    return out


RAW, PROTECTED, STRANGER, WAIT, COMMAND = 0, 1, 4, 5, 7


def op(kind, who):
    return (kind << 2) | who


def rtp(pt, seq, ts, ssrc, payload, marker=False, ext=b""):
    b0 = 0x90 if ext else 0x80
    head = struct.pack(">BBHII", b0, (0x80 if marker else 0) | pt, seq, ts, ssrc)
    return head + ext + payload


def node_seeds():
    # The SSRCs of the Chromium offer the target answers (a=ssrc lines).
    offer = (TESTDATA / "chromium-user-offer.sdp").read_text()
    ssrcs = [int(l.split()[0].split(":")[1]) for l in offer.splitlines() if l.startswith("a=ssrc:")]
    audio, video = ssrcs[0], ssrcs[2]
    # abs-send-time (id 2) and mid (id 4), one-byte form.
    ext = bytes([0xBE, 0xDE, 0x00, 0x02, 0x22, 0x01, 0x02, 0x03, 0x40, ord("1"), 0x00, 0x00])
    key = bytes([0x10, 0x00, 0x00, 0x00]) + bytes([0x50, 0x42, 0x00, 0x9D, 0x01, 0x2A, 0x40, 0x01, 0xF0, 0x00]) + b"\x00" * 40
    media = []
    for i in range(4):
        media.append((op(PROTECTED, i % 2), rtp(111, 100 + i, 960 * i, audio, b"\xfc\xff\xfe", ext=ext)))
        media.append((op(PROTECTED, i % 2), rtp(96, 200 + i, 3000 * i, video, key, marker=True, ext=ext)))
        media.append((op(WAIT, 0), b"\x14"))
    write("sfu_node", "media_both_ways", ops(media))
    # Receiver report + PLI + NACK + REMB from b about a's stream, as RTCP compound.
    rr = struct.pack(">BBHI", 0x80, 201, 1, 0x2000)
    pli = struct.pack(">BBHII", 0x81, 206, 2, 0x2000, video)
    nack = struct.pack(">BBHIIHH", 0x81, 205, 3, 0x2000, video, 201, 0)
    remb = struct.pack(">BBHII", 0x8F, 206, 5, 0x2000, 0) + b"REMB" + struct.pack(">BBH", 1, 0x0F, 0x4240) + struct.pack(">I", video)
    write("sfu_node", "feedback", ops(media[:6] + [(op(PROTECTED, 1), rr + pli + nack + remb), (op(WAIT, 0), b"\xff")]))
    write("sfu_node", "commands", ops([(op(COMMAND, 0), bytes([c])) for c in range(8)] + media[:3]))
    srtp = CAPTURES / "srtp-first.bin"
    if srtp.exists():
        # Chromium's first RTP header (extensions and all; its payload still
        # encrypted) as a's audio, protected with a's keys by the target.
        p = bytearray(srtp.read_bytes())
        p[8:12] = struct.pack(">I", audio)
        write("sfu_node", "chromium_rtp_header", ops([(op(PROTECTED, 0), bytes(p)), (op(WAIT, 0), b"\x14")]))
    # What reaches the node from Chromium (the TURN relay hands it payloads only).
    for f in sorted(CAPTURES.glob("*.bin")) if CAPTURES.exists() else []:
        if not f.stem.startswith(("stun", "dtls", "srtp", "srtcp")):
            continue
        # A captured datagram from a connected participant, an unkeyed one, and a stranger.
        data = f.read_bytes()
        write("sfu_node", f"capture_{f.stem}", ops([(op(RAW, 0), data), (op(RAW, 3), data), (op(STRANGER, 0), data)]))


def vp8_seeds():
    rec = lambda flags, p: bytes([flags]) + struct.pack(">H", len(p)) + p
    # A VP8 keyframe in two packets: descriptor S=1 PID=0, then a continuation.
    frame = bytes([0x50, 0x42, 0x00, 0x9D, 0x01, 0x2A, 0x40, 0x01, 0xF0, 0x00]) + bytes(range(64))
    first = bytes([0x90, 0x80, 0x01]) + frame[:40]
    second = bytes([0x80, 0x80, 0x02]) + frame[40:]
    write("vp8_snapshot", "two_packet_keyframe", rec(0x04, first) + rec(0x01, second))
    # A real 64x48 keyframe (libwebp's VP8 encoder, samples/vp8-keyframe.bin),
    # packetized as a browser would: three packets, the last with the marker.
    k = (SAMPLES / "vp8-keyframe.bin").read_bytes()
    parts = [k[:100], k[100:200], k[200:]]
    packets = rec(0x04, b"\x10" + parts[0]) + rec(0x00, b"\x00" + parts[1]) + rec(0x01, b"\x00" + parts[2])
    write("vp8_snapshot", "real_keyframe_packets", packets)
    write("vp8_snapshot", "real_keyframe_whole", k)


def turn_seeds():
    for f in sorted(CAPTURES.glob("*.bin")) if CAPTURES.exists() else []:
        if f.stem.startswith(("stun", "turn")):
            write("turn_message", f.stem, f.read_bytes())
            write("turn_core", f.stem, f.read_bytes())


if __name__ == "__main__":
    sdp_seeds()
    sfu_ws_seeds()
    signal_ws_seeds()
    rest_seeds()
    token_seeds()
    config_seeds()
    node_seeds()
    vp8_seeds()
    turn_seeds()
