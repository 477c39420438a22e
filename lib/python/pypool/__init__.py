"""pypool: the Python side of a pool of worker processes driven by a C program.

A user module registers handlers; the worker runtime (``python -m pypool --module NAME``)
imports that module and serves the pool's requests with them::

    import pypool

    @pypool.handler                 # registered under the function's name
    def echo(payload: bytes, ctx) -> bytes:
        return payload

    @pypool.handler("count")        # or under an explicit name
    def count(payload, ctx):
        ctx.session["n"] = ctx.session.get("n", 0) + 1
        return str(ctx.session["n"]).encode()

This module stays cheap to import on purpose: user modules import it, and unit tests of
handlers should not pay for the wire code. The protobuf code and the serving loop live in
private modules that only the worker entry point loads.
"""

import time as _time

__all__ = ["handler", "Context"]

# Handler name -> callable(payload: bytes, ctx: Context). One registry per process: the worker
# imports exactly one user module, which may import others that register more handlers.
_registry = {}


def _register(name, fn):
    if not isinstance(name, str) or not name:
        raise ValueError("pypool handler name must be a non-empty str, got %r" % (name,))
    if not callable(fn):
        raise TypeError("pypool handler %r is not callable: %r" % (name, fn))
    old = _registry.get(name)
    if old is not None and old is not fn and not _same_definition(old, fn):
        raise ValueError("pypool handler %r is already registered (by %r)" % (name, old))
    _registry[name] = fn
    return fn


def _same_definition(old, new):
    """True when `new` is `old` defined again: the module was re-imported (importlib.reload)
    or the function redefined under its own name. Two different functions, or two lambdas,
    claiming one name are a mistake and still raise."""
    module = getattr(new, "__module__", None)
    qualname = getattr(new, "__qualname__", None)
    if (module is None or qualname is None or module != getattr(old, "__module__", None)
            or qualname != getattr(old, "__qualname__", None)):
        return False
    if "<lambda>" not in qualname:
        return True
    # Every lambda of a scope has one qualname: the same lambda is the one written at the same
    # place (a reload of an unedited module runs the very same line again).
    place = _source_place(new)
    return place is not None and place == _source_place(old)


def _source_place(fn):
    code = getattr(fn, "__code__", None)
    return None if code is None else (code.co_filename, code.co_firstlineno)


def handler(name_or_fn=None):
    """Register a handler: ``@pypool.handler``, ``@pypool.handler()`` or ``@pypool.handler("name")``.

    The function is returned unchanged, so it can still be called directly (e.g. by tests).
    Registering a name twice raises ValueError, unless it is the same function defined again
    (a module re-imported with importlib.reload): the later definition then replaces it.
    """
    if callable(name_or_fn):
        return _register(name_or_fn.__name__, name_or_fn)
    if name_or_fn is None:
        return lambda fn: _register(fn.__name__, fn)
    if isinstance(name_or_fn, str):
        return lambda fn: _register(name_or_fn, fn)
    raise TypeError("pypool.handler expects a function or a name, got %r" % (name_or_fn,))


def _handler_names():
    """Sorted names of the registered handlers (what the worker announces in Hello)."""
    return sorted(_registry)


class Context:
    """Per-request facts handed to a handler as its second argument.

    Attributes:
      request_id   the pool's id of this request (int)
      method       the handler name that was called (str)
      deadline_ms  time left for the call when the pool sent it, in ms (0: no deadline)
      session      the dict kept for session_id in this worker (None outside a session)
      session_id   the session's id (str), or None outside a session
    """

    # __slots__: one Context is built per request, so keep it as light as possible.
    # The worker fills these slots directly rather than calling __init__ (a call per request):
    # a new slot must be set in _worker.Worker.handle_request too (tests/python checks this).
    __slots__ = ("request_id", "method", "deadline_ms", "session", "session_id", "_deadline")

    def __init__(self, request_id=0, method="", deadline_ms=0, session=None, session_id=None,
                 received_at=None):
        self.request_id = request_id
        self.method = method
        self.deadline_ms = deadline_ms
        self.session = session
        self.session_id = session_id
        if deadline_ms == 0:
            self._deadline = None
        else:
            start = _time.monotonic() if received_at is None else received_at
            self._deadline = start + deadline_ms / 1000.0

    def remaining(self):
        """Seconds left before the caller's deadline (never negative), or None without one."""
        if self._deadline is None:
            return None
        left = self._deadline - _time.monotonic()
        return left if left > 0.0 else 0.0

    def __repr__(self):
        return "<pypool.Context id=%d method=%r deadline_ms=%d session_id=%r>" % (
            self.request_id, self.method, self.deadline_ms, self.session_id)
