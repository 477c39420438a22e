"""Worker entry point: ``python -m pypool --module NAME`` (NAME: dotted module or path to a .py).

The pool starts this with fds 3 (requests in) and 4 (responses out) already in place; see
docs/PROTOCOL.md. Arguments are parsed by hand because argparse alone costs milliseconds of
startup in every worker.

``-m`` makes the interpreter import runpy, importlib.util and contextlib before this module
runs, which nothing else in a worker needs (~1.5 ms of every start here, that nothing in this
file can win back). The same worker without them, for launchers that can choose the command
line::

    python -c "from pypool.__main__ import run; run()" --module NAME

This module imports nothing but sys up front, so either way it adds next to nothing itself.
"""

import sys

NO_PROTOBUF = (
    "pypool worker: the interpreter %s cannot import google.protobuf (%s).\n"
    "Install it (Debian: apt-get install python3-protobuf) or point the pool at an interpreter\n"
    "that has it (pypool_config.python or $PYPOOL_PYTHON).\n")
USAGE = "usage: python -m pypool --module NAME   (NAME: dotted module name or path/to/file.py)\n"


def parse_module(argv):
    """The --module value from argv, or None if the arguments are not understood."""
    if len(argv) == 2 and argv[0] == "--module" and argv[1]:
        return argv[1]
    if len(argv) == 1 and argv[0].startswith("--module=") and len(argv[0]) > len("--module="):
        return argv[0][len("--module="):]
    return None


def main(argv):
    module_name = parse_module(argv)
    if module_name is None:
        sys.stderr.write(USAGE)
        return 2
    try:
        from pypool import _boot, _worker  # only now: keeps `import pypool` cheap
    except ImportError as exc:
        if not (exc.name or "").startswith("google"):
            raise
        sys.stderr.write(NO_PROTOBUF % (sys.executable, exc))
        return 1
    try:
        _worker.run(module_name)
    except SystemExit as exc:
        # A handler called sys.exit(): really exit, with its status, without waiting for
        # non-daemon threads the user may have started.
        _boot.exit_now(_exit_status(exc.code))
    return 0


def run():
    """``python -c "from pypool.__main__ import run; run()" --module NAME``: exits when done."""
    sys.exit(main(sys.argv[1:]))


def _exit_status(code):
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    sys.stderr.write("%s\n" % (code,))
    return 1


if __name__ == "__main__":
    run()
