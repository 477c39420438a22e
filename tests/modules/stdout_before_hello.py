"""Test worker module that prints at import: the lines go to the log, never into the channel."""

import pypool

for _i in range(3):
    print("stdout_before_hello line %d" % _i)


@pypool.handler
def echo(payload, ctx):
    return payload
