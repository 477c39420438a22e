"""Handlers that return more than a value (docs/PYTHON.md, "Streams"): a generator is streamed
chunk by chunk (Response frames with more=true, then the final one), an async generator the
same way on an event loop, a coroutine awaited and its value sent. Shared by both serving
loops through the Streams mixin.

Each stream ends with exactly one final Response: stream_end, the error the generator raised,
or Cancelled when the caller gave up between two chunks (the generator is then closed).
"""

import types

from . import _wire
from ._replies import as_payload

_GeneratorType = types.GeneratorType
_CoroutineType = types.CoroutineType
_AsyncGeneratorType = types.AsyncGeneratorType


class Streams:
    """Runs generators and coroutines that handlers return. Needs from the worker: the
    Replies mixin, _send, _max_frame, call_of(ctx), and two hooks that differ between the
    serving loops: _run_coroutine(coro) (where a coroutine runs) and _between_chunks(call)
    (what the loop reads between two chunks: a Cancel for this call)."""

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
                close_quietly(gen)
                return
            self._between_chunks(call)
            if call.cancelled:
                close_quietly(gen)
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
        payload = as_payload(item)
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


def close_quietly(gen):
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
