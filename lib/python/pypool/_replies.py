"""A call's final Response (docs/PROTOCOL.md): a handler's return value as payload bytes, and
the error replies (a handler's exception, NoSuchMethod, FrameTooLarge, Cancelled), each kept
within the frame limit. Shared by both serving loops through the Replies mixin.

The tuned path, a small bytes reply, does not come here: the serving loops encode it inline
(_wire.ok_response). Everything rarer (other return types, big replies, errors) does.
"""

from . import _frames, _wire

CANCELLED = "Cancelled"  # error type of the final Response of a cancelled call


class Replies:
    """Sends final Responses. Needs from the worker: _send(head, tail=b""), _max_frame,
    _registry, and _serve_special(ctx, result) (the Streams mixin) for results that are run
    rather than sent."""

    def _send_result(self, request_id, method, result, ctx=None):
        """Sends a handler's return value; with ctx, a coroutine or (async) generator is run
        (awaited, streamed) first. Without ctx (an awaited value) it must be a payload."""
        payload = as_payload(result)
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


def as_payload(result):
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


def _user_frames(exc):
    """exc's traceback from the first frame that is not the runtime's (or asyncio's, which
    runs async handlers): the caller sees the traceback start at the handler."""
    tb = exc.__traceback__
    while tb is not None and _is_machinery(tb.tb_frame.f_globals.get("__name__", "")):
        tb = tb.tb_next
    return tb


def _is_machinery(module):
    return module.startswith(("pypool.", "asyncio.", "concurrent.")) or module == "pypool"


def _safe_str(exc):
    try:
        return str(exc)
    except Exception:  # a broken __str__ must not lose the error reply
        return "<unprintable %s>" % type(exc).__name__
