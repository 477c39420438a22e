"""Envelope encoding and decoding (proto/pypool.proto) for the worker side.

Everything goes through the generated pypool_pb2 except the hot paths, a successful Response
and a stream's chunk (the same Response with more=true): those are encoded by hand (a few varints in front of the payload) so the payload is never
copied into a protobuf message and back out: a small reply becomes one whole frame built from
precomputed prefixes (one write(2)), a big payload is written with writev straight from the
handler's buffer. tests/python checks these bytes against pypool_pb2.
"""

from google.protobuf.message import DecodeError

from . import pypool_pb2 as pb
from ._frames import BIG_FRAME, HEADER, ProtocolError

PROTOCOL_VERSION = 2

# Field tags: (field_number << 3) | wire_type, wire type 0 = varint, 2 = length-delimited.
_TAG_ENVELOPE_RESPONSE = b"\x1a"  # Envelope.response = 3
_TAG_RESPONSE_ID = b"\x08"        # Response.id = 1
_TAG_RESPONSE_PAYLOAD = b"\x1a"   # Response.payload = 3
_MORE_FIELD = b"\x20\x01"          # Response.more = 4, true

# Error texts are capped so an error reply can never itself exceed the frame limit.
_MAX_ERROR_TEXT = 1 << 16


# One-byte varints come from a table: ids and small sizes hit it on every reply.
_SMALL_VARINTS = tuple(bytes((i,)) for i in range(0x80))


def varint(value):
    """Protobuf base-128 varint of a non-negative int (at most 10 bytes for a uint64)."""
    # Unrolled for the lengths request ids and reply sizes have (ids grow by one per call).
    if value < 0x80:
        return _SMALL_VARINTS[value]
    if value < 0x4000:
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    if value < 0x200000:
        return bytes(((value & 0x7F) | 0x80, ((value >> 7) & 0x7F) | 0x80, value >> 14))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _frame_head(inner_size):
    """4-byte length + Envelope.response tag + the Response's size, for a Response of inner_size."""
    size = varint(inner_size)
    return HEADER.pack(1 + len(size) + inner_size) + _TAG_ENVELOPE_RESPONSE + size


# The prefixes of a small reply, precomputed by value (a few hundred tiny bytes objects).
_ID_FIELDS = tuple(_TAG_RESPONSE_ID + _SMALL_VARINTS[i] for i in range(0x80))
_PAYLOAD_HEADS = tuple(_TAG_RESPONSE_PAYLOAD + _SMALL_VARINTS[n] for n in range(0x80))
_FRAME_HEADS = tuple(_frame_head(n) for n in range(0x80))


# The most ok_response adds to a payload of up to 2**14 bytes (inclusive): tag + size (<= 3
# bytes) of Envelope.response, tag + id (<= 10 bytes), tag + size (<= 3 bytes) of the payload.
SMALL_REPLY_OVERHEAD = 1 + 3 + 1 + 10 + 1 + 3


def ok_response(request_id, payload):
    """The whole frame (4-byte length included) of Envelope{response{id, payload}}.

    For small payloads, sent with one write(2): the payload is copied once, into the frame.
    Big payloads go through ok_response_frame instead, which leaves them where they are.
    """
    size = len(payload)
    id_field = _ID_FIELDS[request_id] if request_id < 0x80 else \
        _TAG_RESPONSE_ID + varint(request_id)
    payload_head = _PAYLOAD_HEADS[size] if size < 0x80 else _TAG_RESPONSE_PAYLOAD + varint(size)
    inner_size = len(id_field) + len(payload_head) + size
    frame_head = _FRAME_HEADS[inner_size] if inner_size < 0x80 else _frame_head(inner_size)
    return b"".join((frame_head, id_field, payload_head, payload))


def ok_response_frame(request_id, payload):
    """Frame of Envelope{response{id, payload}} as (head, payload); head holds the 4-byte length.

    Returns the frame body size too, so the caller can check it against the frame limit
    before writing anything.
    """
    size = len(payload)
    inner = _TAG_RESPONSE_ID + varint(request_id) + _TAG_RESPONSE_PAYLOAD + varint(size)
    inner_size = len(inner) + size
    outer = _TAG_ENVELOPE_RESPONSE + varint(inner_size)
    body_size = len(outer) + inner_size
    return HEADER.pack(body_size) + outer + inner, body_size


def chunk_frame(request_id, payload):
    """Frame of Envelope{response{id, more=true, payload}} (a stream's chunk) as (head, payload).

    Like ok_response_frame, with the frame body size; the chunk is written from its own buffer.
    """
    size = len(payload)
    inner = (_TAG_RESPONSE_ID + varint(request_id) + _MORE_FIELD + _TAG_RESPONSE_PAYLOAD
             + varint(size))
    inner_size = len(inner) + size
    outer = _TAG_ENVELOPE_RESPONSE + varint(inner_size)
    body_size = len(outer) + inner_size
    return HEADER.pack(body_size) + outer + inner, body_size


def stream_end_frame(request_id):
    """The final Response of a stream that ended normally: stream_end=true, no payload."""
    env = pb.Envelope()
    env.response.id = request_id
    env.response.stream_end = True
    return _frame(env)


def host_call_frame(host_id, call_id, name, payload):
    """Envelope{host_call{id, call_id, name, payload}}: a handler of call_id calls the host."""
    env = pb.Envelope()
    call = env.host_call
    call.id = host_id
    call.call_id = call_id
    call.name = name
    call.payload = payload
    return _frame(env)


def _frame(envelope):
    body = envelope.SerializeToString()
    return HEADER.pack(len(body)) + body


def hello_frame(pid, python_version, handler_names):
    env = pb.Envelope()
    hello = env.hello
    hello.protocol_version = PROTOCOL_VERSION
    hello.pid = pid
    hello.python_version = python_version
    hello.handlers.extend(handler_names)
    return _frame(env)


def pong_frame(ping_id):
    env = pb.Envelope()
    env.pong.id = ping_id
    return _frame(env)


def error_frame(request_id, error_type, message, traceback_text):
    env = pb.Envelope()
    resp = env.response
    resp.id = request_id
    resp.error.type = _clean_text(error_type)
    resp.error.message = _clean_text(message)
    resp.error.traceback = _clean_text(traceback_text)
    return _frame(env)


def _clean_text(text):
    # proto3 strings must be valid UTF-8: lone surrogates (e.g. from os.fsdecode) would make
    # SerializeToString raise; replace them instead of losing the whole error.
    if len(text) > _MAX_ERROR_TEXT:
        text = text[:_MAX_ERROR_TEXT] + "\n... (truncated)"
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def decode(body):
    """(kind, message) of the Envelope in a frame body; ProtocolError if it is not one.

    kind is the oneof's name ("request", "ping", ...) or None for an empty envelope. body is
    bytes, or for a big frame a memoryview into the reader's reused buffer: nothing returned
    refers to it (the payload is copied out, the protobuf parser copies what it keeps).
    """
    if len(body) >= _FAST_PATH_MIN:
        request = _fast_request(body)
        if request is not None:
            return "request", request
    env = _Envelope()
    try:
        consumed = env.ParseFromString(body)
    except DecodeError as exc:
        raise ProtocolError("undecodable envelope (%d bytes): %s" % (len(body), exc)) from None
    # The C++ backend stops at a stray end-group tag with only a RuntimeWarning and returns how
    # far it got: treat a partial parse as the garbage it is. (That is also why this is not
    # Envelope.FromString, which would be a little cheaper: it hides how far it got.)
    if consumed != len(body):
        raise ProtocolError("undecodable envelope (%d bytes): parsed only %d bytes"
                            % (len(body), consumed))
    # A small request is one field, Envelope.request (tag 0x12), whose one-byte length covers the
    # rest of the body: then the oneof can only be "request", and these two byte reads are
    # cheaper than asking the message (WhichOneof + getattr), on every call.
    if consumed > 1 and body[0] == _TAG_ENVELOPE_REQUEST and body[1] == consumed - 2:
        return "request", env.request
    kind = env.WhichOneof("msg")
    return kind, (getattr(env, kind) if kind else None)


_Envelope = pb.Envelope


# Big requests skip the protobuf parser: it copies the payload into a C++ string and again into
# the bytes handed to the handler, and fresh memory for big payloads costs page faults. The hand
# parser below copies the payload once, out of the frame (a memoryview into the reader's reused
# buffer), into the bytes the handler gets: that copy is needed because the buffer is reused,
# and it is the only one. It only accepts the layout the C encoder writes (one
# Envelope.request, each Request field at most once, no unknown fields) and returns None for
# anything else, so the protobuf parser stays the authority on odd input.
_FAST_PATH_MIN = BIG_FRAME
_TAG_ENVELOPE_REQUEST = 0x12
_VARINT_FIELDS = (1, 5)      # Request.id, Request.deadline_ms
_BYTES_FIELDS = (2, 3, 4)    # Request.method, Request.payload, Request.session_id


class FastRequest:
    """The attributes of pypool_pb2.Request that the worker reads."""

    __slots__ = ("id", "method", "payload", "session_id", "deadline_ms")

    def __init__(self, fields):
        # fields holds memoryviews of the frame for the bytes fields: copied out here, once.
        self.id = fields.get(1, 0)
        self.method = str(fields.get(2, b""), "utf-8")
        self.payload = bytes(fields.get(3, b""))
        self.session_id = str(fields.get(4, b""), "utf-8")
        deadline = fields.get(5, 0)
        self.deadline_ms = deadline - (1 << 64) if deadline >= (1 << 63) else deadline


def _read_varint(buf, pos):
    result = 0
    shift = 0
    while shift < 64:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
    raise ValueError("varint too long")


def _fast_request(body):
    """FastRequest from a canonical Envelope{request}, or None to let protobuf decide.

    body: bytes or a memoryview. Slices of a memoryview are views, not copies, so the fields
    are sliced from one and each is copied once, by FastRequest.
    """
    body = memoryview(body)
    try:
        if body[0] != _TAG_ENVELOPE_REQUEST:
            return None
        size, pos = _read_varint(body, 1)
        if pos + size != len(body):
            return None
        fields = _request_fields(body, pos)
        if fields is None or fields.get(1, 0) >= (1 << 64):
            return None
        return FastRequest(fields)
    except (IndexError, ValueError):  # truncated varint/field, bad UTF-8 (UnicodeDecodeError)
        return None


def _request_fields(body, pos):
    end = len(body)
    fields = {}
    while pos < end:
        key, pos = _read_varint(body, pos)
        field, wire_type = key >> 3, key & 7
        if field in fields:
            return None
        if wire_type == 0 and field in _VARINT_FIELDS:
            fields[field], pos = _read_varint(body, pos)
        elif wire_type == 2 and field in _BYTES_FIELDS:
            size, pos = _read_varint(body, pos)
            if pos + size > end:
                return None
            fields[field] = body[pos:pos + size]
            pos += size
        else:
            return None
    return fields
