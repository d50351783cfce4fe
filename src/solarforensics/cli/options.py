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
Workers = Annotated[int | None, typer.Option("--workers", help="Concurrent range requests (default 16).", show_default=False)]
MaxGap = Annotated[
    int | None,
    typer.Option("--max-gap", help="Coalesce ranges separated by at most this many bytes (default 1 MiB).", show_default=False),
]
BudgetBytes = Annotated[
    int | None,
    typer.Option("--budget-bytes", help="Refuse to read more than this many bytes of tensors.", show_default=False),
]
Thresholds = Annotated[
    Path | None,
    typer.Option("--thresholds", help="Verdict thresholds file (default configs/verdict.toml).", show_default=False),
]
