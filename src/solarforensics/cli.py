"""The command line: each command parses, calls an analysis, writes the result, renders it. Errors are turned into
one line in `main()`, the only place that catches them."""

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from solarforensics import __version__
from solarforensics.analyses.models import OpenOptions
from solarforensics.cli_options import Device, Endpoint, JsonOut, MaxGap, NoCache, OutFile, Workers
from solarforensics.cli_progress import byte_progress
from solarforensics.errors import ForensicsError, SpecError
from solarforensics.results.document import default_out_path

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
families_app = typer.Typer(help="Model families: tensor-name maps kept as data (configs/families/*.toml).", no_args_is_help=True)
app.add_typer(hub_app, name="hub")
app.add_typer(families_app, name="families")
app.add_typer(bench_app, name="bench")

def _console(stderr: bool = False) -> Console:
    # Piped output gets a wide page instead of Rich's 80 columns, so tables stay readable in files and CI logs.
    probe = Console(stderr=stderr)
    return probe if probe.is_terminal or "COLUMNS" in os.environ else Console(stderr=stderr, width=140)


out = _console()
err = _console(stderr=True)


def _options(endpoint: str | None, no_cache: bool, workers: int | None = None, max_gap: int | None = None) -> OpenOptions:
    return OpenOptions(endpoint=endpoint, use_cache=not no_cache, workers=workers, max_gap=max_gap)


def _print_json(doc: dict) -> None:
    from solarforensics.results.document import dumps_document

    sys.stdout.write(dumps_document(doc))


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
    from solarforensics.render.terminal import render_terminal
    from solarforensics.results.document import new_document

    doc = new_document("inspect", sys.argv, **inspect_model(source, _options(endpoint, no_cache)))
    _print_json(doc) if as_json else render_terminal(doc, out)


@app.command()
def compare(
    a: Annotated[str, typer.Argument(help="Model A: alias, Hub id, folder or file.")],
    b: Annotated[str, typer.Argument(help="Model B.")],
    tensors: Annotated[str, typer.Option("--tensors", help="Groups (layernorm, attn-k, router, ...) and/or name globs.")] = "layernorm",
    layers: Annotated[str, typer.Option("--layers", help="same: pair equal layer indices; all-pairs: the full L_A x L_B matrix.")] = "same",
    control: Annotated[str | None, typer.Option("--control", help="A third model compared with both.", show_default=False)] = None,
    truncate: Annotated[bool, typer.Option("--truncate", help="Compare the common leading block of different shapes.")] = False,
    permutations: Annotated[int, typer.Option("--permutations", help="Shuffle-null permutations.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of every random draw.")] = 0,
    device: Device = "auto",
    out_file: OutFile = None,
    as_json: JsonOut = False,
    endpoint: Endpoint = None,
    no_cache: NoCache = False,
    workers: Workers = None,
    max_gap: MaxGap = None,
) -> None:
    """Per-layer raw cosine, centered cosine, MAD, rel L2, equal bytes and shuffle p, with baselines and nulls."""
    from solarforensics.analyses.compare import CompareRequest, compare_models

    request = CompareRequest(a, b, tensors, layers, control, device, truncate, permutations, seed)
    with byte_progress(not as_json) as progress:
        fields = compare_models(request, _options(endpoint, no_cache, workers, max_gap), progress)
    _finish("compare", fields, out_file or default_out_path("compare", [a, b], [tensors]), as_json)


@app.command()
def matrix(
    models: Annotated[str, typer.Option("--models", help="Comma-separated models (aliases, Hub ids, folders).")],
    tensors: Annotated[str, typer.Option("--tensors", help="Groups and/or name globs.")] = "layernorm",
    device: Device = "auto",
    out_file: OutFile = None,
    as_json: JsonOut = False,
    endpoint: Endpoint = None,
    no_cache: NoCache = False,
) -> None:
    """All pairs of N models: mean centered and raw cosine and share of identical tensors per group, plus heatmaps."""
    from solarforensics.analyses.matrix import matrix_models, parse_models
    from solarforensics.render.plots import matrix_heatmap

    names = parse_models(models)
    fields = matrix_models(names, tensors, _options(endpoint, no_cache), device)
    path = _finish("matrix", fields, out_file or default_out_path("matrix", names, [tensors]), as_json)
    for group in fields["groups"]:
        figure = matrix_heatmap(fields, group, "pearson", path.with_name(f"{path.stem}-{group}.png"))
        if not as_json:
            out.print(f"heatmap: {figure}")


@app.command()
def report(
    results: Annotated[list[Path], typer.Argument(help="One or more results JSON files.")],
    fmt: Annotated[str, typer.Option("--format", help="table, md or html.")] = "table",
    out_path: Annotated[Path | None, typer.Option("--out", help="Write the report here (md/html).", show_default=False)] = None,
) -> None:
    """Render results files as terminal tables, Markdown, or one self-contained HTML page with plots."""
    from solarforensics.render.report import render
    from solarforensics.results.document import read_document

    if fmt not in ("table", "md", "html"):
        raise SpecError(f"unknown format {fmt!r}", "use table, md or html")
    written = render([read_document(p) for p in results], fmt, out_path, out)
    if written is not None:
        out.print(f"report: {written}")


def _finish(kind: str, fields: dict, path: Path, as_json: bool) -> Path:
    """Wrap the fields in a results document, write it atomically, then print JSON or the tables."""
    from solarforensics.render.terminal import render_terminal
    from solarforensics.results.document import new_document, write_document

    doc = new_document(kind, sys.argv, **fields)
    write_document(doc, path)
    if as_json:
        _print_json(doc)
    else:
        render_terminal(doc, out)
        out.print(f"results: {path}")
    return path


@app.command()
def models() -> None:
    """The model aliases (built in, plus your own file: see the README)."""
    from solarforensics.families.aliases import load_aliases, user_models_path
    from solarforensics.render.listing import print_table

    rows = [[a.name, a.repo, a.revision, a.model_type, a.description] for a in load_aliases().values()]
    print_table(out, "Model aliases", ["alias", "repo", "revision", "model_type", "description"], rows,
                caption=f"your own aliases: {user_models_path()}")


@families_app.command("list")
def families_list() -> None:
    """Every model family (one TOML file each) and the model types it covers."""
    from solarforensics.families.family import list_families
    from solarforensics.render.listing import print_table

    rows = [[f.name, ", ".join((f.model_type, *f.aliases)), f.description] for f in list_families()]
    print_table(out, "Families", ["family", "model types", "description"], rows)


@families_app.command("show")
def families_show(name: Annotated[str, typer.Argument(help="Family or model_type, e.g. glm4_moe.")]) -> None:
    """A family's tensor-name templates and config keys, as JSON."""
    from solarforensics.families.family import load_family
    from solarforensics.render.listing import print_json

    print_json(out, load_family(name).to_dict())


@app.command()
def groups() -> None:
    """The tensor groups `--tensors` accepts (glob patterns on tensor names work too)."""
    from solarforensics.families.selection import GROUPS
    from solarforensics.render.listing import print_table

    print_table(out, "Tensor groups", ["group", "roles", "what"], [[g, ", ".join(r), d] for g, (r, d) in GROUPS.items()])


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
    from solarforensics.bench.fetch import bench_fetch as run
    from solarforensics.render.listing import print_figures

    print_figures(out, f"bench fetch (local Hub, {latency_ms} ms latency)", run(latency_ms=latency_ms, workers=workers, max_gap=max_gap))


@bench_app.command("metrics")
def bench_metrics(
    size_mb: Annotated[int, typer.Option("--size-mb", help="Size of each input tensor in MiB.")] = 256,
    device: Device = "auto",
) -> None:
    """GB/s of the streaming cosine/Pearson/MAD pass vs a plain numpy pass; peak memory on a tensor over the budget."""
    from solarforensics.metrics.bench import bench_memory
    from solarforensics.metrics.bench import bench_metrics as run
    from solarforensics.render.listing import print_figures

    print_figures(out, "bench metrics: throughput", run(size_bytes=size_mb << 20, device=device))
    print_figures(out, "bench metrics: memory", bench_memory(total_elements=64 << 20, chunk_elements=1 << 22))


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
