"""`bench provenance`: the whole-matrix path (`provenance --full`) beside the anytime lean path, in one run.

Each run is its own process (`provenance ... --json`), so its peak RSS is its own (os.wait4's rusage of that child);
both read over the same local Hub with the same latency and no range cache, one after the other.

- replicas: Solar vs GLM and GLM vs INTELLECT-3 (the full-scale virtual replicas): bytes read, share of the two
  checkpoints, bytes at the verdict, wall time, peak RSS, verdict and decisive tests of each path;
- zoo: every labelled pair of a built zoo through both paths: verdicts, decisive tests, combined log10 p, bytes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from solarforensics.localhub.server import HubServer
from solarforensics.zoo.build import read_manifest

REPLICA_PAIRS = (("solar", "glm"), ("glm", "intellect3"))


def run_child(argv: list[str], env: dict) -> dict:
    """One `solarforensics` command in a child process: its JSON document, wall seconds and peak RSS bytes."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "solarforensics", *argv], stdout=out, stderr=err,
                                 env=env)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        text, problem = out.read().decode(), err.read().decode(errors="replace")
    if child.returncode != 0:
        return {"failed": problem.strip().splitlines()[-1] if problem.strip() else f"exit {child.returncode}",
                "seconds": round(seconds, 1)}
    doc = json.loads(text)
    rss = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return {"doc": doc, "seconds": round(seconds, 1), "peak_rss_bytes": rss}


def _figures(run: dict) -> dict:
    if "failed" in run:
        return {"failed": run["failed"], "seconds": run["seconds"]}
    doc = run["doc"]
    read = sum(s.get("bytes_transferred") or 0 for s in doc["sources"])
    checkpoint = doc.get("checkpoint_bytes") or 0
    return {"verdict": doc["verdict"], "decisive": ", ".join(doc["decisive"]) or "-",
            "log10_p": None if doc["log10_p_value"] is None else round(doc["log10_p_value"], 1),
            "bytes_read": read, "percent_read": round(100 * read / checkpoint, 4) if checkpoint else None,
            "bytes_at_verdict": doc.get("bytes_at_verdict", read),
            "percent_at_verdict": round(100 * (doc.get("bytes_at_verdict") or read) / checkpoint, 4)
            if checkpoint else None,
            "looks": f"{sum(1 for s in doc.get('stages', []) if s['bytes_read'])}/{len(doc.get('stages', []))}"
            if doc.get("stages") else "-",
            "seconds": run["seconds"], "peak_rss_gb": round(run["peak_rss_bytes"] / 1e9, 2)}


def bench_replicas(latency_ms: int = 30, pairs=REPLICA_PAIRS, old: bool = True) -> dict:
    """Both paths on the replica pairs, through one local Hub serving the replicas."""
    from solarforensics.replicas.store import replica_store

    figures: dict = {}
    with HubServer(replica_store(), latency_ms=latency_ms) as server:
        env = {**os.environ, "HF_ENDPOINT": server.url, "HF_HUB_DISABLE_TELEMETRY": "1"}
        for a, b in pairs:
            new = _figures(run_child(["provenance", a, b, "--json", "--no-cache"], env))
            row = {"lean (default)": new}
            if old:
                row["whole (--full)"] = _figures(run_child(["provenance", a, b, "--full", "--json", "--no-cache"],
                                                           env))
                whole = row["whole (--full)"]
                if "failed" not in whole and "failed" not in new:
                    row["speedup"] = round(whole["seconds"] / new["seconds"], 2)
                    row["bytes_ratio"] = round(whole["bytes_read"] / max(new["bytes_read"], 1), 1)
                    row["same_verdict"] = whole["verdict"] == new["verdict"]
                    row["same_decisive"] = whole["decisive"] == new["decisive"]
            figures[f"{a} vs {b}"] = row
    return figures


def bench_zoo(zoo: Path) -> dict:
    """Every labelled pair of a zoo through both paths (local folders): verdicts, decisive tests, bytes; and, over the
    independent pairs, the running maximum of the lean statistics over every look (what early stopping must clear)."""
    manifest = read_manifest(zoo)
    rows, same, false_derived = {}, 0, 0
    peak = {"invariant_cka": None, "signature_effect": None, "min_log10_p": None}
    env = dict(os.environ)
    for pair in manifest["pairs"]:
        a, b = (str(zoo / manifest["models"][pair[s]]["path"]) for s in ("a", "b"))
        lean_run = run_child(["provenance", a, b, "--json"], env)
        new = _figures(lean_run)
        whole = _figures(run_child(["provenance", a, b, "--full", "--json"], env))
        agree = new.get("verdict") == whole.get("verdict")
        same += agree
        false_derived += pair["label"] == "independent" and new.get("verdict") == "derived"
        if pair["label"] == "independent" and "doc" in lean_run:
            for look in lean_run["doc"]["stages"]:
                values = look.get("statistics") or {}
                for key, value in (("invariant_cka", values.get("invariant_cka")),
                                   ("signature_effect", values.get("signature_effect"))):
                    if value is not None:
                        peak[key] = value if peak[key] is None else max(peak[key], value)
                if values.get("log10_p") is not None:
                    low = peak["min_log10_p"]
                    peak["min_log10_p"] = values["log10_p"] if low is None else min(low, values["log10_p"])
        rows[f"{pair['a']} / {pair['b']} ({pair['label']})"] = {
            "lean": f"{new.get('verdict')} ({new.get('decisive')}) log10p {new.get('log10_p')} "
                    f"{new.get('bytes_at_verdict')}/{new.get('bytes_read')} B looks {new.get('looks')}",
            "whole": f"{whole.get('verdict')} ({whole.get('decisive')}) log10p {whole.get('log10_p')} "
                     f"{whole.get('bytes_read')} B",
            "same_verdict": agree}
    return {"pairs": len(rows), "same_verdict": same, "lean_false_derived": false_derived,
            "independent_pairs_running_max_over_looks": peak, "by_pair": rows}
