"""`case`, the claims ledger and `reproduce`: the solar-vs-glm case run end to end on tiny checkpoints (locally and
over the local Hub), and the bad inputs the issue lists."""

import json
import shutil
from pathlib import Path

import pytest

import solarforensics.cli.case  # noqa: F401  (registers the case commands on the app)
from solarforensics.case.claims import MEASURES, RULES, Run, judge, load_claims
from solarforensics.case.reproduce import check_run, load_targets
from solarforensics.case.run import CaseRequest, list_cases, load_case, run_case
from solarforensics.datafiles import config_path
from solarforensics.errors import FormatError, NotFoundError, ResultsError
from solarforensics.results.document import read_document

STATUSES = {"stands", "does-not-stand", "untestable"}


@pytest.fixture(autouse=True)
def one_thread():
    """Torch on one thread: OpenMP spin-waits make small float64 reductions ~10 ms each on a busy 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_case(tmp_path: Path, models: dict[str, str]) -> Path:
    """The real solar-vs-glm case file with its four models replaced (steps, claims and targets unchanged)."""
    text = config_path("cases", "solar-vs-glm.toml").read_text(encoding="utf-8")
    for line, spec in (('a = "solar"', models["a"]), ('b = "glm"', models["b"]),
                       ('unrelated = "phi"', models["unrelated"]), ('derived = "intellect3"', models["derived"])):
        text = text.replace(line, f'{line.split(" = ")[0]} = "{spec}"', 1)
    path = tmp_path / "tiny-case.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny_run(tiny_root, tmp_path_factory):
    """The whole case on the tiny Solar-, GLM-, Phi-style checkpoints and a fine-tune of the GLM one (local folders)."""
    import torch

    torch.set_num_threads(1)
    work = tmp_path_factory.mktemp("case")
    demo = tiny_root / "demo"
    path = tiny_case(work, {"a": str(demo / "solar-tiny"), "b": str(demo / "glm-tiny"),
                            "unrelated": str(demo / "phi-tiny"), "derived": str(demo / "glm-tiny-sft")})
    lines: list[str] = []
    outcome = run_case(CaseRequest(str(path), out_dir=work / "out"), say=lines.append)
    return outcome, lines


def test_the_solar_vs_glm_case_is_listed_and_loads():
    case = load_case("solar-vs-glm")
    assert (case.models, case.controls) == ({"a": "solar", "b": "glm"}, {"unrelated": "phi", "derived": "intellect3"})
    assert [c.name for c in list_cases()] == ["solar-vs-glm"]
    assert {"arch", "tokenizer", "license", "history", "code", "compare", "matrix", "provenance", "scan"} == {
        s["kind"] for s in case.steps}


def test_the_ledger_names_known_measures_and_rules():
    claims = load_claims()
    assert len(claims) >= 20 and len({c["id"] for c in claims}) == len(claims)
    assert all(c["measure"] in MEASURES and c["rule"] in RULES for c in claims)
    assert all(c["where"]["repo"] and c["where"]["file"] and c["where"]["date"] for c in claims)
    steps = {s["id"] for s in load_case("solar-vs-glm").steps}
    assert all(c["step"] in steps for c in claims)


def test_every_target_points_at_a_step_of_the_case():
    steps = {s["id"] for s in load_case("solar-vs-glm").steps}
    targets = load_targets()
    assert all(t["step"] in steps for t in targets)
    shared = next(t for t in targets if t["id"] == "tokenizer-shared-tokens")
    assert (shared["value"], shared["tolerance"]) == (80_339, 0)


def test_a_case_run_writes_every_document_and_the_reports(tiny_run):
    outcome, lines = tiny_run
    doc = read_document(outcome.out_dir / "case.json")
    assert doc["kind"] == "case" and doc["complete"] is True and doc["replica"] is False
    assert outcome.problem is None
    assert [s["status"] for s in doc["steps"]] == ["ok"] * len(doc["steps"])
    for step in doc["steps"]:
        assert read_document(outcome.out_dir / step["file"])["replica"] is False
    assert outcome.report_html.is_file() and (outcome.out_dir / "report.md").is_file()
    assert "tensor bytes to read" in "\n".join(lines)  # the plan is printed before any tensor is read
    assert doc["checkpoint_bytes"] > doc["checkpoint_bytes_pair"] > 0 and doc["bytes_transferred"] > 0


def test_the_full_profile_scans_model_a_against_an_index_of_the_case_in_the_case_folder(tiny_run):
    outcome, _ = tiny_run
    step = next(s for s in outcome.doc["steps"] if s["id"] == "scan")
    assert (step["kind"], step["status"], step["file"]) == ("scan", "ok", "scan.json")
    doc = read_document(outcome.out_dir / "scan.json")
    demo = Path(doc["model"]).parent
    assert doc["model"] == str(demo / "solar-tiny")
    assert doc["index"] == {"path": str(outcome.out_dir / "scan-index.sqlite"), "fingerprints": 4}
    assert [(Path(r["model"]).name, r["status"]) for r in doc["fingerprints"]] == [
        ("solar-tiny", "new"), ("glm-tiny", "new"), ("phi-tiny", "new"), ("glm-tiny-sft", "new")]
    # The tiny Solar is independent of the three others (the planted truth), and the scan says so.
    assert {Path(c["model"]).name: c["verdict"] for c in doc["candidates"]} == {
        "glm-tiny": "independent", "phi-tiny": "independent", "glm-tiny-sft": "independent"}
    assert doc["root"]["model"] is None
    assert (f"Scan (scan): {demo / 'solar-tiny'} is derived from no indexed model, as far as weight tests can see."
            in outcome.doc["summary"]["statements"])
    assert step["bytes_transferred"] == sum(r["bytes_read"] for r in doc["fingerprints"]) > 0
    assert "scan" in (outcome.out_dir / "report.md").read_text(encoding="utf-8")


def scan_only_case(tmp_path: Path, models: dict[str, str]) -> Path:
    """The real case file with its models replaced and only its scan step kept."""
    head, *steps = tiny_case(tmp_path, models).read_text(encoding="utf-8").split("[[steps]]")
    path = tmp_path / "scan-case.toml"
    path.write_text(head + "".join("[[steps]]" + s for s in steps if 'kind = "scan"' in s), encoding="utf-8")
    return path


def test_a_scan_step_finds_the_parent_and_keeps_its_index_to_the_case_models(tiny_root, tmp_path, monkeypatch):
    monkeypatch.setenv("SOLARFORENSICS_INDEX", str(tmp_path / "users-own-index.sqlite"))
    demo = tiny_root / "demo"
    path = scan_only_case(tmp_path, {"a": str(demo / "glm-tiny-sft"), "b": str(demo / "solar-tiny"),
                                     "unrelated": str(demo / "phi-tiny"), "derived": str(demo / "glm-tiny")})
    outcome = run_case(CaseRequest(str(path), out_dir=tmp_path / "out", reports=False))
    assert outcome.problem is None and outcome.doc["complete"] is True
    doc = read_document(tmp_path / "out" / "scan.json")
    first = doc["candidates"][0]
    assert (Path(first["model"]).name, first["verdict"], first["relation"]) == ("glm-tiny", "derived", "parent")
    assert doc["root"]["model"] == str(demo / "glm-tiny")
    assert {Path(c["model"]).name: c["verdict"] for c in doc["candidates"][1:]} == {
        "solar-tiny": "independent", "phi-tiny": "independent"}
    assert not (tmp_path / "users-own-index.sqlite").exists()  # never the user's default index
    # Run again with other controls: the fingerprints are reused (no tensor read) and the index drops glm-tiny.
    again = run_case(CaseRequest(str(path), out_dir=tmp_path / "out", controls=f"{demo / 'phi-tiny'},"
                                 f"{demo / 'solar-tiny'}", reports=False))
    doc = read_document(tmp_path / "out" / "scan.json")
    assert [r["status"] for r in doc["fingerprints"]] == ["unchanged"] * 3
    assert next(s for s in again.doc["steps"] if s["id"] == "scan")["bytes_transferred"] == 0
    assert doc["index"]["fingerprints"] == 3 and doc["root"]["model"] is None
    assert {Path(c["model"]).name for c in doc["candidates"]} == {"solar-tiny", "phi-tiny"}


def test_the_quick_profile_skips_the_scan_and_the_case_stays_complete(tiny_root, tmp_path):
    demo = tiny_root / "demo"
    path = tiny_case(tmp_path, {"a": str(demo / "solar-tiny"), "b": str(demo / "glm-tiny"),
                                "unrelated": str(demo / "phi-tiny"), "derived": str(demo / "glm-tiny-sft")})
    # The kv-router steps' quick globs name layers 10 and 30, which the tiny checkpoints do not have.
    path.write_text("[[steps]]".join(s for s in path.read_text(encoding="utf-8").split("[[steps]]")
                                     if 'id = "kv-router' not in s), encoding="utf-8")
    lines: list[str] = []
    outcome = run_case(CaseRequest(str(path), out_dir=tmp_path / "out", quick=True, reports=False), say=lines.append)
    step = next(s for s in outcome.doc["steps"] if s["id"] == "scan")
    assert (step["status"], step["reason"], step["file"], step["planned_bytes"]) == (
        "skipped", "not in the quick profile: run without --quick", None, None)
    assert outcome.problem is None and outcome.doc["complete"] is True and outcome.doc["profile"] == "quick"
    assert outcome.doc["warnings"] == []
    assert "Skipped: scan — not in the quick profile: run without --quick." in outcome.doc["summary"]["statements"]
    assert not (tmp_path / "out" / "scan.json").exists() and not (tmp_path / "out" / "scan-index.sqlite").exists()
    assert any("scan" in line and "skipped (profile)" in line for line in lines)


def test_skip_belongs_in_a_profile(tmp_path):
    path = tiny_case(tmp_path, {"a": "x", "b": "y", "unrelated": "z", "derived": "w"})
    path.write_text(path.read_text(encoding="utf-8").replace('kind = "scan"', 'kind = "scan"\nskip = true'),
                    encoding="utf-8")
    with pytest.raises(FormatError) as raised:
        load_case(str(path))
    assert raised.value.one_line() == (f"case {path}: step scan sets skip outside a profile (a profile leaves a "
                                       "step out with quick = { skip = true })")


def test_every_claim_gets_a_status_from_the_planted_truth(tiny_run):
    doc = tiny_run[0].doc
    claims = {c["id"]: c for c in doc["claims"]}
    assert set(claims) == {c["id"] for c in load_claims()}
    assert all(c["status"] in STATUSES and c["source"] and c["test"] for c in claims.values())
    # The tiny fine-tune is a known derivative; the tiny Solar is independent of the tiny GLM.
    assert claims["derived-centered-one"]["status"] == "stands"
    assert claims["selective-preservation"]["status"] == "does-not-stand"
    assert claims["ln-cosine-proves-derivation"]["status"] == "does-not-stand"
    # The tiny Solar folder ships no code: transformers' solar_open files load it, and they skip no layer >= 46.
    assert claims["mtp-code-artifact"]["status"] == "does-not-stand"
    assert "transformers/models/solar_open/modeling_solar_open.py (transformers)" in claims["mtp-code-artifact"][
        "measured"] and "model\\.layers\\.46" in claims["mtp-code-artifact"]["measured"]
    assert claims["license-header-change"]["status"] == "does-not-stand"  # a folder: one snapshot, no such commit
    assert all(c["why"] for c in claims.values() if c["status"] == "untestable")  # each says why
    assert doc["verdict"] == "independent"


def test_a_claim_is_judged_by_its_rule():
    layernorm = {"summary": {"groups": {"layernorm": {"pearson_mean": 0.004, "pearson_std": 0.02, "comparable": 92,
                                                       "cosine_mean": 0.97}}}}
    claim = {"id": "c", "claim": "centered ~0", "who": "w", "where": {"repo": "r", "file": "f", "date": "d"},
             "step": "layernorm", "measure": "sg_centered_mean", "rule": "within", "target": 0.0, "tolerance": 0.05}
    judged = judge(claim, Run({"layernorm": layernorm}, {"a": "solar", "b": "glm"}, {}))
    assert (judged["status"], judged["value"]) == ("stands", 0.004)
    missing = judge(claim, Run({}, {}, {"layernorm": "step layernorm failed: boom"}))
    assert (missing["status"], missing["why"]) == ("untestable", "not measured: step layernorm failed: boom")


def test_a_case_over_the_local_hub_marks_replicas(tiny_root, tmp_path, hub_server):
    # A folder repo carrying the replica marker stands in for the virtual replicas here (fast).
    root = tmp_path / "hub"
    shutil.copytree(tiny_root / "demo", root / "demo")
    (root / "demo" / "solar-tiny" / "REPLICA.md").write_text("# synthetic\n", encoding="utf-8")
    hub_server(root)
    path = tiny_case(tmp_path, {"a": "demo/solar-tiny", "b": "demo/glm-tiny", "unrelated": "demo/phi-tiny",
                                "derived": "demo/glm-tiny-sft"})
    text = path.read_text(encoding="utf-8")
    steps = text.split("[[steps]]")
    path.write_text("[[steps]]".join(s for s in steps if 'kind = "compare"' in s or "[models]" in s), encoding="utf-8")
    outcome = run_case(CaseRequest(str(path), out_dir=tmp_path / "out", reports=False))
    assert outcome.doc["replica"] is True and outcome.problem is None
    assert all(read_document(f)["replica"] is True for f in outcome.files)
    assert outcome.doc["sources"][0]["kind"] == "hub"
    with pytest.raises(ResultsError, match="synthetic replicas"):
        check_run(outcome.out_dir)


def test_reproduce_checks_each_target(tiny_run):
    outcome = tiny_run[0]
    measured = read_document(outcome.out_dir / "tokenizer.json")["shared_tokens"]
    targets = [{"id": "shared", "what": "shared strings", "step": "tokenizer", "select": "field",
                "path": "shared_tokens", "value": measured, "tolerance": 0, "source": "test"},
               {"id": "vocab", "what": "vocab", "step": "tokenizer", "select": "field", "path": "vocab_size_a",
                "value": 196_608, "tolerance": 0, "source": "test"},
               {"id": "gone", "what": "absent", "step": "nope", "select": "field", "path": "x", "value": 1,
                "tolerance": 0, "source": "test"}]
    report = check_run(outcome.out_dir, targets=targets)
    assert [c["status"] for c in report["checks"]] == ["pass", "fail", "missing"]
    assert report["reproduced"] is False


def test_case_list_and_unknown_case(cli):
    code, out, _ = cli("case", "list")
    assert code == 0 and "solar-vs-glm" in out
    code, _, err = cli("case", "solar-vs-nothing")
    assert code == 2
    assert err.strip() == ("solarforensics: error: unknown case 'solar-vs-nothing' "
                           "(cases: solar-vs-glm (see `case list`))")


def test_an_unreachable_model_is_named_and_results_are_kept(tiny_root, tmp_path, cli):
    demo = tiny_root / "demo"
    path = tiny_case(tmp_path, {"a": str(demo / "solar-tiny"), "b": str(demo / "glm-tiny"),
                                "unrelated": str(demo / "phi-tiny"), "derived": "hf:nobody/not-a-model"})
    code, _, err = cli("case", str(path), "--out", str(tmp_path / "out"), "--no-report",
                       "--endpoint", "http://127.0.0.1:9")
    last = err.strip().splitlines()[-1]  # progress lines come first, on stderr too
    assert code == 2 and last.startswith("solarforensics: error: case ")
    assert "incomplete" in last and "hf:nobody/not-a-model unavailable" in last and str(tmp_path / "out") in last
    doc = json.loads((tmp_path / "out" / "case.json").read_text())
    assert doc["complete"] is False
    assert {s["id"]: s["status"] for s in doc["steps"]}["layernorm"] == "ok"


def test_a_budget_too_small_stops_the_reads_and_keeps_what_ran(tiny_root, tmp_path, cli):
    demo = tiny_root / "demo"
    path = tiny_case(tmp_path, {"a": str(demo / "solar-tiny"), "b": str(demo / "glm-tiny"),
                                "unrelated": str(demo / "phi-tiny"), "derived": str(demo / "glm-tiny-sft")})
    code, _, err = cli("case", str(path), "--out", str(tmp_path / "out"), "--no-report", "--budget-bytes", "10")
    assert code == 2 and "over-budget" in err
    doc = json.loads((tmp_path / "out" / "case.json").read_text())
    status = {s["id"]: s["status"] for s in doc["steps"]}
    assert doc["complete"] is False and (status["arch"], status["layernorm"]) == ("ok", "over-budget")


def test_unknown_case_error_lists_cases():
    with pytest.raises(NotFoundError) as raised:
        load_case("nope")
    assert raised.value.one_line() == "unknown case 'nope' (cases: solar-vs-glm (see `case list`))"
