"""Population commands: `fingerprint` models into an index, `index` to manage it, `scan` one model against all of it,
`lineage` to recover derivation trees."""

import re
import time
from pathlib import Path
from typing import Annotated

import typer

from solarforensics.cli.app import app, err, finish, options, out, print_json
from solarforensics.cli.options import Endpoint, JsonOut, NoCache, OutFile, Seed
from solarforensics.errors import ForensicsError
from solarforensics.results.document import results_path

index_app = typer.Typer(help="The fingerprint index: one SQLite file (default $SOLARFORENSICS_INDEX, else in the "
                             "cache directory).", no_args_is_help=True)
app.add_typer(index_app, name="index")

IndexPath = Annotated[
    Path | None,
    typer.Option("--index", help="Index file (default: $SOLARFORENSICS_INDEX, else index.sqlite in the cache "
                                 "directory).", show_default=False),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]


def _open(path: Path | None, create: bool = False):
    from solarforensics.population.index import Index

    return Index(path, create=create)


@index_app.command("list")
def index_list(index: IndexPath = None, as_json: AsJson = False) -> None:
    """Every fingerprint in the index: model, repo, commit, architecture, declared base model, bytes read."""
    from solarforensics.population.record import Fingerprint
    from solarforensics.render.listing import print_table

    with _open(index) as db:
        rows = [Fingerprint.from_entry(e).summary() for e in db.entries()]
        where = db.path
    if as_json:
        print_json({"index": str(where), "fingerprints": rows})
        return
    columns = ["model", "repo", "commit", "family", "layers", "hidden", "declared_base_model", "stored_bytes"]
    print_table(out, f"{len(rows)} fingerprints in {where}", columns,
                [[r[c] if c != "commit" or not r[c] else r[c][:12] for c in columns] for r in rows])


@index_app.command("show")
def index_show(model: Annotated[str, typer.Argument(help="The model as it was fingerprinted (see `index list`).")],
               index: IndexPath = None) -> None:
    """One fingerprint's metadata (source, files and ETags, architecture, tokenizer, Hub metadata) as JSON."""
    from solarforensics.errors import NotFoundError
    from solarforensics.population.record import Fingerprint

    with _open(index) as db:
        entry = db.get(model)
        if entry is None:
            raise NotFoundError(f"{model} is not in the index {db.path}", _suggest(model, db.specs()))
    fp = Fingerprint.from_entry(entry)
    arrays = {k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")} for k, v in fp.arrays.items()}
    print_json({"model": fp.spec, "summary": fp.summary(), "meta": fp.meta, "arrays": arrays})


@index_app.command("rm")
def index_rm(models: Annotated[list[str], typer.Argument(help="Models to remove, as `index list` names them.")],
             index: IndexPath = None) -> None:
    """Remove fingerprints (all or none: a name not in the index removes nothing)."""
    from solarforensics.errors import NotFoundError

    with _open(index) as db:
        missing = db.remove(models)
        if missing:
            raise NotFoundError(f"not in the index {db.path}: {', '.join(missing)}", "nothing was removed")
    out.print(f"removed {len(models)} fingerprint(s)")


@index_app.command("export")
def index_export(target: Annotated[Path, typer.Argument(help="The file to write (one SQLite file).")],
                 index: IndexPath = None) -> None:
    """Copy the whole index into one file (written atomically) to share with another machine."""
    with _open(index) as db:
        count = db.export(target)
    out.print(f"exported {count} fingerprint(s) to {target}")


@index_app.command("import")
def index_import(source: Annotated[Path, typer.Argument(help="An exported index file.")],
                 index: IndexPath = None) -> None:
    """Merge an exported index into this one (one transaction; a model in both takes the imported fingerprint)."""
    with _open(index, create=True) as db:
        count = db.import_from(source)
        total = len(db.specs())
    out.print(f"imported {count} fingerprint(s); {total} in the index")


def _suggest(name: str, known: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, known, n=1)
    return f"did you mean {close[0]}?" if close else "see `solarforensics index list`"


RAY_ADDRESS = re.compile(r"^(ray://|auto$|local$)|^[\w.-]+:\d+$")


def optional_ray_value(argv: list[str]) -> list[str]:
    """`--ray` may stand alone (a local cluster) or take an address: give it `local` when the next word is not an
    address, so `fingerprint --ray m1 m2` never takes m1 for an address."""
    out = list(argv)
    for i, word in enumerate(out):
        if word == "--ray" and (i + 1 == len(out) or not RAY_ADDRESS.match(out[i + 1])):
            out.insert(i + 1, "local")
            break
    return out


@app.command()
def fingerprint(
    models: Annotated[list[str], typer.Argument(help="Models: aliases, Hub ids (owner/name[@rev]), folders or files.")],
    index: IndexPath = None,
    ray: Annotated[str | None, typer.Option("--ray", help="Run one task per model on Ray: alone, a local cluster; "
                                                          "with ADDRESS (host:port or ray://...), join that one.",
                                            show_default=False, metavar="[ADDRESS]")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64,
                                         help="Models fingerprinted at once (threads, or Ray CPUs).")] = 4,
    out_file: OutFile = None,
    as_json: JsonOut = False,
    endpoint: Endpoint = None,
    no_cache: NoCache = False,
) -> None:
    """Fingerprint models into the index from range reads (an unchanged commit reads no tensor again)."""
    from solarforensics.population.crawl import fingerprint_all
    from solarforensics.render.formatting import fmt_bytes

    def done(outcome) -> None:
        if as_json or len(models) == 1:  # one model: the result (or the one error line) says it all
            return
        row = outcome.row()
        if outcome.status == "failed":
            err.print(f"  {outcome.spec}: failed: {outcome.error}", highlight=False, markup=False)
        else:
            share = f" ({100 * row['fraction_read']:.3f}% of the checkpoint)" if row["fraction_read"] else ""
            err.print(f"  {outcome.spec}: {outcome.status}, read {fmt_bytes(row['bytes_read'] or 0)}{share} in "
                      f"{row['requests'] or 0} requests, {row['seconds']:.1f} s", highlight=False, markup=False)

    path = results_path(out_file, "fingerprint", models)
    started = time.perf_counter()
    with _open(index, create=True) as db:
        outcomes = fingerprint_all(models, db, options(endpoint, no_cache), workers=workers, ray_address=ray,
                                   on_done=done)
        where, total = db.path, len(db.specs())
    rows = [o.row() for o in outcomes]
    failed = [r for r in rows if r["status"] == "failed"]
    if len(failed) == len(rows):  # nothing fingerprinted: no results document, only why
        raise ForensicsError(f"{len(failed)} of {len(rows)} models could not be fingerprinted: "
                             + "; ".join(f"{r['model']}: {r['error']}" for r in failed[:3]))
    fields = {"models": models, "index": {"path": str(where), "fingerprints": total},
              "fingerprints": rows, "runner": "ray" if ray else "threads", "ray_address": ray,
              "complete": not failed, "timings": {"total_s": time.perf_counter() - started},
              "summary": {"statements": [f"{len(rows) - len(failed)} of {len(rows)} models fingerprinted into "
                                         f"{where} ({total} in the index)"]}}
    finish("fingerprint", fields, path, as_json)
    if failed:
        raise ForensicsError(f"{len(failed)} of {len(rows)} models could not be fingerprinted: "
                             + "; ".join(f"{r['model']}: {r['error']}" for r in failed[:3]),
                             "the others are in the index")


@app.command()
def scan(
    model: Annotated[str, typer.Argument(help="The model to scan: alias, Hub id, folder or file.")],
    index: IndexPath = None,
    top: Annotated[int, typer.Option("--top", min=1, max=1000, help="Candidates compared in full after the "
                                                                    "pre-filter.")] = 10,
    seed: Seed = 0,
    out_file: OutFile = None,
    as_json: JsonOut = False,
    endpoint: Endpoint = None,
    no_cache: NoCache = False,
) -> None:
    """Which indexed model is this one derived from? Pre-filter every fingerprint, then the lean battery."""
    from solarforensics.population.scan import ScanRequest, scan_model

    path = results_path(out_file, "scan", [model])
    fields = scan_model(ScanRequest(model, str(index) if index else None, top, seed), options(endpoint, no_cache))
    finish("scan", fields, path, as_json)


@app.command()
def lineage(
    models: Annotated[list[str] | None, typer.Argument(help="Models to place (fingerprinted into the index first); "
                                                            "none: every model in the index.", show_default=False)] = None,
    index: IndexPath = None,
    seed: Seed = 0,
    out_file: OutFile = None,
    as_json: JsonOut = False,
    endpoint: Endpoint = None,
    no_cache: NoCache = False,
) -> None:
    """Recover the derivation forest: families, directed parent -> child edges with confidence, roots, card checks."""
    from solarforensics.population.lineage import lineage_of
    from solarforensics.population.record import Fingerprint
    from solarforensics.population.scan import ensure_fingerprint

    if out_file is not None:
        results_path(out_file, "lineage", [])  # an --out that cannot be written is said before any work
    with _open(index, create=bool(models)) as db:
        if models:
            fps = {spec: ensure_fingerprint(spec, db, options(endpoint, no_cache))[0] for spec in models}
        else:
            fps = {e.spec: Fingerprint.from_entry(e) for e in db.entries()}
        where = db.path
    if len(fps) < 2:
        raise ForensicsError(f"lineage needs at least two fingerprints; {where} has {len(fps)}",
                             "fingerprint more models first")
    fields = lineage_of(fps, seed)
    fields["index"] = {"path": str(where), "fingerprints": len(fps)}
    finish("lineage", fields, results_path(out_file, "lineage", [Path(str(where)).stem]), as_json)
