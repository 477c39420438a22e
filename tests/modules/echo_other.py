"""Test worker module for the two-pools test: a different module than echo_mod."""

import pypool


@pypool.handler
def whoami(payload, ctx):
    return b"other"
