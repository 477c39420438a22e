"""ppe_bench.py - the peer of pypool-bench: concurrent.futures.ProcessPoolExecutor, same work.

Run by pypool-bench as a subprocess in the same run as pypool and the floor. Prints one JSON
object per line on stdout, which the C harness parses:
  latency    {"mode":"latency","size":N,"samples_us":[...]}  one per size: sequential
             submit().result() of bench_work.echo on a 1-worker executor
  throughput {"mode":"throughput","workers":N,"method":M,"calls":C,"seconds":S,"calls_per_s":R}
             batches of outstanding submits (one future per call, like one request per call)
Every figure is taken after a warm-up, with time.perf_counter_ns (CLOCK_MONOTONIC).
"""
import argparse
import concurrent.futures
import json
import sys
import time

import bench_work

BATCH = 256  # outstanding submits per batch in throughput mode
WARM_CALLS = 3  # latency: at least, per size (big payloads settle after a few calls)


def warm_up(ex, workers, method):
    fn = bench_work.METHODS[method]
    futures = [ex.submit(fn, b"w") for _ in range(8 * workers)]
    for f in futures:
        f.result()


def latency(args):
    with concurrent.futures.ProcessPoolExecutor(max_workers=1) as ex:
        warm_up(ex, 1, "echo")
        for size in args.sizes:
            payload = b"x" * size
            warm_until = time.perf_counter_ns() + int(args.warmup * 1e9)
            warm_calls = 0
            while warm_calls < WARM_CALLS or time.perf_counter_ns() < warm_until:
                ex.submit(bench_work.echo, payload).result()
                warm_calls += 1
            deadline = time.perf_counter_ns() + int(args.seconds * 1e9)
            samples = []
            while len(samples) < args.min_iters or time.perf_counter_ns() < deadline:
                t0 = time.perf_counter_ns()
                out = ex.submit(bench_work.echo, payload).result()
                samples.append((time.perf_counter_ns() - t0) / 1e3)
                if len(out) != size:
                    raise SystemExit("ppe_bench: echo returned %d bytes" % len(out))
                if len(samples) >= args.max_iters:
                    break
            emit({"mode": "latency", "size": size, "samples_us": [round(s, 2) for s in samples]})


def throughput(args):
    fn = bench_work.METHODS[args.method]
    payload = b"x" * args.payload
    with concurrent.futures.ProcessPoolExecutor(max_workers=args.workers) as ex:
        warm_up(ex, args.workers, args.method)
        calls = 0
        t0 = time.perf_counter_ns()
        deadline = t0 + int(args.seconds * 1e9)
        while time.perf_counter_ns() < deadline:
            futures = [ex.submit(fn, payload) for _ in range(BATCH)]
            for f in futures:
                f.result()
            calls += BATCH
        elapsed = (time.perf_counter_ns() - t0) / 1e9
    emit({"mode": "throughput", "workers": args.workers, "method": args.method, "calls": calls,
          "seconds": elapsed, "calls_per_s": calls / elapsed})


def emit(obj):
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["latency", "throughput"], required=True)
    ap.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[16])
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--warmup", type=float, default=0.05)
    ap.add_argument("--min-iters", type=int, default=5)
    ap.add_argument("--max-iters", type=int, default=1000000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--method", default="echo")
    ap.add_argument("--payload", type=int, default=16)
    args = ap.parse_args()
    latency(args) if args.mode == "latency" else throughput(args)


if __name__ == "__main__":
    main()
