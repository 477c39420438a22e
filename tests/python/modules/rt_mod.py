"""Worker module for tests/python: one handler per runtime behaviour under test."""

import json
import os
import sys
import time

import pypool


@pypool.handler
def echo(payload, ctx):
    return payload


@pypool.handler("explicit-name")
def _anything(payload, ctx):
    return b"explicit"


@pypool.handler
def fail(payload, ctx):
    raise ValueError("bad value: " + payload.decode())


@pypool.handler
def give_str(payload, ctx):
    return "h\u00e9llo"


@pypool.handler
def give_none(payload, ctx):
    return None


@pypool.handler
def give_int(payload, ctx):
    return 42


@pypool.handler
def ctx_info(payload, ctx):
    return json.dumps({"request_id": ctx.request_id, "method": ctx.method,
                       "deadline_ms": ctx.deadline_ms, "remaining": ctx.remaining(),
                       "session_id": ctx.session_id,
                       "has_session": ctx.session is not None}).encode()


@pypool.handler
def count(payload, ctx):
    ctx.session["n"] = ctx.session.get("n", 0) + 1
    return str(ctx.session["n"]).encode()


@pypool.handler
def slow(payload, ctx):
    print("slow: started", flush=True)  # tests wait for this line, not for a guessed time
    time.sleep(float(payload))
    return b"done"


@pypool.handler
def say(payload, ctx):
    print("said:", payload.decode())
    sys.stderr.write("to stderr: %s\n" % payload.decode())
    return b"said"


@pypool.handler
def hard_exit(payload, ctx):
    os._exit(int(payload))


@pypool.handler
def sys_exit(payload, ctx):
    sys.exit(int(payload))


@pypool.handler
def interrupt(payload, ctx):
    raise KeyboardInterrupt("from a handler")


class Abort(BaseException):
    """Neither an Exception nor one of the interpreter's own exits."""


@pypool.handler
def base_exception(payload, ctx):
    raise Abort("from a handler")


@pypool.handler
def big(payload, ctx):
    return b"z" * int(payload)


# Payloads handed to `keep`, kept alive across calls: `kept` reports what they hold now, so a
# test can check that later requests never write into an earlier handler's payload.
_KEPT = []


@pypool.handler
def keep(payload, ctx):
    _KEPT.append(payload)
    return str(len(_KEPT)).encode()


@pypool.handler
def kept(payload, ctx):
    import hashlib
    return json.dumps([[type(p).__name__, len(p), hashlib.sha256(p).hexdigest()]
                       for p in _KEPT]).encode()


@pypool.handler
def startup_facts(payload, ctx):
    """Which costly modules the worker loaded, and its parent-death signal (before ctypes)."""
    loaded = sorted(m for m in ("traceback", "ctypes", "_ctypes", "runpy", "importlib.util")
                    if m in sys.modules)
    import ctypes
    sig = ctypes.c_int(-1)
    ctypes.CDLL(None).prctl(2, ctypes.byref(sig), 0, 0, 0)  # PR_GET_PDEATHSIG
    return json.dumps({"loaded": loaded, "pdeathsig": sig.value}).encode()
