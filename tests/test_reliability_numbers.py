"""Numbers that could mislead: every null and baseline belongs to the group it is printed with, NaN/Inf are counted and
flagged (never "equal", never a crash), the weights win over a config that disagrees with them, a model compared with
itself is said to be one, and a group only one model has is listed instead of stopping the run."""

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from solarforensics.checkpoints import build_checkpoint, derive_checkpoint


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("numbers")
    glm = build_checkpoint(root / "glm", "glm4_moe", seed=1)
    derive_checkpoint(glm, root / "glm-sft", seed=7, noise=1e-3)
    build_checkpoint(root / "llama", "llama", seed=0, tokenizer=False)
    return root


def rewritten(src: Path, dst: Path, change) -> Path:
    """A copy of a checkpoint folder whose tensors went through `change(name, tensor) -> tensor`."""
    shutil.copytree(src, dst)
    for shard in dst.glob("*.safetensors"):
        tensors = {name: change(name, t.clone()) for name, t in load_file(shard).items()}
        save_file(tensors, shard, metadata={"format": "pt"})
    return dst


def doc_of(cli, *args) -> dict:
    code, out, err = cli(*args, "--json", *(("--device", "cpu") if args[0] != "arch" else ()))
    assert code == 0, err
    return json.loads(out)


# -- nulls and baselines per group ----------------------------------------------------------------------------------

def test_every_null_and_baseline_belongs_to_its_own_group(cli, models, tmp_path):
    both = doc_of(cli, "compare", models / "glm", models / "glm-sft", "--tensors", "layernorm,attn-k",
                  "--permutations", "99", "--out", tmp_path / "both.json")
    alone = doc_of(cli, "compare", models / "glm", models / "glm-sft", "--tensors", "attn-k",
                   "--permutations", "99", "--out", tmp_path / "k.json")
    norms = doc_of(cli, "compare", models / "glm", models / "glm-sft", "--tensors", "layernorm",
                   "--permutations", "99", "--out", tmp_path / "n.json")
    by_group = both["baselines"]["by_group"]
    # Each group's backgrounds are exactly what a run of that group alone computes.
    for group, single in (("attn-k", alone), ("layernorm", norms)):
        for key in ("within_model", "shuffle", "reference_null"):
            assert by_group[group][key] == single["baselines"][key], (group, key)
    # Norm-gain nulls mean nothing for key projections: none is attached, and the document says why.
    k = by_group["attn-k"]
    assert k["reference_null"] is None and k["shuffle"] is None
    assert any("no reference null" in note for note in k["notes"])
    assert both["summary"]["groups"]["attn-k"]["p_aggregate"] is None
    layernorm_reference = f"{by_group['layernorm']['reference_null']['cosine_mean']:.3f}"
    k_lines = [s for s in both["summary"]["statements"] if s.startswith("attn-k:")]
    assert k_lines and not any(layernorm_reference in line for line in k_lines)
    assert by_group["attn-k"]["within_model"]["a"]["mean"] != by_group["layernorm"]["within_model"]["a"]["mean"]
    # The top-level keys keep their meaning for one-group readers: the first group's backgrounds.
    assert both["baselines"]["reference_null"] == by_group["layernorm"]["reference_null"]


def test_the_terminal_shows_each_group_with_its_own_null(cli, models, tmp_path):
    code, out, err = cli("compare", models / "glm", models / "glm-sft", "--tensors", "layernorm,attn-k",
                         "--permutations", "99", "--device", "cpu", "--out", tmp_path / "r.json")
    assert code == 0, err
    doc = json.loads((tmp_path / "r.json").read_text())
    shuffle_mean = doc["baselines"]["by_group"]["layernorm"]["shuffle"]["null_mean"]
    banner = out[: out.index("What the numbers say")]
    k_line = banner[banner.index("attn-k:"):]
    assert "no joint shuffle null" in k_line and "reference null" not in k_line.split("Raw cosine of")[0]
    assert f"{shuffle_mean:.4g}"[:5] not in k_line.split("Raw cosine of")[0]


def test_controls_are_computed_per_group(cli, models, tmp_path):
    doc = doc_of(cli, "compare", models / "glm-sft", models / "glm", "--tensors", "layernorm,attn-k",
                 "--control", models / "llama", "--permutations", "99", "--out", tmp_path / "c.json")
    controls = {g: doc["baselines"]["by_group"][g]["controls"] for g in ("layernorm", "attn-k")}
    assert [c["group"] for c in controls["layernorm"]] == ["layernorm", "layernorm"]
    assert [c["group"] for c in controls["attn-k"]] == ["attn-k", "attn-k"]
    assert [c["vs"] for c in doc["baselines"]["controls"]] == ["a", "b"]


# -- NaN and Inf ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nan_models(models, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("nonfinite")

    def poison(name, t):
        if "layernorm" in name:  # differs from glm only where it is not finite
            t[0], t[1] = float("nan"), float("inf")
        if name == "model.layers.2.input_layernorm.weight":
            t[:] = float("nan")
        return t

    rewritten(models / "glm", root / "glm-nan", poison)
    return root


def test_nonfinite_values_are_counted_flagged_and_never_equal(cli, models, nan_models, tmp_path):
    doc = doc_of(cli, "compare", models / "glm", nan_models / "glm-nan", "--permutations", "99",
                 "--out", tmp_path / "nan.json")
    rows = {r["tensor_a"]: r for r in doc["rows"]}
    post = rows["model.layers.0.post_attention_layernorm.weight"]
    assert post["nonfinite_b"] == 2 and post["finite_only"] and not post["bytes_equal"]
    dead = rows["model.layers.2.input_layernorm.weight"]
    assert dead["comparable"] is False and dead["cosine"] is None and "no position is finite" in dead["reason"]
    group = doc["summary"]["groups"]["layernorm"]
    assert group["nonfinite_pairs"] == 10 and group["nonfinite_b"] == 2 * 9 + 64
    assert any("NaN/Inf" in w for w in doc["warnings"])
    assert any("does not make the tensors equal" in s for s in doc["summary"]["statements"])
    code, _, err = cli("report", tmp_path / "nan.json", "--format", "md", "--out", tmp_path / "nan.md")
    assert code == 0, err
    assert "2 NaN/Inf in B; numbers over positions finite in both only" in (tmp_path / "nan.md").read_text()


def test_no_analysis_crashes_on_nonfinite_values(cli, models, nan_models, tmp_path):
    doc = doc_of(cli, "provenance", models / "glm", nan_models / "glm-nan", "--out", tmp_path / "p.json")
    assert doc["verdict"] in ("derived", "independent", "inconclusive")
    assert any("NaN/Inf" in w and "set to 0" in w for w in doc["warnings"])
    identity = next(t for t in doc["tests"] if t["name"] == "identity")
    assert identity["applicable"]
    doc = doc_of(cli, "matrix", "--models", f"{models / 'glm'},{nan_models / 'glm-nan'},{models / 'glm-sft'}",
                 "--out", tmp_path / "m.json")
    assert doc["matrices"]["layernorm"]["pearson"][0][1] is not None


# -- config against weights ----------------------------------------------------------------------------------------

def test_the_weights_win_over_a_config_that_disagrees(cli, models, tmp_path):
    lying = tmp_path / "llama-short-config"
    shutil.copytree(models / "llama", lying)
    config = json.loads((lying / "config.json").read_text())
    assert config["num_hidden_layers"] == 4
    (lying / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 2}))

    truth = doc_of(cli, "arch", models / "llama", models / "llama", "--out", tmp_path / "t.json")
    arch = doc_of(cli, "arch", models / "llama", lying, "--out", tmp_path / "a.json")
    assert arch["derived"]["b"]["mtp_layers"] == [] and arch["derived"]["b"]["decoder_layers_in_files"] == 4
    assert arch["active_parameters"]["b"]["value"] == truth["active_parameters"]["a"]["value"]
    expected = "config.json says 2 decoder layers but the weights hold 4 (layers 0-3); the weights are used"
    assert any(expected in w for w in arch["warnings"])
    compare = doc_of(cli, "compare", models / "llama", lying, "--permutations", "0", "--out", tmp_path / "c.json")
    assert sorted({r["layer_b"] for r in compare["rows"]}) == [0, 1, 2, 3]
    assert any(expected in w for w in compare["warnings"])


# -- a model against itself -----------------------------------------------------------------------------------------

def test_a_model_compared_with_itself_is_said_to_be_one(cli, models, tmp_path):
    doc = doc_of(cli, "compare", models / "llama", str(models / "llama") + "/", "--permutations", "0",
                 "--out", tmp_path / "c.json")
    assert "are the same source" in doc["warnings"][0]
    assert doc["summary"]["statements"][0] == doc["warnings"][0]
    doc = doc_of(cli, "provenance", models / "llama", models / "llama", "--tests", "identity",
                 "--out", tmp_path / "p.json")
    assert any("are the same source" in w for w in doc["warnings"])
    other = doc_of(cli, "compare", models / "glm", models / "glm-sft", "--permutations", "0",
                   "--out", tmp_path / "o.json")
    assert not any("same source" in w for w in other["warnings"])


# -- a group only one model has --------------------------------------------------------------------------------------

def test_a_group_in_one_model_only_is_listed_and_the_run_goes_on(cli, models, tmp_path):
    doc = doc_of(cli, "compare", models / "glm", models / "llama", "--tensors", "router", "--out", tmp_path / "r.json")
    assert doc["rows"] == [] and len(doc["only_in_a"]) == 4 and doc["only_in_b"] == []
    assert doc["summary"]["groups"]["router"]["only_in_a"] == 4
    assert any("router: only in A (4); none in B" in w for w in doc["warnings"])
    doc = doc_of(cli, "compare", models / "llama", models / "glm", "--tensors", "layernorm,router",
                 "--permutations", "0", "--out", tmp_path / "l.json")
    assert doc["summary"]["groups"]["router"]["only_in_b"] == 4 and doc["summary"]["groups"]["layernorm"]["n"] > 0
    doc = doc_of(cli, "matrix", "--models", f"{models / 'glm'},{models / 'llama'},{models / 'glm-sft'}",
                 "--tensors", "router", "--out", tmp_path / "m.json")
    assert doc["matrices"]["router"]["pearson"][0][2] is not None and doc["matrices"]["router"]["pearson"][0][1] is None
    # Nothing selected in any model is still a one-line error.
    code, _, err = cli("compare", models / "llama", models / "llama", "--tensors", "router", "--out", tmp_path / "x.json")
    assert code == 2 and "nothing selected" in err
