"""bench_start.py - cold start of one worker: spawn to Hello, against a bare interpreter.

Not a unittest (the discover pattern test_*.py skips it): a script to run by hand, e.g.

    /usr/bin/python3 tests/python/bench_start.py --runtime build-py/python
    ... bench_start.py --runtime before=/tmp/old/python --runtime after=build-py/python -n 20

Each start is spawned as the C pool spawns a worker (posix_spawn, fds 3/4 on pipes, the pool's
environment variables) and timed until its first bytes arrive on fd 4 (the Hello frame), then
its request pipe is closed (EOF: the worker exits 0). Launch styles, per --runtime dir:
  m       python -m pypool --module M                (what the C pool runs today)
  c       python -c "from pypool.__main__ import run; run()" --module M   (no runpy)
and once:
  floor   python -c "import os, google.protobuf, pypool_pb2, bench_work; os.write(4, b'R')":
          pypool-bench's coldstart floor, a bare interpreter with the same heavy imports.
Starts are interleaved (every contender once per round, rotating order) so machine drift hits
them alike; the report is the median ms per contender. M is bench_mod (bench/python), as in
pypool-bench. --importtime also runs each contender under PYTHONPROFILEIMPORTTIME=1 and reports
the median cumulative import time of the modules that matter for start-up.
"""

import argparse
import os
import select
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BENCH_DIR = os.path.join(ROOT, "bench", "python")
MODULE = "bench_mod"
# What __main__.run() does, spelt out so older runtimes (without run) can be timed alike.
C_MAIN = "import sys; from pypool.__main__ import main; sys.exit(main(sys.argv[1:]))"
# The floor as bench/scenarios_coldstart.c runs it.
FLOOR_CODE = ("import os, google.protobuf, pypool_pb2, bench_work\n"
              "os.write(4, b'R')\nos.read(3, 1)\n")
# Modules whose cumulative import time --importtime reports (when they are imported at all).
WATCHED = ("runpy", "traceback", "ctypes", "_ctypes", "importlib.util", "pypool", "pypool._boot",
           "pypool._worker", "pypool._classic", "pypool._replies", "pypool._streams",
           "pypool._calls", "pypool._mux", "pypool._mux_threads", "pypool._wire",
           "pypool.pypool_pb2", "bench_mod", "pypool_pb2")


def _default_runtime():
    return os.environ.get("PYPOOL_RUNTIME_DIR") or os.path.join(ROOT, "build-py", "python")


def contenders(python, runtimes, styles):
    """[(name, argv, PYTHONPATH)] for every style of every runtime, then the floor."""
    out = []
    for label, path in runtimes:
        pythonpath = os.pathsep.join([BENCH_DIR, path])
        for style in styles:
            if style == "m":
                argv = [python, "-m", "pypool", "--module", MODULE]
            elif style == "c":
                argv = [python, "-c", C_MAIN, "--module", MODULE]
            else:
                raise SystemExit("unknown style %r (m, c)" % style)
            out.append(("%s:%s" % (label, style), argv, pythonpath))
    floor_path = os.pathsep.join([BENCH_DIR, os.path.join(runtimes[0][1], "pypool")])
    out.append(("floor", [python, "-c", FLOOR_CODE], floor_path))
    return out


def start_once(argv, pythonpath, extra_env=None):
    """(ms from spawn to the first bytes on fd 4, the child's stderr if it was captured)."""
    req_r, req_w = os.pipe()
    resp_r, resp_w = os.pipe()
    err_r = err_w = -1
    # No PYPOOL_PROTOCOL_VERSION: runtimes of different protocol versions may be compared.
    env = dict(os.environ, PYTHONPATH=pythonpath, PYPOOL_PARENT_PID=str(os.getpid()),
               PYPOOL_MAX_FRAME=str(64 << 20))
    env.update(extra_env or {})
    actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
               (os.POSIX_SPAWN_DUP2, req_r, 3), (os.POSIX_SPAWN_DUP2, resp_w, 4)]
    if extra_env:
        err_r, err_w = os.pipe()
        actions.append((os.POSIX_SPAWN_DUP2, err_w, 2))
    for fd in (req_w, resp_r, err_r):  # the parent's ends must not leak into the child
        if fd >= 0:
            os.set_inheritable(fd, False)
    start = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, env, file_actions=actions, setpgroup=0)
    for fd in (req_r, resp_w, err_w):
        if fd >= 0:
            os.close(fd)
    err = bytearray()
    try:
        while True:  # drain stderr while waiting, or a chatty child could block on it
            ready = select.select([resp_r] + ([err_r] if err_r >= 0 else []), [], [], 30)[0]
            if not ready:
                raise RuntimeError("%s: no reply within 30 s" % argv)
            if err_r in ready:
                err += os.read(err_r, 1 << 16)
            if resp_r in ready:
                if not os.read(resp_r, 1 << 16):
                    raise RuntimeError("%s exited before its first frame" % argv)
                break
        elapsed = (time.perf_counter() - start) * 1e3
    finally:
        os.close(req_w)  # EOF on fd 3: the worker (and the floor) exit
        if err_r >= 0:
            while True:
                chunk = os.read(err_r, 1 << 16)
                if not chunk:
                    break
                err += chunk
            os.close(err_r)
        os.waitpid(pid, 0)
        os.close(resp_r)
    return elapsed, err.decode("utf-8", "replace")


def import_times(stderr):
    """{module: cumulative µs} from a PYTHONPROFILEIMPORTTIME report, plus "(total)"."""
    out = {}
    total = 0
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative, name = line[len("import time:"):].split("|")
        total += int(self_us)
        out[name.strip()] = int(cumulative)
    out["(total)"] = total
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=20, help="starts per contender (20)")
    parser.add_argument("--runtime", action="append", default=[], metavar="[LABEL=]DIR",
                        help="a pypool runtime dir (<build>/python); repeatable")
    parser.add_argument("--style", action="append", metavar="m|c",
                        help="launch styles to time (default: m and c); repeatable")
    parser.add_argument("--python", default="/usr/bin/python3")
    parser.add_argument("--importtime", action="store_true",
                        help="also profile the imports of each contender (-n runs each)")
    args = parser.parse_args()
    runtimes = []
    for spec in args.runtime or [_default_runtime()]:
        label, _, path = spec.rpartition("=")
        runtimes.append((label or "pypool", os.path.abspath(path)))
    runs = contenders(args.python, runtimes, args.style or ["m", "c"])

    for name, argv, pythonpath in runs:  # warm the page cache and the bytecode caches
        start_once(argv, pythonpath)
    times = {name: [] for name, _, _ in runs}
    for rnd in range(args.n):
        shift = rnd % len(runs)
        for name, argv, pythonpath in runs[shift:] + runs[:shift]:
            times[name].append(start_once(argv, pythonpath)[0])

    print("spawn -> first frame (Hello), %d starts each, python %s, load average %.1f"
          % (args.n, args.python, os.getloadavg()[0]))
    floor = statistics.median(times["floor"])
    for name, values in times.items():
        med = statistics.median(values)
        extra = "" if name == "floor" else "  (%+.1f ms vs floor)" % (med - floor)
        print("  %-18s median %6.1f ms  [min %6.1f max %6.1f]%s"
              % (name, med, min(values), max(values), extra))

    if args.importtime:
        print("PYTHONPROFILEIMPORTTIME, median cumulative ms over %d runs "
              "(total: sum of every module's self time):" % args.n)
        for name, argv, pythonpath in runs:
            samples = [import_times(start_once(argv, pythonpath,
                                               {"PYTHONPROFILEIMPORTTIME": "1"})[1])
                       for _ in range(args.n)]
            cells = []
            for module in ("(total)",) + WATCHED:
                values = [s[module] for s in samples if module in s]
                if len(values) * 2 > len(samples):  # imported in most runs
                    cells.append("%s %.1f" % (module, statistics.median(values) / 1e3))
            print("  %-18s %s" % (name, ", ".join(cells)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
