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

import _thread
import collections  # these two cost nothing: protobuf has imported them already
import itertools
import os
import select
import signal
import sys
import threading
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


class MuxWorker(Worker):
    """Serves up to max_inflight calls at once (PYPOOL_MAX_INFLIGHT > 1).

    Design notes (where threads meet):
    - The main thread reads fd 3 (poll, then read: a SIGKILLed worker takes no request with
      it), owns every table below, and runs plain handlers and plain generators itself, one at
      a time in arrival order: a request queued behind another is served right after it, with
      no thread hand-off. A plain handler that blocks therefore stops the reading (Ping,
      Cancel, new calls) until it returns; calls already running elsewhere go on.
    - Async handlers and async generators are tasks on an event loop in its own thread;
      threaded handlers run on a pool of max_inflight threads. They send their own replies and
      post their end to the main thread (inbox + a wake-up pipe in its poll).
    - Replies leave through one lock around fd 4: each frame is written whole.
    - Calls of one session never overlap: the later ones wait in that session's queue, in
      arrival order, and start when the one before ends, whatever their kinds.
    - A HostCall's reply is routed by its id to the waiting thread (a lock released), task (a
      future settled on its loop), or main-thread handler (which reads frames until it comes).
    """

    def __init__(self, registry, send, max_frame, max_inflight, kinds):
        super().__init__(registry, send, max_frame)
        self._kinds = kinds
        self._max_inflight = max_inflight
        self._calls = {}           # request id -> _Call, for every call but an inline plain one
        self._session_queues = {}  # session id -> deque of its calls waiting (present: one runs)
        self._ready = collections.deque()  # plain calls waiting for the main thread
        self._running_plain = None  # Context of the plain call the main thread runs
        self._inbox = collections.deque()  # (fn, arg) that other threads post to the main one
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._wake_sent = False
        self._host_waiters = {}    # HostCall id -> _HostWaiter (added by the calling thread)
        self._main = _thread.get_ident()
        self._lazy_lock = threading.Lock()  # the event loop and thread pool are made once
        self._executor = None
        self._buffer = None
        self._poll = self._poll_requests = None
        self._waiting = False

    # --- lifecycle -------------------------------------------------------------------------
    def _on_sigterm(self, signum, frame):
        # As in classic mode: exit at once only while waiting with nothing in flight and no
        # byte of a request taken; otherwise finish, reply, and exit when idle (_wait).
        self._term_requested = True
        if not self._serving or (self._waiting and self._idle()):
            _boot.exit_now(EXIT_OK)

    def _idle(self):
        return (not self._calls and self._running_plain is None and not self._ready
                and self._buffer.pending() == 0)

    def serve(self, buffer):
        """Serve until EOF, Shutdown or SIGTERM; never returns. buffer: a _frames.FrameBuffer."""
        self._buffer = buffer
        self._main = _thread.get_ident()
        poller = select.poll()
        poller.register(buffer.fd, select.POLLIN)
        self._poll_requests = poller.poll
        poller = select.poll()
        poller.register(buffer.fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        self._poll = poller.poll
        if any(k == pypool.ASYNC or k == pypool.ASYNC_GENERATOR for k in self._kinds.values()):
            self._event_loop()  # now, so that the first async call does not pay for asyncio
        self._serving = True
        try:
            while True:
                self._step()
        except _frames.ProtocolError as exc:
            _boot.fail(_boot.EXIT_PROTOCOL, str(exc))
        except BaseException:
            _fatal()

    def _step(self):
        """One piece of the main thread's work; waits only when there is none."""
        if self._inbox:
            self._drain_inbox()
        body = self._buffer.next_frame()
        if body is not None:
            self._on_frame(body)
        elif self._ready and self._running_plain is None:
            self._run_ready(self._ready.popleft())
        else:
            self._wait()

    def _wait(self):
        # `waiting` goes up before the last look for a SIGTERM (see WaitingFileIO.readinto).
        self._waiting = True
        if self._term_requested and self._idle():
            _boot.exit_now(EXIT_OK)
        events = self._poll()
        self._waiting = False
        for fd, _ in events:
            if fd == self._wake_r:
                self._clear_wake()
            elif not self._buffer.fill():
                _boot.exit_now(EXIT_OK)  # EOF: the pool is gone; nobody waits for our replies

    def _pump_until(self, done):
        """Main-thread work (frames, posts) until done() is true: a main-thread handler that
        waits (for a host reply, a coroutine) keeps the worker serving meanwhile."""
        while not done():
            self._step()

    def _pump_nowait(self):
        """Main-thread work that needs no waiting: between a plain generator's chunks."""
        while True:
            if self._inbox:
                self._drain_inbox()
            body = self._buffer.next_frame()
            if body is not None:
                self._on_frame(body)
            elif not self._poll_requests(0):
                return
            elif not self._buffer.fill():
                _boot.exit_now(EXIT_OK)

    # --- posts from other threads ----------------------------------------------------------
    def _post(self, fn, arg):
        """Runs fn(arg) on the main thread soon (any thread may call this)."""
        self._inbox.append((fn, arg))
        if not self._wake_sent:
            self._wake_sent = True
            os.write(self._wake_w, b"!")

    def _clear_wake(self):
        # The flag drops before the inbox is read (next _step): a post after this writes again.
        try:
            os.read(self._wake_r, 512)
        except BlockingIOError:
            pass
        self._wake_sent = False

    def _drain_inbox(self):
        inbox = self._inbox
        while inbox:
            fn, arg = inbox.popleft()
            fn(arg)

    # --- frames ----------------------------------------------------------------------------
    def _on_frame(self, body):
        kind, message = _wire.decode(body)
        if kind == "request":
            self._on_request(message)
        elif kind == "cancel":
            self._on_cancel(message.id)
        elif kind == "host_reply":
            waiter = self._host_waiters.pop(message.id, None)
            if waiter is not None:  # else its waiter gave up (a cancelled task)
                waiter.deliver(message)
        else:
            self.dispatch(kind, message)

    def _on_request(self, req):
        request_id = req.id
        method = req.method
        fn = self._registry.get(method)
        if fn is None:
            self._send_no_such_method(request_id, method)
            return
        kind = self._kinds.get(method, pypool.PLAIN)
        ctx = self._new_context(req)
        if (kind == pypool.PLAIN and ctx.session_id is None and self._running_plain is None
                and not self._ready):
            # The common case, served at once like in classic mode, without a _Call.
            self._run_plain(fn, request_id, method, req.payload, ctx)
            return
        call = ctx._call = _Call(self, ctx, fn, kind, req.payload)
        self._calls[request_id] = call
        if ctx.session_id is not None:
            waiting = self._session_queues.get(ctx.session_id)
            if waiting is not None:
                call.state = WAITING
                waiting.append(call)
                return
            self._session_queues[ctx.session_id] = collections.deque()
        self._start(call)

    def _new_context(self, req):
        # As in Worker.handle_request (slot by slot); _call is set by the caller if needed.
        deadline_ms = req.deadline_ms
        session_id = req.session_id
        ctx = _new_context(_Context)
        ctx.request_id = req.id
        ctx.method = req.method
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
        return ctx

    def _on_cancel(self, request_id):
        call = self._calls.get(request_id)
        if call is None:
            ctx = self._running_plain  # an inline plain call has no _Call until it needs one
            if ctx is not None and ctx.request_id == request_id:
                self.call_of(ctx).cancelled = True
            return  # else unknown or finished: nothing to do
        call.cancelled = True
        if call.state == WAITING:
            self._session_queues[call.ctx.session_id].remove(call)
            del self._calls[request_id]
            self._send_cancelled(request_id)
        elif call.state == READY and call.kind in _MAIN_THREAD_KINDS:
            self._ready.remove(call)
            self._send_cancelled(request_id)
            self._finish(call)
        elif call.kind in _LOOP_KINDS:
            self._loop.call_soon_threadsafe(self._cancel_task, call)
        # Otherwise the flag does it: ctx.cancelled() turns true for a running handler, a
        # generator is closed at its next yield, a thread not yet started replies Cancelled.

    # --- running calls ---------------------------------------------------------------------
    def _start(self, call):
        call.state = READY
        kind = call.kind
        if kind in _MAIN_THREAD_KINDS:
            self._ready.append(call)
        elif kind in _LOOP_KINDS:
            self._event_loop().call_soon_threadsafe(self._start_task, call)
        else:
            self._thread_pool().submit(self._run_threaded, call)

    def _finish(self, call):
        """A call has sent its final Response: forget it, start its session's next call."""
        call.state = DONE
        self._calls.pop(call.id, None)
        session_id = call.ctx.session_id
        if session_id is not None:
            waiting = self._session_queues.get(session_id)
            if waiting:
                self._start(waiting.popleft())
            elif waiting is not None:
                del self._session_queues[session_id]

    def _run_plain(self, fn, request_id, method, payload, ctx):
        self._running_plain = ctx
        try:
            result = fn(payload, ctx)
        except BaseException as exc:
            self._running_plain = None
            self._send_exception(request_id, exc)
            return
        if type(result) is bytes and len(result) <= self._small_reply_limit:
            self._send(_wire.ok_response(request_id, result))
        else:
            self._send_result(request_id, method, result, ctx)
        self._running_plain = None

    def _run_ready(self, call):
        call.state = RUNNING
        self._run_plain(call.fn, call.id, call.ctx.method, call.payload, call.ctx)
        self._finish(call)

    def _run_threaded(self, call):
        # On a pool thread. Whatever goes wrong here outside the handler ends the worker
        # loudly: the pool's futures would otherwise keep the exception to themselves.
        try:
            if call.cancelled:
                self._send_cancelled(call.id)
            else:
                call.state = RUNNING
                try:
                    result = call.fn(call.payload, call.ctx)
                except BaseException as exc:
                    self._send_exception(call.id, exc)
                else:
                    self._send_result(call.id, call.ctx.method, result, call.ctx)
            self._post(self._finish, call)
        except BaseException:
            _fatal()

    def _start_task(self, call):
        # On the event loop's thread.
        try:
            if call.cancelled:
                self._send_cancelled(call.id)
                self._post(self._finish, call)
                return
            call.state = RUNNING
            call.task = self._loop.create_task(self._run_async(call))
            call.task.add_done_callback(lambda task: self._task_done(task, call))
        except BaseException:
            _fatal()

    def _task_done(self, task, call):
        # _run_async answers for itself, except for a task cancelled before its first step:
        # the coroutine then never ran, and its call still needs its final Response.
        if task.cancelled():
            try:
                self._send_cancelled(call.id)
                self._post(self._finish, call)
            except BaseException:
                _fatal()

    def _cancel_task(self, call):
        if call.task is not None:
            call.task.cancel()

    async def _run_async(self, call):
        import asyncio
        try:
            try:
                result = call.fn(call.payload, call.ctx)
                if type(result) is _AsyncGeneratorType:
                    await self._stream_async(call, result)
                    result = _STREAMED
                elif hasattr(result, "__await__"):
                    result = await result
            except asyncio.CancelledError as exc:
                if call.cancelled:
                    self._send_cancelled(call.id)
                else:
                    self._send_exception(call.id, exc)
            except BaseException as exc:
                self._send_exception(call.id, exc)
            else:
                if result is not _STREAMED:
                    self._send_result(call.id, call.ctx.method, result)
            self._post(self._finish, call)
        except BaseException:
            _fatal()

    def _between_chunks(self, call):
        # A plain generator on the main thread reads what came meanwhile (its Cancel among
        # it); elsewhere the main thread sets call.cancelled itself.
        if _thread.get_ident() == self._main:
            self._pump_nowait()

    def _run_coroutine(self, coro):
        """A coroutine (or async stream) that a non-async handler returned, run on the loop;
        the main thread serves on while it waits for it."""
        import asyncio
        future = asyncio.run_coroutine_threadsafe(coro, self._event_loop())
        if _thread.get_ident() != self._main:
            return future.result()
        future.add_done_callback(lambda _: self._post(_ignore, None))
        self._pump_until(future.done)
        return future.result()

    # --- host calls ------------------------------------------------------------------------
    def host(self, call, name, payload):
        host_id = next(self._host_ids)
        data = self._host_call_frame(host_id, call.id, name, payload)
        waiter = _HostWaiter()
        on_main = _thread.get_ident() == self._main
        if not on_main:
            waiter.lock = _thread.allocate_lock()
            waiter.lock.acquire()
        self._host_waiters[host_id] = waiter
        self._send(data)
        if on_main:
            self._pump_until(waiter.has_reply)
        else:
            waiter.lock.acquire()  # released by the main thread with the reply in
        return _host_result(waiter.reply)

    async def host_async(self, call, name, payload):
        import asyncio
        host_id = next(self._host_ids)
        data = self._host_call_frame(host_id, call.id, name, payload)
        waiter = _HostWaiter()
        waiter.loop = asyncio.get_running_loop()
        waiter.future = waiter.loop.create_future()
        self._host_waiters[host_id] = waiter
        try:
            self._send(data)
            reply = await waiter.future
        finally:
            self._host_waiters.pop(host_id, None)
        return _host_result(reply)

    # --- what runs the calls, made when first needed ---------------------------------------
    def _event_loop(self):
        with self._lazy_lock:
            if self._loop is None:
                import asyncio
                loop = asyncio.new_event_loop()
                threading.Thread(target=_run_loop, args=(loop,), name="pypool-loop",
                                 daemon=True).start()
                self._loop = loop
            return self._loop

    def _thread_pool(self):
        with self._lazy_lock:
            if self._executor is None:
                from concurrent.futures import ThreadPoolExecutor
                self._executor = ThreadPoolExecutor(self._max_inflight,
                                                    thread_name_prefix="pypool-handler")
            return self._executor


class _HostWaiter:
    """Where the reply of one HostCall goes: a blocked thread's lock, or a task's future."""

    __slots__ = ("reply", "lock", "loop", "future")

    def __init__(self):
        self.reply = None
        self.lock = None
        self.loop = None
        self.future = None

    def has_reply(self):
        return self.reply is not None

    def deliver(self, reply):
        # On the main thread.
        self.reply = reply
        if self.lock is not None:
            self.lock.release()
        elif self.future is not None:
            self.loop.call_soon_threadsafe(_settle, self.future, reply)


def _settle(future, reply):
    if not future.done():  # else the task waiting for it was cancelled
        future.set_result(reply)


def _ignore(_):
    pass


def _run_loop(loop):
    import asyncio
    try:
        asyncio.set_event_loop(loop)
        loop.run_forever()
    except BaseException:
        _fatal()


def _fatal():
    """A failure of the runtime itself, on any thread: exit 3 with the traceback, never
    silently (the pool then restarts the worker)."""
    import traceback
    _boot.fail(_boot.EXIT_PROTOCOL, "internal error:\n" + traceback.format_exc())


_MAIN_THREAD_KINDS = (pypool.PLAIN, pypool.GENERATOR)
_LOOP_KINDS = (pypool.ASYNC, pypool.ASYNC_GENERATOR)
_STREAMED = object()  # _run_async: the stream sent its own final Response


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
    max_inflight = _boot.max_inflight()
    if max_inflight > 1:
        worker = MuxWorker(pypool._registry,
                           _frames.fd_sender(_boot.RESPONSE_FD, _thread.allocate_lock()),
                           max_frame, max_inflight, pypool._kinds)
    else:
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
        if max_inflight > 1:
            worker.serve(_frames.FrameBuffer(_boot.REQUEST_FD, max_frame))
        else:
            worker.serve(_frames.FrameReader(_boot.REQUEST_FD, max_frame))
    except _frames.ProtocolError as exc:
        _boot.fail(_boot.EXIT_PROTOCOL, str(exc))
    except BrokenPipeError:
        # The pool closed our response pipe: nobody is left to talk to.
        _boot.fail(_boot.EXIT_PROTOCOL, "response pipe closed by the pool")
