"""Worker module for tests/python: every handler kind (plain, threaded, async, generator,
async generator), host calls, cancellation and sessions, in classic and multiplexed mode.

Handlers that must wait for the test wait on events the test makes happen (a gate file it
creates), each with a generous bound, never on a guessed duration.
"""

import asyncio
import os
import threading
import time

import pypool

_NEVER = 60.0  # bound of every wait for an event: "never", in a test


def _wait_for_file(path):
    end = time.monotonic() + _NEVER
    while not os.path.exists(path):
        if time.monotonic() > end:
            raise TimeoutError("gate %s never opened" % path)
        time.sleep(0.002)


def _mark(path):
    """Creates path: tells the test that a handler got somewhere."""
    with open(path, "w"):
        pass


# --- plain, threaded, async ------------------------------------------------------------------

@pypool.handler
def echo(payload, ctx):
    return payload


@pypool.handler
def pid(payload, ctx):
    return str(os.getpid()).encode()


@pypool.handler
def gate(payload, ctx):
    """Plain: b"started|gate": marks `started`, then blocks until the file `gate` exists."""
    started, path = payload.decode().split("|")
    _mark(started)
    _wait_for_file(path)
    return b"opened"


@pypool.handler
async def asleep(payload, ctx):
    await asyncio.sleep(float(payload))
    return b"slept"


@pypool.handler
async def aecho(payload, ctx):
    await asyncio.sleep(0)
    return payload


@pypool.handler
async def afail(payload, ctx):
    await asyncio.sleep(0)
    raise ValueError("async boom")


@pypool.handler
async def await_cancel(payload, ctx):
    """Async: marks the file named by payload, then sleeps until cancelled."""
    _mark(payload.decode())
    await asyncio.sleep(_NEVER)
    return b"never cancelled"


@pypool.handler(threaded=True)
def tsleep(payload, ctx):
    time.sleep(float(payload))
    return threading.current_thread().name.encode()


@pypool.handler(threaded=True)
def twait_cancel(payload, ctx):
    """Threaded: marks the file named by payload, then polls ctx.cancelled() until True."""
    _mark(payload.decode())
    end = time.monotonic() + _NEVER
    while not ctx.cancelled():
        if time.monotonic() > end:
            return b"never cancelled"
        time.sleep(0.002)
    return b"saw cancel"


_loops = set()


@pypool.handler
async def loop_id(payload, ctx):
    """Async: how many distinct event loops have run this handler so far."""
    _loops.add(id(asyncio.get_running_loop()))
    return str(len(_loops)).encode()


@pypool.handler
async def acount(payload, ctx):
    """Async session counter that awaits between its read and its write: exact only if the
    calls of one session never overlap."""
    n = ctx.session.get("n", 0)
    await asyncio.sleep(0.001)
    ctx.session["n"] = n + 1
    return str(n + 1).encode()


# --- streams ---------------------------------------------------------------------------------

@pypool.handler
def gen_count(payload, ctx):
    for i in range(int(payload)):
        yield b"%d" % i


@pypool.handler
async def agen_count(payload, ctx):
    for i in range(int(payload)):
        await asyncio.sleep(0)
        yield b"%d" % i


@pypool.handler
def gen_fail(payload, ctx):
    for i in range(int(payload)):
        yield b"%d" % i
    raise ValueError("boom after %s" % payload.decode())


@pypool.handler
def gen_types(payload, ctx):
    yield "str"
    yield None
    yield bytearray(b"ba")
    yield memoryview(b"mv")
    yield 42  # not a payload: the stream ends with a TypeError


_closed = []  # streams whose generator was closed (their finally ran)


@pypool.handler
def gen_endless(payload, ctx):
    try:
        i = 0
        while True:
            yield b"%d" % i
            i += 1
    finally:
        _closed.append("gen_endless")


@pypool.handler
async def agen_endless(payload, ctx):
    try:
        i = 0
        while True:
            await asyncio.sleep(0)
            yield b"%d" % i
            i += 1
    finally:
        _closed.append("agen_endless")


@pypool.handler(threaded=True)
def tgen_endless(payload, ctx):
    try:
        i = 0
        while True:
            yield b"%d" % i
            i += 1
            time.sleep(0.001)
    finally:
        _closed.append("tgen_endless")


@pypool.handler
def closed(payload, ctx):
    return ",".join(_closed).encode()


# --- host calls ------------------------------------------------------------------------------

def _outcome(call):
    try:
        return b"ok:" + call()
    except pypool.HostError as e:
        return ("HostError:%d:%s" % (e.code, e.message)).encode()


@pypool.handler
def host_plain(payload, ctx):
    return _outcome(lambda: ctx.host("upper", payload))


@pypool.handler(threaded=True)
def host_threaded(payload, ctx):
    return _outcome(lambda: ctx.host("upper", payload))


@pypool.handler
async def host_async(payload, ctx):
    try:
        return b"ok:" + await ctx.host_async("upper", payload)
    except pypool.HostError as e:
        return ("HostError:%d:%s" % (e.code, e.message)).encode()


@pypool.handler
def host_raise(payload, ctx):
    return ctx.host("fail", payload)


@pypool.handler
def host_twice_cancel(payload, ctx):
    """Plain: a host call, then reports whether the call was cancelled meanwhile."""
    reply = ctx.host("upper", payload)
    return reply + (b":cancelled" if ctx.cancelled() else b":running")


@pypool.handler
def host_gen(payload, ctx):
    for i in range(int(payload)):
        yield ctx.host("upper", b"chunk%d" % i)
