"""Fake worker for worker_argv: answers with garbage instead of Hello, then sleeps.

Not a pypool worker on purpose: the pool must treat the garbage as a protocol error.
"""

import os
import time

os.write(4, b"\x00\x00\x00\x10not-a-hello-msg!")
time.sleep(3600)
