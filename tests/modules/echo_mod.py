"""Test worker module for the C suites: echo, sleeps, errors, sessions, crashes, log noise.

Every handler here exists to provoke one behaviour of the pool (see each docstring).
"""

import os
import signal
import subprocess
import sys
import time

import pypool

# rss_grow keeps its allocations here so the worker's RSS really grows.
_HOARD = []


@pypool.handler
def echo(payload, ctx):
    """Returns the payload unchanged."""
    return payload


@pypool.handler
def sleep(payload, ctx):
    """Sleeps float(payload) seconds: a slow call for timeouts and busy workers."""
    time.sleep(float(payload))
    return b"slept"


@pypool.handler
def raise_value(payload, ctx):
    """Raises ValueError("bad"): PYPOOL_EREMOTE with a traceback."""
    raise ValueError("bad")


@pypool.handler
def pid(payload, ctx):
    """The serving worker's pid as ASCII."""
    return str(os.getpid()).encode()


@pypool.handler
def count(payload, ctx):
    """Per-session counter (the DESIGN.md example)."""
    ctx.session["n"] = ctx.session.get("n", 0) + 1
    return str(ctx.session["n"]).encode()


@pypool.handler
def session_get(payload, ctx):
    """The session's stored value, or b"nosession" outside a session."""
    if ctx.session is None:
        return b"nosession"
    return ctx.session.get("v", "").encode()


@pypool.handler
def session_set(payload, ctx):
    """Stores the payload (as str) in the session."""
    ctx.session["v"] = payload.decode()
    return b"ok"


@pypool.handler
def exit(payload, ctx):
    """Kills the worker at once with status int(payload) (default 7): a crash mid-call."""
    os._exit(int(payload or b"7"))


@pypool.handler
def print_lots(payload, ctx):
    """Writes about int(payload) bytes of lines to stdout and as many to stderr."""
    total = int(payload)
    _write_lines(sys.stdout, "out", total)
    _write_lines(sys.stderr, "err", total)
    return b"ok"


def _write_lines(stream, tag, total):
    left = total
    line_no = 0
    while left > 0:
        line = ("%s line %d %s" % (tag, line_no, "x" * 60))[: left - 1] + "\n"
        stream.write(line)
        left -= len(line)
        line_no += 1
    stream.flush()


@pypool.handler
def spawn_sleep(payload, ctx):
    """Starts `sleep 1000` (a grandchild the pool must kill with the group); returns its pid."""
    child = subprocess.Popen(["sleep", "1000"])
    return str(child.pid).encode()


@pypool.handler
def burn(payload, ctx):
    """Busy CPU loop for float(payload) seconds (a call that ignores its deadline)."""
    end = time.monotonic() + float(payload)
    spins = 0
    while time.monotonic() < end:
        spins += 1
    return str(spins).encode()


@pypool.handler
def garbage(payload, ctx):
    """Writes a non-protobuf frame to the response fd, then a normal reply: protocol error."""
    os.write(4, b"\x00\x00\x00\x12hello-not-protobuf")
    return b"x"


@pypool.handler
def ignore_sigterm(payload, ctx):
    """Makes SIGTERM ineffective, so shutdown has to escalate to SIGKILL."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return b"ok"


@pypool.handler
def stop_ponging(payload, ctx):
    """After replying, the worker's main thread wedges in a signal handler: pings go unanswered."""
    def wedge(signum, frame):
        while True:
            pass

    signal.signal(signal.SIGALRM, wedge)
    signal.setitimer(signal.ITIMER_REAL, 0.05)
    return b"ok"


@pypool.handler
def rss_grow(payload, ctx):
    """Allocates int(payload) MiB (touched, so resident) and keeps it."""
    mib = int(payload)
    _HOARD.append(bytearray(b"\x01" * (mib << 20)))
    return b"ok"
