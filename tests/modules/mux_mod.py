"""Test worker module for multiplexed workers, streams and host calls (tests/pool/mux.c,
streams.c, hostcalls.c and the stress program's max_inflight mode).

It also registers echo_mod's handlers (echo, sleep, raise_value, pid, count, exit, ...), so the
stress program can use one module for both modes.

Waits in these handlers are for events the test makes happen (every call of a rendezvous has
started; a gate file exists), each with a generous bound so that a broken pool fails the test
with a message instead of hanging it.
"""

import asyncio
import os
import threading
import time

import pypool

import echo_mod  # noqa: F401  (registers its handlers here too)

# Bound of every wait for an event in this module: "never", in a test.
_NEVER = 60.0

# --- rendezvous: a call returns only once `n` calls with the same key have started ----------

_arv = {}  # key -> [count, asyncio.Event]
_trv_lock = threading.Lock()
_trv = {}  # key -> threading.Barrier


def _rv_args(payload):
    """b"key:n[:token]" -> (key, n, token)."""
    parts = payload.decode().split(":")
    return parts[0], int(parts[1]), (parts[2] if len(parts) > 2 else "")


@pypool.handler
async def arendezvous(payload, ctx):
    """Async: waits until n calls of this key are in the handler at once, then returns token.
    Only a worker running these calls concurrently can answer any of them."""
    key, n, token = _rv_args(payload)
    entry = _arv.setdefault(key, [0, asyncio.Event()])
    entry[0] += 1
    if entry[0] >= n:
        entry[1].set()
    await asyncio.wait_for(entry[1].wait(), _NEVER)
    return token.encode()


@pypool.handler(threaded=True)
def trendezvous(payload, ctx):
    """Threaded: as arendezvous, with a threading.Barrier of n parties."""
    key, n, token = _rv_args(payload)
    with _trv_lock:
        barrier = _trv.setdefault(key, threading.Barrier(n))
    barrier.wait(_NEVER)
    return token.encode()


# --- sleeps, cancellation ------------------------------------------------------------------

_cancelled = set()  # keys of calls that saw their cancellation
_cancelled_lock = threading.Lock()


def _wait_cancelled(ctx):
    """Polls ctx.cancelled() until it turns True (True) or _NEVER seconds pass (False)."""
    end = time.monotonic() + _NEVER
    while not ctx.cancelled():
        if time.monotonic() > end:
            return False
        time.sleep(0.002)
    return True


def _note_cancelled(key):
    with _cancelled_lock:
        _cancelled.add(key)


@pypool.handler
async def asleep(payload, ctx):
    """Async: sleeps float(payload) seconds, returns b"slept"."""
    await asyncio.sleep(float(payload))
    return b"slept"


@pypool.handler
async def asleep_note(payload, ctx):
    """Async: b"key:seconds"; sleeps, and notes `key` if the sleep was cancelled."""
    key, seconds = payload.decode().split(":")
    try:
        await asyncio.sleep(float(seconds))
    except asyncio.CancelledError:
        _note_cancelled(key)
        raise
    return b"slept"


@pypool.handler(threaded=True)
def twait_cancel(payload, ctx):
    """Threaded: b"key"; polls ctx.cancelled() until it turns True, notes key, returns."""
    key = payload.decode()
    if not _wait_cancelled(ctx):
        return b"never cancelled"
    _note_cancelled(key)
    return b"cancelled"


@pypool.handler(threaded=True)
def host_after_cancel(payload, ctx):
    """Threaded: waits until its call is cancelled, then calls the host (b"upper"). Notes the
    outcome under payload's key: b"HostError:<code>" or b"ok:..." (the pool must answer a
    host call of a cancelled call, or this thread would wait for ever)."""
    key = payload.decode()
    if not _wait_cancelled(ctx):
        return b"never cancelled"
    outcome = _late_host_call(ctx, key)
    return outcome


@pypool.handler
def gen_then_host(payload, ctx):
    """Generator: yields b"one", says so on stdout, then calls the host (b"upper") and notes
    the outcome under payload's key like host_after_cancel."""
    key = payload.decode()
    yield b"one"
    print("gen_then_host %s: calling the host" % key, flush=True)
    outcome = _late_host_call(ctx, key)
    yield outcome


@pypool.handler
def was_cancelled(payload, ctx):
    """b"yes" if a call noted payload's key as cancelled, else b"no"."""
    with _cancelled_lock:
        return b"yes" if payload.decode() in _cancelled else b"no"


@pypool.handler(threaded=True)
def tignore(payload, ctx):
    """Threaded: sleeps float(payload) seconds ignoring ctx.cancelled()."""
    time.sleep(float(payload))
    return b"slept"


@pypool.handler
def block(payload, ctx):
    """Plain (sync): blocks the worker's handler thread float(payload) seconds."""
    time.sleep(float(payload))
    return b"slept"


# --- echoes (tokens) -----------------------------------------------------------------------


@pypool.handler
async def aecho(payload, ctx):
    """Async: yields to the loop once, then returns the payload."""
    await asyncio.sleep(0)
    return payload


@pypool.handler(threaded=True)
def techo(payload, ctx):
    """Threaded: returns the payload."""
    return payload


_gate_waiting = 0  # agate calls waiting now


def _gate_open(path):
    return os.path.exists(path)


@pypool.handler
async def agate(payload, ctx):
    """Async: b"gatepath|token"; waits until the file gatepath exists, returns token."""
    global _gate_waiting
    path, token = payload.split(b"|", 1)
    path = path.decode()
    end = time.monotonic() + _NEVER
    _gate_waiting += 1
    try:
        while not _gate_open(path):
            if time.monotonic() > end:
                raise TimeoutError("gate never opened")
            await asyncio.sleep(0.005)
    finally:
        _gate_waiting -= 1
    return token


@pypool.handler
def gate_waiting(payload, ctx):
    """How many agate calls wait in this worker now (ASCII)."""
    return str(_gate_waiting).encode()


@pypool.handler
async def acount(payload, ctx):
    """Async session counter that awaits between its read and its write: exact only if the
    calls of one session do not overlap."""
    n = ctx.session.get("n", 0)
    await asyncio.sleep(0.001)
    ctx.session["n"] = n + 1
    return str(n + 1).encode()


# --- streams -------------------------------------------------------------------------------


@pypool.handler
def gen_count(payload, ctx):
    """Generator: yields str(i) for i in range(int(payload))."""
    for i in range(int(payload)):
        yield str(i).encode()


@pypool.handler
async def agen_count(payload, ctx):
    """Async generator: as gen_count, awaiting between chunks."""
    for i in range(int(payload)):
        await asyncio.sleep(0)
        yield str(i).encode()


@pypool.handler
def gen_endless(payload, ctx):
    """Generator: yields str(i) forever (payload: optional chunk size in bytes, padded)."""
    size = int(payload) if payload else 0
    i = 0
    while True:
        chunk = str(i).encode()
        if size > len(chunk):
            chunk = chunk + b"x" * (size - len(chunk))
        yield chunk
        i += 1


@pypool.handler
async def agen_endless(payload, ctx):
    """Async generator: yields str(i) forever."""
    i = 0
    while True:
        await asyncio.sleep(0)
        yield str(i).encode()
        i += 1


@pypool.handler
def gen_fail(payload, ctx):
    """Generator: yields int(payload) chunks, then raises ValueError("boom after k")."""
    k = int(payload)
    for i in range(k):
        yield str(i).encode()
    raise ValueError("boom after %d" % k)


@pypool.handler
def gen_gated(payload, ctx):
    """Generator: yields b"first", waits until the file payload names exists, yields
    b"second", ends."""
    path = payload.decode()
    yield b"first"
    end = time.monotonic() + _NEVER
    while not _gate_open(path):
        if time.monotonic() > end:
            raise TimeoutError("gate never opened")
        time.sleep(0.005)
    yield b"second"


# --- host calls ----------------------------------------------------------------------------


def _host_args(payload):
    """b"name|data" -> (name, data)."""
    name, data = payload.split(b"|", 1)
    return name.decode(), data


def _host_outcome(call):
    try:
        return b"ok:" + call()
    except pypool.HostError as e:
        return ("HostError:%d" % e.code).encode()


def _late_host_call(ctx, key):
    """ctx.host("upper", b"late") from a call whose caller left; notes the outcome under key
    (was_cancelled finds it as key=<outcome>)."""
    outcome = _host_outcome(lambda: ctx.host("upper", b"late"))
    _note_cancelled(key + "=" + outcome.decode())
    return outcome


@pypool.handler
def host_plain(payload, ctx):
    """Plain: ctx.host(name, data) -> b"ok:<reply>" or b"HostError:<code>"."""
    name, data = _host_args(payload)
    return _host_outcome(lambda: ctx.host(name, data))


@pypool.handler(threaded=True)
def host_threaded(payload, ctx):
    """Threaded: as host_plain."""
    name, data = _host_args(payload)
    return _host_outcome(lambda: ctx.host(name, data))


@pypool.handler
async def host_async(payload, ctx):
    """Async: as host_plain, with await ctx.host_async(name, data)."""
    name, data = _host_args(payload)
    try:
        return b"ok:" + await ctx.host_async(name, data)
    except pypool.HostError as e:
        return ("HostError:%d" % e.code).encode()


@pypool.handler
def host_raise(payload, ctx):
    """Plain: ctx.host(name, data) with no try: a failing host call reaches the caller as
    PYPOOL_EREMOTE (HostError)."""
    name, data = _host_args(payload)
    return ctx.host(name, data)


@pypool.handler
async def host_rv_async(payload, ctx):
    """Async: b"key:n:token"; waits at a rendezvous of n calls, then asks the host "whoami" and
    returns b"token=<host's reply>"."""
    key, n, token = _rv_args(payload)
    entry = _arv.setdefault(key, [0, asyncio.Event()])
    entry[0] += 1
    if entry[0] >= n:
        entry[1].set()
    await asyncio.wait_for(entry[1].wait(), _NEVER)
    who = await ctx.host_async("whoami", token.encode())
    return token.encode() + b"=" + who


@pypool.handler(threaded=True)
def host_rv_threaded(payload, ctx):
    """Threaded: as host_rv_async, with a barrier and ctx.host."""
    key, n, token = _rv_args(payload)
    with _trv_lock:
        barrier = _trv.setdefault(key, threading.Barrier(n))
    barrier.wait(_NEVER)
    who = ctx.host("whoami", token.encode())
    return token.encode() + b"=" + who


@pypool.handler
def host_gen(payload, ctx):
    """Generator: yields ctx.host("upper", b"chunk<i>") for i in range(int(payload))."""
    for i in range(int(payload)):
        yield ctx.host("upper", b"chunk%d" % i)
