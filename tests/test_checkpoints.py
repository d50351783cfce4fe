"""Tiny synthetic checkpoints: real naming from the family maps, valid sharded safetensors, deterministic bytes."""

import json

import pytest
import torch
from safetensors import safe_open
from tokenizers import Tokenizer

from solarforensics.checkpoints import (
    build_checkpoint,
    derive_checkpoint,
    permute_residual,
    shard_files,
    tensor_names,
    tensor_shape,
)
from solarforensics.errors import SpecError
from solarforensics.families.family import list_families, load_family

ALL_FAMILIES = [f.name for f in list_families()]


def read_all(folder) -> dict[str, torch.Tensor]:
    tensors = {}
    for shard in shard_files(folder):
        with safe_open(str(shard), framework="pt") as handle:
            tensors.update({name: handle.get_tensor(name) for name in handle.keys()})
    return tensors


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {name: build_checkpoint(root / name, name) for name in ALL_FAMILIES}


@pytest.mark.parametrize("name", ALL_FAMILIES)
def test_checkpoint_holds_exactly_the_family_names_shapes_and_dtypes(built, name):
    family = load_family(name)
    config = json.loads((built[name] / "config.json").read_text())
    assert config["model_type"] == family.model_type
    tensors = read_all(built[name])
    assert sorted(tensors) == sorted(family.expected_names(config))
    assert family.classify(tensors)[1] == []
    dims = family.dims(config)
    for tensor_name, tensor in tensors.items():
        role = family.match(tensor_name).role
        assert tuple(tensor.shape) == tensor_shape(family, role, dims), tensor_name
        expected = family.dtypes.get(role, family.dtype)
        assert {torch.bfloat16: "BF16", torch.float32: "F32"}[tensor.dtype] == expected, tensor_name
    assert sum(f.stat().st_size for f in built[name].iterdir()) < 2_000_000


@pytest.mark.parametrize("name", ["llama", "glm4_moe", "solar_open", "phimoe"])
def test_index_matches_the_shards(built, name):
    index = json.loads((built[name] / "model.safetensors.index.json").read_text())
    files = sorted(p.name for p in built[name].glob("*.safetensors"))
    assert files == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    placed, tensor_bytes = {}, 0
    for file in files:
        with safe_open(str(built[name] / file), framework="pt") as handle:
            assert handle.metadata() == {"format": "pt"}
            placed.update(dict.fromkeys(handle.keys(), file))
            tensor_bytes += sum(handle.get_tensor(n).numel() * handle.get_tensor(n).element_size()
                                for n in handle.keys())
    assert index["weight_map"] == dict(sorted(placed.items()))
    assert index["metadata"]["total_size"] == tensor_bytes


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, built):
    again = build_checkpoint(tmp_path / "again", "glm4_moe")
    other = build_checkpoint(tmp_path / "other", "glm4_moe", seed=1)
    for file in sorted(p.name for p in built["glm4_moe"].iterdir()):
        assert (again / file).read_bytes() == (built["glm4_moe"] / file).read_bytes(), file
    shard = "model-00001-of-00002.safetensors"
    assert (other / shard).read_bytes() != (again / shard).read_bytes()
    assert (other / "config.json").read_bytes() == (again / "config.json").read_bytes()


def test_glm_style_checkpoint_has_dense_layer_0_mtp_layer_and_f32_router_bias(built):
    tensors = read_all(built["glm4_moe"])
    layer0 = sorted(n[len("model.layers.0."):] for n in tensors if n.startswith("model.layers.0."))
    assert layer0 == ["input_layernorm.weight", "mlp.down_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
                      "post_attention_layernorm.weight", "self_attn.k_proj.bias", "self_attn.k_proj.weight",
                      "self_attn.o_proj.weight", "self_attn.q_proj.bias", "self_attn.q_proj.weight",
                      "self_attn.v_proj.bias", "self_attn.v_proj.weight"]
    mtp = {n[len("model.layers.5."):]: tuple(t.shape) for n, t in tensors.items() if n.startswith("model.layers.5.")}
    assert {k: mtp[k] for k in ("eh_proj.weight", "enorm.weight", "hnorm.weight", "shared_head.norm.weight",
                                "embed_tokens.weight", "mlp.gate.weight")} == {
        "eh_proj.weight": (64, 128), "enorm.weight": (64,), "hnorm.weight": (64,), "shared_head.norm.weight": (64,),
        "embed_tokens.weight": (512, 64), "mlp.gate.weight": (8, 64)}
    assert "shared_head.head.weight" not in mtp
    assert tensors["model.layers.1.mlp.gate.e_score_correction_bias"].dtype == torch.float32
    assert tensors["model.layers.1.mlp.shared_experts.down_proj.weight"].shape == (64, 32)
    assert tensors["model.layers.4.mlp.experts.7.up_proj.weight"].dtype == torch.bfloat16


def test_solar_style_checkpoint_routes_in_every_layer_without_biases_or_mtp(built):
    names = set(tensor_names(built["solar_open"]))
    assert all(f"model.layers.{i}.mlp.gate.e_score_correction_bias" in names for i in range(6))
    assert not [n for n in names if n.endswith(".bias") or ".layers.6." in n or "mlp.gate_proj" in n]
    assert len(names) == 3 + 6 * (2 + 4 + 2 + 8 * 3 + 3)


def test_phimoe_style_checkpoint_has_layernorm_and_head_biases(built):
    names = set(tensor_names(built["phimoe"]))
    assert {"model.layers.0.input_layernorm.bias", "model.layers.3.block_sparse_moe.experts.3.w2.weight",
            "model.norm.bias", "lm_head.bias", "model.layers.0.self_attn.o_proj.bias"} <= names
    assert len(names) == 5 + 4 * (4 + 8 + 1 + 4 * 3)


@pytest.mark.parametrize("name, mean", [("glm4_moe", 1.0), ("solar_open", 0.4), ("llama", 1.0)])
def test_norm_gains_look_trained(built, name, mean):
    tensors = read_all(built[name])
    gains = [t.float() for n, t in tensors.items() if n.endswith("layernorm.weight")]
    means = torch.stack([g.mean() for g in gains])
    assert abs(float(means.mean()) - mean) < 0.05 * mean
    assert float(means.max() - means.min()) > 0.05 * mean  # gains drift with depth
    assert all(0.02 * mean < float(g.std()) < 0.08 * mean for g in gains)


def test_gemma_norms_are_stored_as_offsets_from_one(built):
    gains = read_all(built["gemma3"])["model.layers.1.pre_feedforward_layernorm.weight"].float()
    assert abs(float(gains.mean())) < 0.15
    assert abs(float((gains + load_family("gemma3").norm_offset).mean()) - 1.0) < 0.15


def test_norm_mean_and_overrides(tmp_path):
    folder = build_checkpoint(tmp_path / "m", "glm4_moe", norm_mean=0.3, num_shards=3,
                              overrides={"num_layers": 3, "n_routed_experts": 4, "rope_theta": 10000.0})
    config = json.loads((folder / "config.json").read_text())
    assert (config["num_hidden_layers"], config["n_routed_experts"], config["rope_theta"]) == (3, 4, 10000.0)
    assert len(shard_files(folder)) == 3
    gain = read_all(folder)["model.layers.2.input_layernorm.weight"].float()
    assert abs(float(gain.mean()) - 0.3) < 0.05
    assert "model.layers.3.eh_proj.weight" in tensor_names(folder)


def test_one_shard_is_a_lone_model_safetensors_and_too_many_shards_is_refused(tmp_path):
    folder = build_checkpoint(tmp_path / "one", "llama", num_shards=1, tokenizer=False)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    with pytest.raises(SpecError, match="num_shards must be between 1 and 39, got 40"):
        build_checkpoint(tmp_path / "many", "llama", num_shards=40)


def test_tokenizer_has_exactly_the_config_vocab(built):
    tokenizer = Tokenizer.from_file(str(built["llama"] / "tokenizer.json"))
    assert tokenizer.get_vocab_size() == 512
    assert tokenizer.decode(tokenizer.encode("norm gains of GLM").ids) == "norm gains of GLM"


def test_derived_checkpoint_is_a_small_perturbation_of_every_tensor(tmp_path, built):
    src = built["glm4_moe"]
    derived = derive_checkpoint(src, tmp_path / "ft", seed=1, noise=1e-2)
    a, b = read_all(src), read_all(derived)
    assert list(a) == list(b)
    assert (derived / "config.json").read_bytes() == (src / "config.json").read_bytes()
    assert (derived / "model.safetensors.index.json").read_bytes() == (
        src / "model.safetensors.index.json").read_bytes()
    for name in a:
        x, y = a[name].double(), b[name].double()
        assert a[name].dtype == b[name].dtype and x.shape == y.shape
        assert 0.002 < float((y - x).norm() / x.norm()) < 0.03, name
    assert not torch.equal(a["model.layers.2.input_layernorm.weight"], b["model.layers.2.input_layernorm.weight"])


def _llama_logits(t: dict[str, torch.Tensor], config: dict, ids: torch.Tensor) -> torch.Tensor:
    """A minimal Llama forward (no rope: a residual permutation commutes with it anyway)."""
    t = {k: v.double() for k, v in t.items()}
    heads, kv, hd = config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]

    def rms(x, w):
        return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + 1e-5) * w

    x = t["model.embed_tokens.weight"][ids]
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms(x, t[p + "input_layernorm.weight"])
        q = (h @ t[p + "self_attn.q_proj.weight"].T).view(-1, heads, hd).transpose(0, 1)
        k = (h @ t[p + "self_attn.k_proj.weight"].T).view(-1, kv, hd).transpose(0, 1).repeat_interleave(heads // kv, 0)
        v = (h @ t[p + "self_attn.v_proj.weight"].T).view(-1, kv, hd).transpose(0, 1).repeat_interleave(heads // kv, 0)
        att = torch.softmax(q @ k.transpose(1, 2) / hd ** 0.5, -1) @ v
        x = x + att.transpose(0, 1).reshape(len(ids), -1) @ t[p + "self_attn.o_proj.weight"].T
        h = rms(x, t[p + "post_attention_layernorm.weight"])
        gate, up = h @ t[p + "mlp.gate_proj.weight"].T, h @ t[p + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(gate) * up) @ t[p + "mlp.down_proj.weight"].T
    return rms(x, t["model.norm.weight"]) @ t["lm_head.weight"].T


def test_residual_permutation_keeps_the_function_and_moves_the_gains(tmp_path, built):
    src = built["llama"]
    permuted = permute_residual(src, tmp_path / "perm", seed=3)
    a, b = read_all(src), read_all(permuted)
    config = json.loads((src / "config.json").read_text())
    ids = torch.tensor([1, 5, 9, 300, 42])
    assert torch.allclose(_llama_logits(a, config, ids), _llama_logits(b, config, ids), rtol=0, atol=1e-9)
    gain_a, gain_b = a["model.layers.0.input_layernorm.weight"], b["model.layers.0.input_layernorm.weight"]
    assert not torch.equal(gain_a, gain_b)
    assert torch.equal(gain_a.sort().values, gain_b.sort().values)
