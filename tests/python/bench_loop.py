"""bench_loop.py - per-request overhead of the worker loop against the physical floor.

Not a unittest (the discover pattern test_*.py skips it): a script to run by hand, e.g.

    PYPOOL_RUNTIME_DIR=build-py/python /usr/bin/python3 tests/python/bench_loop.py
    ... bench_loop.py --runtime before=/tmp/old/python --runtime after=build-py/python --cpu 1

It starts one process per contender on pipes at fds 3/4 (as the C pool does) and sends N
16-byte echo requests one at a time, waiting for each reply. Contenders:
  pypool[:label]  python -m pypool --module echo_mod (tests/modules), one per --runtime dir
  floor           bench/python/floor_worker.py: the least a Python child can do per call
Rounds are interleaved (every contender runs once per round, in rotating order) so drift of
the machine hits them all alike; the report is the median of the per-round µs/call.
The driver is the same for every contender, so differences are the workers' own costs. Two
figures per contender: the round trip (wall clock; noisy when the machine is busy) and the
worker's own CPU time per call from /proc/PID/schedstat (steadier). --cpu pins everything to
one CPU, which takes cross-CPU wake-ups out of the round trip and steadies it further.
"""

import argparse
import fcntl
import os
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

    def __init__(self, name, argv, pythonpath, expect_hello):
        self.name = name
        req_r, self.req_w = os.pipe()
        self.resp_r, resp_w = os.pipe()
        child_req, child_resp = _high_dup(req_r), _high_dup(resp_w)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(pythonpath),
                   PYPOOL_PARENT_PID=str(os.getpid()), PYPOOL_PROTOCOL_VERSION="1")

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

    def cpu_ns(self):
        """The worker's time on a CPU so far, in ns (/proc/PID/schedstat: exact, not ticks)."""
        with open("/proc/%d/schedstat" % self.proc.pid) as f:
            return int(f.read().split()[0])

    def run(self, frames):
        """(wall seconds, worker CPU seconds) for all frames, one round trip at a time."""
        write, read, req_w, resp_r = os.write, os.read, self.req_w, self.resp_r
        cpu_start = self.cpu_ns()
        start = time.perf_counter()
        for frame in frames:
            write(req_w, frame)
            data = read(resp_r, 65536)
            # A small reply arrives in one write(2); fall back to the careful path otherwise.
            if len(data) < 4 or len(data) != 4 + HEADER.unpack_from(data)[0]:
                raise RuntimeError("%s: short or odd reply %r" % (self.name, data[:64]))
        wall = time.perf_counter() - start
        return wall, (self.cpu_ns() - cpu_start) / 1e9

    def close(self):
        os.close(self.req_w)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.resp_r)


def make_frames(pb, count):
    frames = []
    for i in range(count):
        body = pb.Envelope(request=pb.Request(id=i + 1, method="echo",
                                              payload=PAYLOAD)).SerializeToString()
        frames.append(HEADER.pack(len(body)) + body)
    return frames


def check_echo(contender, pb):
    body = pb.Envelope(request=pb.Request(id=42, method="echo", payload=PAYLOAD))
    body = body.SerializeToString()
    os.write(contender.req_w, HEADER.pack(len(body)) + body)
    env = pb.Envelope.FromString(contender.recv()[4:])
    assert env.response.id == 42 and env.response.payload == PAYLOAD, (contender.name, env)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=20000, help="requests per round (20000)")
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
    pb = _pb(runtimes[0][1])
    frames = make_frames(pb, args.n)

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
            check_echo(c, pb)
            c.run(frames[:2000])  # warm-up: caches, branch predictors, CPU frequency
        wall = {c.name: [] for c in contenders}
        cpu = {c.name: [] for c in contenders}
        for rnd in range(args.rounds):
            shift = rnd % len(contenders)
            for c in contenders[shift:] + contenders[:shift]:
                w, t = c.run(frames)
                wall[c.name].append(w / args.n * 1e6)
                cpu[c.name].append(t / args.n * 1e6)
    finally:
        for c in contenders:
            c.close()

    print("%d x %d-byte echo, %d interleaved rounds, python %s, CPUs %s, load average %.1f"
          % (args.n, len(PAYLOAD), args.rounds, args.python,
             sorted(os.sched_getaffinity(0)), os.getloadavg()[0]))
    # Round-trip time includes the driver and the scheduler, so it is noisy on a busy machine;
    # the worker's own CPU time per call is what the worker loop controls.
    _report("round trip (wall)", wall)
    _report("worker CPU time", cpu)
    return 0


def _report(title, results):
    print(title + ", us/call:")
    floor = statistics.median(results["floor"]) if "floor" in results else None
    for name, per_call in results.items():
        med = statistics.median(per_call)
        extra = "" if floor is None or name == "floor" else \
            "  (%+.2f us, %+.1f%% vs floor)" % (med - floor, (med / floor - 1) * 100)
        print("  %-16s median %6.2f  [min %6.2f max %6.2f]%s"
              % (name, med, min(per_call), max(per_call), extra))


if __name__ == "__main__":
    sys.exit(main())
