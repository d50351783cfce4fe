"""Commands that weigh evidence beside the weights: architecture, tokenizer and licence comparisons."""

from pathlib import Path
from typing import Annotated

import typer

from solarforensics.cli.app import app, finish, options
from solarforensics.cli.options import Endpoint, JsonOut, NoCache, OutFile
from solarforensics.results.document import results_path

ModelA = Annotated[str, typer.Argument(help="Model A: alias, Hub id (owner/name[@rev]), folder or file.")]
ModelB = Annotated[str, typer.Argument(help="Model B.")]


@app.command()
def arch(a: ModelA, b: ModelB, out_file: OutFile = None, as_json: JsonOut = False, endpoint: Endpoint = None,
         no_cache: NoCache = False) -> None:
    """Configs side by side, parameter counts by component, active parameters, and which tensor groups compare."""
    from solarforensics.evidence.arch import compare_architectures

    path = results_path(out_file, "arch", [a, b])
    fields = compare_architectures(a, b, options(endpoint, no_cache))
    finish("arch", fields, path, as_json)


@app.command()
def tokenizer(
    a: ModelA,
    b: ModelB,
    export_map: Annotated[Path | None, typer.Option("--export-map", help="Write the shared-token map (JSON) here.",
                                                    show_default=False)] = None,
    out_file: OutFile = None,
    as_json: JsonOut = False,
    endpoint: Endpoint = None,
    no_cache: NoCache = False,
) -> None:
    """Shared tokens (matched by their text across byte-level/metaspace/WordPiece), ids, offsets, merges, specials."""
    from solarforensics.evidence.tokenizer import compare_tokenizers

    path = results_path(out_file, "tokenizer", [a, b])
    fields = compare_tokenizers(a, b, options(endpoint, no_cache), export_map)
    finish("tokenizer", fields, path, as_json)


@app.command("license")
def license_(
    source: Annotated[str, typer.Argument(help="Alias, Hub id (owner/name[@rev]) or folder.")],
    against: Annotated[str, typer.Option("--against", help="Licence database key to compare with (auto: the licence "
                                                          "the text starts from).")] = "auto",
    with_history: Annotated[bool, typer.Option("--history", help="Also the licence text at every revision where it "
                                               "changed (Hub repos), each compared and diffed.")] = False,
    out_file: OutFile = None,
    as_json: JsonOut = False,
    endpoint: Endpoint = None,
    no_cache: NoCache = False,
) -> None:
    """The licence file(s) against the licence they start from (a licence database), section by section, and the
    card's declared licence."""
    from solarforensics.evidence.license import license_report
    from solarforensics.evidence.license_history import license_report_with_history

    path = results_path(out_file, "license", [source])
    report = license_report_with_history if with_history else license_report
    fields = report(source, options(endpoint, no_cache), against)
    finish("license", fields, path, as_json)


@app.command()
def history(
    source: Annotated[str, typer.Argument(help="Alias or Hub id (owner/name[@rev]).")],
    files: Annotated[list[str] | None, typer.Option("--files", help="Only files matching this glob (repeatable or "
                                                    "comma-separated), e.g. 'LICENSE*' or '*.py'.",
                                                    show_default=False)] = None,
    max_commits: Annotated[int, typer.Option("--max-commits", min=1, help="Read the trees of at most this many "
                                             "commits: the first and the newest (the rest is stated as skipped).")] = 200,
    out_file: OutFile = None,
    as_json: JsonOut = False,
    endpoint: Endpoint = None,
) -> None:
    """Every commit of a Hub repo: files added/removed/changed (weights by LFS id), text diffs, licence and base-model
    timeline."""
    from solarforensics.evidence.history import history_report

    path = results_path(out_file, "history", [source])
    globs = [g.strip() for item in files or [] for g in item.split(",") if g.strip()] or None
    fields = history_report(source, options(endpoint, False), globs, max_commits)
    finish("history", fields, path, as_json)


@app.command()
def code(
    source: Annotated[str, typer.Argument(help="Alias, Hub id (owner/name[@rev]), folder or .py file.")],
    against: Annotated[str, typer.Option("--against", help="A transformers model family (e.g. glm4_moe), a .py file "
                                         "or folder, or all (every transformers modelling file: slow).")] = "all",
    out_file: OutFile = None,
    as_json: JsonOut = False,
    endpoint: Endpoint = None,
) -> None:
    """The repo's Python code against reference implementations: shared functions and classes, copyright and licence
    lines, distinctive rules. Shared code says where code came from, not where weights came from."""
    from solarforensics.evidence.code import code_report

    path = results_path(out_file, "code", [source])
    fields = code_report(source, options(endpoint, False), against)
    finish("code", fields, path, as_json)
