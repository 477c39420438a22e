"""Length-prefixed frames on raw pipe fds: a 4-byte big-endian length N, then N bytes.

Reading goes through one BufferedReader with a large buffer, so a small request costs one
read(2) for header and body together (the body's read() is then served from the buffer). A big
body (BIG_FRAME bytes or more) is read into one bytearray that the reader keeps and reuses,
not into a fresh bytes per frame: glibc serves blocks above its mmap threshold (which adapts up
to 32 MiB, no further) from fresh mmaps and unmaps them on free, and page-faulting a big frame
in again on every call costs more than the transfer (a 48 MiB echo here: 12k faults and ~0.35 s
per fresh copy). Writing sends a small frame with one write(2) and uses writev(2) for big ones
so a large payload is never copied just to prepend its header.

Both ends run once per request, so their fast paths keep everything they touch in locals of a
closure (no attribute lookups) and push the rare cases (EOF, errors, short writes, big frames)
out of line.

A worker holding several calls at once (max_inflight > 1) cannot block inside read_frame: it
also waits for its own threads. It polls the request pipe together with a wake-up pipe and feeds
a FrameBuffer with what the request pipe holds, taking whole frames out of it.
"""

import io
import os
import select
import struct

HEADER = struct.Struct(">I")
HEADER_SIZE = HEADER.size

_READ_BUFFER = 1 << 16
# Frames of at least this size are read into the reader's reused buffer (and parsed by
# _wire's hand parser, which starts at the same size). Below it, a fresh bytes per frame is
# cheap: it comes from memory the process already has.
BIG_FRAME = 1 << 18
# The big-frame buffer is given back (or cut down to the frame at hand) after this many frames
# in a row that did not need more than half of it, so a worker that once saw a 50 MiB payload
# does not pin 50 MiB for ever. Same run length as the C reader's (lib/frame.c).
SHRINK_AFTER = 64
# Below this, copying head+tail into one buffer is cheaper than a writev with two iovecs.
COALESCE_LIMIT = 1 << 14


class ProtocolError(Exception):
    """The channel is out of sync or broken; the worker must exit with status 3."""


class FrameReader:
    """Reads whole frames from fd; read_frame() returns None on a clean EOF between frames.

    A frame body comes back as bytes, except a big one (>= BIG_FRAME bytes): that one is a
    memoryview into the reader's reused buffer, valid only until the next read_frame(). The
    caller copies out what it keeps (the worker: the payload, once, as the handler's bytes).
    """

    def __init__(self, fd, max_frame):
        self._max_frame = max_frame
        self.raw = WaitingFileIO(fd)
        self._in = io.BufferedReader(self.raw, _READ_BUFFER)
        # read_frame is a closure over locals rather than a method: it runs once per request.
        self.read_frame, self._big_buffer_size = _frame_reader(self._in, self.raw, max_frame)


class WaitingFileIO(io.FileIO):
    """The request pipe as the buffered reader's raw stream: wait in poll(2), then read(2).

    Why not a plain blocking read: a worker asleep in read(2) when SIGKILL arrives still takes a
    request written just after the kill (the woken read finds data before the signal is acted
    on), and the pool then cannot tell that the request was never worked on. Asleep in poll(2)
    instead, a dying worker takes nothing: the pool sees the request unread and sends it again.
    The same place is where SIGTERM can end the worker without losing a byte: `waiting` with
    nothing pending (`got == used`, every byte taken belongs to a frame handed out).

    The buffered reader calls readinto only when its buffer cannot serve a read, so the poll
    costs one system call per request that is not already buffered: the price of a worker that,
    SIGKILLed, never takes a request with it.
    """

    def __init__(self, fd):
        super().__init__(fd, "rb", closefd=False)
        self.got = 0  # bytes taken from the fd
        self.used = 0  # bytes of the frames handed out by read_frame
        self.waiting = False
        self.on_idle = None  # called before waiting with nothing pending (SIGTERM's exit)
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        self._poll = poller.poll

    def pending(self):
        """Bytes taken from the fd that are not part of a frame handed out yet."""
        return self.got - self.used

    def frame_ready(self):
        """True when read_frame would find something without waiting for the pool: bytes
        already taken (a frame, whole or begun: the pool writes frames whole), or a readable
        fd (data or EOF). Never blocks."""
        return self.got != self.used or bool(self._poll(0))

    def readinto(self, buffer):
        # `waiting` goes up before on_idle looks for a SIGTERM, not after: a SIGTERM landing
        # between the two would otherwise find the worker neither waiting nor checked again,
        # and an idle worker would sleep in poll until the next request instead of exiting.
        # This way the handler either sees `waiting` (and exits itself) or on_idle sees it.
        self.waiting = True
        if self.got == self.used and self.on_idle is not None:
            self.on_idle()
        self._poll()
        self.waiting = False
        n = io.FileIO.readinto(self, buffer)
        if n:
            self.got += n
        return n


def _frame_reader(stream, raw, max_frame):
    """(read_frame, big_buffer_size): the reading closure and a probe of its buffer (tests)."""
    read = stream.read
    readinto = stream.readinto
    unpack = HEADER.unpack
    # Below this a frame is small: it fits the frame limit and is read as bytes. One test on
    # the hot path covers both (a tiny limit makes every frame that fits a small one).
    small_limit = min(BIG_FRAME, max_frame + 1)
    # The big-frame buffer (None until a big frame comes), and how many more frames may go by
    # without needing more than half of it before it is given back.
    big = None
    keep_for = 0

    def read_frame():
        nonlocal big, keep_for
        head = read(4)
        if len(head) == 4:
            (size,) = unpack(head)
            if size < small_limit:
                body = read(size)
                if len(body) == size:
                    raw.used += size + 4
                    if keep_for:  # 0 whenever no big buffer is held: one test per small frame
                        keep_for -= 1
                        if not keep_for:
                            big = None
                    return body
                raise ProtocolError("EOF inside a frame (%d of %d bytes)" % (len(body), size))
            if size <= max_frame:
                return read_big(size)
            raise ProtocolError("incoming frame of %d bytes exceeds the limit of %d bytes"
                                % (size, max_frame))
        if not head:
            return None
        raise ProtocolError("EOF inside a frame header (%d of 4 bytes)" % len(head))

    def read_big(size):
        nonlocal big, keep_for
        if big is None or size > len(big):
            # Exactly the frame's size: frames of one size (the usual case) then never grow it
            # again, and no headroom sits in RSS. The old buffer goes first so that the two
            # never live at once (a view the caller still holds would keep it, harmlessly).
            big = None
            big = bytearray(size)
            keep_for = SHRINK_AFTER
        elif size > len(big) >> 1:
            keep_for = SHRINK_AFTER
        else:
            keep_for -= 1
            if keep_for <= 0:  # a run of much smaller big frames: cut the buffer to this one
                big = None
                big = bytearray(size)
                keep_for = SHRINK_AFTER
        # Never resized in place (a new bytearray instead), so views handed out earlier stay
        # valid: they see old bytes or later frames' bytes, never freed memory.
        body = memoryview(big)[:size]
        # BufferedReader.readinto copies what it has buffered, then reads the rest straight
        # into body, looping until it is full or EOF.
        got = readinto(body)
        if got == size:
            raw.used += size + 4
            return body
        raise ProtocolError("EOF inside a frame (%d of %d bytes)" % (got, size))

    def big_buffer_size():
        return 0 if big is None else len(big)

    return read_frame, big_buffer_size


class FrameBuffer:
    """Frames out of a pipe read as data comes, for a reader that waits in its own poll.

    The owner polls fd (with whatever else it waits for), calls fill() once fd is readable
    (one read(2), never a wait), then takes whole frames with next_frame() until it returns
    None. Small frames come back as bytes. A big frame (BIG_FRAME bytes or more) is read
    straight into a bytearray of its own size and handed out as a memoryview of it: one
    buffer per big frame (this reader keeps none between frames; the single-call reader's
    reused buffer serves the big-payload case).
    """

    def __init__(self, fd, max_frame):
        self.fd = fd
        self._fd = fd
        self._max_frame = max_frame
        self._data = b""    # bytes taken from fd, handed out up to _pos
        self._pos = 0
        self._big = None    # memoryview of the big frame being read, and how much of it is in
        self._big_got = 0

    def pending(self):
        """Bytes taken from the fd that are not part of a frame handed out yet."""
        return len(self._data) - self._pos + self._big_got

    def fill(self):
        """One read(2) of what fd holds; False at EOF between frames (ProtocolError inside one).

        Call it only when fd is readable: it does not wait (or not for long: a readable pipe
        has data or is at EOF)."""
        if self._big is not None:
            got = os.readv(self._fd, [self._big[self._big_got:]])
            if not got:
                raise ProtocolError("EOF inside a frame (%d of %d bytes)"
                                    % (self._big_got, len(self._big)))
            self._big_got += got
            return True
        chunk = os.read(self._fd, _READ_BUFFER)
        if not chunk:
            if self.pending():
                raise ProtocolError("EOF inside a frame (%d bytes of it read)" % self.pending())
            return False
        pos = self._pos
        self._data = self._data[pos:] + chunk if pos < len(self._data) else chunk
        self._pos = 0
        return True

    def next_frame(self):
        """The next whole frame's body, or None until more data is in (fill)."""
        big = self._big
        if big is not None:
            if self._big_got < len(big):
                return None
            self._big = None
            self._big_got = 0
            return big
        data = self._data
        pos = self._pos
        if len(data) - pos < 4:
            return None
        (size,) = HEADER.unpack_from(data, pos)
        if size > self._max_frame:
            raise ProtocolError("incoming frame of %d bytes exceeds the limit of %d bytes"
                                % (size, self._max_frame))
        end = pos + 4 + size
        if end <= len(data):
            self._pos = end
            return data[pos + 4:end]
        if size >= BIG_FRAME:
            self._start_big(size, data[pos + 4:])
        return None

    def _start_big(self, size, begun):
        # The rest of the frame is read into its own buffer: no growing concatenations.
        self._big = memoryview(bytearray(size))
        self._big[:len(begun)] = begun
        self._big_got = len(begun)
        self._data = b""
        self._pos = 0


def fd_sender(fd, lock=None):
    """send(head, tail=b"") writing one frame to fd; head already starts with the 4-byte length.

    The hot caller passes a small reply as one complete frame in head: one write(2), one check.
    With a lock (several threads reply), each frame is written whole while holding it, so two
    frames never interleave.
    """
    write = os.write

    def send(head, tail=b""):
        if not tail:
            done = write(fd, head)
            if done != len(head):
                _write_all(fd, memoryview(head)[done:])
            return
        write_frame(fd, head, tail)

    if lock is None:
        return send

    def send_locked(head, tail=b""):
        with lock:
            send(head, tail)

    return send_locked


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
