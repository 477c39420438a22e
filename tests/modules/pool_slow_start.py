"""pool_slow_start - a test module whose import sleeps POOL_SLOW_START_S seconds (default 1).

Used to tell concurrent worker startup from serial startup: the sleep costs no CPU, so N workers
starting together take about one sleep, N in a row take N sleeps.
"""

import os
import time

import pypool

time.sleep(float(os.environ.get("POOL_SLOW_START_S", "1")))


@pypool.handler
def echo(payload, ctx):
    return payload
