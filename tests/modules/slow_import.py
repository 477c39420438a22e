"""Test worker module that takes PYPOOL_TEST_IMPORT_SLEEP seconds (default 0.5) to import."""

import os
import time

import pypool

time.sleep(float(os.environ.get("PYPOOL_TEST_IMPORT_SLEEP", "0.5")))


@pypool.handler
def echo(payload, ctx):
    return payload
