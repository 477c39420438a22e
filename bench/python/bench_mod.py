"""bench_mod.py - the pypool worker module of pypool-bench: bench_work's functions as handlers."""
import pypool

import bench_work


@pypool.handler
def echo(payload, ctx):
    return bench_work.echo(payload)


@pypool.handler
def burn_1ms(payload, ctx):
    return bench_work.burn_1ms(payload)
