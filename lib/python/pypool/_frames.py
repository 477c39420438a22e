"""Length-prefixed frames on raw pipe fds: a 4-byte big-endian length N, then N bytes.

Reading goes through one BufferedReader with a large buffer, so a small request costs one
read(2) for header and body together (the body's read() is then served from the buffer), and a
big body is read straight into its final bytes object (no per-chunk concatenation). Writing
sends a small frame with one write(2) and uses writev(2) for big ones so a large payload is
never copied just to prepend its header.

Both ends run once per request, so their fast paths keep everything they touch in locals of a
closure (no attribute lookups) and push the rare cases (EOF, errors, short writes) out of line.
"""

import io
import os
import struct

HEADER = struct.Struct(">I")
HEADER_SIZE = HEADER.size

_READ_BUFFER = 1 << 16
# Below this, copying head+tail into one buffer is cheaper than a writev with two iovecs.
COALESCE_LIMIT = 1 << 14


class ProtocolError(Exception):
    """The channel is out of sync or broken; the worker must exit with status 3."""


class FrameReader:
    """Reads whole frames from fd; read_frame() returns None on a clean EOF between frames."""

    def __init__(self, fd, max_frame):
        self._max_frame = max_frame
        self._in = io.BufferedReader(io.FileIO(fd, "rb", closefd=False), _READ_BUFFER)
        # read_frame is a closure over locals rather than a method: it runs once per request.
        self.read_frame = _frame_reader(self._in.read, max_frame)


def _frame_reader(read, max_frame):
    unpack = HEADER.unpack

    def read_frame():
        head = read(4)
        if len(head) == 4:
            (size,) = unpack(head)
            if size <= max_frame:
                body = read(size)
                if len(body) == size:
                    return body
                raise ProtocolError("EOF inside a frame (%d of %d bytes)" % (len(body), size))
            raise ProtocolError("incoming frame of %d bytes exceeds the limit of %d bytes"
                                % (size, max_frame))
        if not head:
            return None
        raise ProtocolError("EOF inside a frame header (%d of 4 bytes)" % len(head))

    return read_frame


def fd_sender(fd):
    """send(head, tail=b"") writing one frame to fd; head already starts with the 4-byte length.

    The hot caller passes a small reply as one complete frame in head: one write(2), one check.
    """
    write = os.write

    def send(head, tail=b""):
        if not tail:
            done = write(fd, head)
            if done != len(head):
                _write_all(fd, memoryview(head)[done:])
            return
        write_frame(fd, head, tail)

    return send


def write_frame(fd, head, tail=b""):
    """Write head + tail completely; head already starts with the 4-byte length."""
    if len(tail) <= COALESCE_LIMIT:
        data = head + tail if tail else head
        done = os.write(fd, data)
        if done != len(data):
            _write_all(fd, memoryview(data)[done:])
        return
    done = os.writev(fd, (head, tail))
    if done < len(head):
        _write_all(fd, memoryview(head)[done:])
        done = len(head)
    rest = done - len(head)
    if rest < len(tail):
        _write_all(fd, memoryview(tail)[rest:])


def _write_all(fd, view):
    # A pipe write can be cut short (signal during a big write); keep going from where it stopped.
    while view:
        done = os.write(fd, view)
        view = view[done:]
