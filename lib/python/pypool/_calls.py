"""The runtime's state of one call beyond its Context (Call: cancellation, and in multiplexed
mode where the call is and what runs it), and the host-call pieces both serving loops share:
the HostCall frame, checked against the frame limit, and a HostReply turned into the result of
ctx.host() (docs/PROTOCOL.md, "Conversation").
"""

import pypool

from . import _frames, _wire

# Call.state in multiplexed mode.
WAITING = "waiting"   # behind a running call of its session
READY = "ready"       # handed to what runs it (main thread queue, thread pool, event loop)
RUNNING = "running"
DONE = "done"


class Call:
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


def host_call_frame(host_id, call_id, name, payload, max_frame):
    """The HostCall frame of ctx.host(); HostError (raised in the handler) if it is too big."""
    data = _wire.host_call_frame(host_id, call_id, name, payload)
    if len(data) - _frames.HEADER_SIZE > max_frame:
        raise pypool.HostError(-2, "the host call of %d bytes exceeds the frame limit of "
                                   "%d bytes" % (len(data) - _frames.HEADER_SIZE, max_frame))
    return data


def host_result(reply):
    """What ctx.host() returns for a HostReply: its payload, or HostError if the host failed."""
    if reply.error:
        raise pypool.HostError(reply.error, reply.message)
    return reply.payload
