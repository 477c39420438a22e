"""The multiplexed serving loop (docs/PROTOCOL.md, "Multiplexed mode"): MuxWorker holds up to
max_inflight calls at once (PYPOOL_MAX_INFLIGHT > 1).

This file is the main thread's side: reading fd 3, routing frames, the session queues,
cancellation, and running plain handlers and plain generators. What runs the other calls (a
thread pool, an event loop thread), how those threads hand their ends back to the main thread,
and how host replies reach them is _mux_threads.py. Lifecycle basics, dispatch of Ping,
SessionClose and Shutdown, and the replies come from the classic Worker (_classic.py).
"""

import _thread
import collections  # these two cost nothing: protobuf has imported them already
import os
import select
import threading

import pypool

from . import _boot, _frames, _wire
from ._boot import EXIT_OK
from ._calls import DONE, READY, RUNNING, WAITING, Call
from ._classic import Worker
from ._mux_threads import MuxThreads, fatal


_MAIN_THREAD_KINDS = (pypool.PLAIN, pypool.GENERATOR)
_LOOP_KINDS = (pypool.ASYNC, pypool.ASYNC_GENERATOR)


class MuxWorker(MuxThreads, Worker):
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
        self._calls = {}           # request id -> Call, for every call but an inline plain one
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
            fatal()

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
            # The common case, served at once like in classic mode, without a Call.
            self._run_plain(fn, request_id, method, req.payload, ctx)
            return
        call = ctx._call = Call(self, ctx, fn, kind, req.payload)
        self._calls[request_id] = call
        if ctx.session_id is not None:
            waiting = self._session_queues.get(ctx.session_id)
            if waiting is not None:
                call.state = WAITING
                waiting.append(call)
                return
            self._session_queues[ctx.session_id] = collections.deque()
        self._start(call)

    def _on_cancel(self, request_id):
        call = self._calls.get(request_id)
        if call is None:
            ctx = self._running_plain  # an inline plain call has no Call until it needs one
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
        self._reply(request_id, method, result, ctx)
        self._running_plain = None

    def _run_ready(self, call):
        call.state = RUNNING
        self._run_plain(call.fn, call.id, call.ctx.method, call.payload, call.ctx)
        self._finish(call)

    def _between_chunks(self, call):
        # A plain generator on the main thread reads what came meanwhile (its Cancel among
        # it); elsewhere the main thread sets call.cancelled itself.
        if _thread.get_ident() == self._main:
            self._pump_nowait()
