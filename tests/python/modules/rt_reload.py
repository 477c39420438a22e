"""Worker module for tests/python: registers handlers and is re-imported by `reload_me`."""

import importlib
import sys

import pypool

GENERATION = getattr(sys.modules.get(__name__), "GENERATION", 0) + 1


@pypool.handler
def generation(payload, ctx):
    return str(GENERATION).encode()


# A lambda too: every lambda has the qualname "<lambda>", so only its place tells it apart.
pypool.handler("lambda_generation")(lambda payload, ctx: str(GENERATION).encode())


@pypool.handler
def reload_me(payload, ctx):
    """Re-imports this module: the same handlers register again and must not raise."""
    importlib.reload(sys.modules[__name__])
    return b"reloaded"
