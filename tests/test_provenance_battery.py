"""The whole-matrix path (`provenance --full`) on tiny models of known ancestry: copies, disguised fine-tunes, deeper copies, new vocabularies and
independent initialisations; what it reads, what it refuses, and pairs where nothing can be compared."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from provenance_models import duplicate_layers, new_vocabulary, rescale_gains, rotate_residual, unrelated_layout
from typer.testing import CliRunner

from solarforensics.checkpoints import build_checkpoint, derive_checkpoint, permute_residual
from solarforensics.errors import BudgetError
from solarforensics.metrics.stats import fisher_combine
from solarforensics.provenance.run import ProvenanceRequest, provenance_models
from solarforensics.results.document import schema, validate_document

SIZE = {"hidden_size": 128, "num_layers": 6}
MOE_SIZE = {"hidden_size": 128}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("provenance-zoo")
    base = build_checkpoint(root / "base", "llama", seed=1, overrides=SIZE)
    tuned = derive_checkpoint(base, root / "tuned", noise=0.05)
    moe = build_checkpoint(root / "moe", "glm4_moe", seed=1, overrides=MOE_SIZE)
    moe_tuned = derive_checkpoint(moe, root / "moe-tuned", noise=0.05)
    return {
        "base": base,
        "copy": Path(shutil.copytree(base, root / "copy")),
        "disguised": rescale_gains(permute_residual(tuned, root / "permuted", seed=3), root / "disguised", seed=4),
        "rotated": derive_checkpoint(rotate_residual(tuned, root / "rotated-exact", seed=5), root / "rotated",
                                     noise=0.02, seed=7),
        "upscaled": derive_checkpoint(duplicate_layers(base, root / "deeper", [0, 1, 2, 3, 2, 3, 4, 5]),
                                      root / "upscaled", noise=0.05),
        "new-vocab": derive_checkpoint(new_vocabulary(base, root / "vocab", 384, seed=9), root / "new-vocab",
                                       noise=0.05),
        "independent": build_checkpoint(root / "other", "llama", seed=2, overrides=SIZE),
        "moe": moe,
        "moe-disguised": rescale_gains(permute_residual(moe_tuned, root / "moe-permuted", seed=3),
                                       root / "moe-disguised", seed=4),
        "unknown": unrelated_layout(root / "unknown"),
    }


def run(a: Path, b: Path, **options) -> dict:
    return provenance_models(ProvenanceRequest(str(a), str(b), device="cpu", full=True, **options))


def row(doc: dict, name: str) -> dict:
    return next(t for t in doc["tests"] if t["name"] == name)


def test_a_copy_is_derived_by_identity(zoo):
    doc = run(zoo["base"], zoo["copy"])
    assert doc["verdict"] == "derived" and doc["decisive"][0] == "identity"
    identity = row(doc, "identity")["statistic"]
    assert identity["identical_tensors"] == identity["tensors_a"] == 42
    assert doc["alignment"]["layer_map"] == {str(i): i for i in range(6)}


def test_a_disguised_fine_tune_is_derived_without_any_identical_byte(zoo):
    """Residual permutation, gains re-scaled into the next matrices, 5% noise: element-wise tests go blind."""
    doc = run(zoo["base"], zoo["disguised"])
    assert doc["verdict"] == "derived"
    assert {"attention-cka", "mlp-unit-matching"} <= set(doc["decisive"]) and "identity" not in doc["decisive"]
    assert row(doc, "identity")["statistic"]["near_equal_tensors"] == 0
    assert row(doc, "norm-gains")["log10_p_value"] > -3  # the classic test sees nothing: a weak test
    assert doc["alignment"]["method"] == "embeddings" and doc["alignment"]["identity_fraction"] < 0.05
    assert row(doc, "attention-cka")["statistic"] > 0.9 and row(doc, "attention-cka")["effect"] > 50
    assert doc["log10_p_value"] < -100


def test_a_depth_up_scaled_copy_is_derived_with_its_layer_map(zoo):
    doc = run(zoo["base"], zoo["upscaled"])
    assert doc["verdict"] == "derived"
    assert doc["alignment"]["layer_map"] == {"0": 0, "1": 1, "2": [2, 4], "3": [3, 5], "4": 6, "5": 7}
    assert doc["alignment"]["duplicated_layers"] == [2, 3] and doc["alignment"]["weak_pairs"] == []
    assert doc["layer_matrices"]["mean attention CKA"]["layers_b"] == list(range(8))


def test_a_new_vocabulary_is_seen_through_the_signature_alignment(zoo):
    doc = run(zoo["base"], zoo["new-vocab"])
    alignment = row(doc, "residual-alignment")
    assert alignment["method"] == "signatures" and doc["alignment"]["method"] == "signatures"
    assert alignment["candidates"]["embeddings"]["effect"] < 5  # re-initialised rows align no better than chance
    assert doc["verdict"] == "derived" and "attention-cka" in doc["decisive"]
    assert row(doc, "attention-cka")["kernel"] == "squared (sign-blind)"


def test_independent_initialisations_are_not_derived(zoo):
    doc = run(zoo["base"], zoo["independent"])
    assert doc["verdict"] == "independent" and doc["decisive"] == []
    assert doc["log10_p_value"] > -2
    assert abs(row(doc, "attention-cka")["effect"]) < 3
    assert row(doc, "identity")["statistic"]["identical_rows"] == 0
    assert doc["limits"].startswith("Weight tests cannot see distillation")
    assert doc["thresholds"]["status"] == "fitted"


def test_a_disguised_moe_fine_tune_is_derived_by_router_matching(zoo):
    doc = run(zoo["moe"], zoo["moe-disguised"])
    assert doc["verdict"] == "derived" and "router-matching" in doc["decisive"]
    router = row(doc, "router-matching")
    assert [(layer["layer_a"], layer["layer_b"]) for layer in router["layers"]] == [(1, 1), (2, 2), (3, 3), (4, 4)]
    assert router["layers"][0]["method"] == "exact over all 40,320 orders"  # 8 experts: p = 1/8! per layer
    assert router["log10_p_value"] == pytest.approx(fisher_combine([-math.log10(40320)] * 4, log10=True)[1])
    assert doc["alignment"]["layer_map"] == {str(i): i for i in range(5)}  # MTP layer 5 left out


def test_the_bytes_are_planned_announced_and_kept_small(zoo):
    plans = []
    doc = provenance_models(ProvenanceRequest(str(zoo["moe"]), str(zoo["moe-disguised"]), device="cpu", full=True),
                            announce=plans.append)
    plan = plans[0]
    assert plan["planned_bytes"] == doc["planned_bytes"] and plan["checkpoint_bytes"] == doc["checkpoint_bytes"]
    read = plan["names_a"] + plan["names_b"]
    assert not [n for n in read if ".experts." in n or ".layers.5." in n]  # no routed expert, no MTP layer
    transferred = sum(source["bytes_transferred"] for source in doc["sources"])
    assert doc["planned_bytes"] <= transferred <= 1.02 * doc["planned_bytes"] + 64_000  # + safetensors headers


def test_a_budget_too_small_says_what_would_be_needed(zoo):
    plans = []
    with pytest.raises(BudgetError) as error:
        provenance_models(ProvenanceRequest(str(zoo["base"]), str(zoo["copy"]), budget_bytes=1000, device="cpu",
                                            full=True), announce=plans.append)
    needed = plans[0]["planned_bytes"]
    assert error.value.message == f"provenance needs {needed:,} bytes of tensors, over the budget of 1,000"
    assert error.value.hint.startswith("per test: identity ") and "raise --budget-bytes" in error.value.hint


def test_pairs_with_nothing_comparable_are_inconclusive_not_errors(zoo):
    doc = run(zoo["base"], zoo["unknown"])
    assert doc["verdict"] == "inconclusive" and doc["p_value"] is None and doc["decisive"] == []
    assert not any(t["applicable"] for t in doc["tests"])
    assert "no model family fits" in doc["warnings"][0]
    assert doc["summary"]["statements"][0] == ("Inconclusive: the disguise-invariant test (attention CKA after "
                                               "residual alignment) could not run.")


def test_selected_tests_only_and_their_prerequisites(zoo):
    doc = run(zoo["base"], zoo["copy"], tests="cka")
    assert doc["tests_selected"] == ["residual-alignment", "cka"]
    assert [t["name"] for t in doc["tests"]] == ["residual-alignment", "attention-cka"]
    assert {"name": "matching", "reason": "not selected (--tests)"} in doc["not_tested"]


def test_the_command_prints_the_plan_on_stderr_and_the_document_on_stdout(zoo, tmp_path):
    from solarforensics.cli import provenance  # noqa: F401 (registers the command)
    from solarforensics.cli.app import app

    out = tmp_path / "prov.json"
    result = CliRunner().invoke(app, ["provenance", str(zoo["base"]), str(zoo["disguised"]), "--device", "cpu",
                                      "--tests", "cka,norm-gains", "--full", "--json", "--out", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["kind"] == "provenance" and doc["verdict"] == "derived"
    assert result.stderr.startswith(f"provenance: reading {doc['planned_bytes']:,} (")
    assert json.loads(out.read_text())["verdict"] == "derived"
    assert validate_document(doc) == [] and schema_errors(doc) == []


def schema_errors(doc: dict) -> list[str]:
    from jsonschema import Draft202012Validator

    return [error.message for error in Draft202012Validator(schema()).iter_errors(doc)]


def test_large_w_q_is_streamed_layer_by_layer_with_the_same_cka(zoo, monkeypatch):
    held = run(zoo["base"], zoo["disguised"], tests="cka-q")
    monkeypatch.setattr("solarforensics.provenance.whole.STREAM_ABOVE", 0)  # as if W_Q weighed gigabytes
    streamed = run(zoo["base"], zoo["disguised"], tests="cka-q")
    assert streamed["layer_matrices"]["attn-q CKA"] == held["layer_matrices"]["attn-q CKA"]
    assert row(streamed, "attention-cka")["statistic"] == row(held, "attention-cka")["statistic"]
    assert streamed["planned_bytes"] == held["planned_bytes"]
    assert sum(s["bytes_transferred"] for s in streamed["sources"]) == sum(s["bytes_transferred"]
                                                                          for s in held["sources"])


def test_folded_layers_reads_what_is_missing_and_lets_it_go(zoo):
    from solarforensics.provenance.weights import ModelWeights
    from solarforensics.sources.spec import open_source

    weights = ModelWeights.of("A", open_source(str(zoo["base"])))
    weights.tensors = weights.source.read_tensors(weights.names_for(["attn_norm"]))
    norms = set(weights.tensors)
    layers = weights.layers_with("q")
    seen = [(layer, w.shape) for layer, w in weights.folded_layers("q", layers, batch_bytes=1)]
    assert [layer for layer, _ in seen] == layers and set(weights.tensors) == norms
    weights.tensors.update(weights.source.read_tensors(weights.names_for(["q"])))
    for layer, w in weights.folded_layers("q", layers):
        assert torch.equal(w, weights.folded("q", layer))


def test_a_rotated_residual_stream_is_undone_through_the_shared_embeddings(zoo):
    doc = run(zoo["base"], zoo["rotated"])
    assert doc["verdict"] == "derived" and "attention-cka" in doc["decisive"]
    assert doc["alignment"]["method"] == "embeddings-rotation"
    assert doc["alignment"]["rotation"]["largest_entry_mean"] < 0.5  # a real rotation, not a permutation
    assert row(doc, "identity")["statistic"]["identical_tensors"] == 0


def test_independent_models_are_not_rotated_onto_each_other(zoo):
    doc = run(zoo["base"], zoo["independent"])
    candidates = row(doc, "residual-alignment")["candidates"]
    assert candidates["embeddings-rotation"]["quality"] < 0.8 and doc["alignment"]["method"] != "embeddings-rotation"


def test_more_tensors_than_memory_allows_is_refused_before_reading(zoo, cli, monkeypatch):
    monkeypatch.setenv("SOLARFORENSICS_MAX_MEMORY", "1000")
    for command in (["provenance"], ["compare", "--tensors", "layernorm"]):
        code, out, err = cli(*command[:1], zoo["base"], zoo["copy"], *command[1:])
        assert code == 2 and out == "" and "over the limit of 1,000 ($SOLARFORENSICS_MAX_MEMORY)" in err
        assert len(err.strip().splitlines()) <= 2  # provenance prints its plan first, then the one-line refusal
    monkeypatch.setenv("SOLARFORENSICS_MAX_MEMORY", "a lot")
    code, _, err = cli("compare", zoo["base"], zoo["copy"])
    assert code != 0 and "SOLARFORENSICS_MAX_MEMORY='a lot' is not a number of bytes" in err
