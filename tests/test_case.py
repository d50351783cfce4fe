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
from solarforensics.errors import NotFoundError, ResultsError
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
    assert {"arch", "tokenizer", "license", "history", "code", "compare", "matrix", "provenance"} == {
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
