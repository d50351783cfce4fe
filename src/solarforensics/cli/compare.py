"""Commands that read models and write results: inspect, compare, matrix, report."""

import sys
from pathlib import Path
from typing import Annotated

import typer

from solarforensics.cli.app import app, finish, options, out, print_json
from solarforensics.cli.options import (
    Device,
    Endpoint,
    JsonOut,
    MaxGap,
    NoCache,
    OutFile,
    Seed,
    Workers,
    announce_permutations,
    permutations_option,
)
from solarforensics.cli.progress import byte_progress
from solarforensics.errors import SpecError
from solarforensics.results.document import results_path, slugify


@app.command()
def inspect(
    source: Annotated[str, typer.Argument(help="Alias, Hub id (owner/name[@rev]), folder or .safetensors file.")],
    as_json: JsonOut = False,
    endpoint: Endpoint = None,
    no_cache: NoCache = False,
) -> None:
    """Config, shards, tensor count, dtypes and parameter count, from the headers only."""
    from solarforensics.comparison.inspect import inspect_model
    from solarforensics.render.terminal import render_terminal
    from solarforensics.results.document import new_document

    doc = new_document("inspect", sys.argv, **inspect_model(source, options(endpoint, no_cache)))
    print_json(doc) if as_json else render_terminal(doc, out)


@app.command()
def compare(
    a: Annotated[str, typer.Argument(help="Model A: alias, Hub id, folder or file.")],
    b: Annotated[str, typer.Argument(help="Model B.")],
    tensors: Annotated[str, typer.Option("--tensors", help="Groups (layernorm, attn-k, router, ...) and/or name globs.")] = "layernorm",
    layers: Annotated[str, typer.Option("--layers", help="same: pair equal layer indices; all-pairs: the full L_A x L_B matrix.")] = "same",
    control: Annotated[str | None, typer.Option("--control", help="A third model compared with both.", show_default=False)] = None,
    truncate: Annotated[bool, typer.Option("--truncate", help="Compare the common leading block of different shapes.")] = False,
    permutations: Annotated[int, permutations_option("Shuffle-null permutations", 1000)] = 1000,
    seed: Seed = 0,
    device: Device = "auto",
    out_file: OutFile = None,
    as_json: JsonOut = False,
    endpoint: Endpoint = None,
    no_cache: NoCache = False,
    workers: Workers = None,
    max_gap: MaxGap = None,
) -> None:
    """Per-layer raw cosine, centered cosine, MAD, rel L2, equal bytes and shuffle p, with baselines and nulls."""
    from solarforensics.comparison.compare import CompareRequest, compare_models

    announce_permutations(permutations, 1000)
    path = results_path(out_file, "compare", [a, b], [tensors])
    request = CompareRequest(a, b, tensors, layers, control, device, truncate, permutations, seed)
    with byte_progress(not as_json) as progress:
        fields = compare_models(request, options(endpoint, no_cache, workers, max_gap), progress)
    finish("compare", fields, path, as_json)


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
    from solarforensics.comparison.matrix import matrix_models, parse_models
    from solarforensics.render.plots import matrix_heatmap

    names = parse_models(models)
    path = results_path(out_file, "matrix", names, [tensors])
    fields = matrix_models(names, tensors, options(endpoint, no_cache), device)
    finish("matrix", fields, path, as_json)
    for group in fields["groups"]:
        figure = matrix_heatmap(fields, group, "pearson", path.with_name(f"{path.stem}-{slugify(group)}.png"))
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
