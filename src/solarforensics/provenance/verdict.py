"""The verdict engine: test rows -> "derived" / "independent" / "inconclusive", with the decisive tests, the combined
p-value, what was not tested and why, the limits of weight tests, and the thresholds used (configs/verdict.toml).

p-values are combined only where symmetries are independent: tests resting on the one residual-dimension symmetry
(norm gains, residual-dimension matching) share it, so they enter once (Bonferroni over them); each layer's
expert or hidden-unit order is a symmetry of its own, so those per-layer p-values enter Fisher's method one by one.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from pathlib import Path

from solarforensics.datafiles import config_path
from solarforensics.errors import FormatError
from solarforensics.metrics.stats import fisher_combine, format_p
from solarforensics.results.document import write_bytes_atomic

VERDICTS = ("derived", "independent", "inconclusive")
TESTED_TRANSFORMATIONS = ("exact and near copies, residual-dimension permutations and sign flips, norm-gain "
                          "re-absorption, head and hidden-unit permutations, layer duplication, insertion and removal, "
                          "rotations of the residual stream")
LIMITS = ("Weight tests cannot see distillation or training on the other model's outputs (that stays inside "
          "independence), and they cannot prove independence beyond the transformations tested: "
          f"{TESTED_TRANSFORMATIONS}. A rotation is undone only through shared-token embeddings: rotated and given "
          "new embeddings, a derived model would not be aligned.")
IDENTITY_KEYS = ("identical_tensors", "identical_rows", "identical_windows", "near_equal_tensors")


def load_thresholds(path: str | Path | None = None) -> dict:
    """The thresholds file as a dict: derived / independent / alignment values, status, source and path."""
    file = Path(path) if path is not None else config_path("verdict.toml")
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
        for section in ("derived", "independent", "alignment"):
            if not isinstance(data.get(section), dict):
                raise KeyError(section)
        for section in ("derived", "independent", "alignment", "lean"):
            for key, value in (data.get(section) or {}).items():
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise FormatError(f"verdict thresholds file {file}: [{section}] {key} = {value!r} is not a number",
                                      "every threshold is a number")
    except FileNotFoundError:
        raise FormatError(f"verdict thresholds file {file} does not exist",
                          "check the path given to --thresholds" if path is not None else
                          "restore configs/verdict.toml") from None
    except (tomllib.TOMLDecodeError, KeyError) as exc:
        raise FormatError(f"verdict thresholds file {file} is malformed ({exc})",
                          "it needs [derived], [independent] and [alignment] tables") from None
    return {**data, "path": str(file)}


def write_thresholds(path: str | Path, values: dict, status: str, source: str) -> Path:
    """Rewrite a thresholds file in place: each `key = value` line of the tables in `values` (and the top-level
    status and source) gets its new value; comments, order and every other line stay. Written atomically."""
    file = Path(path)
    load_thresholds(file)  # a malformed file is refused before anything is written
    section, out, seen = None, [], set()
    top = {"status": status, "source": source}
    for line in file.read_text(encoding="utf-8").splitlines():
        header = re.fullmatch(r"\s*\[([A-Za-z0-9_]+)\]\s*", line)
        assignment = re.fullmatch(r"(\s*)([A-Za-z0-9_]+)(\s*=\s*)(.*)", line)
        if header:
            section = header.group(1)
        elif assignment:
            table = top if section is None else values.get(section, {})
            key = assignment.group(2)
            if key in table:
                line = f"{assignment.group(1)}{key}{assignment.group(3)}{json.dumps(table[key])}"
                seen.add((section, key))
        out.append(line)
    missing = [f"{t}.{k}" for t, table in values.items() if isinstance(table, dict) for k in table
               if (t, k) not in seen]
    if missing:
        raise FormatError(f"verdict thresholds file {file} has no line for {', '.join(missing)}",
                          "restore configs/verdict.toml from the repository")
    text = "\n".join(out) + "\n"
    tomllib.loads(text)  # what is written must read back: checked before the file is touched
    write_bytes_atomic(text.encode("utf-8"), file)
    return file


def combined_p(tests: list[dict]) -> tuple[float | None, float | None, list[str]]:
    """(p, log10 p, contributing test names): Bonferroni within the residual symmetry, Fisher across symmetries."""
    residual = [t for t in tests if t.get("symmetry") == "residual" and t.get("log10_p_value") is not None]
    units = [t for t in tests if t.get("symmetry") == "units" and t.get("per_layer_log10_p")]
    parts: list[float] = []
    if residual:
        parts.append(min(0.0, min(t["log10_p_value"] for t in residual) + math.log10(len(residual))))
    for test in units:
        parts += test["per_layer_log10_p"]
    names = [t["name"] for t in residual + units]
    if not parts:
        return None, None, []
    if len(parts) == 1:
        return 10.0 ** parts[0], parts[0], names
    p, log10_p = fisher_combine(parts, log10=True)
    return p, log10_p, names


def identity_fires(test: dict, derived: dict) -> bool:
    stats = test.get("statistic") if test.get("applicable") else None
    return isinstance(stats, dict) and any(stats.get(k, 0) >= derived[k] > 0 for k in IDENTITY_KEYS if k in derived)


def _cka(tests: list[dict]) -> dict | None:
    return next((t for t in tests if t["name"] == "attention-cka" and t.get("applicable")), None)


def _cka_passes(test: dict | None, limits: dict, above: bool) -> bool:
    if test is None or test.get("statistic") is None:
        return False
    effect = test.get("effect")
    if above:
        return test["statistic"] >= limits["cka_path"] and effect is not None and effect >= limits["cka_effect"]
    return test["statistic"] < limits["cka_path"] and (effect is None or effect < limits["cka_effect"])


def decide(tests: list[dict], not_tested: list[dict], thresholds: dict) -> dict:
    """The verdict fields of a provenance document."""
    derived, independent = thresholds["derived"], thresholds["independent"]
    p, log10_p, contributing = combined_p(tests)
    decisive = [t["name"] for t in tests if t["name"] == "identity" and identity_fires(t, derived)]
    decisive += [t["name"] for t in tests if t.get("applicable") and not t.get("corroborative")
                 and t.get("log10_p_value") is not None and t["log10_p_value"] <= derived["log10_p"]]
    if not decisive and log10_p is not None and log10_p <= derived["log10_p"]:
        decisive.append(f"combined p-value ({', '.join(contributing)})")
    cka = _cka(tests)
    if _cka_passes(cka, derived, above=True):
        decisive.append(cka["name"])
    reasons = []
    if decisive:
        verdict = "derived"
    else:
        if cka is None:
            reasons.append("the disguise-invariant test (attention CKA after residual alignment) could not run")
        elif cka.get("alignment_method") in (None, "none"):
            reasons.append("attention CKA ran without a residual alignment, so a permuted copy would look unrelated")
        elif not _cka_passes(cka, independent, above=False):
            reasons.append("attention CKA lies between the independent and derived thresholds")
        if log10_p is not None and log10_p <= independent["log10_p"]:
            reasons.append(f"the combined p-value ({format_p(p, log10_p)}) is small but not decisive")
        verdict = "inconclusive" if reasons else "independent"
    return {
        "verdict": verdict,
        "p_value": p,
        "log10_p_value": log10_p,
        "decisive": decisive,
        "limits": LIMITS,
        "thresholds": {key: value for key, value in thresholds.items()},
        "statements": statements(verdict, decisive, reasons, p, log10_p, contributing, not_tested),
    }


def statements(verdict: str, decisive: list[str], reasons: list[str], p, log10_p, contributing: list[str],
               not_tested: list[dict], invariant: str = "attention CKA after residual alignment") -> list[str]:
    """Plain sentences for the summary: the verdict and why, the combined p, what was not tested, the limits."""
    out = []
    if verdict == "derived":
        out.append(f"Derived: decided by {', '.join(decisive)}.")
    elif verdict == "independent":
        out.append("Independent, within what weight tests can see: every test stayed near its null, including "
                   f"{invariant}.")
    else:
        out.append(f"Inconclusive: {'; '.join(reasons)}.")
    if log10_p is not None:
        out.append(f"Combined p-value {format_p(p, log10_p)} over {', '.join(contributing)} (Fisher only across "
                   "independent symmetries).")
    for item in not_tested:
        out.append(f"Not tested: {item['name']} ({item['reason']}).")
    out.append(LIMITS)
    return out
