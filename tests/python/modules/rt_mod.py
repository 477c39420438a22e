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
def big(payload, ctx):
    return b"z" * int(payload)
