"""Test worker module that never finishes importing: startup_timeout_ms must fire."""

import time

time.sleep(3600)
