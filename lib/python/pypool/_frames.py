"""Length-prefixed frames on raw pipe fds: a 4-byte big-endian length N, then N bytes.

Reading goes through one BufferedReader with a large buffer, so a small request costs one
read(2) for header and body together, and a big body is read straight into its final bytes
object (no per-chunk concatenation). Writing coalesces small frames into one write(2) and uses
writev(2) for big ones so a large payload is never copied just to prepend its header.
"""

import io
import os
import struct

HEADER = struct.Struct(">I")
HEADER_SIZE = HEADER.size

_READ_BUFFER = 1 << 16
# Below this, copying head+tail into one buffer is cheaper than a writev with two iovecs.
_COALESCE_LIMIT = 1 << 14


class ProtocolError(Exception):
    """The channel is out of sync or broken; the worker must exit with status 3."""


class FrameReader:
    """Reads whole frames from fd; returns None on a clean EOF between frames."""

    def __init__(self, fd, max_frame):
        self._max_frame = max_frame
        self._in = io.BufferedReader(io.FileIO(fd, "rb", closefd=False), _READ_BUFFER)

    def read_frame(self):
        head = self._in.read(HEADER_SIZE)
        if len(head) != HEADER_SIZE:
            if not head:
                return None
            raise ProtocolError("EOF inside a frame header (%d of 4 bytes)" % len(head))
        (size,) = HEADER.unpack(head)
        if size > self._max_frame:
            raise ProtocolError("incoming frame of %d bytes exceeds the limit of %d bytes"
                                % (size, self._max_frame))
        body = self._in.read(size)
        if len(body) != size:
            raise ProtocolError("EOF inside a frame (%d of %d bytes)" % (len(body), size))
        return body


def write_frame(fd, head, tail=b""):
    """Write head + tail completely; head already starts with the 4-byte length."""
    if len(tail) <= _COALESCE_LIMIT:
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
