"""The default `provenance` path: lean statistics read in looks (norm gains, shared-token rows, layer sketches spread
along depth), a verdict after each look, stopping at the first decisive one, with the error rate paid for."""

import json
import math
import shutil
from pathlib import Path

import pytest
from provenance_models import duplicate_layers, rescale_gains, rotate_residual
from typer.testing import CliRunner

from solarforensics.checkpoints import build_checkpoint, derive_checkpoint, permute_residual
from solarforensics.errors import BudgetError, SpecError
from solarforensics.provenance.anytime import decide_look, layer_batches, spread_order
from solarforensics.provenance.run import ProvenanceRequest, provenance_models
from solarforensics.provenance.verdict import load_thresholds
from solarforensics.provenance.weights import ModelWeights
from solarforensics.results.document import validate_document
from solarforensics.sources.local import LocalSource

SIZE = {"hidden_size": 128, "num_layers": 8}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("anytime-zoo")
    base = build_checkpoint(root / "base", "llama", seed=1, overrides=SIZE)
    tuned = derive_checkpoint(base, root / "tuned", noise=0.05)
    moe = build_checkpoint(root / "moe", "glm4_moe", seed=1, overrides={"hidden_size": 128})
    return {
        "base": base,
        "copy": Path(shutil.copytree(base, root / "copy")),
        "disguised": rescale_gains(permute_residual(tuned, root / "permuted", seed=3), root / "disguised", seed=4),
        "rotated": derive_checkpoint(rotate_residual(tuned, root / "rotated-exact", seed=5), root / "rotated",
                                     noise=0.02, seed=7),
        "upscaled": derive_checkpoint(duplicate_layers(base, root / "deeper", [0, 1, 2, 3, 2, 3, 4, 5, 6, 7]),
                                      root / "upscaled", noise=0.05),
        "independent": build_checkpoint(root / "other", "llama", seed=2, overrides=SIZE),
        "moe": moe,
        "moe-disguised": rescale_gains(permute_residual(derive_checkpoint(moe, root / "moe-tuned", noise=0.05),
                                                        root / "moe-permuted", seed=3), root / "moe-disguised", seed=4),
    }


def run(a: Path, b: Path, **options) -> dict:
    return provenance_models(ProvenanceRequest(str(a), str(b), device="cpu", **options))


def looks_read(doc: dict) -> list[str]:
    return [s["look"] for s in doc["stages"] if s["bytes_read"]]


def test_a_copy_is_decided_by_its_gains_alone(zoo):
    doc = run(zoo["base"], zoo["copy"])
    assert doc["mode"] == "sequential" and doc["verdict"] == "derived" and doc["decisive"][0] == "identity"
    assert looks_read(doc) == ["gains"]
    assert doc["bytes_at_verdict"] == doc["stages"][0]["bytes_read"] < doc["planned_bytes"] / 10
    assert {"name": "later looks", "reason": "not needed: the verdict was decisive"} in doc["not_tested"]


@pytest.mark.parametrize("pair", ["disguised", "rotated"])
def test_disguised_derivatives_are_decided_before_the_last_look(zoo, pair):
    doc = run(zoo["base"], zoo[pair])
    assert doc["verdict"] == "derived", doc["summary"]["statements"]
    assert doc["stages"][-1]["bytes_read"] == 0  # the last planned look was never read
    assert doc["bytes_at_verdict"] < doc["planned_bytes"]
    identity = next(t for t in doc["tests"] if t["name"] == "identity")["statistic"]
    assert identity["identical_tensors"] == identity["identical_rows"] == 0
    assert "invariant-cka" in doc["decisive"]  # residual permutation, gains and rotation do not hide it


def test_an_undisguised_up_scaled_copy_is_decided_by_its_shared_token_rows(zoo):
    doc = run(zoo["base"], zoo["upscaled"])
    assert doc["verdict"] == "derived" and doc["decisive"] == ["residual-alignment"]
    assert looks_read(doc) == ["gains", "embeddings"]


def test_a_disguised_moe_fine_tune_is_derived(zoo):
    doc = run(zoo["moe"], zoo["moe-disguised"])
    assert doc["verdict"] == "derived" and {"invariant-cka", "router-matching"} & set(doc["decisive"])


def test_independence_is_said_only_after_the_last_look(zoo):
    doc = run(zoo["base"], zoo["independent"])
    assert doc["verdict"] == "independent", doc["summary"]["statements"]
    assert looks_read(doc) == [s["look"] for s in doc["stages"]]  # every look read
    assert [s["verdict"] for s in doc["stages"][:-1]] == ["inconclusive"] * (len(doc["stages"]) - 1)
    assert doc["bytes_at_verdict"] == doc["bytes_read"] and doc["fraction_at_verdict"] == doc["fraction_read"]
    cka = next(t for t in doc["tests"] if t["name"] == "invariant-cka")
    assert cka["statistic"] < 0.08 and cka["layers_a"] == cka["layers_b"] == SIZE["num_layers"]


def test_a_byte_budget_ends_the_run_early_and_then_never_says_independent(zoo):
    full = run(zoo["base"], zoo["independent"])
    budget = sum(s["planned_bytes"] for s in full["stages"][:3])
    doc = run(zoo["base"], zoo["independent"], budget_bytes=budget)
    assert [s["look"] for s in doc["stages"]] == [s["look"] for s in full["stages"][:3]]
    assert doc["bytes_read"] <= budget and doc["verdict"] in ("independent", "inconclusive")
    with pytest.raises(BudgetError) as error:
        run(zoo["base"], zoo["independent"], budget_bytes=1000)
    assert "first looks (norm gains and embedding rows)" in error.value.message


def test_max_layers_reads_that_many_layers_spread_along_depth(zoo):
    doc = run(zoo["base"], zoo["independent"], max_layers=4)
    layers = sorted(layer for s in doc["stages"] for layer in s["layers_a"])
    assert layers == [0, 2, 5, 7] and doc["verdict"] == "independent"
    with pytest.raises(SpecError, match="--max-layers 1 is too few"):  # a case file or a script, past the CLI's check
        run(zoo["base"], zoo["independent"], max_layers=1)


def test_p_values_pay_for_every_look():
    thresholds = load_thresholds()
    lean = {"cka_derived": 0.15, "cka_independent": 0.08, "signature_effect": 5, "signature_quiet": 4,
            "min_common_independent": 32, "min_layers": 2}
    units = {"name": "unit-order", "applicable": True, "symmetry": "units", "p_value": 10 ** -8.5,
             "log10_p_value": -8.5, "per_layer_log10_p": [-8.5]}
    assert decide_look([units], thresholds, lean, looks=1, last=False, layers_read=2)["verdict"] == "derived"
    held = decide_look([units], thresholds, lean, looks=8, last=False, layers_read=2)  # -8.5 > -8 - log10(8)
    assert held["verdict"] == "inconclusive" and held["alpha_log10"] == pytest.approx(-8 - math.log10(8))
    cka = {"name": "invariant-cka", "applicable": True, "statistic": 0.5, "common_probes": 64}
    assert decide_look([cka], thresholds, lean, looks=4, last=False, layers_read=1)["verdict"] == "inconclusive"
    assert decide_look([cka], thresholds, lean, looks=4, last=False, layers_read=2)["verdict"] == "derived"
    quiet = {**cka, "statistic": 0.01}
    assert decide_look([quiet], thresholds, lean, looks=4, last=False, layers_read=8)["verdict"] == "inconclusive"
    assert decide_look([quiet], thresholds, lean, looks=4, last=True, layers_read=8)["verdict"] == "independent"


@pytest.mark.parametrize("count", range(1, 70))
def test_the_spread_order_visits_every_layer_once_middle_first(count):
    order = spread_order(count)
    assert sorted(order) == list(range(count)) and order[0] == round((count - 1) / 2)


def test_batches_of_two_models_of_different_depths_cover_both_once(zoo):
    a = ModelWeights.of("A", LocalSource(zoo["base"]))
    b = ModelWeights.of("B", LocalSource(zoo["upscaled"]))
    batches = layer_batches(a, b, None)
    assert [len(lb) for _, lb in batches][:2] == [2, 2]
    assert sorted(x for la, _ in batches for x in la) == a.layers
    assert sorted(x for _, lb in batches for x in lb) == b.layers


def test_the_command_announces_its_looks_and_writes_the_stages(zoo, tmp_path):
    from solarforensics.cli import provenance  # noqa: F401 (registers the command)
    from solarforensics.cli.app import app

    out = tmp_path / "prov.json"
    result = CliRunner().invoke(app, ["provenance", str(zoo["base"]), str(zoo["disguised"]), "--json", "--out",
                                      str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert result.stderr.startswith(f"provenance: reading at most {doc['planned_bytes']:,} (")
    assert "it stops at the first decisive look" in result.stderr
    assert doc["memory_bound"]["bytes"] > 0 and "MAX_ROWS" in doc["memory_bound"]["formula"]
    assert json.loads(out.read_text())["bytes_at_verdict"] == doc["bytes_at_verdict"]
    assert validate_document(doc) == []
    refused = CliRunner().invoke(app, ["provenance", str(zoo["base"]), str(zoo["copy"]), "--max-layers", "1"])
    assert refused.exit_code == 2


def test_rows_are_let_go_after_each_batch_so_memory_follows_the_shapes(zoo, monkeypatch):
    """With batches of one layer, every read of layer rows finds no other layer's rows still held (norm gains and
    routers, a few KB per layer, stay), whatever the model's size."""
    from solarforensics.provenance import anytime
    from solarforensics.provenance.weights import NORMS

    monkeypatch.setattr(anytime, "BATCH_BYTES", 1)
    seen, original = [], ModelWeights.folded

    def watched(self, role, layer, *args, **kwargs):
        held = {layer_ for (role_, layer_), name in self.names.items()
                if name in self.tensors and role_ not in NORMS and role_ != "router" and layer_ is not None}
        seen.append(len(held))
        return original(self, role, layer, *args, **kwargs)

    monkeypatch.setattr(ModelWeights, "folded", watched)
    doc = run(zoo["base"], zoo["independent"])
    assert doc["verdict"] == "independent" and seen and max(seen) == 1
