"""The `provenance` command: the test battery and its verdict for one pair of models."""

from typing import Annotated

import typer

from solarforensics.cli.app import app, err, finish, options
from solarforensics.cli.options import (
    BudgetBytes,
    Device,
    Endpoint,
    JsonOut,
    MaxGap,
    NoCache,
    OutFile,
    Seed,
    Thresholds,
    Workers,
)
from solarforensics.cli.progress import byte_progress
from solarforensics.results.document import results_path


def _announce(plan: dict) -> None:
    """The bytes about to be read, on stderr before any tensor is read (stdout stays clean for --json)."""
    from solarforensics.render.formatting import fmt_bytes

    share = f"{100 * plan['fraction']:.2f}% of" if plan.get("fraction") is not None else "of"
    per_test = ", ".join(f"{test} {fmt_bytes(n)}" for test, n in plan["per_test"].items())
    what = "at most" if plan.get("looks") else ""
    err.print(f"provenance: reading {what + ' ' if what else ''}{fmt_bytes(plan['planned_bytes'])} of tensors, {share} "
              f"the two checkpoints' {fmt_bytes(plan['checkpoint_bytes'])} ({'looks' if what else 'per test'}: "
              f"{per_test}{'; it stops at the first decisive look' if what else ''})",
              highlight=False, markup=False, soft_wrap=True)


@app.command()
def provenance(
    a: Annotated[str, typer.Argument(help="Model A: alias, Hub id (owner/name[@rev]), folder or file.")],
    b: Annotated[str, typer.Argument(help="Model B.")],
    tests: Annotated[str, typer.Option("--tests", help="all, or some of: identity, norm-gains, residual-alignment, "
                                                       "cka, cka-q, matching, corroborative.")] = "all",
    budget_bytes: BudgetBytes = None,
    device: Device = "auto",
    seed: Seed = 0,
    thresholds: Thresholds = None,
    out_file: OutFile = None,
    as_json: JsonOut = False,
    endpoint: Endpoint = None,
    no_cache: NoCache = False,
    workers: Workers = None,
    max_gap: MaxGap = None,
    full: Annotated[bool, typer.Option("--full", help="The whole-matrix battery (attention CKA over whole W_K/W_V/W_Q "
                                                      "Grams, matching over whole MLP matrices, corroborative tests) "
                                                      "instead of the anytime lean path.")] = False,
    max_layers: Annotated[int | None, typer.Option("--max-layers", min=2, max=100_000,
                                                   help="Lean path: read at most this many layers per model, spread "
                                                        "along depth (default all).")] = None,
) -> None:
    """Was one model initialised from the other? Read in looks (norm gains, shared-token rows, then layer sketches
    spread along depth), re-decided after each, stopping at the first decisive one; --full for the whole matrices."""
    from solarforensics.provenance.run import ProvenanceRequest, provenance_models

    path = results_path(out_file, "provenance", [a, b])
    request = ProvenanceRequest(a, b, tests=tests, budget_bytes=budget_bytes, device=device, seed=seed,
                                thresholds=str(thresholds) if thresholds else None, full=full,
                                max_layers=max_layers)
    with byte_progress(not as_json) as progress:
        fields = provenance_models(request, options(endpoint, no_cache, workers, max_gap), progress, _announce)
    finish("provenance", fields, path, as_json)
