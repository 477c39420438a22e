"""floor_worker.py - the physical floor of pypool-bench: the least a Python child can do.

Speaks pypool's wire protocol without its runtime: reads 4-byte big-endian length-prefixed
Envelope frames from fd 3 (through one large read buffer, so a small frame costs one read(2)),
decodes them with Envelope.FromString, calls the bench_work function named by Request.method
and answers with one Response frame on fd 4: the few prefix bytes are encoded by hand so the
payload is never copied to prepend them (one os.write for small replies, os.writev for big
ones). No Hello, sessions, deadlines, logging or checks beyond staying in sync. EOF on fd 3 or
a Shutdown ends it. Needs pypool_pb2 (generated at build time) and bench_work on PYTHONPATH.

With `--channels K` (the relay, bench/relay.c) it has K reply pipes, fds 4 .. 4 + K - 1, and
answers request id on fd 4 + id % K: the relay gives every client thread its own pipe.

Big requests (>= 256 KiB) are read into one reused buffer and their three fields are sliced out
by hand: the protobuf parser would copy the payload twice into fresh memory, and fresh memory
costs page faults that dwarf the transport (milliseconds per MiB on these VMs). The handler
still gets the payload as bytes (one copy), as a pypool handler does.
"""
import io
import os
import struct
import sys

import pypool_pb2

import bench_work

REQ_FD = 3
RESP_FD = 4
HEADER = struct.Struct(">I")
READ_BUFFER = 1 << 16
COALESCE_LIMIT = 1 << 14
TAG_ENVELOPE_RESPONSE = 0x1A  # Envelope.response: field 3, length-delimited
TAG_RESPONSE_ID = 0x08  # Response.id: field 1, varint
TAG_RESPONSE_PAYLOAD = 0x1A  # Response.payload: field 3, length-delimited


def varint(v):
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


BIG_FRAME = 1 << 18


def read_varint(view, pos):
    value = shift = 0
    while True:
        byte = view[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


class BigRequest:
    """Request{id, method, payload} sliced out of Envelope{request} by hand (see above)."""

    def __init__(self, view):
        tag, pos = view[0], 1
        if tag != 0x12:  # Envelope.request
            raise ValueError("not a request envelope")
        size, pos = read_varint(view, pos)
        self.id, self.method, self.payload = 0, "", b""
        end = pos + size
        while pos < end:
            key, pos = read_varint(view, pos)
            if key & 7 == 0:
                value, pos = read_varint(view, pos)
                if key >> 3 == 1:
                    self.id = value
                continue
            length, pos = read_varint(view, pos)
            if key >> 3 == 2:
                self.method = bytes(view[pos:pos + length]).decode()
            elif key >> 3 == 3:
                self.payload = bytes(view[pos:pos + length])
            pos += length


class BigReader:
    """Reads big frame bodies into one reused buffer (no fresh memory per frame)."""

    def __init__(self, reader):
        self.reader = reader
        self.buf = bytearray()

    def read(self, size):
        if len(self.buf) < size:
            self.buf = bytearray(size)
        view = memoryview(self.buf)[:size]
        got = 0
        while got < size:
            n = self.reader.readinto(view[got:])
            if not n:
                return None
            got += n
        return view


CHANNELS = 1  # reply pipes (--channels)


def write_all(view, fd=RESP_FD):
    while view:
        view = view[os.write(fd, view):]


def send_response(req_id, payload):
    fd = RESP_FD + req_id % CHANNELS
    inner = 1 + len(varint(req_id)) + 1 + len(varint(len(payload))) + len(payload)
    body = bytes([TAG_ENVELOPE_RESPONSE]) + varint(inner) + bytes([TAG_RESPONSE_ID]) + \
        varint(req_id) + bytes([TAG_RESPONSE_PAYLOAD]) + varint(len(payload))
    head = HEADER.pack(len(body) + len(payload)) + body
    if len(payload) <= COALESCE_LIMIT:
        write_all(memoryview(head + payload), fd)
        return
    done = os.writev(fd, (head, payload))
    if done < len(head):
        write_all(memoryview(head)[done:], fd)
        done = len(head)
    write_all(memoryview(payload)[done - len(head):], fd)


def send_envelope(env, fd=RESP_FD):
    body = env.SerializeToString()
    write_all(memoryview(HEADER.pack(len(body)) + body), fd)


def serve(req):
    fn = bench_work.METHODS.get(req.method)
    if fn is not None:
        send_response(req.id, fn(req.payload))
        return
    env = pypool_pb2.Envelope()
    env.response.id = req.id
    env.response.error.type = "NoSuchMethod"
    env.response.error.message = req.method
    send_envelope(env, RESP_FD + req.id % CHANNELS)


def main():
    global CHANNELS
    if len(sys.argv) == 3 and sys.argv[1] == "--channels":
        CHANNELS = int(sys.argv[2])
    reader = io.BufferedReader(io.FileIO(REQ_FD, "rb", closefd=False), READ_BUFFER)
    big = BigReader(reader)
    from_string = pypool_pb2.Envelope.FromString
    while True:
        header = reader.read(4)
        if len(header) != 4:
            return 0
        size = HEADER.unpack(header)[0]
        if size >= BIG_FRAME:
            view = big.read(size)
            if view is None:
                return 0
            serve(BigRequest(view))
            continue
        body = reader.read(size)
        if len(body) != size:
            return 0
        env = from_string(body)
        kind = env.WhichOneof("msg")
        if kind == "request":
            serve(env.request)
        elif kind == "ping":
            pong = pypool_pb2.Envelope()
            pong.pong.id = env.ping.id
            send_envelope(pong)
        elif kind == "shutdown":
            return 0


if __name__ == "__main__":
    sys.exit(main())
