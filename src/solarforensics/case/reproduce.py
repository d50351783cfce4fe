"""`reproduce`: check a case run against the numbers the peers published for the real weights (reference/targets.toml).

A run on synthetic replicas cannot reproduce them (its weights are generated), so it is refused unless asked for
explicitly; then every value is still compared, under a loud label, to show how far the replicas are from the
published numbers.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

from solarforensics.datafiles import reference_path
from solarforensics.errors import FormatError, NotFoundError, ResultsError
from solarforensics.results.document import read_document


def load_targets(name: str = "targets.toml") -> list[dict]:
    path = reference_path(name)
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle).get("target", [])
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise FormatError(f"cannot read the reproduction targets {path}: {exc}") from exc


def read_run(results: Path) -> tuple[dict[str, dict], bool]:
    """(documents by step id, replica?) from a case directory (case.json + one JSON per step)."""
    case_file = results / "case.json" if results.is_dir() else results
    if not case_file.is_file():
        raise NotFoundError(f"{results}: no case.json here", hint="give the directory `solarforensics case` wrote")
    case = read_document(case_file)
    if case.get("kind") != "case":
        raise ResultsError(f"{case_file} is a {case.get('kind')!r} document, not a case run",
                           hint="give the directory `solarforensics case` wrote")
    docs = {}
    for step in case.get("steps", []):
        if step.get("file"):
            docs[step["id"]] = read_document(case_file.parent / step["file"])
    replica = bool(case.get("replica")) or any(d.get("replica") for d in docs.values())
    return docs, replica


def check_run(results: Path, allow_replica: bool = False, targets: list[dict] | None = None) -> dict:
    """Every target's expected, measured, difference and status (pass / fail / missing), with totals."""
    docs, replica = read_run(results)
    if replica and not allow_replica:
        raise ResultsError(
            f"{results} was computed on synthetic replicas: the published numbers can only be reproduced on the real "
            "weights", hint="rerun `solarforensics case solar-vs-glm` against the real Hub (HF_ENDPOINT unset), or "
            "pass --allow-replica to compare anyway")
    checks = []
    for target in targets if targets is not None else load_targets():
        checks += check_target(target, docs)
    counts = {status: sum(1 for c in checks if c["status"] == status) for status in ("pass", "fail", "missing")}
    return {"results": str(results), "replica": replica, "checks": checks, "counts": counts,
            "reproduced": counts["fail"] == 0 and counts["missing"] == 0 and not replica}


def check_target(target: dict, docs: dict[str, dict]) -> list[dict]:
    """One check per value of the target (per layer or layer pair for row targets)."""
    base = {"target": target["id"], "what": target["what"], "step": target["step"], "source": target["source"],
            "tolerance": target["tolerance"]}
    doc = docs.get(target["step"])
    select = target["select"]
    if select in ("rows", "pairs"):
        keys = [(x, x) for x in target["layers"]] if select == "rows" else [tuple(p) for p in target["pairs"]]
        measured = _row_values(doc, target["role"], target["field"]) if doc else {}
        return [_check(base | {"at": f"{target['role']} {a}" if a == b else f"{target['role']} {a}-{b}"},
                       expected, measured.get(key), target["tolerance"])
                for key, expected, (a, b) in zip(keys, target["values"], keys)]
    if select == "field":
        return [_check(base | {"at": target["path"]}, target["value"], _path(doc, target["path"]), target["tolerance"])]
    if select == "sum":
        parts = [(-1 if p.startswith("-") else 1, _path(doc, p.lstrip("-"))) for p in target["paths"]]
        value = None if any(v is None for _, v in parts) else sum(sign * v for sign, v in parts)
        return [_check(base | {"at": " ".join(target["paths"])}, target["value"], value, target["tolerance"])]
    raise FormatError(f"target {target['id']}: unknown select {select!r}", hint="rows, pairs, field or sum")


def _row_values(doc: dict, role: str, field: str) -> dict[tuple[int, int], object]:
    return {(r["layer_a"], r["layer_b"]): r.get(field) for r in doc.get("rows", []) if r.get("role") == role}


def _path(doc: dict | None, dotted: str):
    value = doc
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _check(base: dict, expected, measured, tolerance: float) -> dict:
    if measured is None:
        return {**base, "expected": expected, "measured": None, "difference": None, "status": "missing"}
    if isinstance(expected, (int, float)) and not isinstance(expected, bool) and isinstance(measured, (int, float)):
        difference = measured - expected
        ok = math.isfinite(difference) and abs(difference) <= tolerance
    else:
        difference = None
        ok = measured == expected
    return {**base, "expected": expected, "measured": measured, "difference": difference,
            "status": "pass" if ok else "fail"}
