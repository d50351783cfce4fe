"""The peer tool modeldna (PyPI, 0.1.0) run on a zoo pair through its own CLI, when it is installed.

It is looked up as $SOLARFORENSICS_MODELDNA, else `modeldna` on PATH; it lives in its own virtual environment
because it pins a huggingface_hub that is not ours. Its `compare --json` reports bytes_read 0, so no bytes here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

# modeldna's verdict classes mapped onto ours (SAME_FAMILY_UNRESOLVED is its abstention band).
VERDICTS = {"EXACT_COPY": "derived", "QUANTIZED_COPY": "derived", "FINE_TUNE": "derived", "SAME_LINEAGE": "derived",
            "LIKELY_MERGE": "derived", "NO_MATCH": "independent", "SAME_FAMILY_UNRESOLVED": "inconclusive",
            "INSUFFICIENT": "inconclusive"}


def find_modeldna() -> str | None:
    """Path of the modeldna executable, or None."""
    return os.environ.get("SOLARFORENSICS_MODELDNA") or shutil.which("modeldna")


def run_pair(exe: str, a: Path, b: Path, timeout_s: float = 300.0) -> dict:
    """One `modeldna compare A B --json` (absolute paths: a relative one can fall through to the Hub)."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="modeldna-db-") as db:  # it writes a scan file per compare
        env = {**os.environ, "MODELDNA_DB": str(Path(db) / "db"), "HF_HUB_OFFLINE": "1"}
        try:
            done = subprocess.run([exe, "compare", str(a.resolve()), str(b.resolve()), "--json"], env=env,
                                  capture_output=True, text=True, timeout=timeout_s, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return {"error": f"{type(exc).__name__}: {exc}", "seconds": time.perf_counter() - started}
    seconds = time.perf_counter() - started
    try:
        doc = json.loads(done.stdout)
        verdict = doc["verdict"]
    except (json.JSONDecodeError, KeyError, TypeError):
        last = (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
        return {"error": f"exit {done.returncode}: {last}", "seconds": seconds}
    raw = str(verdict.get("verdict"))
    return {"verdict_raw": raw, "verdict": VERDICTS.get(raw, "inconclusive"),
            "probability": verdict.get("probability"), "seconds": seconds, "bytes": None}
