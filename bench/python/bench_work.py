"""bench_work.py - the work every contender runs in pypool-bench.

pypool's workers (through bench_mod.py), the floor worker, the ProcessPoolExecutor peer and the
embedded interpreter all call these very functions, so a difference in the figures is a
difference in the transport, never in the work.
"""

# ~1 ms of pure-Python work on the reference machine (2-core AMD EPYC VM, CPython 3.11).
# Fixed rather than calibrated at import, so every process does the same amount of work.
BURN_LOOPS = 32000


def echo(payload):
    """The no-op call: hands the payload back."""
    return payload


def burn_1ms(payload):
    """CPU-bound call: a pure-Python loop holding the GIL for ~1 ms, then the payload back."""
    acc = 0
    for i in range(BURN_LOOPS):
        acc += i * i % 7
    return payload if acc >= 0 else b""


METHODS = {"echo": echo, "burn_1ms": burn_1ms}
