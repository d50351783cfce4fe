"""What a `case` document shows: the verdict and the question, every claim of the ledger in full beside what was
measured, the steps with the report section holding each one's document, and the bytes read against the checkpoints."""

from typing import Any

from solarforensics.render.blocks import Banner, Block, Bullets, Facts, Table
from solarforensics.render.formatting import MISSING, fmt_bytes, fmt_seconds
from solarforensics.render.provenance_view import VERDICT_WORDS

# Table cells carry no colour in any format, so each status leads with a symbol that common fonts all have.
CLAIM_MARKS = {"stands": "✔", "does-not-stand": "✘", "untestable": "○"}
CLAIM_WORDS = {"stands": "stand", "does-not-stand": "do not stand", "untestable": "cannot be checked here"}
# A step the profile skipped on purpose is neither done nor failed; every other status (failed, not-run, over-budget)
# is a failure mark.
STEP_MARKS = {"ok": "✔", "skipped": "–"}
FIRST_STEP_SECTION = 2  # case.py renders case.json first, then the steps' documents in step order


def case_blocks(doc: dict) -> list[Block]:
    """The verdict banner, why, the claims ledger, the bytes, the steps and the case's set-up."""
    claims = [c for c in doc.get("claims") or [] if isinstance(c, dict)]
    steps = [s for s in doc.get("steps") or [] if isinstance(s, dict)]
    sections = report_sections(steps)
    blocks: list[Block] = [verdict_banner(doc, claims)]
    reasons = [str(s) for s in doc.get("verdict_statements") or []]
    if reasons:
        blocks.append(Bullets("Why this verdict (the provenance step)", reasons))
    blocks.append(claims_table(claims, sections))
    untestable = [f"{c.get('id')}: {str(c.get('why') or 'no reason given').removeprefix('not measured: ')}"
                  for c in claims if c.get("status") == "untestable"]
    if untestable:
        blocks.append(Bullets(f"Claims that remain untestable here ({len(untestable)}), and why", untestable))
    blocks.append(bytes_facts(doc, steps))
    blocks.append(steps_table(steps, sections))
    blocks.append(case_facts(doc))
    return blocks


def verdict_banner(doc: dict, claims: list[dict]) -> Banner:
    verdict = str(doc.get("verdict") or "not-run")
    case = doc.get("case") if isinstance(doc.get("case"), dict) else {}
    words = VERDICT_WORDS.get(verdict) or (
        "NOT RUN — the provenance step did not run (see the steps)" if verdict == "not-run" else verdict.upper())
    title = f"Case {case.get('name') or MISSING} — verdict: {words}"
    lines = [f"Question: {case.get('question') or MISSING}", claim_tally(doc, claims)]
    lines.append(f"Read {fmt_bytes(doc.get('bytes_transferred'))} — {_percent(doc.get('fraction_of_pair'))} of the "
                 f"two checkpoints, which hold {fmt_bytes(doc.get('checkpoint_bytes_pair'))}.")
    if doc.get("profile") == "quick":
        lines.append("Quick profile: some steps read fewer layers or run fewer tests (see each step's command).")
    return Banner(verdict if verdict in VERDICT_WORDS else "warning", title, lines)


def claim_tally(doc: dict, claims: list[dict]) -> str:
    counts = doc.get("claim_counts") if isinstance(doc.get("claim_counts"), dict) else {}
    parts = []
    for status, mark in CLAIM_MARKS.items():
        count = counts.get(status, sum(1 for c in claims if c.get("status") == status))
        parts.append(f"{mark} {count} {CLAIM_WORDS[status]}")
    return f"Claims: {' · '.join(parts)}"


def claims_table(claims: list[dict], sections: dict[str, int]) -> Table:
    """One row per claim, nothing shortened: the claim and who made it where, the test, the published number beside
    ours. Line breaks inside cells show in the terminal; HTML and Markdown read them as spaces, hence the : and —."""
    rows = []
    for claim in claims:
        status = str(claim.get("status"))
        source = str(claim.get("source") or MISSING)
        if claim.get("ledger"):
            source += f"; ledger {', '.join(str(entry) for entry in claim['ledger'])}"
        text = f"{claim.get('id')}:\n{claim.get('claim')}\n— {source}"
        rows.append([f"{CLAIM_MARKS.get(status, '?')} {status}", text,
                     _with_section(str(claim.get("test") or MISSING), sections), _numbers(claim)])
    note = ", ".join(f"{mark} {status}" for status, mark in CLAIM_MARKS.items())
    if sections:
        note += "; (§N) = the section of this report that shows the step's document"
    columns = ["status", "claim — who, where", "test", "published / measured"]
    return Table(f"Claims ledger ({len(claims)} claims)", columns, rows, note=note)


def _numbers(claim: dict) -> str:
    """The published number beside ours; the reason nothing was measured unless the test column already says it."""
    measured = str(claim["measured"]) if claim.get("measured") else "nothing"
    why = str(claim.get("why") or "").removeprefix("not measured: ")
    if why and not str(claim.get("test") or "").endswith(why):
        measured += f" — {why}"
    lines = [f"published: {claim['published']};"] if claim.get("published") else []
    return "\n".join(lines + [f"measured: {measured}"])


def _with_section(test: str, sections: dict[str, int]) -> str:
    """Tests read 'STEP: meaning'; name the report section that holds that step's document."""
    step = test.split(":", 1)[0]
    return f"{test} (§{sections[step]})" if step in sections else test


def report_sections(steps: list[dict]) -> dict[str, int]:
    """Step id -> its section number in report.md / report.html; {} when the document does not say which steps the
    report shows (steps with `report: false` are left out of it)."""
    if not any("report" in step for step in steps):
        return {}
    shown = [s for s in steps if s.get("status") == "ok" and s.get("file") and s.get("report", True)]
    return {str(step.get("id")): number for number, step in enumerate(shown, start=FIRST_STEP_SECTION)}


def steps_table(steps: list[dict], sections: dict[str, int]) -> Table:
    """One row per step; the last column is the report section showing its document (or, when the document does not
    say which steps the report shows, the file itself)."""
    rows = []
    for step in steps:
        status = str(step.get("status"))
        why = str(step.get("why") or "")
        if step.get("reason"):
            why = f"{status}: {step['reason']}" + (f" ({why})" if why else "")
        rows.append([str(step.get("id")), f"{STEP_MARKS.get(status, '✘')} {status}",
                     fmt_bytes(step.get("bytes_transferred")), fmt_seconds(step.get("seconds")),
                     str(step.get("command") or MISSING), why, _document(step, sections)])
    if sections:
        last, note = "report", ("report: the section of this report that shows the step's document (— : left out of "
                                "the report); every step that ran wrote STEP.json into the case folder")
    else:
        last, note = "file", "file: the results document each step wrote into the case folder"
    return Table("Steps", ["step", "status", "bytes", "time", "command", "why", last], rows,
                 [False, False, True, True, False, False, False], note)


def _document(step: dict, sections: dict[str, int]) -> str:
    if not sections:
        return str(step.get("file") or MISSING)
    section = sections.get(str(step.get("id")))
    return f"§{section}" if section is not None else MISSING


def bytes_facts(doc: dict, steps: list[dict]) -> Facts:
    total = doc.get("bytes_transferred")
    by_steps = sum(s.get("bytes_transferred") or 0 for s in steps if isinstance(s.get("bytes_transferred"), int))
    items = [("read in all", fmt_bytes(total)), ("by the steps", fmt_bytes(by_steps))]
    if isinstance(total, int) and total >= by_steps:
        items.append(("headers and small files", fmt_bytes(total - by_steps)))
    every = doc.get("checkpoint_bytes")
    items += [("the two checkpoints", fmt_bytes(doc.get("checkpoint_bytes_pair"))),
              ("share of the two", _percent(doc.get("fraction_of_pair"))),
              ("every checkpoint, with the controls", fmt_bytes(every)),
              ("share of every checkpoint", _percent(_ratio(total, every))),
              ("--budget-bytes", fmt_bytes(doc["budget_bytes"]) if doc.get("budget_bytes") is not None else "none")]
    return Facts("Bytes read", items)


def case_facts(doc: dict) -> Facts:
    case = doc.get("case") if isinstance(doc.get("case"), dict) else {}
    items = [("case", f"{case.get('name') or MISSING} ({case.get('file') or MISSING})"),
             ("title", str(case.get("title") or MISSING)), ("profile", str(doc.get("profile") or MISSING))]
    models = doc.get("models") if isinstance(doc.get("models"), dict) else {}
    items += [(f"model {role}", str(spec)) for role, spec in models.items()]
    return Facts("Case", items)


def _ratio(part: Any, whole: Any) -> float | None:
    numbers = all(isinstance(v, int) and not isinstance(v, bool) for v in (part, whole))
    return part / whole if numbers and whole > 0 else None


def _percent(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return MISSING
    return f"{100 * value:.3g}%"
