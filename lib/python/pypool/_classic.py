"""The classic serving loop (docs/PROTOCOL.md, "Classic mode"): Worker serves one call at a
time (max_inflight 1). It is also the base of MuxWorker (_mux.py), which keeps its lifecycle,
dispatch, sessions and call_of, and replaces the rest.

Request -> handler(payload, ctx) -> Response; Ping -> Pong; SessionClose -> drop the dict;
Shutdown or EOF on fd 3 -> exit 0; a broken channel -> exit 3. SIGTERM exits at once while
idle with no byte of a request taken from the pipe; otherwise the request in hand is answered
first (a request the worker read and dropped is one the pool can neither retry nor answer).
Every Request gets exactly one final Response (_replies.py); a stream sends its chunks
(more=true) first (_streams.py).

The pool sends a Request only to an idle worker, so while a call runs only Cancel and HostReply
can come: the call reads them itself, between a stream's chunks (without waiting) and while
ctx.host() waits for its reply. Async handlers run to completion on one event loop kept for the
worker's life.

serve() and handle_request() run once per request, so they are written for it: callables
bound to locals, the Context filled slot by slot, a small bytes reply encoded as one whole frame
and sent with one write(2); everything rarer (errors, odd return types, big replies) takes the
general methods of the Replies and Streams mixins.

The Worker class does not own the fds: it takes a FrameReader and a send(head, tail) callable,
so the unit tests can drive dispatch without a subprocess.
"""

import itertools
import signal
import time

import pypool

from . import _boot, _calls, _frames, _wire
from ._boot import EXIT_OK
from ._replies import Replies
from ._streams import Streams

_Context = pypool.Context
_new_context = object.__new__
_monotonic = time.monotonic


class Worker(Replies, Streams):
    """Serves one call at a time; serve(reader) never returns (see the module docstring)."""

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

        ctx = self._new_context(req)
        try:
            result = fn(req.payload, ctx)
        except BaseException as exc:
            # Whatever a handler raises is its error, KeyboardInterrupt and SystemExit (and
            # other BaseExceptions) included: the caller gets EREMOTE and the worker stays, so
            # a handler cannot end its worker by accident. The runtime's own exits never raise
            # (_boot.exit_now is os._exit), and a handler's os._exit still ends it on purpose.
            self._send_exception(request_id, exc)
            return
        self._reply(request_id, method, result, ctx)

    def _reply(self, request_id, method, result, ctx):
        """Sends a handler's result. The common one, small bytes, goes as one frame in one
        write; anything else is checked and converted by _send_result."""
        if type(result) is bytes and len(result) <= self._small_reply_limit:
            self._send(_wire.ok_response(request_id, result))
        else:
            self._send_result(request_id, method, result, ctx)

    def _new_context(self, req):
        """The request's Context, built slot by slot: Context.__init__ would cost a call and its
        defaults on every request. Same values as Context(id, method, deadline_ms, session,
        session_id, received_at=now); the clock is read only when there is a deadline. (The
        multiplexed loop sets ctx._call itself when the call needs one.)"""
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

    # --- frames read while a call is in progress ------------------------------------------
    def _between_chunks(self, call):
        """Reads, without waiting, what the pool sent meanwhile (a Cancel for this call)."""
        raw = self._raw
        if raw is None:
            return  # a reader that cannot say whether a frame waits (unit tests)
        while raw.frame_ready():
            self._read_while_busy(call)

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
            call = ctx._call = _calls.Call(self, ctx, None, pypool.PLAIN, None)
        return call

    def host(self, call, name, payload):
        """ctx.host(): sends a HostCall and reads frames until its HostReply comes."""
        host_id = next(self._host_ids)
        self._send(_calls.host_call_frame(host_id, call.id, name, payload, self._max_frame))
        self._host_wait = host_id
        try:
            while self._host_reply is None:
                self._read_while_busy(call)
            reply = self._host_reply
        finally:
            self._host_wait = 0
            self._host_reply = None
        return _calls.host_result(reply)

    async def host_async(self, call, name, payload):
        # One call at a time: nothing else of this worker needs the loop while it waits.
        return self.host(call, name, payload)

    # --- coroutines ------------------------------------------------------------------------
    def _run_coroutine(self, coro):
        """Runs coro to completion on the worker's event loop, made at the first use."""
        if self._loop is None:
            self._loop = _new_event_loop()
        return self._loop.run_until_complete(coro)


def _new_event_loop():
    import asyncio  # here only: ~10 ms of import that workers without async handlers never pay
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    return loop
