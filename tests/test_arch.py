"""`arch`: configs side by side, parameter counts by component and tensor-group comparability, as a user runs it."""

import json
import math
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from safetensors import safe_open

import solarforensics.cli.evidence  # noqa: F401  (registers arch/tokenizer/license on the app)
from solarforensics.checkpoints import build_checkpoint, shard_files, tensor_shape
from solarforensics.evidence.params import active_parameters, count_parameters
from solarforensics.families.family import load_family
from solarforensics.results.document import read_document, schema
from solarforensics.sources.safetensors_format import TensorRef

FIXTURES = Path(__file__).parent / "fixtures" / "arch"


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    """Default result files (results/...) land in the test's folder, not the checkout."""
    monkeypatch.chdir(tmp_path)


def numel_on_disk(checkpoint: Path) -> int:
    """The reference: every entry of every shard header, counted by safetensors itself."""
    total = 0
    for shard in shard_files(checkpoint):
        with safe_open(str(shard), framework="pt") as handle:
            total += sum(math.prod(handle.get_slice(name).get_shape()) for name in handle.keys())
    return total


@pytest.fixture
def hub_root(tmp_path, hub_server) -> Path:
    """A local Hub serving a tiny Solar-Open-style and a tiny GLM-4.5-style checkpoint under demo/."""
    build_checkpoint(tmp_path / "hub" / "demo" / "solar-tiny", "solar_open", seed=2)
    build_checkpoint(tmp_path / "hub" / "demo" / "glm-tiny", "glm4_moe", seed=1)
    hub_server(tmp_path / "hub")
    return tmp_path / "hub"


def arch_json(cli, *args) -> dict:
    code, stdout, stderr = cli("arch", *args, "--json")
    assert code == 0, stderr
    return json.loads(stdout)


def test_arch_of_a_solar_and_a_glm_style_pair_over_the_local_hub(cli, hub_root, tmp_path):
    out = tmp_path / "arch.json"
    doc = arch_json(cli, "demo/solar-tiny", "demo/glm-tiny", "--out", out)
    assert read_document(out) == doc and doc["kind"] == "arch"
    assert Draft202012Validator(schema()).is_valid(doc)
    solar, glm = doc["parameters"]["a"], doc["parameters"]["b"]
    assert solar["total"] == numel_on_disk(hub_root / "demo" / "solar-tiny") == 474_992
    assert glm["total"] == numel_on_disk(hub_root / "demo" / "glm-tiny") == 485_672
    for counts in (solar, glm):
        assert sum(v for k, v in counts.items() if k != "total") == counts["total"]
    # 6 MoE layers x 8 experts x (gate + up + down) of 32 x 64; GLM's dense layer 0 and its MTP layer 5 apart
    assert solar["routed_experts"] == 6 * 8 * 3 * 32 * 64 and solar["dense_mlp"] == 0 and solar["mtp"] == 0
    assert glm["routed_experts"] == 4 * 8 * 3 * 32 * 64 and glm["dense_mlp"] == 3 * 128 * 64
    assert glm["mtp"] == 109_512 and glm["other"] == 0
    # active = total - routed + 2 of 8 experts per MoE layer (MTP left out)
    assert doc["active_parameters"]["a"]["value"] == 474_992 - 294_912 + 6 * 2 * 3 * 32 * 64
    assert doc["active_parameters"]["b"]["value"] == 485_672 - 109_512 - 196_608 + 4 * 2 * 3 * 32 * 64
    assert doc["comparable"] == {
        "layernorm": True, "attn-norm": True, "mlp-norm": True, "attn-q": True, "attn-k": True, "attn-v": True,
        "attn-o": True, "router": True, "router-bias": True, "embeddings": True, "lm-head": True, "final-norm": True,
        "experts": True, "shared-experts": True, "dense-mlp": False, "attn": True,
    }
    dense = next(row for row in doc["compatibility"] if row["group"] == "dense-mlp")
    assert dense["status"] == "no" and dense["reason"] == "only in B"
    assert doc["derived"]["a"]["moe_layers"] == [0, 1, 2, 3, 4, 5] and doc["derived"]["b"]["dense_layers"] == [0]
    assert doc["derived"]["b"]["mtp_layers"] == [5] and doc["derived"]["a"]["gqa_ratio"] == 2
    diff = {row["key"]: row for row in doc["config_diff"]}
    assert diff["num_hidden_layers"] == {"key": "num_hidden_layers", "a": 6, "b": 5, "status": "different"}
    assert diff["num_nextn_predict_layers"]["status"] == "only in B" and diff["hidden_size"]["status"] == "same"
    assert all(source["kind"] == "hub" and source["resolved_commit"] for source in doc["sources"])
    assert doc["sources"][0]["bytes_transferred"] < 64 << 10  # headers only, no tensor bytes


def test_k_v_and_router_are_comparable_only_when_their_shapes_match(cli, tmp_path):
    glm = build_checkpoint(tmp_path / "glm", "glm4_moe", seed=1, tokenizer=False)
    solar = build_checkpoint(tmp_path / "solar", "solar_open", seed=2, tokenizer=False,
                             overrides={"num_kv_heads": 1, "num_experts": 4, "vocab_size": 384,
                                                                      "moe_intermediate": 48})
    doc = arch_json(cli, solar, glm)
    status = {row["group"]: row["status"] for row in doc["compatibility"]}
    assert status["attn-k"] == status["attn-v"] == status["router"] == status["experts"] == "after alignment"
    assert status["shared-experts"] == status["router-bias"] == "after alignment"
    assert status["embeddings"] == "after alignment" and status["layernorm"] == status["attn-q"] == "same shape"
    assert not doc["comparable"]["attn-k"] and not doc["comparable"]["router"] and doc["comparable"]["layernorm"]
    rows = {row["group"]: row for row in doc["compatibility"]}
    assert rows["attn-k"]["shapes_a"] == {"k": [[16, 64]]} and rows["attn-k"]["shapes_b"] == {"k": [[32, 64]]}
    assert rows["router"]["reason"] == "different expert counts: match router rows (experts) by assignment"
    assert rows["embeddings"]["reason"] == "different vocabularies: pair rows by token string (the tokenizer map)"

    wide = build_checkpoint(tmp_path / "wide", "solar_open", seed=3, tokenizer=False, overrides={"hidden_size": 96})
    rows = {row["group"]: row for row in arch_json(cli, wide, glm)["compatibility"]}
    assert rows["layernorm"]["status"] == rows["attn-k"]["status"] == "no"
    assert rows["layernorm"]["reason"].startswith("hidden sizes differ (96 vs 64)")


def test_arch_renders_the_tables_a_reader_needs(cli, tmp_path):
    a = build_checkpoint(tmp_path / "a", "solar_open", seed=2, tokenizer=False)
    b = build_checkpoint(tmp_path / "b", "glm4_moe", seed=1, tokenizer=False)
    code, stdout, _ = cli("arch", a, b, "--out", tmp_path / "arch.json")
    assert code == 0
    assert "Parameters by component (from the safetensors headers)" in stdout
    assert "routed_experts" in stdout and "Tensor groups: can they be compared?" in stdout
    assert "first_k_dense_replace" in stdout and f"results: {tmp_path / 'arch.json'}" in stdout
    code, markdown, _ = cli("report", tmp_path / "arch.json", "--format", "md")
    assert code == 0 and "| dense-mlp | no |" in markdown


def virtual_headers(family_name: str, config: dict) -> dict[str, TensorRef]:
    """The tensor list a checkpoint of this config holds by the family map, with shapes and dtypes (no bytes)."""
    family = load_family(family_name)
    dims = family.dims(config)
    refs = {}
    for name in family.expected_names(config):
        role = family.match(name).role
        refs[name] = TensorRef(name, "virtual", family.dtypes.get(role, family.dtype), tensor_shape(family, role, dims), 0, 0)
    return refs


def test_the_real_configs_give_the_published_parameter_counts():
    solar_config = json.loads((FIXTURES / "solar-open-100b.config.json").read_text())
    glm_config = json.loads((FIXTURES / "glm-4.5-air.config.json").read_text())
    solar_family, glm_family = load_family("solar_open"), load_family("glm4_moe")
    solar_refs, glm_refs = virtual_headers("solar_open", solar_config), virtual_headers("glm4_moe", glm_config)
    solar = count_parameters(solar_family, solar_config, solar_refs)
    glm = count_parameters(glm_family, glm_config, glm_refs)
    # MODEL-FACTS §1.3: 2 x 102,651,793,408 BF16 + 4 x 6,144 F32 bytes = 205,303,611,392
    assert len(solar_refs) == 18_963 and solar["total"] == 102_651_793_408 + 6_144
    assert solar["routed_experts"] == 48 * 128 * 3 * 1280 * 4096 and solar["mtp"] == 0
    # The rebuttal's AutoModel counts (no lm_head; GLM's MTP layer and F32 router-bias buffers not counted)
    assert solar["total"] - solar["lm_head"] == 101_846_493_184
    glm_biases = 45 * 128
    assert glm["total"] - glm["lm_head"] - glm["mtp"] - glm_biases == 106_231_488_512
    solar_active = active_parameters(solar_family, solar_config, solar_refs, solar)["value"]
    glm_active = active_parameters(glm_family, glm_config, glm_refs, glm)["value"]
    assert solar_active == solar["total"] - solar["routed_experts"] + 48 * 8 * 3 * 1280 * 4096 == 12_054_833_152
    assert glm_active == glm["total"] - glm["mtp"] - glm["routed_experts"] + 45 * 8 * 3 * 1408 * 4096


def test_unknown_architecture_and_broken_config_end_in_one_line(cli, tmp_path):
    import torch
    from safetensors.torch import save_file

    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "config.json").write_text('{"model_type": "mystery"}')
    save_file({"blob.weight": torch.zeros(2, 2)}, str(odd / "model.safetensors"))
    good = build_checkpoint(tmp_path / "good", "llama", seed=0, tokenizer=False)
    code, stdout, stderr = cli("arch", odd, good)
    assert code == 2 and stdout == ""
    assert stderr.strip() == (
        "solarforensics: error: no model family fits: model_type 'mystery' is unknown and none of 1 tensor names "
        "match a family (add a configs/families/<model_type>.toml for it)")
    (odd / "config.json").write_text('{"model_type": ')
    code, _, stderr = cli("arch", odd, good)
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    assert "odd: config.json is not valid JSON" in stderr
    (odd / "config.json").write_text('["llama"]')
    assert cli("arch", odd, good)[2] == "solarforensics: error: odd: config.json holds a JSON list, not an object\n"
