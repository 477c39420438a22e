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

    @pypool.handler                 # async: a task on the worker's event loop
    async def ask(payload, ctx):
        return await ctx.host_async("lookup", payload)

    @pypool.handler                 # a generator streams: one chunk per yield
    def tokens(payload, ctx):
        yield from payload.split()

This module stays cheap to import on purpose: user modules import it, and unit tests of
handlers should not pay for the wire code. The protobuf code and the serving loop live in
private modules that only the worker entry point loads (and `inspect`, which costs
milliseconds, is not imported: a handler's kind comes from its code flags).
"""

import time as _time

__all__ = ["handler", "Context", "HostError"]

# Handler name -> callable(payload: bytes, ctx: Context). One registry per process: the worker
# imports exactly one user module, which may import others that register more handlers.
_registry = {}

# Handler name -> its kind, decided when it is registered (one of the constants below). The
# worker reads it to choose where a call runs when it holds several calls at once.
_kinds = {}
PLAIN = "plain"                      # sync; one at a time, in arrival order
THREADED = "threaded"                # sync, on a worker thread beside other calls
ASYNC = "async"                      # a coroutine function: a task on the event loop
GENERATOR = "generator"              # a stream, run like a plain handler
ASYNC_GENERATOR = "async generator"  # a stream, run as a task on the event loop

# The serving worker, set by the runtime: ctx.host() reaches the pool through it. None in a
# process that is not a worker (a unit test calling handlers directly).
_runtime = None

# Code flags that tell the kinds apart: the values of inspect.CO_GENERATOR, CO_COROUTINE and
# CO_ASYNC_GENERATOR (fixed by CPython; inspect itself costs ~2 ms to import).
_CO_GENERATOR = 0x20
_CO_COROUTINE = 0x80
_CO_ASYNC_GENERATOR = 0x200


class HostError(Exception):
    """ctx.host() failed: the host function returned a non-zero code, or the pool refused.

    ``code`` is that code (int); the library's own are negative: -1 the pool has no host
    function, -2 the host's reply is too big for a frame, -3 the call was cancelled.
    ``message`` says what happened (str).
    """

    def __init__(self, code, message=""):
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self):
        return "%s (code %d)" % (self.message or "host call failed", self.code)


def _register(name, fn, threaded=False):
    if not isinstance(name, str) or not name:
        raise ValueError("pypool handler name must be a non-empty str, got %r" % (name,))
    if not callable(fn):
        raise TypeError("pypool handler %r is not callable: %r" % (name, fn))
    kind = _kind_of(name, fn, threaded)
    old = _registry.get(name)
    if old is not None and old is not fn and not _same_definition(old, fn):
        raise ValueError("pypool handler %r is already registered (by %r)" % (name, old))
    _registry[name] = fn
    _kinds[name] = kind
    return fn


def _kind_of(name, fn, threaded):
    flags = _code_flags(fn)
    if flags & (_CO_COROUTINE | _CO_ASYNC_GENERATOR):
        if threaded:
            raise TypeError("pypool handler %r is async: it runs on the event loop, not on a "
                            "thread (drop threaded=True)" % name)
        return ASYNC if flags & _CO_COROUTINE else ASYNC_GENERATOR
    if threaded:
        return THREADED
    return GENERATOR if flags & _CO_GENERATOR else PLAIN


def _code_flags(fn):
    """co_flags of the function behind fn (through bound methods and functools.partial), or 0
    for callables without code (a handler's result type still decides how it is served)."""
    for _ in range(100):  # bounded: a partial of a partial of ...
        inner = getattr(fn, "__func__", None)
        if inner is None and type(fn).__name__ == "partial":
            inner = getattr(fn, "func", None)
        if inner is None:
            break
        fn = inner
    code = getattr(fn, "__code__", None)
    return getattr(code, "co_flags", 0)


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


def handler(name_or_fn=None, *, threaded=False):
    """Register a handler: ``@pypool.handler``, ``@pypool.handler()``, ``@pypool.handler("name")``,
    ``@pypool.handler(threaded=True)`` or ``@pypool.handler("name", threaded=True)``.

    The function is returned unchanged, so it can still be called directly (e.g. by tests).
    Its kind (plain, threaded, async, generator, async generator) is decided here.
    Registering a name twice raises ValueError, unless it is the same function defined again
    (a module re-imported with importlib.reload): the later definition then replaces it.
    """
    if callable(name_or_fn):
        return _register(name_or_fn.__name__, name_or_fn, threaded)
    if name_or_fn is None:
        return lambda fn: _register(fn.__name__, fn, threaded)
    if isinstance(name_or_fn, str):
        return lambda fn: _register(name_or_fn, fn, threaded)
    raise TypeError("pypool.handler expects a function or a name, got %r" % (name_or_fn,))


def _handler_names():
    """Sorted names of the registered handlers (what the worker announces in Hello)."""
    return sorted(_registry)


class _LocalHost:
    """A Context's call state outside a worker: ``Context(host=fn)`` serves ctx.host() with fn,
    so handlers that call the host can be unit-tested."""

    __slots__ = ("cancelled", "_fn")

    def __init__(self, fn):
        self.cancelled = False
        self._fn = fn

    def host(self, name, payload):
        return self._fn(name, payload)

    async def host_async(self, name, payload):
        return self._fn(name, payload)


class Context:
    """Per-request facts handed to a handler as its second argument.

    Attributes:
      request_id   the pool's id of this request (int)
      method       the handler name that was called (str)
      deadline_ms  time left for the call when the pool sent it, in ms (0: no deadline)
      session      the dict kept for session_id in this worker (None outside a session)
      session_id   the session's id (str), or None outside a session
    Methods: remaining(), cancelled(), host(name, payload), host_async(name, payload).
    """

    # __slots__: one Context is built per request, so keep it as light as possible.
    # The worker fills these slots directly rather than calling __init__ (a call per request):
    # a new slot must be set in _classic.Worker._new_context too (tests/python checks this).
    # The exception is `_call`, the runtime's state of the call (cancellation, host calls): the
    # classic loop leaves it unset for a plain call (setting it would cost every call), so it
    # is only ever read with getattr(self, "_call", None).
    __slots__ = ("request_id", "method", "deadline_ms", "session", "session_id", "_deadline",
                 "_call")

    def __init__(self, request_id=0, method="", deadline_ms=0, session=None, session_id=None,
                 received_at=None, host=None):
        """host: a callable(name, payload) -> bytes serving ctx.host() (for unit tests)."""
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
        self._call = None if host is None else _LocalHost(host)

    def remaining(self):
        """Seconds left before the caller's deadline (never negative), or None without one."""
        if self._deadline is None:
            return None
        left = self._deadline - _time.monotonic()
        return left if left > 0.0 else 0.0

    def cancelled(self):
        """True once the caller gave up on this call (the pool sent Cancel)."""
        call = getattr(self, "_call", None)
        return call is not None and call.cancelled

    def host(self, name, payload=b""):
        """Calls the host's host_fn with (name, payload) and returns its reply (bytes); blocks
        until the reply comes. Raises HostError if the host function fails."""
        return self._host_call().host(_check_name(name), _as_bytes(payload))

    async def host_async(self, name, payload=b""):
        """ctx.host() for async handlers: awaits the reply instead of blocking the loop."""
        return await self._host_call().host_async(_check_name(name), _as_bytes(payload))

    def _host_call(self):
        call = getattr(self, "_call", None)
        if call is not None:
            return call
        if _runtime is None:
            raise HostError(-1, "no host: ctx.host() works in a pypool worker, or with a "
                                "Context(host=fn) in tests")
        return _runtime.call_of(self)

    def __repr__(self):
        return "<pypool.Context id=%d method=%r deadline_ms=%d session_id=%r>" % (
            self.request_id, self.method, self.deadline_ms, self.session_id)


def _check_name(name):
    if not isinstance(name, str):
        raise TypeError("host call name must be a str, got %s" % type(name).__name__)
    return name


def _as_bytes(payload):
    if isinstance(payload, str):
        return payload.encode("utf-8", "surrogateescape")
    if payload is None:
        return b""
    return bytes(payload)
