"""Test worker module whose `work` handler kills the worker on its 3rd call (status 5)."""

import os

import pypool

_calls = 0


@pypool.handler
def work(payload, ctx):
    global _calls
    _calls += 1
    if _calls == 3:
        os._exit(5)
    return str(_calls).encode()
