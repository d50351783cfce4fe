"""The `case` document: its schema, and a report that shows the verdict, every claim in full with its status, the steps
with the report section of each one's document, and the bytes read against the checkpoints."""

import copy
import html
import io
import json
import re
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from rich.console import Console

from solarforensics.render.html import render_html
from solarforensics.render.markdown import md_escape, render_markdown
from solarforensics.render.terminal import render_terminal
from solarforensics.results.document import read_document, schema, validate_document

SAMPLE = Path(__file__).parent / "sample_results" / "case-replica.json"
STATUS_CELLS = ("✔ stands", "✘ does-not-stand", "○ untestable")
# Which steps report.md/report.html show (the case file's `report = false` leaves the others out).
IN_REPORT = {"arch", "tokenizer", "license-a", "license-b", "layernorm", "layernorm-derived-control",
             "layernorm-matrix", "layernorm-layer-map", "kv-router", "provenance"}


@pytest.fixture
def doc() -> dict:
    return json.loads(SAMPLE.read_text())


def with_report_flags(doc: dict) -> dict:
    flagged = copy.deepcopy(doc)
    for step in flagged["steps"]:
        step["report"] = step["id"] in IN_REPORT
    return flagged


def schema_errors(doc: dict) -> list[str]:
    validator = Draft202012Validator(schema(), format_checker=Draft202012Validator.FORMAT_CHECKER)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def terminal_text(doc: dict, width: int = 140) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None, record=True)
    render_terminal(doc, console)
    return console.export_text()


def test_the_sample_case_document_follows_the_schema(doc):
    assert schema_errors(doc) == []
    assert validate_document(doc) == []
    assert read_document(SAMPLE) == doc
    assert schema_errors(with_report_flags(doc)) == []


def test_the_schema_requires_each_claims_fields_and_a_known_status(doc):
    doc["claims"][0]["status"] = "maybe"
    del doc["claims"][1]["measured"]
    errors = schema_errors(doc)
    assert any(e.startswith("claims/0/status: 'maybe' is not one of") for e in errors)
    assert "claims/1: 'measured' is a required property" in errors
    for key in ("claims", "verdict", "bytes_transferred", "checkpoint_bytes"):
        broken = json.loads(SAMPLE.read_text())
        del broken[key]
        assert f": '{key}' is a required property" in schema_errors(broken)
        assert validate_document(broken) == [f"missing key {key!r}"]


def test_the_replica_banner_comes_first_then_the_verdict_and_the_question(doc):
    text = terminal_text(doc)
    assert "case solar-vs-glm: Solar-Open-100B vs GLM-4.5-Air" in text.splitlines()[0]
    assert text.index("SYNTHETIC REPLICA — NOT THE REAL MODELS") < text.index(
        "Case solar-vs-glm — verdict: INCONCLUSIVE — the tests that could run do not decide")
    for line in ("Question: Were upstage/Solar-Open-100B's weights initialised from zai-org/GLM-4.5-Air's?",
                 "Claims: ✔ 3 stand · ✘ 4 do not stand · ○ 3 cannot be checked here",
                 "Read 139,178,678 (133 MiB) — 0.0327% of the two checkpoints, which hold 425,004,406,872 "
                 "(396 GiB)."):
        assert f"│ {line}" in text
    assert "• Inconclusive: the disguise-invariant test (attention CKA after residual alignment) could not run." \
        in text


def test_the_terminal_claims_table_shows_every_claim_word_for_word_with_its_status(doc):
    text = terminal_text(doc)
    ledger = text[text.index("Claims ledger (10 claims)"):text.index("✔ stands, ✘ does-not-stand, ○ untestable")]
    words = set(ledger.split())
    for claim in doc["claims"]:
        # Cells wrap at spaces only: every word of the claim and of the measurement is on screen whole.
        for field in ("claim", "measured"):
            assert set((claim[field] or "").split()) <= words, (claim["id"], field)
    assert "…" not in ledger
    lines = ledger.splitlines()
    assert [line.split("   ")[0].strip() for line in lines if line.lstrip().startswith(("✔", "✘", "○"))] == [
        "✘ does-not-stand", "✔ stands", "✘ does-not-stand", "✔ stands", "✔ stands", "○ untestable",
        "✘ does-not-stand", "○ untestable", "✘ does-not-stand", "○ untestable"]


def test_the_markdown_claims_table_has_one_full_row_per_claim(doc):
    text = render_markdown([doc], None)
    assert "| status | claim — who, where | test | published / measured |" in text
    for claim in doc["claims"]:
        assert md_escape(claim["claim"]) in text
    assert ("| ○ untestable | training-logs: Upstage trained Solar from scratch; its training logs and intermediate "
            "checkpoints show it. — Upstage (public briefing): news report of the briefing (seed 004), "
            "shared/seeds/004 (2026-01-02); ledger §6 SEED-004 | provenance: weight tests can reject independence "
            "but never prove training from scratch, and cannot see distillation; the logs were shown, not published "
            "| published: W&B logs and checkpoints shown at the briefing; measured: nothing |") in text
    assert "| ○ untestable | embedding-ids-differ: Embedding rows have cosine ~0 only" in text
    assert "measured: nothing — no string-matched embedding alignment ran |" in text
    assert "*✔ stands, ✘ does-not-stand, ○ untestable*" in text


def test_the_html_report_shows_every_claim_and_status_in_full(doc):
    page = render_html([doc])
    table = page[page.index("<h3>Claims ledger (10 claims)</h3>"):page.index("<h3>Bytes read</h3>")]
    for claim in doc["claims"]:
        assert html.escape(claim["claim"]) in table
    for cell in STATUS_CELLS:
        assert f"<td>{cell}</td>" in table
    assert "…" not in table
    assert table.count("<tr>") == 1 + len(doc["claims"])


def test_the_bytes_read_are_set_against_the_checkpoints(doc):
    text = render_markdown([doc], None)
    assert ("- **read in all**: 139,178,678 (133 MiB)\n"
            "- **by the steps**: 109,780,992 (105 MiB)\n"
            "- **headers and small files**: 29,397,686 (28 MiB)\n"
            "- **the two checkpoints**: 425,004,406,872 (396 GiB)\n"
            "- **share of the two**: 0.0327%\n"
            "- **every checkpoint, with the controls**: 722,457,710,664 (673 GiB)\n"
            "- **share of every checkpoint**: 0.0193%\n"
            "- **--budget-bytes**: none\n") in text


def test_steps_name_the_report_section_of_their_document(doc):
    text = render_markdown([with_report_flags(doc)], None)
    assert "| step | status | bytes | time | command | why | report |" in text
    assert ("| arch | ✔ ok | 0 B | 1.67 s | arch solar glm | configs, parameter counts by component, and which "
            "tensor groups are comparable at all | §2 |") in text
    assert ("| layernorm-unrelated-a | ✔ ok | 0 B | 0.701 s | compare solar phi --tensors layernorm "
            "--permutations 0 | the unrelated control against model a, layer by layer (the rebuttal's Solar-Phi "
            "numbers) | — |") in text
    assert re.search(r"\| kv-router \| ✔ ok \| 71,303,168 \(68 MiB\) \| 8\.52 s \| .* \| §10 \|", text)
    assert "| provenance | ✔ ok | 0 B | 5.95 s |" in text and text.count("| §11 |") == 1
    # The claim's test names the section that shows its step's document.
    assert "the claim stands if that p-value is below 10^-3 (§6) |" in text


def test_without_report_flags_the_steps_name_their_files(doc):
    text = render_markdown([doc], None)
    assert "| step | status | bytes | time | command | why | file |" in text
    assert "| arch.json |" in text and "(§" not in text


def test_a_failed_step_and_a_missing_verdict_are_loud(doc):
    doc.update(verdict="not-run", verdict_statements=[], complete=False,
               warnings=["step provenance failed: the Hub answered 503"])
    step = doc["steps"][-1]
    step.update(status="failed", reason="the Hub answered 503", file=None, seconds=None)
    assert schema_errors(doc) == []
    text = terminal_text(doc)
    assert "INCOMPLETE RESULTS" in text
    assert "Case solar-vs-glm — verdict: NOT RUN — the provenance step did not run (see the steps)" in text
    assert "Why this verdict" not in text
    assert ("| provenance | ✘ failed | 0 B | — | provenance solar glm --tests norm-gains | failed: the Hub "
            "answered 503 (the tests that survive disguise: residual alignment, attention CKA, layer map, router "
            "matching, verdict) | — |") in render_markdown([doc], None)
