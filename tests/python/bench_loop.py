"""bench_loop.py - per-request overhead of the worker loop against the physical floor.

Not a unittest (the discover pattern test_*.py skips it): a script to run by hand, e.g.

    PYPOOL_RUNTIME_DIR=build-py/python /usr/bin/python3 tests/python/bench_loop.py
    ... bench_loop.py --runtime before=/tmp/old/python --runtime after=build-py/python --cpu 1

It starts one process per contender on pipes at fds 3/4 (1 MiB pipes, as the C pool makes them)
and sends N echo requests (16 bytes unless --size says otherwise, e.g. --size 16M) one at a time,
waiting for each reply. Contenders:
  pypool[:label]  python -m pypool --module echo_mod (tests/modules), one per --runtime dir
  floor           bench/python/floor_worker.py: the least a Python child can do per call
Rounds are interleaved (every contender runs once per round, in rotating order) so drift of
the machine hits them all alike; the report is the median of the per-round µs/call.
The driver is the same for every contender, so differences are the workers' own costs. Two
figures per contender: the round trip (wall clock; noisy when the machine is busy) and the
worker's own CPU time per call from /proc/PID/schedstat (steadier), plus the worker's minor page
faults per call from /proc/PID/stat (fresh memory touched per call: what big payloads cost most
on VMs). --cpu pins everything to one CPU, which takes cross-CPU wake-ups out of the round trip
and steadies it further.
"""

import argparse
import fcntl
import os
import re
import statistics
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
C_TEST_MODULES = os.path.join(ROOT, "tests", "modules")
BENCH_DIR = os.path.join(ROOT, "bench", "python")
HEADER = struct.Struct(">I")
PAYLOAD = b"0123456789abcdef"  # the 16-byte no-op call of the product target
PIPE_SIZE = 1 << 20            # what the C pool asks for (F_SETPIPE_SZ)
_F_SETPIPE_SZ = 1031
# A reply up to this size arrives in one read(2) (one write(2) on the worker's side).
_ONE_READ = 1 << 16


def parse_size(text):
    """Bytes from "16", "64K", "1M", "16MiB"... (binary units)."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    match = re.fullmatch(r"(\d+)\s*([KMG]?)(?:I?B)?", text.strip().upper())
    if not match:
        raise argparse.ArgumentTypeError("not a size: %r (e.g. 16, 64K, 16M)" % text)
    return int(match.group(1)) * units[match.group(2)]


def make_payload(size):
    """PAYLOAD for the default size; otherwise size bytes of a repeating, non-zero pattern."""
    if size == len(PAYLOAD):
        return PAYLOAD
    return (PAYLOAD * (size // len(PAYLOAD) + 1))[:size]


def _set_pipe_size(fd):
    try:
        fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:  # above /proc/sys/fs/pipe-max-size for an unprivileged user: keep the default
        pass


def _default_runtime():
    return os.environ.get("PYPOOL_RUNTIME_DIR") or os.path.join(ROOT, "build-py", "python")


def _pb(runtime_dir):
    sys.path.insert(0, runtime_dir)
    from pypool import pypool_pb2
    return pypool_pb2


def _high_dup(fd):
    # Park the child's ends above 9 so the dup2 to 3/4 in the child never clobbers one of them.
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class Contender:
    """One worker process on pipes; call() sends one pre-encoded frame and waits for its reply."""

    def __init__(self, name, argv, pythonpath, expect_hello, extra_env=None):
        self.name = name
        req_r, self.req_w = os.pipe()
        self.resp_r, resp_w = os.pipe()
        _set_pipe_size(self.req_w)
        _set_pipe_size(self.resp_r)
        # Big replies are read into this one buffer (grown on demand), so the driver does not
        # page-fault fresh memory per call and its cost stays the same for every contender.
        self._reply_buf = bytearray(_ONE_READ)
        child_req, child_resp = _high_dup(req_r), _high_dup(resp_w)
        # No PYPOOL_PROTOCOL_VERSION: runtimes of different protocol versions are compared.
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(pythonpath),
                   PYPOOL_PARENT_PID=str(os.getpid()), **(extra_env or {}))

        def arrange_fds():
            os.dup2(child_req, 3)
            os.dup2(child_resp, 4)

        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, close_fds=False,
                                     preexec_fn=arrange_fds)
        os.close(child_req)
        os.close(child_resp)
        if expect_hello:
            self.recv()

    def recv(self):
        """One whole reply frame (header included) as bytes."""
        fd = self.resp_r
        data = os.read(fd, 1 << 16)
        if not data:
            raise RuntimeError("%s exited (status %s)" % (self.name, self.proc.wait()))
        need = 4 + HEADER.unpack_from(data)[0] if len(data) >= 4 else 4
        while len(data) < need:
            more = os.read(fd, 1 << 16)
            if not more:
                raise RuntimeError("%s closed fd 4 mid-frame" % self.name)
            data += more
            if len(data) >= 4:
                need = 4 + HEADER.unpack_from(data)[0]
        return data

    def recv_into_buffer(self):
        """Reads one reply frame into the reused buffer; returns its size (header included)."""
        fd = self.resp_r
        got = 0
        while got < 4:
            more = os.readv(fd, [memoryview(self._reply_buf)[got:]])
            if not more:
                raise RuntimeError("%s exited (status %s)" % (self.name, self.proc.wait()))
            got += more
        need = 4 + HEADER.unpack_from(self._reply_buf)[0]
        if need > len(self._reply_buf):
            bigger = bytearray(need)  # grown once, at the first big reply (the warm-up)
            bigger[:got] = self._reply_buf[:got]
            self._reply_buf = bigger
        with memoryview(self._reply_buf) as view:
            while got < need:
                more = os.readv(fd, [view[got:need]])
                if not more:
                    raise RuntimeError("%s closed fd 4 mid-frame" % self.name)
                got += more
        return need

    def cpu_ns(self):
        """The worker's time on a CPU so far, in ns (/proc/PID/schedstat: exact, not ticks)."""
        with open("/proc/%d/schedstat" % self.proc.pid) as f:
            return int(f.read().split()[0])

    def minor_faults(self):
        """The worker's minor page faults so far (/proc/PID/stat field 10)."""
        with open("/proc/%d/stat" % self.proc.pid) as f:
            stat = f.read()
        return int(stat[stat.rindex(")") + 2:].split()[7])

    def run(self, frames, reply_size):
        """(wall s, worker CPU s, worker minor faults) for all frames, one round trip at a time."""
        write, read, req_w, resp_r = os.write, os.read, self.req_w, self.resp_r
        faults_start = self.minor_faults()
        cpu_start = self.cpu_ns()
        start = time.perf_counter()
        if reply_size <= _ONE_READ:
            for frame in frames:
                write(req_w, frame)
                data = read(resp_r, _ONE_READ)
                # A small reply arrives in one write(2), so one read(2) gets it whole.
                if len(data) < 4 or len(data) != 4 + HEADER.unpack_from(data)[0]:
                    raise RuntimeError("%s: short or odd reply %r" % (self.name, data[:64]))
        else:
            recv = self.recv_into_buffer
            for frame in frames:
                # The worker reads the whole request before it replies, so a blocking write of
                # a big frame cannot deadlock against its reply.
                view = memoryview(frame)
                while view:
                    view = view[write(req_w, view):]
                if recv() != reply_size:
                    raise RuntimeError("%s: reply of unexpected size" % self.name)
        wall = time.perf_counter() - start
        return wall, (self.cpu_ns() - cpu_start) / 1e9, self.minor_faults() - faults_start

    def close(self):
        os.close(self.req_w)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.resp_r)


def _frame(pb, req_id, payload):
    body = pb.Envelope(request=pb.Request(id=req_id, method="echo",
                                          payload=payload)).SerializeToString()
    return HEADER.pack(len(body)) + body


def make_frames(pb, count, payload):
    """count request frames (ids 1..count); big ones repeat a few distinct frames to save memory."""
    distinct = max(1, min(count, (64 << 20) // max(1, len(payload))))
    frames = [_frame(pb, i + 1, payload) for i in range(distinct)]
    return (frames * (count // distinct + 1))[:count]


def reply_size(pb, frames):
    """Size of the echo reply (header included) to frames[0]: the same for every frame."""
    req = pb.Envelope.FromString(frames[0][4:]).request
    body = pb.Envelope(response=pb.Response(id=req.id, payload=req.payload)).SerializeToString()
    return 4 + len(body)


def check_echo(contender, pb, payload):
    frame = _frame(pb, 42, payload)
    view = memoryview(frame)
    while view:
        view = view[os.write(contender.req_w, view):]
    env = pb.Envelope.FromString(contender.recv()[4:])
    assert env.response.id == 42 and env.response.payload == payload, contender.name


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int,
                        help="requests per round (default: 20000, fewer for big --size: "
                             "about 256 MiB of payload per round, at least 10)")
    parser.add_argument("--size", type=parse_size, default=len(PAYLOAD), metavar="BYTES",
                        help="payload size, e.g. 16, 64K, 1M, 16M (16)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (7)")
    parser.add_argument("--runtime", action="append", default=[], metavar="[LABEL=]DIR",
                        help="a pypool runtime dir (<build>/python) to measure; repeatable")
    parser.add_argument("--python", default="/usr/bin/python3")
    parser.add_argument("--no-floor", action="store_true")
    parser.add_argument("--cpu", type=int, action="append", metavar="N",
                        help="run the driver and the workers on these CPUs only; repeatable")
    args = parser.parse_args()
    if args.cpu:
        os.sched_setaffinity(0, args.cpu)  # the workers inherit it

    runtimes = []
    for spec in args.runtime or [_default_runtime()]:
        label, _, path = spec.rpartition("=")
        runtimes.append((label or "pypool", os.path.abspath(path)))
    if args.n is None:
        args.n = max(10, min(20000, (256 << 20) // max(1, args.size)))
    pb = _pb(runtimes[0][1])
    payload = make_payload(args.size)
    frames = make_frames(pb, args.n, payload)
    expected_reply = reply_size(pb, frames)

    contenders = []
    for label, path in runtimes:
        name = label if label.startswith("pypool") else "pypool:" + label
        contenders.append(Contender(name, [args.python, "-m", "pypool", "--module", "echo_mod"],
                                    [C_TEST_MODULES, path], expect_hello=True))
    if not args.no_floor:
        contenders.append(Contender(
            "floor", [args.python, os.path.join(BENCH_DIR, "floor_worker.py")],
            [BENCH_DIR, os.path.join(runtimes[0][1], "pypool")], expect_hello=False))

    try:
        for c in contenders:
            check_echo(c, pb, payload)
            # warm-up: caches, branch predictors, CPU frequency, the workers' heaps
            c.run(frames[:max(3, len(frames) // 10)], expected_reply)
        wall = {c.name: [] for c in contenders}
        cpu = {c.name: [] for c in contenders}
        faults = {c.name: [] for c in contenders}
        for rnd in range(args.rounds):
            shift = rnd % len(contenders)
            for c in contenders[shift:] + contenders[:shift]:
                w, t, f = c.run(frames, expected_reply)
                wall[c.name].append(w / args.n * 1e6)
                cpu[c.name].append(t / args.n * 1e6)
                faults[c.name].append(f / args.n)
    finally:
        for c in contenders:
            c.close()

    print("%d x %d-byte echo, %d interleaved rounds, python %s, CPUs %s, load average %.1f"
          % (args.n, len(payload), args.rounds, args.python,
             sorted(os.sched_getaffinity(0)), os.getloadavg()[0]))
    # Round-trip time includes the driver and the scheduler, so it is noisy on a busy machine;
    # the worker's own CPU time per call is what the worker loop controls.
    _report("round trip (wall)", wall)
    _report("worker CPU time", cpu)
    _report("worker minor page faults", faults, unit="faults/call")
    return 0


def _report(title, results, unit="us/call"):
    print("%s, %s:" % (title, unit))
    floor = statistics.median(results["floor"]) if "floor" in results else None
    for name, per_call in results.items():
        med = statistics.median(per_call)
        extra = "" if floor is None or name == "floor" else \
            "  (%+.2f, %s vs floor)" % (med - floor, _ratio(med, floor))
        print("  %-16s median %6.2f  [min %6.2f max %6.2f]%s"
              % (name, med, min(per_call), max(per_call), extra))


def _ratio(value, floor):
    if floor <= 0:
        return "n/a"
    if value >= 2 * floor:
        return "%.1fx" % (value / floor)
    return "%+.1f%%" % ((value / floor - 1) * 100)


if __name__ == "__main__":
    sys.exit(main())
