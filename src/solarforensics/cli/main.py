"""The command line: each command parses, calls an analysis, writes the result, renders it. Errors are turned into
one line in `main()`, the only place that catches them."""

import os
import sys

# Idle OpenMP threads must sleep, not spin: on a busy 2-core machine spinning made a 4,096-element dot product take
# milliseconds instead of microseconds. Set before torch is imported (by the command modules below).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Importing a command module registers its commands on the app.
from solarforensics.cli import compare, catalog, evidence, provenance, population, tools, case, zoo  # noqa: F401, I001 (order = order in --help)
from solarforensics.cli.app import app, err
from solarforensics.errors import ForensicsError, inert, redact


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


def main() -> None:
    """Entry point. Typer handles usage errors and --help; every other failure becomes one line here."""
    sys.argv = population.optional_ray_value(sys.argv)
    try:
        app()
    except Exception as error:  # noqa: BLE001 - the one place errors become messages
        if "--debug" in sys.argv:
            raise
        message, code = _message(error)
        err.print(f"solarforensics: error: {inert(redact(message))}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(code)
    except KeyboardInterrupt:
        err.print("solarforensics: interrupted", highlight=False)
        sys.exit(130)
