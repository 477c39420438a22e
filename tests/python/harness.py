"""Test harness: runs a real pypool worker on pipes at fds 3/4, as the C pool does.

Also makes the built runtime importable: PYPOOL_RUNTIME_DIR (set by ctest) is the build's
python dir holding the package and its generated pypool_pb2.
"""

import array
import fcntl
import os
import select
import struct
import subprocess
import sys
import termios
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TEST_MODULES = os.path.join(HERE, "modules")
C_TEST_MODULES = os.path.join(os.path.dirname(HERE), "modules")
RUNTIME_DIR = os.environ.get("PYPOOL_RUNTIME_DIR") or os.path.join(
    os.path.dirname(os.path.dirname(HERE)), "build", "python")
if not os.path.isfile(os.path.join(RUNTIME_DIR, "pypool", "pypool_pb2.py")):
    raise RuntimeError("no built pypool runtime in %r: set PYPOOL_RUNTIME_DIR to <build>/python"
                       % RUNTIME_DIR)
if RUNTIME_DIR not in sys.path:
    sys.path.insert(0, RUNTIME_DIR)

from pypool import pypool_pb2 as pb  # noqa: E402  (needs the sys.path entry above)
from pypool._wire import PROTOCOL_VERSION  # noqa: E402

PYTHON = sys.executable
HEADER = struct.Struct(">I")
DEFAULT_TIMEOUT = 20.0
# The worker as the C pool starts it today, and without runpy (pypool/__main__.py's run()).
LAUNCH_M = [PYTHON, "-m", "pypool"]
LAUNCH_C = [PYTHON, "-c", "from pypool.__main__ import run; run()"]


def frame(envelope):
    body = envelope.SerializeToString()
    return HEADER.pack(len(body)) + body


def request(req_id, method, payload=b"", session_id="", deadline_ms=0):
    return pb.Envelope(request=pb.Request(id=req_id, method=method, payload=payload,
                                          session_id=session_id, deadline_ms=deadline_ms))


def cancel(req_id):
    return pb.Envelope(cancel=pb.Cancel(id=req_id))


def wait_for_file(path, timeout=DEFAULT_TIMEOUT):
    """Waits until a handler created path (tests wait for events, not for durations)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError("%s never appeared" % path)
        time.sleep(0.002)


def _high_dup(fd):
    # Park the child's ends above 9 so the dup2 to 3/4 in the child never clobbers one of them.
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class _Drain(threading.Thread):
    """Collects everything the worker writes to one of its log streams."""

    def __init__(self, stream):
        super().__init__(daemon=True)
        self._stream = stream
        self.data = bytearray()

    def run(self):
        for chunk in iter(lambda: self._stream.read1(65536), b""):
            self.data += chunk


class Worker:
    """One worker subprocess; send() frames to fd 3, recv() frames from fd 4.

    Like the C pool, the harness keeps a read end of the request pipe of its own (never read):
    a write to a dead worker gets no EPIPE, and unread() tells how much of what was sent the
    worker never took.
    """

    def __init__(self, module, parent_pid=None, max_frame=None, extra_env=None, launcher=None):
        """launcher: the argv before "--module", by default what the C pool runs (-m pypool)."""
        req_r, self.req_w = os.pipe()
        self.req_peek = fcntl.fcntl(req_r, fcntl.F_DUPFD_CLOEXEC, 0)
        self.resp_r, resp_w = os.pipe()
        child_req, child_resp = _high_dup(req_r), _high_dup(resp_w)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([TEST_MODULES, C_TEST_MODULES, RUNTIME_DIR])
        env["PYPOOL_PARENT_PID"] = str(os.getpid() if parent_pid is None else parent_pid)
        env["PYPOOL_PROTOCOL_VERSION"] = str(PROTOCOL_VERSION)
        if max_frame is not None:
            env["PYPOOL_MAX_FRAME"] = str(max_frame)
        env.update(extra_env or {})

        def arrange_fds():
            os.dup2(child_req, 3)
            os.dup2(child_resp, 4)

        self.proc = subprocess.Popen(
            (launcher or LAUNCH_M) + ["--module", module], env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=False,
            preexec_fn=arrange_fds)
        os.close(child_req)
        os.close(child_resp)
        self._out, self._err = _Drain(self.proc.stdout), _Drain(self.proc.stderr)
        self._out.start()
        self._err.start()
        self.host_calls = []  # HostCalls seen by collect()
        self.others = []      # frames collect() read that were no Response of its calls

    # --- channel ---------------------------------------------------------------------------
    def send_raw(self, data):
        view = memoryview(data)
        while view:
            view = view[os.write(self.req_w, view):]

    def send(self, envelope):
        self.send_raw(frame(envelope))

    def unread(self):
        """Bytes written to the worker's request pipe that it has not read (FIONREAD)."""
        count = array.array("i", [0])
        fcntl.ioctl(self.req_peek, termios.FIONREAD, count)
        return count[0]

    def close_requests(self):
        if self.req_w >= 0:
            os.close(self.req_w)
            self.req_w = -1

    def _read_exact(self, size, deadline):
        buf = bytearray()
        while len(buf) < size:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.resp_r], [], [], left)[0]:
                raise TimeoutError("no frame from the worker in time; stderr:\n" + self.stderr)
            chunk = os.read(self.resp_r, min(size - len(buf), 1 << 20))
            if not chunk:
                return bytes(buf)
            buf += chunk
        return bytes(buf)

    def recv_body(self, timeout=DEFAULT_TIMEOUT):
        """Next frame's body, or None on EOF (the worker closed fd 4)."""
        deadline = time.monotonic() + timeout
        head = self._read_exact(4, deadline)
        if not head:
            return None
        if len(head) != 4:
            raise AssertionError("EOF inside a frame header")
        (size,) = HEADER.unpack(head)
        body = self._read_exact(size, deadline)
        if len(body) != size:
            raise AssertionError("EOF inside a frame body")
        return body

    def recv(self, timeout=DEFAULT_TIMEOUT):
        body = self.recv_body(timeout)
        return None if body is None else pb.Envelope.FromString(body)

    def hello(self):
        env = self.recv()
        assert env is not None, "worker exited before Hello; stderr:\n" + self.stderr
        assert env.WhichOneof("msg") == "hello", env
        return env.hello

    def call(self, method, payload=b"", req_id=1, session_id="", deadline_ms=0):
        self.send(request(req_id, method, payload, session_id, deadline_ms))
        env = self.recv()
        assert env is not None, "worker died during %s; stderr:\n%s" % (method, self.stderr)
        assert env.WhichOneof("msg") == "response", env
        assert env.response.id == req_id, (env.response.id, req_id)
        return env.response

    # --- calls with streams and host calls (protocol 2) -------------------------------------
    def host_reply(self, call):
        """What this stand-in pool answers a HostCall: "upper" upper-cases the payload, "fail"
        fails with code 7; anything else fails with -1 (as a pool without host_fn)."""
        if call.name == "upper":
            reply = pb.HostReply(id=call.id, call_id=call.call_id, payload=call.payload.upper())
        elif call.name == "fail":
            reply = pb.HostReply(id=call.id, call_id=call.call_id, error=7,
                                 message="failed on purpose")
        else:
            reply = pb.HostReply(id=call.id, call_id=call.call_id, error=-1, message="no host_fn")
        return pb.Envelope(host_reply=reply)

    def collect(self, ids, timeout=DEFAULT_TIMEOUT, on_chunk=None):
        """Reads frames until each request id in ids got its final Response, answering host
        calls on the way. Returns {id: (chunks, final Response)}; frames that are neither
        (pongs) go to self.others. on_chunk(id, n) is called after a call's n-th chunk."""
        ids = set(ids)
        got = {i: [] for i in ids}
        done = {}
        deadline = time.monotonic() + timeout
        while len(done) < len(ids):
            env = self.recv(max(0.01, deadline - time.monotonic()))
            assert env is not None, "worker died; stderr:\n" + self.stderr
            kind = env.WhichOneof("msg")
            if kind == "host_call":
                self.host_calls.append(env.host_call)
                self.send(self.host_reply(env.host_call))
            elif kind == "response" and env.response.id in ids:
                resp = env.response
                assert resp.id not in done, "a Response after the final one: %s" % resp
                if resp.more:
                    got[resp.id].append(resp.payload)
                    if on_chunk is not None:
                        on_chunk(resp.id, len(got[resp.id]))
                else:
                    done[resp.id] = resp
            else:
                self.others.append(env)
        return {i: (got[i], done[i]) for i in ids}

    def stream(self, method, payload=b"", req_id=1, **kw):
        """(chunks, final Response) of one call."""
        self.send(request(req_id, method, payload, **kw))
        return self.collect([req_id])[req_id]

    # --- process ---------------------------------------------------------------------------
    def wait(self, timeout=DEFAULT_TIMEOUT):
        status = self.proc.wait(timeout)
        self._out.join(5)
        self._err.join(5)
        return status

    @property
    def stdout(self):
        return self._out.data.decode("utf-8", "replace")

    @property
    def stderr(self):
        return self._err.data.decode("utf-8", "replace")

    def close(self):
        self.close_requests()
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait()
        os.close(self.resp_r)
        os.close(self.req_peek)
        self.proc.stdout.close()
        self.proc.stderr.close()
