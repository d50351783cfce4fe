"""The command line: each command parses, calls an analysis, writes the result, renders it. Errors are turned into
one line in `main()`, the only place that catches them."""

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from solarforensics import __version__
from solarforensics.analyses.models import OpenOptions
from solarforensics.cli_options import Endpoint, JsonOut, MaxGap, NoCache, Workers
from solarforensics.errors import ForensicsError

app = typer.Typer(
    name="solarforensics",
    help="White-box model-provenance forensics: was one LLM checkpoint derived from another?",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,  # locals can hold tokens and tensors
    add_completion=False,
)
hub_app = typer.Typer(help="The local Hub server: serve checkpoint folders to any Hub client.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks that print figures (never timed tests).", no_args_is_help=True)
app.add_typer(hub_app, name="hub")
app.add_typer(bench_app, name="bench")

out = Console()
err = Console(stderr=True)


def _options(endpoint: str | None, no_cache: bool, workers: int | None = None, max_gap: int | None = None) -> OpenOptions:
    return OpenOptions(endpoint=endpoint, use_cache=not no_cache, workers=workers, max_gap=max_gap)


def _print_json(doc: dict) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, allow_nan=False) + "\n")


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        out.print(f"solarforensics {__version__}")
        raise typer.Exit()


@app.command()
def inspect(
    source: Annotated[str, typer.Argument(help="Alias, Hub id (owner/name[@rev]), folder or .safetensors file.")],
    as_json: JsonOut = False,
    endpoint: Endpoint = None,
    no_cache: NoCache = False,
) -> None:
    """Config, shards, tensor count, dtypes and parameter count, from the headers only."""
    from solarforensics.analyses.inspect import inspect_model
    from solarforensics.render.terminal import render_inspect

    doc = inspect_model(source, _options(endpoint, no_cache))
    _print_json(doc) if as_json else render_inspect(doc, out)


@hub_app.command("serve")
def hub_serve(
    root: Annotated[Path | None, typer.Argument(help="Folder of repos laid out as ROOT/owner/name/.")] = None,
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1 (0 = any free port).")] = 8080,
    latency_ms: Annotated[int, typer.Option("--latency-ms", help="Delay before every answer.")] = 0,
    bandwidth: Annotated[int | None, typer.Option("--bandwidth", help="Bytes per second per answer.")] = None,
    cdn: Annotated[bool, typer.Option("--cdn", help="Redirect weight files to a second 'CDN' origin.")] = False,
    fault: Annotated[list[str] | None, typer.Option("--fault", help="KIND[:GLOB[:COUNT]], e.g. 429:*.safetensors:2.")] = None,
) -> None:
    """Serve ROOT/owner/name folders as Hub model repos on 127.0.0.1 (until Ctrl-C)."""
    from solarforensics.testing.hub_server import serve

    if root is not None and not root.is_dir():
        raise ForensicsError(f"{root}: not a folder")
    serve(root, port=port, latency_ms=latency_ms, bandwidth=bandwidth, cdn=cdn, faults=fault or [])


@bench_app.command("fetch")
def bench_fetch(
    latency_ms: Annotated[int, typer.Option("--latency-ms", help="Emulated latency of the local Hub.")] = 50,
    workers: Workers = None,
    max_gap: MaxGap = None,
) -> None:
    """Bytes, requests and time to read all norm gains of two sharded models: ours vs per-tensor vs whole shards."""
    from solarforensics.analyses.bench_fetch import bench_fetch as run
    from solarforensics.render.terminal import render_bench

    render_bench(run(latency_ms=latency_ms, workers=workers, max_gap=max_gap), out)


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
    try:
        app()
    except Exception as error:  # noqa: BLE001 - the one place errors become messages
        if "--debug" in sys.argv:
            raise
        message, code = _message(error)
        err.print(f"solarforensics: error: {message}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(code)
    except KeyboardInterrupt:
        err.print("solarforensics: interrupted", highlight=False)
        sys.exit(130)
