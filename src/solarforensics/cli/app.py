"""The Typer app, its sub-apps, consoles and the few helpers every command shares. Command modules register on it."""

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from solarforensics import __version__
from solarforensics.errors import inert, redact
from solarforensics.models import OpenOptions
from solarforensics.sources.settings import check_environment

app = typer.Typer(
    name="solarforensics",
    help="White-box model-provenance forensics: was one LLM checkpoint derived from another?",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: a flag reads `--json`, not `--json <bool>`
    pretty_exceptions_show_locals=False,  # locals can hold tokens and tensors
    add_completion=False,
)
hub_app = typer.Typer(rich_markup_mode=None, help="The local Hub server: serve checkpoint folders to any Hub client.", no_args_is_help=True)
bench_app = typer.Typer(rich_markup_mode=None, help="Benchmarks that print figures (never timed tests).", no_args_is_help=True)
families_app = typer.Typer(rich_markup_mode=None, help="Model families: tensor-name maps kept as data (configs/families/*.toml).", no_args_is_help=True)
app.add_typer(hub_app, name="hub")
app.add_typer(families_app, name="families")
app.add_typer(bench_app, name="bench")


class _InertConsole(Console):
    """Prints strings and Text made inert: paths, step names and messages can carry text that came from a model, and
    no character of it may act on the terminal (the report blocks are made inert where they are built)."""

    def print(self, *objects, **kwargs) -> None:
        super().print(*(_inert_object(o) for o in objects), **kwargs)


def _inert_object(value):
    if isinstance(value, str):
        return inert(value)
    if isinstance(value, Text):
        safe = value.copy()
        safe.plain = inert(value.plain)  # same length: the styles stay where they were
        return safe
    return value


def _console(stderr: bool = False) -> Console:
    # Piped output gets a wide page instead of Rich's 80 columns, so tables stay readable in files and CI logs.
    probe = _InertConsole(stderr=stderr)
    return probe if probe.is_terminal or "COLUMNS" in os.environ else _InertConsole(stderr=stderr, width=140)


out = _console()
err = _console(stderr=True)


def options(endpoint: str | None, no_cache: bool, workers: int | None = None, max_gap: int | None = None) -> OpenOptions:
    return OpenOptions(endpoint=endpoint, use_cache=not no_cache, workers=workers, max_gap=max_gap)


def print_json(doc: dict) -> None:
    from solarforensics.results.document import dumps_document

    sys.stdout.write(dumps_document(doc))


def _show_version(value: bool) -> None:
    if value:
        out.print(f"solarforensics {__version__}")
        raise typer.Exit()


class _Redacting(logging.Filter):
    """Log records lose URL credentials, URL query strings (CDN signatures) and token-shaped text before printing:
    huggingface_hub's debug log writes every request's URL."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        return True


_REDACTING = _Redacting()


def redact_logs() -> None:
    """Put the redacting filter on every handler that prints huggingface_hub's records (its own and the root's)."""
    for logger in (logging.getLogger("huggingface_hub"), logging.getLogger()):
        for handler in logger.handlers:
            if _REDACTING not in handler.filters:
                handler.addFilter(_REDACTING)


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", is_eager=True, callback=_show_version)
    ] = False,
) -> None:
    from huggingface_hub.utils import logging as hf_logging

    if not debug and hf_logging.get_verbosity() == hf_logging.WARNING:  # its default: retry chatter buries our one line
        hf_logging.set_verbosity_error()
    redact_logs()
    check_environment()


def finish(kind: str, fields: dict, path: Path, as_json: bool) -> Path:
    """Wrap the fields in a results document, write it atomically, then print JSON or the tables."""
    from solarforensics.render.terminal import render_terminal
    from solarforensics.results.document import new_document, write_document

    doc = new_document(kind, sys.argv, **fields)
    write_document(doc, path)
    if as_json:
        print_json(doc)
    else:
        render_terminal(doc, out)
        out.print(f"results: {path}", soft_wrap=True, highlight=False, markup=False)  # one line, to copy
    return path
