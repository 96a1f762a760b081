#!/usr/bin/env python3
"""Picks Chromium's first packets of each kind out of a loopback capture of
an end-to-end call and writes them to fuzz/seeds/captures/<kind>.bin:
the ICE check (STUN Binding request), TURN requests (Allocate,
CreatePermission, ChannelBind, Refresh), a Send indication and ChannelData,
the DTLS ClientHello, and the first SRTP and SRTCP packets. Payloads inside
TURN ChannelData or Send indications are unwrapped for the DTLS and SRTP
kinds, as the SFU sees them after the relay.

    tcpdump -i lo -s 0 -w call.pcap 'udp or tcp' &   # then: scripts/e2e tests/call.test.js
    python3 fuzz/seeds/extract_pcap.py call.pcap
    python3 fuzz/seeds/make_seeds.py

Only UDP datagrams to the servers' ports are read (Ethernet-framed
loopback, IPv4): what Chromium sends.
"""

import pathlib
import struct
import sys

OUT = pathlib.Path(__file__).resolve().parent / "captures"
COOKIE = 0x2112A442
STUN_KINDS = {
    0x0001: "stun-binding-request",
    0x0003: "turn-allocate-request",
    0x0004: "turn-refresh-request",
    0x0008: "turn-createpermission-request",
    0x0009: "turn-channelbind-request",
    0x0016: "turn-send-indication",
    0x0017: "turn-data-indication",
}


def datagrams(path):
    data = pathlib.Path(path).read_bytes()
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    at = 24
    while at + 16 <= len(data):
        _, _, incl, _ = struct.unpack(endian + "IIII", data[at:at + 16])
        frame = data[at + 16:at + 16 + incl]
        at += 16 + incl
        if linktype == 1:
            if frame[12:14] != b"\x08\x00":
                continue
            ip = frame[14:]
        elif linktype == 113:  # Linux cooked capture
            ip = frame[16:]
        else:
            ip = frame
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 0x0F) * 4
        sport, dport, ulen = struct.unpack(">HHH", ip[ihl:ihl + 6])
        yield sport, dport, ip[ihl + 8:ihl + ulen]


def stun_type(p):
    if len(p) >= 20 and p[0] < 4 and struct.unpack(">I", p[4:8])[0] == COOKIE:
        return struct.unpack(">H", p[:2])[0]
    return None


def unwrap(p):
    """The application payload of ChannelData or a Send/Data indication, else p."""
    if 0x40 <= (p[0] if p else 0) <= 0x7F and len(p) >= 4:
        n = struct.unpack(">H", p[2:4])[0]
        return p[4:4 + n]
    t = stun_type(p)
    if t in (0x0016, 0x0017):
        at = 20
        while at + 4 <= len(p):
            a, n = struct.unpack(">HH", p[at:at + 4])
            if a == 0x0013:  # DATA
                return p[at + 4:at + 4 + n]
            at += 4 + n + (-n % 4)
    return p


def has_username(p):
    at = 20
    while at + 4 <= len(p):
        a, n = struct.unpack(">HH", p[at:at + 4])
        if a == 0x0006:
            return True
        at += 4 + n + (-n % 4)
    return False


def main(path):
    OUT.mkdir(exist_ok=True)
    found = {}
    # The servers' ports: where Chromium's ICE checks and TURN requests go.
    servers = {d for _, d, p in datagrams(path) if stun_type(p) in (0x0001, 0x0003) and has_username(p) or stun_type(p) == 0x0003}
    for _, dport, p in datagrams(path):
        if not p or dport not in servers:
            continue
        t = stun_type(p)
        if t == 0x0001 and has_username(p):
            found.setdefault("stun-ice-check", p)
        if t in STUN_KINDS:
            found.setdefault(STUN_KINDS[t], p)
        if 0x40 <= p[0] <= 0x7F:
            found.setdefault("turn-channeldata", p)
        inner = unwrap(p)
        if not inner:
            continue
        b0 = inner[0]
        if 20 <= b0 <= 63 and len(inner) > 13 and b0 == 22 and inner[13] == 1:
            found.setdefault("dtls-clienthello", inner)
        elif 128 <= b0 <= 191 and len(inner) > 12:
            kind = "srtcp-first" if 192 <= inner[1] <= 223 else "srtp-first"
            found.setdefault(kind, inner)
    for name, p in sorted(found.items()):
        (OUT / f"{name}.bin").write_bytes(p)
        print(f"{name}: {len(p)} bytes")


if __name__ == "__main__":
    main(sys.argv[1])
