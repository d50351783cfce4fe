"""Option types declared once and reused by every command."""

from pathlib import Path
from typing import Annotated

import typer

Endpoint = Annotated[
    str | None,
    typer.Option("--endpoint", help="Hub endpoint (default: $HF_ENDPOINT or https://huggingface.co).", show_default=False),
]
NoCache = Annotated[bool, typer.Option("--no-cache", help="Bypass the on-disk range cache.")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print the results document as JSON on stdout.")]
OutFile = Annotated[Path | None, typer.Option("--out", help="Where to write the results JSON.", show_default=False)]
Device = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
MAX_PERMUTATIONS = 100_000
LARGE_PERMUTATIONS = 10_000  # above this the CLI says what the nulls will cost before it starts
Workers = Annotated[int | None, typer.Option(
    "--workers", min=1, max=256, help="Concurrent range requests, 1-256 (default 16).", show_default=False)]
MaxGap = Annotated[int | None, typer.Option(
    "--max-gap", min=0, max=1 << 30,
    help="Coalesce ranges separated by at most this many bytes, 0-1 GiB (default 1 MiB).", show_default=False)]
BudgetBytes = Annotated[int | None, typer.Option(
    "--budget-bytes", min=0, help="Refuse to read more than this many bytes of tensors.", show_default=False)]
Seed = Annotated[int, typer.Option("--seed", min=0, max=2**63 - 1, help="Seed of every random draw.")]


def permutations_option(help_text: str, default: int):
    """--permutations, bounded: time grows linearly with it (memory stays bounded: nulls are drawn in batches)."""
    return typer.Option("--permutations", min=0, max=MAX_PERMUTATIONS,
                        help=f"{help_text}, 0-{MAX_PERMUTATIONS:,} (time grows linearly; the default is {default:,}).")
Thresholds = Annotated[
    Path | None,
    typer.Option("--thresholds", help="Verdict thresholds file (default configs/verdict.toml).", show_default=False),
]


def announce_permutations(permutations: int, default: int) -> None:
    """Before a long run, what a large --permutations costs: time grows with it, memory does not."""
    if permutations > LARGE_PERMUTATIONS:
        from solarforensics.cli.app import err

        err.print(f"--permutations {permutations:,}: the nulls take about {permutations / default:.0f} times as long "
                  f"as with the default {default:,} (memory stays bounded: permutations are drawn in batches)",
                  highlight=False, markup=False, soft_wrap=True)
