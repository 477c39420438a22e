"""bench_io_mod.py - the pypool worker module of pypool-bench's multiplexed scenarios.

Loaded only by the `iobound`, `oversubscribed` and `stream` scenarios (never by the default
set, whose workers load bench_mod.py), because its handlers need the runtime's async, threaded
and generator handlers (max_inflight > 1, streams):

  echo            the no-op call (bench_work.echo, the very function the floor runs)
  io_sleep        async: awaits asyncio.sleep(S), S from the payload (ASCII, default 0.05 s),
                  a stand-in for an LLM or HTTP call; many run at once as tasks on the loop
  io_sleep_thread threaded: time.sleep(S) on one of the worker's threads
  chunks          generator: yields N chunks of 16 bytes, N from the payload (ASCII, default 1)
"""
import asyncio
import time

import pypool

import bench_work

CHUNK = b"c" * 16


def _seconds(payload):
    return float(payload) if payload else 0.05


@pypool.handler
def echo(payload, ctx):
    return bench_work.echo(payload)


@pypool.handler
async def io_sleep(payload, ctx):
    await asyncio.sleep(_seconds(payload))
    return b"ok"


@pypool.handler(threaded=True)
def io_sleep_thread(payload, ctx):
    time.sleep(_seconds(payload))
    return b"ok"


@pypool.handler
def chunks(payload, ctx):
    for _ in range(int(payload) if payload else 1):
        yield CHUNK
