#!/usr/bin/env python3
"""Writes each fuzz target's seed corpus into fuzz/corpus/<target>/ from the proptest corpus in
tests/fuzz-corpus/ (bodies, socket messages, queries) and from frames and upgrade requests built here
(the cases of tests/api/ws_conformance.rs), plus every input that once failed a target
(fuzz/regressions/). Seeds are named by their content's hash, so seeding again
adds nothing twice and keeps what libFuzzer found."""

import hashlib
import pathlib
import re
import struct

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "fuzz-corpus"
OUT = ROOT / "fuzz" / "corpus"


def unescape(line: str) -> bytes:
    """A corpus line with \\xNN escapes as bytes."""
    return re.sub(
        rb"\\x([0-9a-fA-F]{2})", lambda m: bytes([int(m.group(1), 16)]), line.encode()
    )


def lines(name: str):
    for line in (CORPUS / name).read_text().splitlines():
        if not line.startswith("# "):
            yield unescape(line)


def write(target: str, seeds):
    d = OUT / target
    d.mkdir(parents=True, exist_ok=True)
    for s in seeds:
        (d / hashlib.sha1(s).hexdigest()).write_bytes(s)


def frame(fin: bool, opcode: int, payload: bytes, mask=b"\x37\xfa\x21\x3d") -> bytes:
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n <= 0xFFFF:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def frames():
    # Two leading bytes: the message limit (16 + 16 * b) and the seed of the read cuts.
    limit, cut = b"\xff", b"\x07"
    close = lambda code, why=b"": frame(True, 8, struct.pack(">H", code) + why)
    streams = [
        frame(True, 1, b'{"type":"resume","epoch":"e","since":0}'),
        frame(False, 1, b"caf") + frame(True, 9, b"hi") + frame(True, 0, "é!".encode()),
        frame(False, 1, "caf\xc3".encode("latin-1")) + frame(True, 0, b"\xa9"),
        frame(True, 1, b"\xff\xfe"),
        frame(True, 2, b"binary"),
        frame(True, 9, b"x" * 125) + frame(True, 10, b""),
        frame(True, 9, b"x" * 126),
        frame(False, 9, b""),
        frame(True, 0, b"nothing to continue"),
        frame(False, 1, b"a") + frame(True, 1, b"b"),
        frame(False, 1, b"") + frame(False, 0, b"") + frame(True, 0, b""),
        bytes([0xC1, 0x80, 0, 0, 0, 0]),
        bytes([0x83, 0x80, 0, 0, 0, 0]),
        bytes([0x81, 0x05]) + b"hello",
        bytes([0x81, 0xFF]) + struct.pack(">Q", 2**63 - 1) + b"\0\0\0\0",
        frame(True, 1, b"x" * 5000),
        close(1000) + frame(True, 1, b"after"),
        close(1005),
        close(4999, "bye".encode()),
        close(1000, b"\xff"),
        frame(True, 8, b"\x03"),
        frame(True, 8, b""),
        frame(True, 1, b"x" * 70000),
    ]
    return [limit + cut + s for s in streams] + [b"\x00\x00" + streams[0]]


def requests():
    base = (
        b"GET /ws/table/tok?resume=1 HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
        b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    )
    heads = [
        base + b"\r\n",
        base + b"X-Forwarded-For: 203.0.113.7, 10.0.0.1\r\nCookie: a=b\r\nCookie: s2o_session=x\r\n\r\n",
        base + b"Origin: http://localhost\r\nAuthorization: Bearer t\r\nX-Request-Id: abc-1\r\n\r\n"
        + frame(True, 1, b"early"),
        base.replace(b"13", b"8") + b"\r\n",
        base.replace(b"HTTP/1.1", b"HTTP/1.0") + b"\r\n",
        b"GET /ws/kitchen HTTP/1.1\r\nUpgrade: h2c\r\n\r\n",
        b"POST /api/v1/orders HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
        b"GET /ws/",
        b"GET /w",
        base + b"X: " + b"y" * 9000 + b"\r\n\r\n",
        base + b"".join(b"X-%d: y\r\n" % i for i in range(60)) + b"\r\n",
    ]
    return [b"\x40" + h for h in heads]


def main():
    write("socket_frames", frames())
    write("socket_handshake", requests())
    write("json_bodies", [p.read_bytes() for p in sorted((CORPUS / "bodies").iterdir())])
    write("client_messages", lines("socket-messages.txt"))
    queries = [
        b"restaurant_id=&=\x00",
        b"restaurant_id=7f1c1d9e-4c55-4f61-9d8f-0d9a3b0a3b21",
        b"restaurant_id=%00",
        b"restaurant_id=1&restaurant_id=2",
        b"before=1790000000123456_7f1c1d9e4c554f619d8f0d9a3b0a3b21&limit=20",
        b"limit=-1",
        b"limit=99999999999999999999",
        b"extra=1",
    ]
    write("queries", queries + list(lines("cursors.txt")))
    # Inputs that once failed a target (fuzz/regressions/<target>/): replayed by every run.
    for d in sorted((ROOT / "fuzz" / "regressions").glob("*/")):
        write(d.name, [f.read_bytes() for f in sorted(d.iterdir()) if f.is_file()])


if __name__ == "__main__":
    main()
