"""`validate`: run `provenance` on every labelled pair of a zoo and measure the error rates: confusion matrix,
accuracy, false-positive rate, ROC AUC per test, uniformity of the independent pairs' p-values (KS), bytes and time
per pair; fit the verdict thresholds on a training split and report them on the rest; the peer tool beside ours.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from solarforensics.models import OpenOptions
from solarforensics.provenance.run import ProvenanceRequest, provenance_models
from solarforensics.provenance.verdict import VERDICTS, decide, load_thresholds, write_thresholds
from solarforensics.validation import peer
from solarforensics.zoo.build import read_manifest

# The grid the derived thresholds are fitted on; the independent ones follow so that they never exceed them.
GRID = {"log10_p": (-2.0, -3.0, -4.0, -6.0, -8.0, -10.0, -15.0, -20.0),
        "cka_effect": (3.0, 5.0, 8.0, 12.0, 20.0, 30.0, 50.0), "cka_path": (0.1, 0.2, 0.3, 0.5),
        "independent_cka_effect": (3.0, 5.0, 8.0, 12.0, 20.0, 30.0), "independent_cka_path": (0.05, 0.1, 0.15, 0.2)}
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ValidateRequest:
    zoo: str
    seed: int = 0
    permutations: int = 999
    peer: bool = True
    thresholds: str | None = None  # the verdict.toml provenance runs with (default configs/verdict.toml)
    write_thresholds: bool = False  # rewrite that file with the values fitted on the training split
    full: bool = False  # the whole-matrix provenance path (always, when fitting thresholds: they are its thresholds)


def validate_zoo(request: ValidateRequest, progress: Progress | None = None, options: OpenOptions | None = None,
                 hub_owner: str | None = None) -> dict:
    """The fields of a `validation` results document. With `hub_owner`, model M is read as the Hub repo
    `hub_owner/M` through `options` (a local Hub serving the zoo) instead of from its folder."""
    started = time.perf_counter()
    folder = Path(request.zoo)
    manifest = read_manifest(folder)
    used = load_thresholds(request.thresholds)  # the values every verdict below ran with
    exe = peer.find_modeldna() if request.peer else None
    rows, runs = [], []
    for index, pair in enumerate(manifest["pairs"]):
        if progress:
            progress("pairs", index, len(manifest["pairs"]))
        path_a, path_b = (folder / manifest["models"][pair[s]]["path"] for s in ("a", "b"))
        spec_a, spec_b = (f"{hub_owner}/{p.name}" if hub_owner else str(p) for p in (path_a, path_b))
        t0 = time.perf_counter()
        doc = provenance_models(ProvenanceRequest(spec_a, spec_b, seed=request.seed, permutations=request.permutations,
                                                  thresholds=request.thresholds,
                                                  full=request.full or request.write_thresholds), options)
        row = {"a": pair["a"], "b": pair["b"], "label": pair["label"], "transformations": pair["transformations"],
               "verdict": doc["verdict"], "log10_p": doc["log10_p_value"], "decisive": doc["decisive"],
               "seconds": time.perf_counter() - t0,
               "bytes": sum(s.get("bytes_transferred") or 0 for s in doc["sources"]),
               "planned_bytes": doc["planned_bytes"], "split": _split(pair),
               "scores": {t["name"]: _score(t) for t in doc["tests"] if t.get("applicable")}}
        if exe:
            row["peer"] = peer.run_pair(exe, path_a, path_b)
        rows.append(row)
        runs.append((row, doc["tests"], doc["not_tested"]))
    fitted = fit_thresholds([r for r in runs if r[0]["split"] == "train"], used)
    test_runs = [r for r in runs if r[0]["split"] == "test"]
    fields = {
        "zoo": {"path": str(folder), "size": manifest.get("size"), "seed": manifest.get("seed"),
                "models": len(manifest["models"]), "pairs": len(rows), "corpus": manifest.get("corpus"),
                "read_through": "a local Hub server (HTTP range reads)" if hub_owner else "local folders"},
        **rates(rows), "pairs": rows, "per_test_auc": per_test_auc(rows), "ks": ks_uniform(rows),
        "thresholds": {
            "file": used["path"], "written": False,
            # Key kept from before thresholds were fitted (a public contract): the values this run used.
            "provisional": {"status": used.get("status"), "derived": used["derived"],
                            "independent": used["independent"],
                            "test_split": rates([_redecide(r, used) for r in test_runs])},
            "fitted": fitted and {**{k: v for k, v in fitted.items() if k != "values"},
                                  "test_split": rates([_redecide(r, fitted["values"]) for r in test_runs])},
        },
        "peer": peer_summary(rows, exe, request.peer),
        "bytes_total": sum(r["bytes"] for r in rows), "seconds_total": sum(r["seconds"] for r in rows),
    }
    if request.write_thresholds and fitted:
        held_out = fields["thresholds"]["fitted"]["test_split"]["accuracy"]
        source = (f"solarforensics validate --write-thresholds, {datetime.date.today().isoformat()}: grid fit on "
                  f"{fitted['n_train']} training pairs of zoo size {manifest.get('size')} seed {manifest.get('seed')}"
                  f"; held-out accuracy {'n/a' if held_out is None else f'{100 * held_out:.0f}%'} on "
                  f"{len(test_runs)} pairs")
        write_thresholds(used["path"], {"derived": fitted["derived"], "independent": fitted["independent"]},
                         "fitted", source)
        fields["thresholds"].update(written=True, written_source=source)
    fields["summary"] = {"statements": statements(fields)}
    fields["timings"] = {"total_s": time.perf_counter() - started}
    fields["device"] = "cpu"
    return fields


def _split(pair: dict) -> str:
    """train or test, from a hash of the pair's names (stable when pairs are added)."""
    digest = hashlib.sha256(f"{pair['a']}|{pair['b']}".encode()).digest()
    return "train" if digest[0] % 2 == 0 else "test"


def _score(test: dict) -> float | None:
    """How strongly a test points to derivation: -log10 p, else its effect, else a numeric statistic."""
    if test.get("log10_p_value") is not None:
        return -float(test["log10_p_value"])
    for key in ("effect", "statistic"):
        value = test.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    stat = test.get("statistic")
    if isinstance(stat, dict) and test["name"] == "identity":
        return float(sum(v for v in stat.values() if isinstance(v, (int, float))))
    return None


def rates(rows: list[dict], key: str = "verdict") -> dict:
    """Confusion matrix (label x verdict), accuracy, false-positive and true-positive rates."""
    confusion = {label: dict.fromkeys(VERDICTS, 0) for label in ("derived", "independent")}
    for row in rows:
        verdict = row.get(key) if key == "verdict" else (row.get("peer") or {}).get("verdict")
        if verdict in VERDICTS:
            confusion[row["label"]][verdict] += 1
    n_d, n_i = sum(confusion["derived"].values()), sum(confusion["independent"].values())
    right = confusion["derived"]["derived"] + confusion["independent"]["independent"]
    return {"confusion": confusion, "accuracy": right / (n_d + n_i) if n_d + n_i else None,
            "false_positive_rate": confusion["independent"]["derived"] / n_i if n_i else None,
            "true_positive_rate": confusion["derived"]["derived"] / n_d if n_d else None, "n": n_d + n_i}


def auc(positives: list[float], negatives: list[float]) -> float | None:
    """ROC AUC as the Mann-Whitney probability that a positive outscores a negative (ties count half)."""
    if not positives or not negatives:
        return None
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def per_test_auc(rows: list[dict]) -> dict:
    """AUC and TPR at the largest independent score (zero false positives) of every test's score."""
    names = sorted({name for row in rows for name in row["scores"]})
    out = {}
    for name in names:
        pos = [r["scores"][name] for r in rows if r["label"] == "derived" and r["scores"].get(name) is not None]
        neg = [r["scores"][name] for r in rows if r["label"] == "independent" and r["scores"].get(name) is not None]
        tpr0 = sum(p > max(neg) for p in pos) / len(pos) if pos and neg else None
        out[name] = {"auc": auc(pos, neg), "tpr_at_zero_fpr": tpr0, "n_derived": len(pos), "n_independent": len(neg),
                     "points": roc_points(pos, neg)}
    return out


def roc_points(pos: list[float], neg: list[float]) -> list[list[float]]:
    """[fpr, tpr] at every threshold, from (0, 0) to (1, 1)."""
    if not pos or not neg:
        return []
    points = [[0.0, 0.0]]
    for cut in sorted(set(pos + neg), reverse=True):
        points.append([sum(n >= cut for n in neg) / len(neg), sum(p >= cut for p in pos) / len(pos)])
    return points + [[1.0, 1.0]]


def ks_uniform(rows: list[dict]) -> dict:
    """Kolmogorov-Smirnov of the independent pairs' combined p-values against U(0, 1)."""
    from scipy.stats import kstest

    values = [10.0 ** r["log10_p"] for r in rows if r["label"] == "independent" and r["log10_p"] is not None]
    if len(values) < 2:
        return {"n": len(values), "statistic": None, "p_value": None, "p_values": values,
                "note": "fewer than 2 independent pairs with a p-value"}
    result = kstest(values, "uniform")
    return {"n": len(values), "statistic": float(result.statistic), "p_value": float(result.pvalue),
            "p_values": values}


def _redecide(run: tuple, thresholds: dict) -> dict:
    row, tests, not_tested = run
    return {"label": row["label"], "verdict": decide(tests, not_tested, thresholds)["verdict"]}


def fit_thresholds(train: list[tuple], provisional: dict) -> dict | None:
    """The grid point of thresholds with the best train accuracy minus twice its FPR; among tied points the one in
    the middle of the tied range of every threshold (a point at the edge would fit the training pairs and nothing
    else)."""
    if not any(r[0]["label"] == "derived" for r in train) or not any(r[0]["label"] == "independent" for r in train):
        return None
    scored = {}
    for point in itertools.product(*GRID.values()):
        values = _grid_values(provisional, *point)
        got = rates([_redecide(r, values) for r in train])
        scored[point] = (got["accuracy"] - 2 * got["false_positive_rate"], values, got)
    best = max(score for score, _, _ in scored.values())
    tied = [point for point, (score, _, _) in scored.items() if score == best]
    middle = tuple(sorted(values)[(len(values) - 1) // 2] for values in zip(*tied))
    _, values, got = scored[middle if middle in scored and scored[middle][0] == best else tied[0]]
    return {"values": values, "derived": values["derived"], "independent": values["independent"],
            "train_split": got, "n_train": len(train), "tied_points": len(tied)}


def _grid_values(provisional: dict, log10_p, effect, path, ind_effect, ind_path) -> dict:
    """Thresholds at one grid point; the independent ones never beyond the derived ones."""
    values = copy.deepcopy(provisional)
    values["derived"].update(log10_p=log10_p, cka_effect=effect, cka_path=path)
    ind = values["independent"]
    ind.update(log10_p=max(ind["log10_p"], log10_p), cka_effect=min(ind_effect, effect), cka_path=min(ind_path, path))
    values.update(status="fitted", source="solarforensics validate: grid fit on the zoo's training split")
    return values


def peer_summary(rows: list[dict], exe: str | None, asked: bool) -> dict:
    """The peer tool's confusion matrix and rates on the same pairs, or why it did not run."""
    if not asked:
        return {"tool": "modeldna", "ran": False, "reason": "skipped (--no-peer)"}
    if exe is None:
        return {"tool": "modeldna", "ran": False, "reason": "modeldna not installed (set SOLARFORENSICS_MODELDNA "
                "to its executable, e.g. a separate venv's bin/modeldna; it pins its own huggingface_hub)"}
    ran = [r for r in rows if "verdict" in (r.get("peer") or {})]
    errors = [f"{r['a']} vs {r['b']}: {r['peer']['error']}" for r in rows if "error" in (r.get("peer") or {})]
    return {"tool": "modeldna", "ran": True, "executable": exe, **rates(ran, key="peer"),
            "seconds_total": sum(r["peer"]["seconds"] for r in rows if r.get("peer")), "errors": errors,
            "bytes_note": "modeldna compare --json reports bytes_read 0; its bytes are not measured here"}


def statements(fields: dict) -> list[str]:
    """Plain sentences for the summary."""
    def pct(x):
        return "n/a" if x is None else f"{100 * x:.0f}%"
    c = fields["confusion"]
    out = [f"{fields['zoo']['pairs']} labelled pairs: accuracy {pct(fields['accuracy'])}, false-positive rate "
           f"{pct(fields['false_positive_rate'])}, true-positive rate {pct(fields['true_positive_rate'])} "
           f"(derived called derived {c['derived']['derived']}/{sum(c['derived'].values())}, independent called "
           f"independent {c['independent']['independent']}/{sum(c['independent'].values())}; the rest "
           "inconclusive or wrong)."]
    ks = fields["ks"]
    if ks.get("statistic") is not None:
        out.append(f"Independent pairs' combined p-values vs U(0,1): KS D = {ks['statistic']:.3f}, "
                   f"p = {ks['p_value']:.3g} (n = {ks['n']}).")
    fitted = fields["thresholds"]["fitted"]
    if fitted:
        out.append(f"Thresholds fitted on {fitted['n_train']} training pairs; on the held-out pairs accuracy "
                   f"{pct(fitted['test_split']['accuracy'])} vs {pct(fields['thresholds']['provisional']['test_split']['accuracy'])} "
                   f"with the thresholds it ran with ({fields['thresholds']['provisional']['status']}). "
                   + (f"Written to {fields['thresholds']['file']}; the verdicts above used the old values."
                      if fields["thresholds"]["written"] else
                      f"{fields['thresholds']['file']} is not rewritten (--write-thresholds does)."))
    else:
        out.append("Thresholds not fitted: the training split lacks a derived or an independent pair.")
    p = fields["peer"]
    if p.get("ran"):
        out.append(f"modeldna on the same pairs: accuracy {pct(p['accuracy'])}, false-positive rate "
                   f"{pct(p['false_positive_rate'])}.")
    else:
        out.append(f"modeldna not run: {p['reason']}.")
    return out
