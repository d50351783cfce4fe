"""`case`: one dispute, end to end. A case file (configs/cases/NAME.toml) names the models, the controls and the
steps; running it opens every model, prints what it will read, runs each step (writing its results document),
judges the claims ledger against the measurements, and writes case.json plus report.md and report.html."""

from __future__ import annotations

import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from solarforensics.case.claims import Run, judge_claims, load_claims, tally
from solarforensics.case.steps import (
    PROFILE_SKIP,
    StepContext,
    StepSkipped,
    describe,
    failure_text,
    planned_tensor_bytes,
    run_step,
    small_file_sizes,
    step_roles,
    weight_file_bytes,
)
from solarforensics.datafiles import config_path
from solarforensics.errors import BudgetError, ForensicsError, FormatError, NotFoundError, SpecError
from solarforensics.models import OpenOptions, open_model
from solarforensics.results.document import new_document, path_inside, slugify, write_document
from solarforensics.sources.interrupt import worker_pool

MARKER_FILE = "REPLICA.md"  # what replicas/store.py puts in every virtual repo
# Small files a run downloads (once per model: the Hub client caches them): at every open, and per step kind.
OPEN_FILES = ("config.json", "model.safetensors.index.json")
STEP_FILES = {"tokenizer": ("tokenizer.json",), "provenance": ("tokenizer.json",), "scan": ("tokenizer.json",),
              "license": ("README.md", "LICENSE", "LICENSE.md", "LICENSE.txt", "LICENCE")}
Say = Callable[[str], None]
# Step statuses that leave the case complete: a step the profile deliberately skips is not a gap in the evidence.
COMPLETE_STATUSES = ("ok", "skipped")


@dataclass(frozen=True)
class Case:
    name: str
    title: str
    question: str
    models: dict[str, str]
    controls: dict[str, str]
    steps: list[dict]
    claims: str
    targets: str
    path: Path

    @property
    def roles(self) -> dict[str, str]:
        return {**self.models, **self.controls}


@dataclass(frozen=True)
class CaseRequest:
    name: str
    out_dir: Path | None = None
    controls: str | None = None  # comma list replacing the case's controls, in their order
    budget_bytes: int | None = None
    device: str = "auto"
    seed: int = 0
    quick: bool = False  # apply each step's `quick` overrides (fewer layers, fewer tests): the demo's profile
    reports: bool = True  # render report.md / report.html (the documents are always written)


@dataclass
class CaseOutcome:
    out_dir: Path
    doc: dict
    report_html: Path | None = None
    report_md: Path | None = None
    problem: str | None = None  # the first failure, when the case is incomplete
    files: list[Path] = field(default_factory=list)


def case_files() -> dict[str, Path]:
    folder = config_path("cases")
    return {p.stem: p for p in sorted(folder.glob("*.toml"))} if folder.is_dir() else {}


def load_case(name: str) -> Case:
    """A case by name (configs/cases/NAME.toml) or by the path of a case file of your own."""
    files = case_files()
    path = files.get(name) or (Path(name) if name.endswith(".toml") and Path(name).is_file() else None)
    if path is None:
        raise NotFoundError(f"unknown case {name!r}", hint=f"cases: {', '.join(files) or 'none'} (see `case list`)")
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
        case = Case(data.get("name", path.stem), data["title"], data["question"], dict(data["models"]),
                    dict(data.get("controls", {})), list(data["steps"]), data.get("claims", "claims.toml"),
                    data.get("targets", "targets.toml"), path)
    except (OSError, tomllib.TOMLDecodeError, KeyError) as exc:
        raise FormatError(f"case file {path} is malformed: {exc}") from exc
    for step in case.steps:
        if "skip" in step:
            raise FormatError(f"case {name}: step {step.get('id')} sets skip outside a profile",
                              hint="a profile leaves a step out with quick = { skip = true }")
        missing = [r for r in step_roles(step) if r not in case.roles]
        if missing:
            raise FormatError(f"case {name}: step {step.get('id')} names unknown role {missing[0]!r}",
                              hint=f"roles: {', '.join(case.roles)}")
    return case


def list_cases() -> list[Case]:
    return [load_case(name) for name in case_files()]


def resolve_roles(case: Case, controls: str | None) -> dict[str, str]:
    roles = case.roles
    if controls:
        given = [c.strip() for c in controls.split(",") if c.strip()]
        if len(given) > len(case.controls):
            raise SpecError(f"case {case.name} has {len(case.controls)} controls ({', '.join(case.controls)}), "
                            f"{len(given)} given", hint="--controls takes them in that order")
        roles.update(zip(case.controls, given))
    return roles


def run_case(request: CaseRequest, options: OpenOptions | None = None, say: Say = lambda text: None) -> CaseOutcome:
    """Run every step; partial results are kept (complete: false) and the first problem is returned, not raised."""
    started = time.perf_counter()
    options = options or OpenOptions()
    case = load_case(request.name)
    if request.quick:
        case = replace(case, steps=[{**step, **step.get("quick", {})} for step in case.steps])
    profile = "quick" if request.quick else "full"
    roles = resolve_roles(case, request.controls)
    out_dir = Path(request.out_dir or Path("results") / case.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    say(f"case {case.name}: {case.question}")
    sources, unavailable = _open_all(roles, options)
    replica = any(MARKER_FILE in source.list_files() for source in sources.values())
    if replica:
        say("SYNTHETIC REPLICAS: the endpoint serves generated stand-ins; nothing here is a finding about the real "
            "models")
    sizes = {role: small_file_sizes(source, options) for role, source in sources.items()}
    checkpoints = {role: weight_file_bytes(source) for role, source in sources.items()}
    plan = _plan(case, sources, unavailable, options.use_cache)
    # Opening read every shard header, config.json and the index; later opens find them in the caches.
    first_role = {roles[role]: role for role in reversed(list(sources))}
    small_seen = {(spec, name) for spec, role in first_role.items() for name in OPEN_FILES if name in sizes[role]}
    spent = sum(sources[role].provenance.bytes_transferred for role in first_role.values())
    spent += sum(sizes[first_role[spec]][name] for spec, name in small_seen)
    _say_plan(say, case, roles, plan, spent, checkpoints)
    docs, steps, notes = {}, [], {}
    tensor_bytes = 0  # what --budget-bytes limits, like compare's and provenance's own budgets
    argv = list(sys.argv)
    for step in case.steps:
        record = {"id": step["id"], "kind": step["kind"], "command": describe(step, roles), "why": step.get("why"),
                  "planned_bytes": plan.get(step["id"]), "status": "ok", "reason": None, "file": None,
                  "bytes_transferred": 0, "seconds": None, "report": step.get("report", True)}
        steps.append(record)
        missing = [r for r in step_roles(step) if r in unavailable]
        left = None if request.budget_bytes is None else request.budget_bytes - tensor_bytes
        if step.get("skip"):  # the profile leaves it out on purpose: not a failure, the case stays complete
            record.update(status="skipped", reason=PROFILE_SKIP.format(profile=profile))
        elif missing:
            record.update(status="not-run", reason=f"{roles[missing[0]]} unavailable: {unavailable[missing[0]]}")
        elif left is not None and (plan.get(step["id"]) or 0) > left:
            record.update(status="over-budget",
                          reason=f"needs {plan[step['id']]:,} bytes, {max(left, 0):,} left of the --budget-bytes")
        else:
            _run_one(step, record, StepContext(roles, options, request.device, request.seed, left, say, out_dir),
                     docs, out_dir, argv, replica)
            spent += record["bytes_transferred"]
            planned = plan.get(step["id"])
            tensor_bytes += planned if planned is not None else docs.get(step["id"], {}).get("planned_bytes") or 0
            for role in step_roles(step):
                for name in STEP_FILES.get(step["kind"], ()):
                    if name in sizes.get(role, {}) and (roles[role], name) not in small_seen:
                        small_seen.add((roles[role], name))
                        spent += sizes[role][name]
        if record["status"] != "ok":
            notes[step["id"]] = f"step {step['id']} {record['status']}: {record['reason']}"
            say(f"  {step['id']}: {record['status']}: {record['reason']}")
    claims = judge_claims(load_claims(case.claims), Run(docs, roles, notes))
    doc = _case_document(case, roles, request, steps, claims, docs, sources, spent, checkpoints, unavailable, replica,
                         argv, time.perf_counter() - started)
    outcome = CaseOutcome(out_dir, doc, files=[path_inside(out_dir, f"{s['id']}.json") for s in steps if s["file"]])
    write_document(doc, out_dir / "case.json")
    if request.reports:
        shown = [docs[step["id"]] for step in case.steps if step["id"] in docs and step.get("report", True)]
        outcome.report_md, outcome.report_html = _reports(doc, shown, out_dir)
    problems = [f"{s['id']}: {s['reason']}" for s in steps if s["status"] not in COMPLETE_STATUSES]
    outcome.problem = problems[0] if problems else None
    return outcome


def _open_all(roles: dict[str, str], options: OpenOptions) -> tuple[dict, dict[str, str]]:
    """Every model of the case, opened at once (headers only); a model that cannot be opened is named, with why."""
    specs = dict.fromkeys(roles.values())

    def attempt(spec: str):
        try:
            return open_model(spec, options), None
        except ForensicsError as err:
            return None, err.one_line()

    with worker_pool(min(8, len(specs))) as pool:
        opened = dict(zip(specs, pool.map(attempt, specs)))
    sources = {role: opened[spec][0] for role, spec in roles.items() if opened[spec][0] is not None}
    unavailable = {role: opened[spec][1] for role, spec in roles.items() if opened[spec][0] is None}
    return sources, unavailable


def _plan(case: Case, sources: dict, unavailable: dict, cached: bool) -> dict[str, int | None]:
    seen: dict[str, set[str]] | None = {} if cached else None
    plan = {}
    for step in case.steps:
        if step.get("skip") or any(r in unavailable for r in step_roles(step)):
            plan[step["id"]] = None
            continue
        try:
            plan[step["id"]] = planned_tensor_bytes(step, sources, seen)
        except ForensicsError:
            plan[step["id"]] = None  # the step will say what is wrong when it runs
    return plan


def _say_plan(say: Say, case: Case, roles: dict, plan: dict, spent: int, checkpoints: dict) -> None:
    known = sum(v for v in plan.values() if v)
    pair = sum(checkpoints.get(r, 0) for r in case.models)
    say(f"opened {len(checkpoints)} models ({spent:,} bytes of headers); the two checkpoints hold {pair:,} bytes")
    for step in case.steps:
        planned = plan.get(step["id"])
        text = "planned by the step" if planned is None else f"{planned:,} bytes"
        text = "skipped (profile)" if step.get("skip") else text
        say(f"  {step['id']:<28} {text:>22}   {describe(step, roles)}")
    share = f" ({100 * known / pair:.2f}% of the two checkpoints)" if pair else ""
    say(f"tensor bytes to read: {known:,}{share}, plus what provenance plans")


def _run_one(step: dict, record: dict, ctx: StepContext, docs: dict, out_dir: Path, argv: list[str],
             replica: bool) -> None:
    began = time.perf_counter()
    ctx.announce(f"  {step['id']}: {record['command']}")
    try:
        kind, fields = run_step(step, ctx)
    except StepSkipped as why:
        record.update(status="not-run", reason=str(why))
        return
    except BudgetError as err:
        record.update(status="over-budget", reason=err.one_line())
        return
    except ForensicsError as err:
        record.update(status="failed", reason=failure_text(err))
        return
    fields = {**fields, "replica": replica or bool(fields.get("replica"))}
    doc = new_document(kind, argv, **fields)
    path = path_inside(out_dir, f"{step['id']}.json")
    write_document(doc, path)
    docs[step["id"]] = doc
    moved = sum(s.get("bytes_transferred") or 0 for s in doc.get("sources", []))
    record.update(file=path.name, bytes_transferred=moved, seconds=round(time.perf_counter() - began, 3))
    ctx.announce(f"    done in {record['seconds']:.1f} s, {moved:,} bytes")


def _case_document(case: Case, roles, request, steps, claims, docs, sources, spent, checkpoints, unavailable,
                   replica, argv, seconds) -> dict:
    provenance = docs.get("provenance") or {}
    verdict = provenance.get("verdict") or "not-run"
    counts = tally(claims)
    pair = sum(checkpoints.get(r, 0) for r in case.models)
    complete = all(s["status"] in COMPLETE_STATUSES for s in steps)
    statements = [
        f"{case.question}",
        f"Provenance verdict: {verdict}." if provenance else "Provenance verdict: not run (see the steps).",
        *[f"Scan ({step_id}): {doc['root']['statement']}." for step_id, doc in docs.items()
          if doc.get("kind") == "scan" and (doc.get("root") or {}).get("statement")],
        f"Claims: {counts['stands']} stand, {counts['does-not-stand']} do not stand, {counts['untestable']} cannot "
        f"be checked here.",
        f"Read {spent:,} bytes, {100 * spent / pair:.2f}% of the two checkpoints ({pair:,} bytes)." if pair else
        f"Read {spent:,} bytes.",
    ]
    statements += [f"Cannot be checked here: {c['id']} — {c['why']}" for c in claims if c["status"] == "untestable"]
    if replica:
        statements.insert(0, "These results come from synthetic replicas: they show how the method behaves and say "
                             "nothing about the real models.")
    if request.quick:
        statements.append("Quick profile: some steps read fewer layers or run fewer tests (see each step's command).")
    statements += [f"Skipped: {s['id']} — {s['reason']}." for s in steps if s["status"] == "skipped"]
    warnings = [f"{roles[r]} unavailable: {why}" for r, why in unavailable.items()]
    warnings += [f"step {s['id']} {s['status']}: {s['reason']}" for s in steps if s["status"] not in COMPLETE_STATUSES]
    return new_document(
        "case", argv, replica=replica, complete=complete, warnings=warnings,
        case={"name": case.name, "title": case.title, "question": case.question, "file": case.path.name},
        models=roles, profile="quick" if request.quick else "full", steps=steps, claims=claims, claim_counts=counts,
        verdict=verdict,
        verdict_statements=(provenance.get("summary") or {}).get("statements") or [],
        bytes_transferred=spent,
        checkpoint_bytes=sum(checkpoints[r] for r in {roles[r]: r for r in checkpoints}.values()),
        checkpoint_bytes_pair=pair,
        fraction_of_pair=spent / pair if pair else None, budget_bytes=request.budget_bytes,
        sources=[s.provenance.as_dict() for s in sources.values()],
        summary={"statements": statements}, timings={"total_s": seconds},
    )


def _reports(doc: dict, step_docs: list[dict], out_dir: Path) -> tuple[Path | None, Path | None]:
    from rich.console import Console

    from solarforensics.render.report import render

    docs = [doc, *step_docs]
    unused = Console(width=140)  # render() prints only when it has no file to write
    md = render(docs, "md", out_dir / "report.md", unused)
    html = render(docs, "html", out_dir / "report.html", unused)
    for step_doc in step_docs:
        if step_doc.get("kind") == "matrix":
            from solarforensics.render.plots import matrix_heatmap

            for group in step_doc.get("groups", []):
                matrix_heatmap(step_doc, group, "pearson", path_inside(out_dir, f"matrix-{slugify(group)}-pearson.png"))
    return md, html
