"""The ground-truth zoo and `validate`: a micro zoo built and validated end to end through the CLI (fast); the
tiny zoo with the full pair list (slow)."""

import json

import pytest
from jsonschema import Draft202012Validator

import solarforensics.cli.zoo  # noqa: F401 - registers `zoo build` and `validate` until cli.py imports it
from solarforensics.results.document import schema
from solarforensics.zoo.build import SIZES, plan
from solarforensics.zoo.train import load_model
from solarforensics.zoo.transforms import same_function

MICRO_PAIRS = [
    ("base", "indep-seed", "independent"),
    ("base", "ft", "derived"),
    ("base", "ft-disguised", "derived"),
    ("indep-seed", "ft", "independent"),
]


def _schema_errors(doc: dict) -> list[str]:
    validator = Draft202012Validator(schema(), format_checker=Draft202012Validator.FORMAT_CHECKER)
    return [error.message for error in validator.iter_errors(doc)]


def test_micro_zoo_builds_caches_and_validates_end_to_end(cli, tmp_path):
    zoo = tmp_path / "zoo"
    code, out, err = cli("zoo", "build", zoo, "--size", "micro", "--seed", "3")
    assert code == 0, err
    assert out.strip() == str(zoo / "manifest.json")
    manifest = json.loads((zoo / "manifest.json").read_text())
    assert (manifest["size"], manifest["seed"], manifest["family"], manifest["families"]) == ("micro", 3, "llama",
                                                                                              ["llama"])
    assert sorted(manifest["models"]) == ["base", "ft", "ft-disguised", "indep-seed"]
    assert {entry["family"] for entry in manifest["models"].values()} == {"llama"}
    assert [(p["a"], p["b"], p["label"]) for p in manifest["pairs"]] == MICRO_PAIRS
    for name in manifest["models"]:
        files = sorted(f.name for f in (zoo / name).iterdir())
        assert {"config.json", "tokenizer.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors"} <= set(files)
    assert json.loads((zoo / "base" / "config.json").read_text())["model_type"] == "llama"

    code, _, err = cli("zoo", "build", zoo, "--size", "micro", "--seed", "3")
    assert code == 0 and err.count("cached") == 4

    out_file = tmp_path / "validation.json"
    code, out, err = cli("validate", "--zoo", zoo, "--no-peer", "--permutations", "99", "--out", out_file, "--json",
                         "--full")
    assert code == 0, err
    doc = json.loads(out)
    assert doc == json.loads(out_file.read_text())
    assert doc["kind"] == "validation" and _schema_errors(doc) == []
    assert {"accuracy", "false_positive_rate", "pairs", "confusion", "per_test_auc", "ks", "thresholds",
            "peer"} <= set(doc)
    verdicts = {(p["a"], p["b"]): p["verdict"] for p in doc["pairs"]}
    assert verdicts[("base", "ft")] == verdicts[("base", "ft-disguised")] == "derived"
    assert "derived" not in (verdicts[("base", "indep-seed")], verdicts[("indep-seed", "ft")])
    assert doc["false_positive_rate"] == 0.0 and doc["true_positive_rate"] == 1.0
    assert sum(doc["confusion"]["derived"].values()) == 2 and sum(doc["confusion"]["independent"].values()) == 2
    assert doc["per_test_auc"]["mlp-unit-matching"]["auc"] == 1.0
    assert doc["ks"]["n"] == 2 and all(0 < p <= 1 for p in doc["ks"]["p_values"])
    assert all(p["bytes"] > 0 and p["seconds"] > 0 for p in doc["pairs"])
    assert doc["peer"] == {"tool": "modeldna", "ran": False, "reason": "skipped (--no-peer)"}
    code, out, err = cli("validate", "--zoo", zoo, "--no-peer", "--permutations", "99", "--json",
                         "--out", tmp_path / "lean.json")  # the default, anytime lean path: the same verdicts
    assert code == 0, err
    assert {(p["a"], p["b"]): p["verdict"] for p in json.loads(out)["pairs"]} == verdicts

    report = tmp_path / "validation.md"
    code, _, err = cli("report", out_file, "--format", "md", "--out", report)
    assert code == 0, err
    text = report.read_text()
    assert "Confusion matrix (solarforensics)" in text and "ROC AUC per test" in text
    figures = sorted(p.name for p in (tmp_path / "validation-figures").iterdir())
    assert any("roc" in name for name in figures) and any("pvalues" in name for name in figures)


def test_disguise_keeps_the_function(cli, tmp_path):
    zoo = tmp_path / "zoo"
    assert cli("zoo", "build", zoo, "--size", "micro")[0] == 0
    ft, disguised = load_model(zoo / "ft"), load_model(zoo / "ft-disguised")
    assert same_function(ft, disguised, ft.shape) < 1e-4
    assert not (ft.model.norm.weight == disguised.model.norm.weight).all()


def test_tiny_plan_lists_every_transformation_once_with_both_labels():
    models, pairs = plan(SIZES["tiny"], seed=0)
    names = [m.name for m in models]
    assert len(names) == len(set(names)) == 27
    assert all(parent in names[:names.index(m.name)] for m in models for parent in m.parents)
    assert {m.op for m in models} == {"train", "distil", "tune", "upscale", "prune", "vocab", "upcycle", "quant",
                                      "merge", "disguise"}
    assert len({(p.a, p.b) for p in pairs}) == len(pairs) == 33
    labels = [p.label for p in pairs]
    assert (labels.count("derived"), labels.count("independent")) == (20, 13)
    transformations = {t for p in pairs for t in p.transformations}
    assert {"expert permutation", "dense -> MoE sparse upcycling", "head permutation", "MLP neuron permutation",
            "matrix scaling", "residual rotation", "short fine-tune",
            "distillation from A's outputs (H0 holds: no weights shared)"} <= transformations
    micro_models, micro_pairs = plan(SIZES["micro"], seed=0)
    assert [m.name for m in micro_models] == names[:4] and micro_pairs == pairs[:4]


def test_broken_manifest_is_one_line_and_nonzero(cli, tmp_path):
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    (zoo / "manifest.json").write_text('{"models": {}, "pairs": [{"a": "x"')
    code, out, err = cli("validate", "--zoo", zoo, "--no-peer")
    assert code != 0 and out == ""
    assert len(err.strip().splitlines()) == 1 and "manifest" in err and "malformed" in err

    (zoo / "manifest.json").write_text('{"models": {}, "pairs": [{"a": "x", "b": "y", "label": "derived"}]}')
    code, _, err = cli("validate", "--zoo", zoo, "--no-peer")
    assert code != 0 and len(err.strip().splitlines()) == 1 and "'x'" in err


def test_missing_zoo_says_how_to_build_it(cli, tmp_path):
    code, _, err = cli("validate", "--zoo", tmp_path / "nowhere", "--no-peer")
    assert code != 0 and "zoo build" in err


@pytest.mark.slow
def test_tiny_zoo_every_verdict_without_false_positives(cli, tmp_path):
    zoo = tmp_path / "zoo"
    assert cli("zoo", "build", zoo, "--size", "tiny")[0] == 0
    code, out, err = cli("validate", "--zoo", zoo, "--no-peer", "--json", "--out", tmp_path / "v.json")
    assert code == 0, err
    doc = json.loads(out)
    assert len(doc["pairs"]) == 33 and _schema_errors(doc) == []
    assert doc["false_positive_rate"] == 0.0 and doc["true_positive_rate"] == 1.0
    # configs/verdict.toml was fitted on the small zoo's training split: the tiny zoo is out of sample, every pair.
    assert [p for p in doc["pairs"] if p["verdict"] != p["label"]] == [] and doc["accuracy"] == 1.0
