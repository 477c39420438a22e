"""bench_mux.py - per-call cost of a multiplexed worker (PYPOOL_MAX_INFLIGHT=2) against classic.

Not a unittest (the discover pattern test_*.py skips it): a script to run by hand, e.g.

    PYPOOL_RUNTIME_DIR=build/python /usr/bin/python3 tests/python/bench_mux.py --cpu 1

Three contenders, each a worker of tests/modules/echo_mod.py on pipes at fds 3/4, sent N no-op
16-byte echo requests (bench_loop.py's driver and payload):
  classic        max_inflight 1, one request at a time (what bench_loop.py measures)
  mux2-serial    max_inflight 2, one request at a time: the mux loop's cost per call alone
  mux2-pipelined max_inflight 2, two requests in flight (a new one sent per reply, as the pool
                 does with two callers): requests queue in the worker, which should serve the
                 next one right after the previous one
Rounds are interleaved; the report is the median per-round µs per call, wall clock and the
worker's own CPU time (/proc/PID/schedstat), as in bench_loop.py.
"""

import argparse
import os
import statistics
import sys
import time

import bench_loop
from bench_loop import HEADER, PAYLOAD, Contender


def run_pipelined(contender, frames, depth):
    """(wall s, worker CPU s) for all frames with `depth` requests in flight at a time."""
    write, read, req_w, resp_r = os.write, os.read, contender.req_w, contender.resp_r
    cpu_start = contender.cpu_ns()
    start = time.perf_counter()
    sent = min(depth, len(frames))
    write(req_w, b"".join(frames[:sent]))
    done = 0
    pending = b""
    while done < len(frames):
        data = pending + read(resp_r, 1 << 16)
        pos = 0
        replies = 0
        while len(data) - pos >= 4:
            end = pos + 4 + HEADER.unpack_from(data, pos)[0]
            if end > len(data):
                break
            pos = end
            replies += 1
        pending = data[pos:]
        done += replies
        more = frames[sent:sent + replies]
        if more:
            write(req_w, b"".join(more))
            sent += len(more)
    wall = time.perf_counter() - start
    return wall, (contender.cpu_ns() - cpu_start) / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=20000, help="requests per round (20000)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (7)")
    parser.add_argument("--runtime", default=bench_loop._default_runtime(), metavar="DIR")
    parser.add_argument("--python", default="/usr/bin/python3")
    parser.add_argument("--cpu", type=int, action="append", metavar="N",
                        help="run the driver and the workers on these CPUs only; repeatable")
    args = parser.parse_args()
    if args.cpu:
        os.sched_setaffinity(0, args.cpu)
    runtime = os.path.abspath(args.runtime)
    pb = bench_loop._pb(runtime)
    frames = bench_loop.make_frames(pb, args.n, PAYLOAD)
    reply = bench_loop.reply_size(pb, frames)
    argv = [args.python, "-m", "pypool", "--module", "echo_mod"]
    path = [bench_loop.C_TEST_MODULES, runtime]
    contenders = [
        (Contender("classic", argv, path, True), lambda c: c.run(frames, reply)[:2]),
        (Contender("mux2-serial", argv, path, True, {"PYPOOL_MAX_INFLIGHT": "2"}),
         lambda c: c.run(frames, reply)[:2]),
        (Contender("mux2-pipelined", argv, path, True, {"PYPOOL_MAX_INFLIGHT": "2"}),
         lambda c: run_pipelined(c, frames, 2)),
    ]
    wall = {c.name: [] for c, _ in contenders}
    cpu = {c.name: [] for c, _ in contenders}
    try:
        for c, run in contenders:
            bench_loop.check_echo(c, pb, PAYLOAD)
            run(c)  # warm-up
        for rnd in range(args.rounds):
            shift = rnd % len(contenders)
            for c, run in contenders[shift:] + contenders[:shift]:
                w, t = run(c)
                wall[c.name].append(w / args.n * 1e6)
                cpu[c.name].append(t / args.n * 1e6)
    finally:
        for c, _ in contenders:
            c.close()
    print("%d x 16-byte echo, %d interleaved rounds, python %s, CPUs %s, load average %.1f"
          % (args.n, args.rounds, args.python, sorted(os.sched_getaffinity(0)),
             os.getloadavg()[0]))
    for title, results in (("round trip (wall)", wall), ("worker CPU time", cpu)):
        print("%s, us/call:" % title)
        base = statistics.median(results["classic"])
        for name, per_call in results.items():
            med = statistics.median(per_call)
            print("  %-15s median %6.2f  [min %6.2f max %6.2f]  %+.1f%% vs classic"
                  % (name, med, min(per_call), max(per_call), (med / base - 1) * 100))
    return 0


if __name__ == "__main__":
    sys.exit(main())
