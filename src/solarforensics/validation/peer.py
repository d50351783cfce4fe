"""The peer tool modeldna (PyPI, 0.1.0) run through its own CLI when it is installed: on a zoo pair (compare), and
on a forest (every model added to a database, then each scanned against it).

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
        return {"error": _last_line(done), "seconds": seconds}
    raw = str(verdict.get("verdict"))
    return {"verdict_raw": raw, "verdict": VERDICTS.get(raw, "inconclusive"),
            "probability": verdict.get("probability"), "seconds": seconds, "bytes": None}


def _run(exe: str, args: list[str], env: dict, timeout_s: float) -> subprocess.CompletedProcess | str:
    try:
        return subprocess.run([exe, *args], env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{type(exc).__name__}: {exc}"


def scan_all(exe: str, folders: dict[str, Path], progress=None, timeout_s: float = 300.0) -> dict:
    """Every folder added to one throw-away modeldna database (id zoo/NAME), then each scanned against it:
    {candidates: {name: [{model, probability, ruled_out, verdict}]}, errors, seconds}, or {error} when nothing
    could be added. Its scan exits 3 or 4 for contradicted or no match: the JSON is read whatever the exit."""
    started, errors, candidates = time.perf_counter(), [], {}
    with tempfile.TemporaryDirectory(prefix="modeldna-forest-") as db:
        env = {**os.environ, "MODELDNA_DB": str(Path(db) / "db"), "HF_HUB_OFFLINE": "1", "OPENBLAS_NUM_THREADS": "1"}
        added = []
        for index, (name, folder) in enumerate(folders.items()):
            if progress:
                progress("modeldna db add", index, len(folders))
            done = _run(exe, ["db", "add", str(folder.resolve()), "--id", f"zoo/{name}"], env, timeout_s)
            if isinstance(done, str) or done.returncode != 0:
                errors.append(f"db add {name}: {done if isinstance(done, str) else _last_line(done)}")
            else:
                added.append(name)
        if not added:
            return {"error": f"modeldna could add no model to its database ({errors[0] if errors else 'no model'})"}
        for index, (name, folder) in enumerate(folders.items()):
            if progress:
                progress("modeldna scan", index, len(folders))
            done = _run(exe, ["scan", str(folder.resolve()), "--json", "--top-k", str(len(folders))], env, timeout_s)
            try:
                verdict = json.loads(done.stdout)["verdict"]  # type: ignore[union-attr]
                candidates[name] = [{"model": str(c["candidate_id"]).removeprefix("zoo/"),
                                     "probability": c.get("probability"), "ruled_out": bool(c.get("ruled_out")),
                                     "verdict": verdict.get("verdict")} for c in verdict.get("candidates") or []]
            except (AttributeError, json.JSONDecodeError, KeyError, TypeError):
                errors.append(f"scan {name}: {done if isinstance(done, str) else _last_line(done)}")
    return {"candidates": candidates, "errors": errors, "seconds": time.perf_counter() - started}


def _last_line(done: subprocess.CompletedProcess) -> str:
    return f"exit {done.returncode}: " + (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
