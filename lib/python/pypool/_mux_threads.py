"""Where threads meet in a multiplexed worker (_mux.py): what runs calls off the main thread
(threaded handlers on a pool of max_inflight threads; async handlers and async generators as
tasks on an event loop in its own thread), how those threads hand their ends back to the main
thread (an inbox plus a wake-up pipe in its poll), and how a HostReply reaches the thread or
task waiting for it (_HostWaiter).

Every runtime failure on these threads ends the worker loudly (fatal(): exit 3 with the
traceback); a thread pool's future or a loop callback would otherwise keep it to itself and
leave a call without its final Response.
"""

import _thread
import os
import threading
import types

from . import _boot, _calls
from ._calls import RUNNING

_AsyncGeneratorType = types.AsyncGeneratorType
_STREAMED = object()  # _run_async: the stream sent its own final Response


class MuxThreads:
    """MuxWorker's methods that other threads run or that wait on them. Uses MuxWorker's state:
    _inbox, _wake_r/_wake_w/_wake_sent, _main, _host_waiters, _lazy_lock, _loop, _executor,
    _max_inflight; and its _finish and _pump_until on the main thread."""

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

    # --- running calls off the main thread ------------------------------------------------
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
            fatal()

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
            fatal()

    def _task_done(self, task, call):
        # _run_async answers for itself, except for a task cancelled before its first step:
        # the coroutine then never ran, and its call still needs its final Response.
        if task.cancelled():
            try:
                self._send_cancelled(call.id)
                self._post(self._finish, call)
            except BaseException:
                fatal()

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
            fatal()

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
        data = _calls.host_call_frame(host_id, call.id, name, payload, self._max_frame)
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
        return _calls.host_result(waiter.reply)

    async def host_async(self, call, name, payload):
        import asyncio
        host_id = next(self._host_ids)
        data = _calls.host_call_frame(host_id, call.id, name, payload, self._max_frame)
        waiter = _HostWaiter()
        waiter.loop = asyncio.get_running_loop()
        waiter.future = waiter.loop.create_future()
        self._host_waiters[host_id] = waiter
        try:
            self._send(data)
            reply = await waiter.future
        finally:
            self._host_waiters.pop(host_id, None)
        return _calls.host_result(reply)

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
        fatal()


def fatal():
    """A failure of the runtime itself, on any thread: exit 3 with the traceback, never
    silently (the pool then restarts the worker)."""
    import traceback
    _boot.fail(_boot.EXIT_PROTOCOL, "internal error:\n" + traceback.format_exc())
