"""The steps of a case: what each step kind reads (planned before any tensor is read) and the analysis it runs.

Analyses are imported when their step runs, so a build without one of them skips that step with the reason instead
of failing the whole case; nothing is ever stubbed.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from solarforensics.errors import ForensicsError, SelectionError
from solarforensics.models import OpenOptions
from solarforensics.sources.base import TensorSource

KINDS = ("arch", "tokenizer", "license", "history", "code", "compare", "matrix", "provenance", "scan")
PROFILE_SKIP = "not in the {profile} profile: run without --{profile}"  # a step whose profile sets `skip = true`


class StepSkipped(Exception):
    """The step cannot run in this build or with these models (the reason is the message)."""


@dataclass
class StepContext:
    roles: dict[str, str]  # case role -> model spec
    options: OpenOptions
    device: str = "auto"
    seed: int = 0
    budget_left: int | None = None
    announce: Callable[[str], None] = lambda text: None
    out_dir: Path | None = None  # the case folder (a scan step keeps its index there)

    def spec(self, role: str) -> str:
        return self.roles[role]


def step_roles(step: dict) -> list[str]:
    """The case roles (a, b, unrelated, derived) a step reads, in order."""
    if step["kind"] == "matrix":
        return list(step["models"])
    if step["kind"] == "scan":  # the query first, then every model of the index
        return list(dict.fromkeys([step["model"], *step["models"]]))
    if step["kind"] in ("license", "history", "code"):
        return [step["model"]]
    return [r for r in (step.get("a"), step.get("b"), step.get("control")) if r]


def describe(step: dict, roles: dict[str, str]) -> str:
    """The step as the equivalent command line."""
    names = [roles.get(r, r) for r in step_roles(step)]
    if step["kind"] == "matrix":
        return f"matrix --models {','.join(names)} --tensors {step['tensors']}"
    if step["kind"] == "compare":
        extra = f" --control {names[2]}" if step.get("control") else ""
        extra += f" --layers {step['layers']}" if step.get("layers") else ""
        extra += f" --permutations {step['permutations']}" if "permutations" in step else ""
        return f"compare {names[0]} {names[1]} --tensors {step['tensors']}{extra}"
    if step["kind"] == "scan":
        index = f"<case folder>/{scan_index_name(step)}"
        return (f"fingerprint {' '.join(dict.fromkeys(names))} --index {index} && scan {names[0]} --index {index}"
                f" --top {step.get('top', 10)}")
    if step["kind"] == "provenance":
        extra = (" --full" if step.get("full") else "") + \
            (f" --max-layers {step['max_layers']}" if step.get("max_layers") else "")
        return f"provenance {names[0]} {names[1]} --tests {step.get('tests', 'all')}{extra}"
    if step["kind"] == "history":
        return f"history {names[0]}" + (f" --files {','.join(step['files'])}" if step.get("files") else "")
    if step["kind"] == "code":
        return f"code {names[0]} --against {step.get('against', 'all')}"
    if step["kind"] == "license":
        return f"license {names[0]} --against {step.get('against', 'apache-2.0')}" + (
            " --history" if step.get("history") else "")
    return f"{step['kind']} {' '.join(names)}"


def scan_index_name(step: dict) -> str:
    """The index file a scan step writes into the case folder (never the user's default index)."""
    return f"{step['id']}-index.sqlite"


# -- planning ----------------------------------------------------------------------------------------------------


def planned_tensor_bytes(step: dict, sources: dict[str, TensorSource], seen: dict[str, set[str]] | None) -> int | None:
    """Tensor bytes the step will read, not counting tensors an earlier step read (`seen`, when the range cache
    keeps them); None when the step plans its own reads (provenance) and 0 when it reads no tensors."""
    kind = step["kind"]
    if kind == "provenance":
        return None
    if kind == "scan":
        return _fingerprint_bytes(step, sources)
    if kind not in ("compare", "matrix"):
        return 0
    from solarforensics.comparison.pairing import pair_models, select_tensors

    wanted: dict[str, set[str]] = {}
    if kind == "matrix":
        for role in step["models"]:
            selected = select_tensors(sources[role], step["tensors"], allow_empty=True).selected
            wanted.setdefault(role, set()).update(s.name for s in selected)
    else:
        a, b, control = step["a"], step["b"], step.get("control")
        layers = step.get("layers", "same")
        pairs = [(a, b, layers)] + ([(control, a, "same"), (control, b, "same")] if control else [])
        for first, second, mode in pairs:
            try:
                found, _, _, _ = pair_models(sources[first], sources[second], step["tensors"], mode)
            except SelectionError:
                continue
            wanted.setdefault(first, set()).update(x.name for x, _ in found)
            wanted.setdefault(second, set()).update(y.name for _, y in found)
    total = 0
    for role, names in wanted.items():
        new = names - seen.get(role, set()) if seen is not None else names
        total += sources[role].planned_bytes(new)
        if seen is not None:
            seen.setdefault(role, set()).update(names)
    return total


def _fingerprint_bytes(step: dict, sources: dict[str, TensorSource]) -> int:
    """Tensor bytes fingerprinting the scan's models reads when each vocabulary has every probe (fewer probes read
    fewer rows; a model whose commit the case's index already holds reads nothing, which only the step can know)."""
    from solarforensics.provenance import sketch
    from solarforensics.provenance.weights import ModelWeights

    total, counted = 0, set()
    for role in step_roles(step):
        source = sources[role]
        if id(source) in counted:
            continue
        counted.add(id(source))
        weights = ModelWeights.of(role, source)
        every_probe = sketch.HASHED_PROBES + len(sketch.CORE_STRINGS)
        total += sketch.planned_bytes(weights, sketch.row_plan(weights), every_probe)
    return total


def small_file_sizes(source: TensorSource, options: OpenOptions) -> dict[str, int]:
    """Sizes of the repo's files (the Hub listing read when it was opened, or a stat per file of a folder)."""
    record = source.provenance
    if record.kind == "hub":
        return source.file_sizes()  # the listing read when the repo was opened
    if record.path:
        root = Path(record.path)
        root = root if root.is_dir() else root.parent
        return {name: (root / name).stat().st_size for name in source.list_files() if (root / name).is_file()}
    return {}


def weight_file_bytes(source: TensorSource) -> int:
    """Sum of the sizes of the weight files (the shards whose headers were read)."""
    shards = {ref.file for ref in source.tensors.values()}
    files = source.provenance.files
    return sum(files[f].size if f in files and files[f].size else max(r.end for r in source.tensors.values()
                                                                      if r.file == f) for f in shards)


# -- running -----------------------------------------------------------------------------------------------------


def _analysis(module: str, function: str) -> Callable:
    name = module.rsplit(".", 1)[-1]
    try:
        loaded = importlib.import_module(f"solarforensics.{module}")
    except ModuleNotFoundError as exc:
        if (exc.name or "").startswith("solarforensics"):
            raise StepSkipped(f"the {name} analysis is not in this build ({exc.name} missing)") from None
        raise
    found = getattr(loaded, function, None)
    if found is None:
        raise StepSkipped(f"the {name} analysis has no {function}() in this build")
    return found


def run_step(step: dict, ctx: StepContext) -> tuple[str, dict]:
    """(results kind, document fields) of one step."""
    kind = step["kind"]
    if kind not in KINDS:
        raise StepSkipped(f"unknown step kind {kind!r} (known: {', '.join(KINDS)})")
    return kind, RUNNERS[kind](step, ctx)


def _arch(step: dict, ctx: StepContext) -> dict:
    return _analysis("evidence.arch", "compare_architectures")(ctx.spec(step["a"]), ctx.spec(step["b"]), ctx.options)


def _tokenizer(step: dict, ctx: StepContext) -> dict:
    return _analysis("evidence.tokenizer", "compare_tokenizers")(ctx.spec(step["a"]), ctx.spec(step["b"]), ctx.options)


def _license(step: dict, ctx: StepContext) -> dict:
    if step.get("history"):  # the text at every revision too: a licence replaced after release is still read
        report = _analysis("evidence.license_history", "license_report_with_history")
    else:
        report = _analysis("evidence.license", "license_report")
    # A repo without a licence file is a finding of this step, not a failure.
    return report(ctx.spec(step["model"]), ctx.options, step.get("against", "apache-2.0"), require_file=False)


def _history(step: dict, ctx: StepContext) -> dict:
    report = _analysis("evidence.history", "history_report")
    return report(ctx.spec(step["model"]), ctx.options, step.get("files"), int(step.get("max_commits", 200)))


def _code(step: dict, ctx: StepContext) -> dict:
    return _analysis("evidence.code", "code_report")(ctx.spec(step["model"]), ctx.options, step.get("against", "all"))


def _compare(step: dict, ctx: StepContext) -> dict:
    compare_models = _analysis("comparison.compare", "compare_models")
    from solarforensics.comparison.compare import CompareRequest

    control = ctx.spec(step["control"]) if step.get("control") else None
    request = CompareRequest(ctx.spec(step["a"]), ctx.spec(step["b"]), step["tensors"], step.get("layers", "same"),
                             control, ctx.device, False, int(step.get("permutations", 1000)), ctx.seed,
                             budget_bytes=ctx.budget_left)
    return compare_models(request, ctx.options)


def _matrix(step: dict, ctx: StepContext) -> dict:
    matrix_models = _analysis("comparison.matrix", "matrix_models")
    return matrix_models([ctx.spec(r) for r in step["models"]], step["tensors"], ctx.options, ctx.device)


def _provenance(step: dict, ctx: StepContext) -> dict:
    provenance_models = _analysis("provenance.run", "provenance_models")
    from solarforensics.provenance.run import ProvenanceRequest

    request = ProvenanceRequest(ctx.spec(step["a"]), ctx.spec(step["b"]), tests=step.get("tests", "all"),
                                budget_bytes=ctx.budget_left, device=ctx.device, seed=ctx.seed,
                                full=bool(step.get("full", False)), max_layers=step.get("max_layers"))

    def announce(plan: dict) -> None:
        fraction = plan.get("fraction")
        share = f" ({100 * fraction:.2f}% of the two checkpoints)" if fraction else ""
        most = "at most " if plan.get("looks") else ""
        ctx.announce(f"provenance will read {most}{plan['planned_bytes']:,} bytes of tensors{share}")

    return provenance_models(request, ctx.options, announce=announce)


def _scan(step: dict, ctx: StepContext) -> dict:
    """Fingerprint the step's models into an index of the case's own (in the case folder, holding exactly these
    models), then scan the query against it: a `scan` document, plus what fingerprinting each model cost."""
    fingerprint_all = _analysis("population.crawl", "fingerprint_all")
    scan_model = _analysis("population.scan", "scan_model")
    from solarforensics.population.index import Index
    from solarforensics.population.scan import ScanRequest

    if ctx.out_dir is None:
        raise StepSkipped("a scan step keeps its index in the case folder, and none was given")
    path = ctx.out_dir / scan_index_name(step)
    specs = list(dict.fromkeys(ctx.spec(role) for role in step_roles(step)))  # --controls may repeat a model
    began = time.perf_counter()
    with Index(path) as index:
        stale = [spec for spec in index.specs() if spec not in specs]  # another run's controls (--controls)
        if stale:
            index.remove(stale)
        outcomes = fingerprint_all(specs, index, ctx.options, workers=int(step.get("workers", 2)),
                                   on_done=lambda o: ctx.announce(f"    fingerprint {o.spec}: {o.status}"))
    index_built = time.perf_counter()
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        raise ForensicsError(f"could not fingerprint {failed[0].spec}: {failed[0].error}")
    fields = scan_model(ScanRequest(specs[0], str(path), int(step.get("top", 10)), ctx.seed), ctx.options)
    rows = [o.row() for o in outcomes]
    fields["fingerprints"] = rows
    fields["sources"] = [(o.entry.meta.get("source") or {}) | {"bytes_transferred": row["bytes_read"] or 0}
                         for o, row in zip(outcomes, rows)]
    fields["planned_bytes"] = sum(((o.entry.meta.get("cost") or {}).get("bytes_planned") or 0)
                                  for o in outcomes if o.status == "new")
    fields["timings"] = {**fields["timings"], "index_s": index_built - began}
    return fields


RUNNERS: dict[str, Callable[[dict, StepContext], dict]] = {
    "arch": _arch, "tokenizer": _tokenizer, "license": _license, "history": _history, "code": _code,
    "compare": _compare, "matrix": _matrix, "provenance": _provenance, "scan": _scan,
}


def failure_text(error: BaseException) -> str:
    return error.one_line() if isinstance(error, ForensicsError) else f"{type(error).__name__}: {error}"
