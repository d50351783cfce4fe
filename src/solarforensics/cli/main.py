"""The command line: each command parses, calls an analysis, writes the result, renders it. Errors are turned into
one line in `main()`, the only place that catches them."""

import os
import signal
import sys
import threading
import time
from typing import NoReturn


def _leave_at_once(signum, frame) -> None:
    # While the modules load (torch takes seconds) and once main() is done, nothing is being written: leave at once,
    # in one line, without a traceback from the interpreter's shutdown.
    os.write(2, b"solarforensics: interrupted\n")
    os._exit(130)


_STARTING = threading.current_thread() is threading.main_thread() and \
    signal.getsignal(signal.SIGINT) is signal.default_int_handler
if _STARTING:
    signal.signal(signal.SIGINT, _leave_at_once)
# Idle OpenMP threads must sleep, not spin: on a busy 2-core machine spinning made a 4,096-element dot product take
# milliseconds instead of microseconds. Set before torch is imported (by the command modules below).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Importing a command module registers its commands on the app.
from solarforensics.cli import compare, catalog, evidence, provenance, population, tools, case, zoo  # noqa: F401, I001 (order = order in --help)
from solarforensics.cli.app import app, err
from solarforensics.errors import ForensicsError, inert, redact
from solarforensics.sources.interrupt import CANCEL

if _STARTING:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _message(error: BaseException) -> tuple[str, int]:
    """The one table from exceptions to (message, exit code)."""
    if isinstance(error, ForensicsError):
        return error.one_line(), error.exit_code
    if isinstance(error, KeyboardInterrupt):
        return "interrupted", 130
    if isinstance(error, MemoryError):
        return "out of memory; select fewer tensors or lower the memory budget", 1
    if isinstance(error, OSError):
        return " ".join(f"{error.strerror or error}: {error.filename or ''}".split()).strip(": "), 1
    first = str(error).splitlines()[0] if str(error) else ""
    return f"internal error ({type(error).__name__}: {first}); rerun with --debug and report it", 70


# After Ctrl-C, worker threads stop at their next check; one blocked on a slow server is not waited for longer than
# this: the process leaves without it (nothing it holds is half written under a final name). In-process callers
# (tests) set HARD_EXIT to False and keep their process.
STOP_WITHIN_S = 1.0
HARD_EXIT = True


def main() -> None:
    """Entry point. Typer handles usage errors and --help; every other failure becomes one line here."""
    try:
        _main()
    except SystemExit as done:
        if not HARD_EXIT:
            raise
        # The console script leaves as soon as the work is done: the interpreter's teardown (seconds with torch
        # loaded) would be one more window where a Ctrl-C kills the process without its line.
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        if done.code is not None and not isinstance(done.code, int):
            err.print(str(done.code), highlight=False, markup=False)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe: nothing more can be said
                pass
        os._exit(code)


def _main() -> None:
    sys.argv = population.optional_ray_value(sys.argv)
    CANCEL.clear()
    restore = _catch_sigint()
    try:
        app()
    except SystemExit:
        if CANCEL.is_set():  # Typer turned our KeyboardInterrupt into a silent exit 130
            _interrupted()
        raise
    except Exception as error:  # noqa: BLE001 - the one place errors become messages
        if CANCEL.is_set():
            _interrupted()
        if "--debug" in sys.argv:
            raise
        message, code = _message(error)
        err.print(f"solarforensics: error: {inert(redact(message))}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(code)
    except KeyboardInterrupt:
        _interrupted()
    finally:
        if not HARD_EXIT:
            restore()
        elif not CANCEL.is_set() and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, _leave_at_once)  # a late Ctrl-C: one line; after a first one, none more


def _catch_sigint():
    """Ctrl-C sets CANCEL (workers stop at their next check), ignores any further Ctrl-C (no traceback from a second
    one while stopping) and interrupts the main thread. Returns what puts the previous handler back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_sigint(signum, frame):
        CANCEL.set()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    return lambda: signal.signal(signal.SIGINT, previous)


def _interrupted() -> NoReturn:
    CANCEL.set()
    err.print("solarforensics: interrupted", highlight=False)
    deadline = time.monotonic() + STOP_WITHIN_S
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    if HARD_EXIT and any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.current_thread()):
        sys.stdout.flush(), sys.stderr.flush()
        os._exit(130)  # a worker still blocked on the network: leave without waiting for its timeout
    sys.exit(130)


if __name__ == "__main__":
    main()
