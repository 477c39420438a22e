"""The worker's serving loops (docs/PROTOCOL.md): Worker serves one call at a time (the
classic mode, max_inflight 1); MuxWorker holds up to max_inflight calls at once.

Request -> handler(payload, ctx) -> Response; Ping -> Pong; SessionClose -> drop the dict;
Shutdown or EOF on fd 3 -> exit 0; a broken channel -> exit 3. SIGTERM exits at once while
idle with no byte of a request taken from the pipe; otherwise the request in hand is answered
first (a request the worker read and dropped is one the pool can neither retry nor answer).
Every Request gets exactly one final Response; a stream sends its chunks (more=true) first.

In classic mode the pool sends a Request only to an idle worker, so while a call runs only
Cancel and HostReply can come: the call reads them itself, between a stream's chunks (without
waiting) and while ctx.host() waits for its reply. Async handlers run to completion on one
event loop kept for the worker's life.

serve() and handle_request() run once per request, so they are written for it: callables
bound to locals, the Context filled slot by slot, a small bytes reply encoded as one whole frame
and sent with one write(2); everything rarer (errors, odd return types, big replies) takes the
general methods below them.

The Worker class does not own the fds: it takes a FrameReader and a send(head, tail) callable,
so the unit tests can drive dispatch without a subprocess.
"""

import itertools
import os
import signal
import sys
import time
import types

import pypool

from . import _boot, _frames, _wire

EXIT_OK = 0
CANCELLED = "Cancelled"  # error type of the final Response of a cancelled call

_Context = pypool.Context
_new_context = object.__new__
_monotonic = time.monotonic


class Worker:
    def __init__(self, registry, send, max_frame):
        self._registry = registry
        self._send = send
        self._max_frame = max_frame
        self._sessions = {}
        # A bytes reply up to this size can be sent as one ok_response frame without checking
        # the frame limit: it is small enough to copy into one write(2) and fits any frame.
        self._small_reply_limit = min(_frames.COALESCE_LIMIT,
                                      max_frame - _wire.SMALL_REPLY_OVERHEAD)
        # Once serving, the request pipe's raw reader: SIGTERM asks it whether exiting now
        # would lose a byte of a request (see _frames.WaitingFileIO). None while serving from a
        # reader that cannot say (tests' fake readers): SIGTERM then waits for the message in hand.
        self._serving = False
        self._raw = None
        self._term_requested = False
        # A call in progress reading frames itself (a stream between chunks, ctx.host waiting
        # for its reply): SIGTERM must not take the reader's wait for an idle one.
        self._busy = False
        self._read_frame = None
        self._host_ids = itertools.count(1)
        self._host_wait = 0       # id of the HostCall a handler waits for (0: none)
        self._host_reply = None
        self._loop = None         # the event loop of async handlers, made at the first one
        # ctx.host() of a plain call (whose Context has no _call yet) finds the worker here.
        pypool._runtime = self

    # --- lifecycle -------------------------------------------------------------------------
    def install_sigterm(self):
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame):
        # Exit at once only where nothing is lost: before serving (no request read yet), or
        # waiting for the next request with no part of one taken from the pipe; anything the
        # pool wrote is then still in the pipe, unread, and the pool retries it elsewhere.
        # Otherwise the request in hand is answered first, and the worker leaves when it next
        # waits with nothing pending (_exit_if_asked), or after the message in hand when the
        # reader cannot say what it holds (serve()).
        self._term_requested = True
        if not self._serving:
            _boot.exit_now(EXIT_OK)
        raw = self._raw
        if raw is not None and raw.waiting and raw.got == raw.used and not self._busy:
            _boot.exit_now(EXIT_OK)

    def _exit_if_asked(self):
        if self._term_requested and not self._busy:
            _boot.exit_now(EXIT_OK)

    def serve(self, reader):
        """Serve until EOF, Shutdown or SIGTERM; never returns."""
        raw = getattr(reader, "raw", None)
        if raw is not None:
            raw.on_idle = self._exit_if_asked
        self._raw = raw
        # Last: a SIGTERM before this line exits at once, which is right (nothing read yet).
        self._serving = True
        # This loop runs once per request: what it calls is bound to locals up front.
        read_frame = self._read_frame = reader.read_frame
        decode = _wire.decode
        handle_request = self.handle_request
        dispatch = self.dispatch
        while True:
            try:
                body = read_frame()
            except _frames.ProtocolError as exc:
                _boot.fail(_boot.EXIT_PROTOCOL, str(exc))
            if body is None:
                _boot.exit_now(EXIT_OK)
            kind, message = decode(body)
            # Drop the frame: a big one is a view of the reader's reused buffer, which must be
            # free to go when the reader shrinks it (the handler has its own payload bytes).
            body = None
            if kind == "request":
                handle_request(message)
            else:
                dispatch(kind, message)
            # Let go of the request (and its payload) before blocking on the next frame: an
            # idle worker would otherwise pin its last payload, and the next big request's
            # payload would need fresh memory while this one is still alive.
            message = None
            if raw is None and self._term_requested:
                # A reader that cannot say what it holds (tests): leave between messages.
                _boot.exit_now(EXIT_OK)

    # --- dispatch --------------------------------------------------------------------------
    def handle_frame(self, body):
        self.dispatch(*_wire.decode(body))

    def dispatch(self, kind, message):
        if kind == "request":
            self.handle_request(message)
        elif kind == "ping":
            self._send(_wire.pong_frame(message.id))
        elif kind == "session_close":
            self._sessions.pop(message.session_id, None)
        elif kind == "shutdown":
            _boot.exit_now(EXIT_OK)
        elif kind == "cancel" or kind == "host_reply":
            pass  # for a call that has finished: nothing left to do
        else:
            raise _frames.ProtocolError("unexpected message from the pool: %s" % kind)

    def handle_request(self, req):
        request_id = req.id
        method = req.method
        try:
            fn = self._registry[method]
        except KeyError:
            self._send_no_such_method(request_id, method)
            return

        # The Context, built slot by slot: Context.__init__ would cost a call and its defaults
        # on every request. Same values as Context(request_id, method, deadline_ms, session,
        # session_id, received_at=now); the clock is read only when there is a deadline.
        deadline_ms = req.deadline_ms
        session_id = req.session_id
        ctx = _new_context(_Context)
        ctx.request_id = request_id
        ctx.method = method
        ctx.deadline_ms = deadline_ms
        ctx._deadline = _monotonic() + deadline_ms / 1000.0 if deadline_ms else None
        if session_id:
            session = self._sessions.get(session_id)
            if session is None:
                session = self._sessions[session_id] = {}
            ctx.session = session
            ctx.session_id = session_id
        else:
            ctx.session = ctx.session_id = None

        try:
            result = fn(req.payload, ctx)
        except BaseException as exc:
            # Whatever a handler raises is its error, KeyboardInterrupt and SystemExit (and
            # other BaseExceptions) included: the caller gets EREMOTE and the worker stays, so
            # a handler cannot end its worker by accident. The runtime's own exits never raise
            # (_boot.exit_now is os._exit), and a handler's os._exit still ends it on purpose.
            self._send_exception(request_id, exc)
            return
        # The common reply, small bytes, as one frame in one write; anything else is checked
        # and converted by _send_result.
        if type(result) is bytes and len(result) <= self._small_reply_limit:
            self._send(_wire.ok_response(request_id, result))
        else:
            self._send_result(request_id, method, result, ctx)

    # --- replies ---------------------------------------------------------------------------
    def _send_result(self, request_id, method, result, ctx=None):
        """Sends a handler's return value; with ctx, a coroutine or (async) generator is run
        (awaited, streamed) first. Without ctx (an awaited value) it must be a payload."""
        payload = _as_payload(result)
        if payload is None:
            if ctx is not None and self._serve_special(ctx, result):
                return
            self._send_error(request_id, "TypeError",
                             "handler %r returned %s; expected bytes, bytearray, memoryview, "
                             "str or None" % (method, type(result).__name__), "")
            return
        if len(payload) <= _frames.COALESCE_LIMIT:
            head = _wire.ok_response(request_id, payload)  # the whole frame: one write(2)
            body_size = len(head) - _frames.HEADER_SIZE
            payload = b""
        else:
            head, body_size = _wire.ok_response_frame(request_id, payload)  # writev, no copy
        if body_size > self._max_frame:
            self._send_error(request_id, "FrameTooLarge",
                             "reply of %d bytes exceeds the frame limit of %d bytes"
                             % (body_size, self._max_frame), "")
            return
        self._send(head, payload)

    def _send_no_such_method(self, request_id, method):
        self._send_error(request_id, "NoSuchMethod",
                         "no handler named %r (registered: %s)"
                         % (method, ", ".join(sorted(self._registry)) or "none"), "")

    def _send_exception(self, request_id, exc):
        # traceback is imported on the first handler exception, not at start: with what it
        # pulls in (linecache, tokenize, textwrap...) it would cost every worker's start ~7 ms.
        import traceback
        tb_text = "".join(traceback.format_exception(type(exc), exc, _user_frames(exc)))
        self._send_error(request_id, type(exc).__name__, _safe_str(exc), tb_text)

    def _send_cancelled(self, request_id):
        self._send_error(request_id, CANCELLED, "the caller cancelled the call", "")

    def _send_error(self, request_id, error_type, message, tb_text):
        data = _wire.error_frame(request_id, error_type, message, tb_text)
        if len(data) - _frames.HEADER_SIZE > self._max_frame:
            # Under a tiny frame limit even an error can be too big: keep the type, cut the rest.
            budget = max(0, self._max_frame // 2 - len(error_type) - 32)
            data = _wire.error_frame(request_id, error_type, message[:budget], "")
        self._send(data)

    # --- coroutines and streams ------------------------------------------------------------
    def _serve_special(self, ctx, result):
        """Runs what an async or generator handler returned; False if result is none of those."""
        kind = type(result)
        if kind is _GeneratorType:
            self._stream(self.call_of(ctx), result)
        elif kind is _CoroutineType:
            try:
                value = self._run_coroutine(result)
            except BaseException as exc:
                self._send_exception(ctx.request_id, exc)
                return True
            self._send_result(ctx.request_id, ctx.method, value)
        elif kind is _AsyncGeneratorType:
            self._run_coroutine(self._stream_async(self.call_of(ctx), result))
        else:
            return False
        return True

    def _run_coroutine(self, coro):
        """Runs coro to completion on the worker's event loop, made at the first use."""
        if self._loop is None:
            self._loop = _new_event_loop()
        return self._loop.run_until_complete(coro)

    def _stream(self, call, gen):
        """Sends each value gen yields as a chunk, then the final Response (stream_end, the
        error it raised, or Cancelled if the caller gave up meanwhile)."""
        request_id = call.id
        while True:
            try:
                item = next(gen)
            except StopIteration:
                self._send(_wire.stream_end_frame(request_id))
                return
            except BaseException as exc:
                self._send_exception(request_id, exc)
                return
            if not self._send_chunk(call, item):
                _close_quietly(gen)
                return
            self._between_chunks(call)
            if call.cancelled:
                _close_quietly(gen)
                self._send_cancelled(request_id)
                return

    async def _stream_async(self, call, agen):
        """_stream for an async generator: the same frames, awaited chunk by chunk."""
        import asyncio
        request_id = call.id
        while True:
            try:
                item = await agen.__anext__()
            except StopAsyncIteration:
                self._send(_wire.stream_end_frame(request_id))
                return
            except BaseException as exc:
                if call.cancelled and isinstance(exc, asyncio.CancelledError):
                    self._send_cancelled(request_id)  # the task was cancelled (Cancel)
                else:
                    self._send_exception(request_id, exc)
                return
            if not self._send_chunk(call, item):
                await _aclose_quietly(agen)
                return
            self._between_chunks(call)
            if call.cancelled:
                await _aclose_quietly(agen)
                self._send_cancelled(request_id)
                return

    def _send_chunk(self, call, item):
        """Sends one yielded value as a chunk; False (after the final error) if it cannot be."""
        payload = _as_payload(item)
        if payload is None:
            self._send_error(call.id, "TypeError",
                             "handler %r yielded %s; expected bytes, bytearray, memoryview, "
                             "str or None" % (call.ctx.method, type(item).__name__), "")
            return False
        head, body_size = _wire.chunk_frame(call.id, payload)
        if body_size > self._max_frame:
            self._send_error(call.id, "FrameTooLarge",
                             "chunk of %d bytes exceeds the frame limit of %d bytes"
                             % (body_size, self._max_frame), "")
            return False
        # A blocking write: a consumer that falls behind holds the generator here.
        self._send(head, payload)
        return True

    def _between_chunks(self, call):
        """Reads, without waiting, what the pool sent meanwhile (a Cancel for this call)."""
        raw = self._raw
        if raw is None:
            return  # a reader that cannot say whether a frame waits (unit tests)
        while raw.frame_ready():
            self._read_while_busy(call)

    # --- frames read while a call is in progress (classic mode) ----------------------------
    def _read_while_busy(self, call):
        # This runs inside a handler (ctx.host, a stream's next chunk), which may catch what
        # is raised here: a broken channel ends the worker at once instead.
        busy = self._busy
        self._busy = True
        try:
            body = self._read_frame()
            if body is None:
                _boot.exit_now(EXIT_OK)  # EOF: the pool is gone, nobody waits for this call
            kind, message = _wire.decode(body)
            if kind == "request":
                raise _frames.ProtocolError(
                    "request %d arrived while call %d was in progress (max_inflight is 1)"
                    % (message.id, call.id))
            if kind == "cancel":
                if message.id == call.id:
                    call.cancelled = True
            elif kind == "host_reply":
                if message.id == self._host_wait:
                    self._host_reply = message
            else:
                self.dispatch(kind, message)
        except _frames.ProtocolError as exc:
            _boot.fail(_boot.EXIT_PROTOCOL, str(exc))
        finally:
            self._busy = busy

    # --- host calls ------------------------------------------------------------------------
    def call_of(self, ctx):
        """The runtime's state of ctx's call, made on first need (a plain call has none)."""
        call = getattr(ctx, "_call", None)
        if call is None:
            call = ctx._call = _Call(self, ctx, None, pypool.PLAIN, None)
        return call

    def host(self, call, name, payload):
        """ctx.host(): sends a HostCall and reads frames until its HostReply comes."""
        host_id = next(self._host_ids)
        self._send(self._host_call_frame(host_id, call.id, name, payload))
        self._host_wait = host_id
        try:
            while self._host_reply is None:
                self._read_while_busy(call)
            reply = self._host_reply
        finally:
            self._host_wait = 0
            self._host_reply = None
        return _host_result(reply)

    async def host_async(self, call, name, payload):
        # One call at a time: nothing else of this worker needs the loop while it waits.
        return self.host(call, name, payload)

    def _host_call_frame(self, host_id, call_id, name, payload):
        data = _wire.host_call_frame(host_id, call_id, name, payload)
        if len(data) - _frames.HEADER_SIZE > self._max_frame:
            raise pypool.HostError(-2, "the host call of %d bytes exceeds the frame limit of "
                                       "%d bytes" % (len(data) - _frames.HEADER_SIZE,
                                                     self._max_frame))
        return data


class _Call:
    """The runtime's state of one call beyond its Context: whether the caller cancelled it,
    and (with several calls at once) where it is and what runs it. ctx.host() goes through it.
    """

    __slots__ = ("runtime", "ctx", "id", "fn", "kind", "payload", "state", "cancelled", "task")

    def __init__(self, runtime, ctx, fn, kind, payload):
        self.runtime = runtime
        self.ctx = ctx
        self.id = ctx.request_id
        self.fn = fn
        self.kind = kind
        self.payload = payload
        self.state = RUNNING
        self.cancelled = False
        self.task = None  # the asyncio task of an async call (multiplexed mode)

    def host(self, name, payload):
        return self.runtime.host(self, name, payload)

    def host_async(self, name, payload):
        return self.runtime.host_async(self, name, payload)


# _Call.state in multiplexed mode.
WAITING = "waiting"   # behind a running call of its session
READY = "ready"       # handed to what runs it (main thread queue, thread pool, event loop)
RUNNING = "running"
DONE = "done"

_GeneratorType = types.GeneratorType
_CoroutineType = types.CoroutineType
_AsyncGeneratorType = types.AsyncGeneratorType


def _new_event_loop():
    import asyncio  # here only: ~10 ms of import that workers without async handlers never pay
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    return loop


def _close_quietly(gen):
    # The stream is over either way; an error while closing (a finally block that raises)
    # must not turn into a second final Response.
    try:
        gen.close()
    except BaseException:
        pass


async def _aclose_quietly(agen):
    try:
        await agen.aclose()
    except BaseException:
        pass


def _host_result(reply):
    if reply.error:
        raise pypool.HostError(reply.error, reply.message)
    return reply.payload


def _user_frames(exc):
    """exc's traceback from the first frame that is not the runtime's (or asyncio's, which
    runs async handlers): the caller sees the traceback start at the handler."""
    tb = exc.__traceback__
    while tb is not None and _is_machinery(tb.tb_frame.f_globals.get("__name__", "")):
        tb = tb.tb_next
    return tb


def _is_machinery(module):
    return module.startswith(("pypool.", "asyncio.", "concurrent.")) or module == "pypool"


def _as_payload(result):
    """The reply bytes for a handler's return value, or None if the type is not allowed."""
    kind = type(result)
    if kind is bytes or kind is bytearray:
        return result
    if result is None:
        return b""
    if isinstance(result, str):
        return result.encode("utf-8", "surrogateescape")
    if isinstance(result, (bytes, bytearray)):
        return result
    if isinstance(result, memoryview):
        # len() of a memoryview counts items, not bytes: flatten odd formats/layouts to bytes.
        if result.c_contiguous:
            return result.cast("B")
        return result.tobytes()
    return None


def _safe_str(exc):
    try:
        return str(exc)
    except Exception:  # a broken __str__ must not lose the error reply
        return "<unprintable %s>" % type(exc).__name__


def run(module_name):
    """Boot sequence of PROTOCOL.md, then serve; never returns."""
    _boot.set_parent_death_signal()
    parent = _boot.expected_parent_pid()
    _boot.check_parent(parent)
    _boot.check_protocol_version(_wire.PROTOCOL_VERSION)
    _boot.start_parent_watchdog(parent)
    _boot.setup_stdio()
    _boot.protect_channel_fds()
    max_frame = _boot.max_frame_bytes()
    worker = Worker(pypool._registry, _frames.fd_sender(_boot.RESPONSE_FD), max_frame)
    worker.install_sigterm()
    _boot.import_user_module(module_name)
    if not pypool._registry:
        # Every call would fail with NoSuchMethod: almost surely the wrong module or a missing
        # decorator. Refusing to start says so once, in the ESPAWN the pool reports.
        _boot.fail(_boot.EXIT_STARTUP,
                   "module %r registers no handlers (decorate functions with @pypool.handler)"
                   % module_name)
    try:
        worker._send(_wire.hello_frame(os.getpid(), sys.version, pypool._handler_names()))
        worker.serve(_frames.FrameReader(_boot.REQUEST_FD, max_frame))
    except _frames.ProtocolError as exc:
        _boot.fail(_boot.EXIT_PROTOCOL, str(exc))
    except BrokenPipeError:
        # The pool closed our response pipe: nobody is left to talk to.
        _boot.fail(_boot.EXIT_PROTOCOL, "response pipe closed by the pool")
