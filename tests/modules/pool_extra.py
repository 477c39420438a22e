"""pool_extra - test handlers the pool and supervision Criterion suites need beyond echo_mod.

seq        a process-wide call counter: returns b"<n>:" + payload (shows the order calls were served)
nbytes     returns int(payload) bytes of b"x" (a reply of a chosen size)
long_line  prints one stdout line of int(payload) bytes, then the line "AFTER-LONG-LINE"
say        prints the payload as one stdout line
"""

import pypool

_seq = 0


@pypool.handler
def seq(payload, ctx):
    global _seq
    _seq += 1
    return b"%d:" % _seq + payload


@pypool.handler
def nbytes(payload, ctx):
    return b"x" * int(payload)



@pypool.handler
def long_line(payload, ctx):
    # One stdout line of int(payload) bytes, then a short marker line.
    n = int(payload)
    print("LONGLINE-START" + "y" * n, flush=True)
    print("AFTER-LONG-LINE", flush=True)
    return b"ok"


@pypool.handler
def say(payload, ctx):
    # Prints the payload as one line on stdout.
    print(payload.decode(), flush=True)
    return b"ok"
