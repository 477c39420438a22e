"""Test worker module for tests/pool/regress.c: handlers that provoke the defects that outside
testing found (see each docstring).

REGRESS_HOLD (environment): while the file it names exists, importing this module blocks, so a
replacement worker cannot become ready until the test lets it.
"""

import importlib
import os
import time

import pypool

_HOLD = os.environ.get("REGRESS_HOLD")
_HOLD_LIMIT_S = 120  # a test that forgot to release the hold still ends
if _HOLD:
    _until = time.monotonic() + _HOLD_LIMIT_S
    while os.path.exists(_HOLD) and time.monotonic() < _until:
        time.sleep(0.005)


@pypool.handler
def echo(payload, ctx):
    """Returns the payload unchanged."""
    return payload


@pypool.handler
def try_import(payload, ctx):
    """Imports the module named by the payload: b"imported" or the exception's type name."""
    try:
        importlib.import_module(payload.decode())
    except Exception as exc:  # the type is the answer
        return type(exc).__name__.encode()
    return b"imported"


@pypool.handler
def sys_path(payload, ctx):
    """The worker's sys.path, one entry per line ('' shown as <cwd>)."""
    import sys
    return "\n".join(e if e else "<cwd>" for e in sys.path).encode()


@pypool.handler
def wrong_pong_after(payload, ctx):
    """From now on this worker answers a ping only once the file named by the payload exists,
    and then with the wrong id: the pool must treat it as a protocol error."""
    from pypool import _wire

    gate = payload.decode()
    right = _wire.pong_frame

    def wrong(ping_id):
        until = time.monotonic() + _HOLD_LIMIT_S
        while not os.path.exists(gate) and time.monotonic() < until:
            time.sleep(0.005)
        return right(ping_id + 1)

    _wire.pong_frame = wrong
    return b"armed"
