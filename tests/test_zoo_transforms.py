"""The zoo's disguises compute the same function with other numbers, sparse upcycling starts from the dense
parent's function, a TinyMoE is saved as a mixtral checkpoint, distillation trains on soft logits, and the whole
tiny plan builds (with a few steps) into a mixed llama/mixtral zoo."""

import json
import re
from dataclasses import asdict, replace

import pytest
import torch
from tokenizers import Tokenizer

from solarforensics.checkpoints import tensor_names, write_tokenizer
from solarforensics.families.family import find_family
from solarforensics.zoo import transforms
from solarforensics.zoo.architecture import MoEShape, Shape, TinyLlama
from solarforensics.zoo.build import SIZES, build_zoo, plan
from solarforensics.zoo.moe import BALANCE_WEIGHT, TinyMoE, permute_experts, upcycle
from solarforensics.zoo.train import Schedule, init_model, load_model, save_model, train

DENSE = Shape()  # hidden 64, 2 layers, 4 query heads in 2 KV groups, MLP 128, vocab 512
MOE = MoEShape(**{**asdict(DENSE), "intermediate": 64}, experts=4, top_k=2)
SAME = 1e-4  # float32 logits of these models are O(1): a re-parameterisation differs by rounding only

DISGUISES = {
    "norm-gain rescaling": lambda m: transforms.rescale_norms(m, 11),
    "norm-gain folding": transforms.fold_norms,
    "head and neuron permutation": lambda m: transforms.permute_heads_and_units(m, 12),
    "matrix scaling": lambda m: transforms.scale_attention(m, 13),
    "residual rotation": lambda m: transforms.rotate_residual(m, 14),
}
# What each disguise leaves untouched (tensor-name suffixes); every other tensor of the model changes.
UNTOUCHED = {
    "norm-gain rescaling": ("embed_tokens.weight", "o_proj.weight", "down_proj.weight", ".w2.weight"),
    "norm-gain folding": ("embed_tokens.weight", "o_proj.weight", "down_proj.weight", ".w2.weight"),
    "head and neuron permutation": ("embed_tokens.weight", "norm.weight", "lm_head.weight", "gate.weight"),
    "matrix scaling": ("embed_tokens.weight", "norm.weight", "lm_head.weight", "mlp.gate_proj.weight",
                       "up_proj.weight", "down_proj.weight", "block_sparse_moe.gate.weight", "w1.weight", "w2.weight",
                       "w3.weight"),
    "residual rotation": (),
}


@pytest.fixture(scope="module")
def dense() -> TinyLlama:
    # Norm gains away from 1, so that folding and rotation have something to fold.
    return transforms.rescale_norms(init_model(DENSE, seed=1), seed=2)


@pytest.fixture(scope="module")
def sparse() -> TinyMoE:
    return transforms.rescale_norms(init_model(MOE, seed=3), seed=4)


def changed_tensors(a: torch.nn.Module, b: torch.nn.Module) -> set[str]:
    other = b.state_dict()
    return {name for name, value in a.state_dict().items() if not torch.equal(value, other[name])}


def roles(names) -> set[str]:
    """Tensor names with layer and expert numbers blanked (a random permutation of 2 groups may be the identity)."""
    return {re.sub(r"\.\d+\.", ".N.", name) for name in names}


def test_models_of_other_seeds_are_far_apart_under_the_same_measure(dense, sparse):
    assert transforms.same_function(dense, init_model(DENSE, seed=9), DENSE) > 100 * SAME
    assert transforms.same_function(sparse, init_model(MOE, seed=9), MOE) > 100 * SAME


@pytest.mark.parametrize("name", DISGUISES)
def test_every_disguise_keeps_the_dense_function_and_changes_the_numbers(dense, name):
    disguised = DISGUISES[name](dense)
    assert transforms.same_function(dense, disguised, DENSE) < SAME
    assert roles(changed_tensors(dense, disguised)) == roles(n for n in dense.state_dict()
                                                              if not n.endswith(UNTOUCHED[name]))


@pytest.mark.parametrize("name", [*DISGUISES, "expert permutation"])
def test_every_disguise_keeps_the_moe_function_and_changes_the_numbers(sparse, name):
    disguised = permute_experts(sparse, 15) if name == "expert permutation" else DISGUISES[name](sparse)
    assert transforms.same_function(sparse, disguised, MOE) < SAME
    changed = roles(changed_tensors(sparse, disguised))
    if name == "expert permutation":
        assert changed == {"model.layers.N.block_sparse_moe.gate.weight"} | {
            f"model.layers.N.block_sparse_moe.experts.N.{w}.weight" for w in ("w1", "w2", "w3")}
    else:
        assert changed == roles(n for n in sparse.state_dict() if not n.endswith(UNTOUCHED[name]))


def test_rotation_folds_every_gain_to_one_and_turns_by_an_orthogonal_matrix(dense):
    rotated = transforms.rotate_residual(dense, seed=14)
    gains = {n: v for n, v in rotated.state_dict().items() if n.endswith("norm.weight")}
    assert len(gains) == 5 and all(torch.equal(v, torch.ones(64)) for v in gains.values())
    q = transforms.random_orthogonal(64, seed=14)
    assert torch.allclose(q.T @ q, torch.eye(64, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(rotated.model.embed_tokens.weight, (dense.model.embed_tokens.weight.double() @ q).float(),
                          atol=1e-6)


def test_an_upcycled_moe_computes_its_dense_parent_before_training(dense):
    moe = upcycle(dense, experts=4, top_k=2, seed=5)
    assert isinstance(moe, TinyMoE) and moe.shape == MoEShape(**asdict(DENSE), experts=4, top_k=2)
    assert transforms.same_function(dense, moe, DENSE) < SAME
    parent, child = dense.state_dict(), moe.state_dict()
    assert all(torch.equal(child[n], v) for n, v in parent.items() if ".mlp." not in n)
    for layer in range(2):
        mlp = f"model.layers.{layer}.mlp."
        for expert in range(4):
            moe_prefix = f"model.layers.{layer}.block_sparse_moe.experts.{expert}."
            for new, old in (("w1", "gate_proj"), ("w3", "up_proj"), ("w2", "down_proj")):
                assert torch.equal(child[f"{moe_prefix}{new}.weight"], parent[f"{mlp}{old}.weight"])
        assert child[f"model.layers.{layer}.block_sparse_moe.gate.weight"].shape == (4, 64)

    noisy = upcycle(dense, experts=4, top_k=2, seed=5, noise=0.01)
    experts = noisy.model.layers[0].block_sparse_moe.experts
    assert not torch.equal(experts[0].w1.weight, experts[1].w1.weight)
    assert SAME < transforms.same_function(dense, noisy, DENSE) < 0.05


def test_a_tiny_moe_saves_as_a_mixtral_checkpoint_and_loads_back(sparse, tmp_path, cli):
    tokenizer = Tokenizer.from_file(str(write_tokenizer(tmp_path / "tokenizer.json", 512)))
    folder = save_model(sparse, tmp_path / "moe", tokenizer)
    config = json.loads((folder / "config.json").read_text())
    assert {k: config[k] for k in ("architectures", "model_type", "num_hidden_layers", "hidden_size",
                                   "num_key_value_heads", "num_local_experts", "num_experts_per_tok",
                                   "intermediate_size", "vocab_size")} == {
        "architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "num_hidden_layers": 2, "hidden_size": 64,
        "num_key_value_heads": 2, "num_local_experts": 4, "num_experts_per_tok": 2, "intermediate_size": 64,
        "vocab_size": 512}
    names = tensor_names(folder)
    assert len(names) == 3 + 2 * (2 + 4 + 1 + 4 * 3)
    assert "model.layers.1.block_sparse_moe.experts.3.w2.weight" in names
    assert find_family(config, names).name == "mixtral"

    back = load_model(folder)
    assert isinstance(back, TinyMoE) and back.shape == MOE
    assert changed_tensors(sparse, back) == set() and transforms.same_function(sparse, back, MOE) == 0.0

    code, out, err = cli("inspect", folder, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["config_summary"]["model_type"] == "mixtral" and doc["config_summary"]["num_experts"] == 4
    assert doc["parameters"] == sum(p.numel() for p in sparse.parameters())


def test_distilling_a_copy_of_the_teacher_costs_nothing_and_an_moe_trains_with_its_balance_loss():
    ids = torch.randint(0, 512, (2000,), generator=torch.Generator().manual_seed(0))
    teacher = init_model(DENSE, seed=1)
    student = transforms.clone(teacher)
    assert abs(train(student, ids, Schedule(steps=1, lr=0.0, batch=2, seq=16), teacher=teacher)) < 1e-6

    moe = init_model(MOE, seed=3)
    _, balance = moe.logits_and_aux(ids[:32].view(2, 16))
    assert BALANCE_WEIGHT * 0.5 < float(balance.detach()) < BALANCE_WEIGHT * 4  # ~1 x the weight when the load is even
    loss = train(moe, ids, Schedule(steps=3, lr=1e-3, batch=2, seq=16))
    assert 5.0 < loss < 7.0  # ~ln 512 = 6.24 at the start


def test_the_whole_tiny_plan_builds_into_a_mixed_family_zoo(tmp_path):
    quick = replace(SIZES["tiny"], base_steps=2, tune_steps=2, cpt_steps=2, batch=2, seq=16, chars=20_000)
    manifest = build_zoo(tmp_path / "zoo", "tiny", seed=0, size=quick)
    recipes, pairs = plan(quick, seed=0)
    assert list(manifest["models"]) == [r.name for r in recipes]
    assert manifest["pairs"] == [asdict(p) for p in pairs]
    assert (manifest["family"], manifest["families"]) == ("mixed", ["llama", "mixtral"])
    families = {name: entry["family"] for name, entry in manifest["models"].items()}
    assert sorted(n for n, f in families.items() if f == "mixtral") == ["moe-base", "moe-ft", "moe-ft-experts",
                                                                         "moe-indep-seed", "upcycle"]
    zoo = tmp_path / "zoo"
    for name, family in families.items():
        config = json.loads((zoo / name / "config.json").read_text())
        assert config["model_type"] == family
    moe_ft, relabelled = load_model(zoo / "moe-ft"), load_model(zoo / "moe-ft-experts")
    assert transforms.same_function(moe_ft, relabelled, moe_ft.shape) < SAME
    ft = load_model(zoo / "ft")
    for disguised in ("ft-units", "ft-rotated"):
        assert transforms.same_function(ft, load_model(zoo / disguised), ft.shape) < SAME
    assert json.loads((zoo / "indep-tokenizer" / "tokenizer.json").read_text()) == \
        json.loads((zoo / "vocab" / "tokenizer.json").read_text())  # both trained on slice b
    assert load_model(zoo / "upcycle").shape == MoEShape(**asdict(DENSE), experts=4, top_k=2)
