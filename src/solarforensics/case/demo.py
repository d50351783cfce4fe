"""The demo: the local Hub serving the full-scale replicas with realistic latency, and `case solar-vs-glm` run
against it over HTTP, in one process and offline."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from solarforensics.case.run import CaseOutcome, CaseRequest, run_case
from solarforensics.models import OpenOptions

DEMO_CASE = "solar-vs-glm"


def run_demo(out_dir: Path, latency_ms: int = 30, say: Callable[[str], None] = print) -> Path:
    """Serve the replicas on 127.0.0.1 (every answer delayed by `latency_ms`), run the case's quick profile through
    HTTP into `out_dir`, and return the HTML report's path. The range cache lives in a temporary folder removed
    afterwards, so the demo leaves nothing in the user's caches but small files of the replica commits."""
    return run_demo_case(out_dir, latency_ms, say).report_html


def run_demo_case(out_dir: Path, latency_ms: int = 30, say: Callable[[str], None] = print,
                  quick: bool = True) -> CaseOutcome:
    import torch

    from solarforensics.localhub.server import HubServer
    from solarforensics.replicas.store import ReplicaStore

    cache = Path(tempfile.mkdtemp(prefix="solarforensics-demo-cache-"))
    threads = torch.get_num_threads()
    # The case's math is thousands of small reductions; on a busy small machine the OpenMP pool's spin-waits make
    # each one ~1000x slower than on one thread.
    torch.set_num_threads(1)
    try:
        with HubServer(ReplicaStore(), latency_ms=latency_ms) as server:
            say(f"local Hub with the full-scale replicas at {server.url} ({latency_ms} ms per request)")
            options = OpenOptions(endpoint=server.url, cache_dir=cache)
            return run_case(CaseRequest(DEMO_CASE, out_dir=Path(out_dir), quick=quick), options, say)
    finally:
        torch.set_num_threads(threads)
        shutil.rmtree(cache, ignore_errors=True)
