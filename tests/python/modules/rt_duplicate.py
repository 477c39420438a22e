"""Worker module for tests/python that registers one name twice (an import error)."""

import pypool


@pypool.handler("same")
def first(payload, ctx):
    return b"1"


@pypool.handler("same")
def second(payload, ctx):
    return b"2"
