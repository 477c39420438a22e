"""slow_import_mod.py - a pypool worker module whose import takes 0.5 s (a model load).

pypool-bench's cold-start scenario starts 1 and 8 workers of it: started in parallel, 8 must be
ready in about one import's time.
"""
import time

import pypool

import bench_work

IMPORT_SECONDS = 0.5
time.sleep(IMPORT_SECONDS)


@pypool.handler
def echo(payload, ctx):
    return bench_work.echo(payload)
