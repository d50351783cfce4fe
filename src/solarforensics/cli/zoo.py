"""The `zoo build` and `validate` commands: the labelled ground truth and the tool's measured error rates on it."""

import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from solarforensics.cli.app import app, err, finish
from solarforensics.cli.options import JsonOut, OutFile, Seed, Thresholds, announce_permutations, permutations_option
from solarforensics.errors import NotFoundError
from solarforensics.results.document import results_path

zoo_app = typer.Typer(help="The ground-truth zoo: tiny models trained here, with labelled pairs.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")


@zoo_app.command("build")
def zoo_build(
    directory: Annotated[Path, typer.Argument(help="Folder for the zoo (models + manifest.json); reused as a cache.")],
    size: Annotated[str, typer.Option("--size", help="tiny (default, minutes on 2 cores), small, or micro "
                                                     "(a few steps, for tests).")] = "tiny",
    seed: Annotated[int, typer.Option("--seed", min=0, max=2**32 - 1, help="Seed of every init, data order and "
                                                                            "disguise.")] = 0,
    forest: Annotated[bool, typer.Option("--forest", help="Build the forest: 6 roots, derivation trees 3 "
                                                          "generations deep, independent singletons, model cards.")]
    = False,
) -> None:
    """Train the zoo's tiny dense (llama) and MoE (mixtral) models on the CPU, derive and disguise them, write the
    manifest."""
    from solarforensics.zoo.build import MANIFEST, build_zoo
    from solarforensics.zoo.forest import build_forest

    def log(line: str) -> None:
        err.print(f"zoo: {line}", highlight=False, markup=False)

    if forest:
        counts = build_forest(directory, size, seed, log=log)["forest"]["counts"]
        err.print(f"zoo: forest of {counts['models']} models in {counts['trees']} trees and "
                  f"{counts['families'] - counts['trees']} singletons, {counts['edges']} edges, "
                  f"{counts['independent_pairs']} independent and {counts['derived_pairs']} same-family pairs",
                  highlight=False, markup=False)
    else:
        manifest = build_zoo(directory, size, seed, log=log)
        labels = [p["label"] for p in manifest["pairs"]]
        err.print(f"zoo: {len(manifest['models'])} models, {labels.count('derived')} derived and "
                  f"{labels.count('independent')} independent pairs", highlight=False, markup=False)
    typer.echo(str(Path(directory) / MANIFEST))


@app.command()
def validate(
    zoo: Annotated[Path, typer.Option("--zoo", help="A built zoo folder (solarforensics zoo build DIR).")] = Path("zoo"),
    seed: Seed = 0,
    permutations: Annotated[int, permutations_option("Permutations of the norm-gain test", 999)] = 999,
    no_peer: Annotated[bool, typer.Option("--no-peer", help="Do not run the peer tool modeldna.")] = False,
    via_hub: Annotated[bool, typer.Option("--via-hub", help="Read every model over HTTP from a local Hub server "
                                                            "serving the zoo (repos zoo/NAME), not from its folder "
                                                            "(with --lineage, the Hub's upload times then break "
                                                            "the ties the weights cannot).")] = False,
    thresholds: Thresholds = None,
    write_thresholds: Annotated[bool, typer.Option("--write-thresholds", help="Rewrite that file with the values "
                                                   "fitted on the zoo's training split.")] = False,
    lineage: Annotated[bool, typer.Option("--lineage", help="A forest zoo (zoo build --forest): fingerprint every "
                                                            "model, recover the lineage, score it against the truth.")] = False,
    index: Annotated[Path | None, typer.Option("--index", help="With --lineage: the index to fingerprint into "
                                                               "(default: a new one beside the results).",
                                               show_default=False)] = None,
    full: Annotated[bool, typer.Option("--full", help="Run every pair through the whole-matrix provenance path "
                                                      "(provenance --full; always so with --write-thresholds).")] = False,
    out_file: OutFile = None,
    as_json: JsonOut = False,
) -> None:
    """Run provenance on every labelled pair of a zoo: confusion matrix, accuracy, FPR, AUC per test, KS, peer tool.
    With --lineage, on a forest: top-1 parent, directed-edge F1, family ARI and the FPR over independent pairs."""
    from solarforensics.models import OpenOptions
    from solarforensics.validation.validate import ValidateRequest, validate_zoo

    if lineage:
        from solarforensics.validation.lineage import validate_lineage

        out_path = results_path(out_file, "validation", [zoo.name or "zoo", "lineage"])
        index_path = index or out_path.with_suffix(".index.sqlite")
        if not via_hub:
            fields = validate_lineage(zoo, index_path, seed=seed, peer=not no_peer)
        else:
            with _zoo_hub(zoo) as endpoint:
                fields = validate_lineage(zoo, index_path, seed=seed, peer=not no_peer, hub_owner="zoo",
                                          options=OpenOptions(endpoint=endpoint, use_cache=False))
        finish("validation", fields, out_path, as_json)
        return

    announce_permutations(permutations, 999)
    request = ValidateRequest(str(zoo), seed=seed, permutations=permutations, peer=not no_peer,
                              thresholds=str(thresholds) if thresholds else None, write_thresholds=write_thresholds,
                              full=full)
    out_path = results_path(out_file, "validation", [zoo.name or "zoo"])
    if not via_hub:
        fields = validate_zoo(request)
    else:
        with _zoo_hub(zoo) as endpoint:
            fields = validate_zoo(request, options=OpenOptions(endpoint=endpoint, use_cache=False), hub_owner="zoo")
    finish("validation", fields, out_path, as_json)


@contextmanager
def _zoo_hub(zoo: Path):
    """A local Hub on 127.0.0.1 serving the zoo's model folders as repos zoo/NAME, for as long as the block runs."""
    from solarforensics.localhub.server import HubServer

    if not zoo.is_dir():
        raise NotFoundError(f"no zoo folder {zoo}", "build it first: solarforensics zoo build DIR")
    with tempfile.TemporaryDirectory(prefix="solarforensics-zoo-hub-") as root:
        (Path(root) / "zoo").symlink_to(zoo.resolve(), target_is_directory=True)
        with HubServer(root) as server:
            yield server.url
