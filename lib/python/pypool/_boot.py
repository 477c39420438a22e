"""Process setup of a worker before it serves: parent checks, stdio, fds, the user's module.

Each step exists because of a failure seen without it:
- PR_SET_PDEATHSIG + the parent-pid check + a watchdog thread: a worker must not outlive the
  host (an orphan would hold its pipes and CPU forever). The check after prctl closes the race
  where the host died before prctl ran.
- fds 3 and 4 made close-on-exec: a grandchild started by a handler would otherwise hold the
  response pipe open, and the pool would never see EOF when this worker dies.
- line-buffered stdout/stderr: print() lines reach the pool's log callback promptly.

Every worker start pays for what this module imports, so modules needed only on rare paths
(traceback for an import failure, importlib.util for a module given as a file path) are
imported where they are used.
"""

import _thread
import importlib
import os
import signal
import sys
import time

REQUEST_FD = 3
RESPONSE_FD = 4
EXIT_OK = 0          # EOF, Shutdown, SIGTERM: the pool is done with us
EXIT_STARTUP = 1     # host gone, bad arguments, or the user's module failed to import
EXIT_PROTOCOL = 3    # channel broken (PROTOCOL.md)
DEFAULT_MAX_FRAME = 64 << 20
WATCHDOG_PERIOD = 0.5
_PR_SET_PDEATHSIG = 1


def exit_now(status):
    """Flush what the user printed, then leave without running atexit/threads (prompt exit)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:  # a broken log pipe must not turn a clean exit into a hang
            pass
    os._exit(status)


def fail(status, message):
    sys.stderr.write("pypool worker %d: %s\n" % (os.getpid(), message))
    exit_now(status)


def set_parent_death_signal():
    """Ask Linux to SIGKILL us when the parent (thread) goes away; best effort elsewhere.

    The stdlib has no prctl(), so this is a foreign call. It goes through _ctypes, the C half
    of ctypes, directly: `import ctypes` runs ctypes/__init__.py, which builds its whole type
    zoo at import (~1.5 ms of every worker's start here, on top of ~1 ms to load _ctypes),
    for one call that needs one function pointer type. The full ctypes is the fallback should
    a future _ctypes differ.
    """
    try:
        prctl = _prctl_via_private_ctypes()
    except Exception:  # e.g. _ctypes's private API changed: pay for the public one
        prctl = _prctl_via_ctypes()
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _prctl_via_private_ctypes():
    # What ctypes.CDLL(None).prctl builds, minus ctypes/__init__.py: a C function pointer type
    # with an int result (ctypes.c_int is this very _SimpleCData subclass) and cdecl calls;
    # the int arguments need no declared types.
    import _ctypes

    class c_int(_ctypes._SimpleCData):
        _type_ = "i"

    class CFunction(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL
        _restype_ = c_int

    try:
        address = _ctypes.dlsym(_ctypes.dlopen(None, os.RTLD_NOW), "prctl")
    except OSError:  # no prctl: not Linux
        return None
    return CFunction(address)


def _prctl_via_ctypes():
    try:
        import ctypes
        return ctypes.CDLL(None).prctl
    except (ImportError, OSError, AttributeError):
        return None


def expected_parent_pid():
    """PYPOOL_PARENT_PID, or our current parent when run by hand without it."""
    value = os.environ.get("PYPOOL_PARENT_PID")
    if not value:
        return os.getppid()
    try:
        return int(value)
    except ValueError:
        fail(EXIT_STARTUP, "PYPOOL_PARENT_PID is not a pid: %r" % value)


def check_parent(expected):
    actual = os.getppid()
    if actual != expected:
        fail(EXIT_STARTUP, "parent is pid %d, expected %d: the host is gone" % (actual, expected))


def start_parent_watchdog(expected):
    def watch():
        while True:
            time.sleep(WATCHDOG_PERIOD)
            if os.getppid() != expected:
                os._exit(EXIT_STARTUP)

    # A bare _thread thread rather than threading.Thread: Thread.start() blocks until the new
    # thread has run (~0.7 ms of every worker's start here), which this one does not need.
    # Like a daemon thread, it never holds up the interpreter's exit.
    _thread.start_new_thread(watch, ())


def max_frame_bytes():
    value = os.environ.get("PYPOOL_MAX_FRAME")
    if not value:
        return DEFAULT_MAX_FRAME
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if limit <= 0:
        fail(EXIT_STARTUP, "PYPOOL_MAX_FRAME is not a positive int: %r" % value)
    return limit


def max_inflight():
    """PYPOOL_MAX_INFLIGHT: calls the pool may send before it has their replies (1 if unset)."""
    value = os.environ.get("PYPOOL_MAX_INFLIGHT")
    if not value:
        return 1
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if limit <= 0:
        fail(EXIT_STARTUP, "PYPOOL_MAX_INFLIGHT is not a positive int: %r" % value)
    return limit


def check_protocol_version(ours):
    """PYPOOL_PROTOCOL_VERSION, when the pool sets it, must be the version this runtime speaks."""
    theirs = os.environ.get("PYPOOL_PROTOCOL_VERSION")
    if theirs and theirs != str(ours):
        fail(EXIT_STARTUP, "the pool speaks protocol %s, this runtime speaks %d" % (theirs, ours))


def setup_stdio():
    for stream in (sys.stdout, sys.stderr):
        if stream is not None and hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)


def protect_channel_fds():
    for fd in (REQUEST_FD, RESPONSE_FD):
        try:
            os.set_inheritable(fd, False)
        except OSError as exc:
            fail(EXIT_STARTUP, "fd %d is not open (%s): run me from a pypool" % (fd, exc.strerror))


def import_user_module(name):
    """Import a dotted module name, or a file path ending in .py; exit 1 with the traceback."""
    try:
        if name.endswith(".py"):
            return _import_file(name)
        return importlib.import_module(name)
    except SystemExit:
        raise
    except BaseException:
        sys.stderr.write("pypool worker %d: cannot import module %r\n" % (os.getpid(), name))
        import traceback  # here only: at start it would cost every worker ~7 ms
        traceback.print_exc()
        exit_now(EXIT_STARTUP)


def _import_file(path):
    import importlib.util  # here only: most workers import a module by name (saves ~1-2 ms)
    path = os.path.abspath(path)
    # The module's directory goes on sys.path so it can import its siblings, as `python file.py` would.
    sys.path.insert(0, os.path.dirname(path))
    mod_name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None:
        raise ImportError("cannot load %r as a module" % path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)
    return module
