#!/usr/bin/env python3
"""Writes the committed seed corpora of the fuzz targets (tests/fuzz/corpus/<target>/).

Small valid and broken worker output: Hello, Response ok/error, Ping/Pong, stale replies,
a huge length, a truncated frame, garbage. Regenerate after a change of proto/pypool.proto:

    python3 tests/fuzz/make_corpus.py <build dir>/python

(<build dir>/python holds the generated pypool/pypool_pb2.py.)
"""

import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def frame(env):
    body = env.SerializeToString()
    return struct.pack(">I", len(body)) + body


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.path.insert(0, sys.argv[1])
    from pypool import pypool_pb2 as pb

    def env(**kw):
        e = pb.Envelope()
        for name, msg in kw.items():
            getattr(e, name).CopyFrom(msg)
        return e

    hello = frame(env(hello=pb.Hello(protocol_version=1, pid=4242, python_version="3.11.2",
                                     handlers=["echo", "sleep", "count"])))
    def ok(i, payload=b"ping"):
        return frame(env(response=pb.Response(id=i, payload=payload)))

    def err(i):
        return frame(env(response=pb.Response(id=i, error=pb.Error(
            type="ValueError", message="bad", traceback="Traceback (most recent call last):\n"))))

    ping = frame(env(ping=pb.Ping(id=3)))
    pong = frame(env(pong=pb.Pong(id=3)))
    shutdown = frame(env(shutdown=pb.Shutdown()))
    close = frame(env(session_close=pb.SessionClose(session_id="s1")))
    request = frame(env(request=pb.Request(id=1, method="echo", payload=b"abc",
                                           session_id="s1", deadline_ms=200)))
    huge = b"\xff\xff\xff\xff" + b"x" * 8
    truncated = struct.pack(">I", 100) + b"0123456789"
    garbage = b"\x00\x00\x00\x12hello-not-protobuf"
    empty_frame = b"\x00\x00\x00\x00"

    # fuzz_frame: byte 0 = chunking seed, byte 1 = max_frame selector (0..3), then the stream
    frames = {
        "hello": b"\x01\x02" + hello,
        "response_ok": b"\x02\x02" + ok(1),
        "response_error": b"\x03\x02" + err(1),
        "ping_pong": b"\x04\x00" + ping + pong,
        "shutdown_close": b"\x05\x01" + shutdown + close,
        "request": b"\x06\x02" + request,
        "many": b"\x07\x03" + hello + ok(1) + err(2) + pong + ok(3, b"x" * 300),
        "huge_length": b"\x08\x02" + huge,
        "truncated": b"\x09\x02" + truncated,
        "garbage": b"\x0a\x02" + garbage,
        "empty_frame": b"\x0b\x00" + empty_frame + ok(1),
        "over_small_max": b"\x0c\x00" + ok(1, b"y" * 2000),
    }
    # fuzz_reply: byte 0 = bit 0 session, bits 1..2 request id - 1; then the worker's output
    replies = {
        "ok": b"\x00" + ok(1),
        "ok_session": b"\x01" + ok(1),
        "error": b"\x00" + err(1),
        "stale_then_ok": b"\x00" + ok(7, b"stale") + err(9) + ok(1),
        "pong_then_ok": b"\x00" + pong + ok(1),
        "hello_then_ok": b"\x00" + hello + ok(1),
        "id2": b"\x02" + ok(1, b"wrong") + ok(2),
        "empty_payload": b"\x00" + ok(1, b""),
        "only_stale": b"\x00" + ok(2),
        "huge_length": b"\x00" + huge,
        "truncated": b"\x00" + truncated,
        "garbage": b"\x00" + garbage,
        "eof": b"\x00",
        "eof_read": b"\x08",
        "stale_read": b"\x08" + ok(2),
        "ok_then_garbage": b"\x00" + ok(1) + garbage,
    }
    for target, seeds in (("fuzz_frame", frames), ("fuzz_reply", replies)):
        out = os.path.join(HERE, "corpus", target)
        os.makedirs(out, exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(out, name), "wb") as f:
                f.write(data)
        print("%s: %d seeds in %s" % (target, len(seeds), out))


if __name__ == "__main__":
    main()
