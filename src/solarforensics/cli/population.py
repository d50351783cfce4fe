"""Population commands: `fingerprint` models into an index, `index` to manage it, `scan` one model against all of it,
`lineage` to recover derivation trees."""

from pathlib import Path
from typing import Annotated

import typer

from solarforensics.cli.app import app, out, print_json

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
