"""The worker's entry point (docs/PROTOCOL.md, "Process"): run() is the boot sequence, then it
serves fd 3 with the loop the pool asked for. The runtime, one concern per module:

  _boot.py         boot steps: parent checks, stdio, fds, limits, importing the user's module
  _frames.py       framing on the pipes: reading frames from fd 3, writing them whole to fd 4
  _wire.py         the messages: decoding Envelopes, hand-encoded Responses and other frames
  _classic.py      Worker: the classic loop, one call at a time (max_inflight 1)
  _mux.py          MuxWorker: up to max_inflight calls at once, its main thread
  _mux_threads.py  MuxWorker's thread pool, event loop thread, inbox and host-reply waiters
  _replies.py      final Responses: return values as payloads, error replies
  _streams.py      generators streamed chunk by chunk, coroutines awaited
  _calls.py        a call's runtime state (Call) and the HostCall/HostReply helpers
"""

import _thread
import os
import sys

import pypool

from . import _boot, _frames, _wire
from ._classic import Worker


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
        from ._mux import MuxWorker  # here only: a classic worker never loads the mux modules
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
