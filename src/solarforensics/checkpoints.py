"""Deterministic tiny sharded safetensors checkpoints, named by the family maps (for tests, the demo, benchmarks)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from solarforensics.errors import SpecError
from solarforensics.families.family import CONFIG_KEYS, NORM_ROLES, Family, find_family, load_family

# Tiny sizes in canonical keys; a family uses the ones its config maps (hidden 64, 16-wide heads, vocab 512).
TINY: dict[str, int] = {
    "num_layers": 4, "hidden_size": 64, "num_heads": 4, "num_kv_heads": 2, "head_dim": 16, "vocab_size": 512,
    "intermediate": 128, "num_experts": 8, "experts_per_token": 2, "num_shared_experts": 1, "moe_intermediate": 32,
    "first_k_dense": 0, "num_mtp_layers": 0, "max_positions": 128, "type_vocab_size": 2,
    "q_lora_rank": 32, "kv_lora_rank": 16, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16,
}
# Per family: size changes, config.json flags copied from the real model, and the default mean norm gain.
PRESETS: dict[str, tuple[dict[str, int], dict[str, Any], float]] = {
    "llama": ({}, {"tie_word_embeddings": False, "rms_norm_eps": 1e-5}, 1.0),
    # GLM-4.5-Air in miniature: dense layer 0, MoE layers 1-4, MTP layer 5, q/k/v biases, GLM-like gains near 1.
    "glm4_moe": ({"num_layers": 5, "first_k_dense": 1, "num_mtp_layers": 1},
                 {"attention_bias": True, "use_qk_norm": False, "tie_word_embeddings": False, "n_group": 1,
                  "topk_group": 1, "norm_topk_prob": True, "routed_scaling_factor": 1.0}, 1.0),
    # Solar-Open in miniature: more layers than the GLM one, every layer MoE, no MTP; real Solar gains sit near 0.3-0.5.
    "solar_open": ({"num_layers": 6}, {"tie_word_embeddings": False, "norm_topk_prob": True,
                                       "routed_scaling_factor": 1.0}, 0.4),
    "phimoe": ({"num_experts": 4}, {"attention_bias": True, "lm_head_bias": True, "tie_word_embeddings": False}, 1.0),
    "deepseek_v3": ({"first_k_dense": 1, "num_mtp_layers": 1, "num_kv_heads": 4}, {}, 1.0),
}
_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}
_LATENT_NORMS = {"q_norm": "head_dim", "k_norm": "head_dim", "q_a_norm": "q_lora_rank", "kv_a_norm": "kv_lora_rank"}


def tiny_config(family: Family, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """A config.json for a tiny model of `family`, in the family's own field names; overrides may use either."""
    sizes, flags, _ = PRESETS.get(family.name, ({}, {}, 1.0))
    canonical = {**TINY, **sizes}
    raw = {}
    for key, value in (overrides or {}).items():
        (canonical if key in CONFIG_KEYS else raw)[key] = value
    config: dict[str, Any] = {"architectures": list(family.architectures[:1]), "model_type": family.model_type}
    for key, names in family.config_keys.items():
        config[names[0]] = canonical[key]
    return {**config, **flags, "torch_dtype": "bfloat16" if family.dtype == "BF16" else "float32", **raw}


def tensor_shape(family: Family, role: str, d: dict[str, Any]) -> tuple[int, ...]:
    """The shape a tensor of `role` has for canonical dims `d` (as stored: Conv1D roles transposed)."""
    h, hd, heads = d["hidden_size"], d["head_dim"], d["num_heads"]
    nq, nkv, inter, moe = heads * hd, d["num_kv_heads"] * hd, d["intermediate"], d["moe_intermediate"]
    shared = (moe or 0) * max(1, d["num_shared_experts"])
    if "kv_b" in family.roles:  # MLA: per-head widths come from their own config fields
        nope, rope, vhd = d["qk_nope_head_dim"], d["qk_rope_head_dim"], d["v_head_dim"]
        mla = {"q": (heads * (nope + rope), h), "q_a": (d["q_lora_rank"], h), "q_b": (heads * (nope + rope),
               d["q_lora_rank"]), "kv_a": (d["kv_lora_rank"] + rope, h), "kv_b": (heads * (nope + vhd),
               d["kv_lora_rank"]), "o": (h, heads * vhd)}
        if role in mla:
            return mla[role]
    if role in _LATENT_NORMS:
        return (d[_LATENT_NORMS[role]],)
    if role in NORM_ROLES or role.endswith("_norm_bias") or role in ("o_bias", "mlp_down_bias", "pooler_bias"):
        return (h,)
    shapes = {
        "embed": (d["vocab_size"], h), "lm_head": (d["vocab_size"], h), "mtp_embed": (d["vocab_size"], h),
        "mtp_head": (d["vocab_size"], h), "lm_head_bias": (d["vocab_size"],), "embed_pos": (d["max_positions"], h),
        "embed_type": (d["type_vocab_size"], h), "pooler": (h, h), "mtp_eh_proj": (h, 2 * h),
        "q": (nq, h), "k": (nkv, h), "v": (nkv, h), "o": (h, nq), "qkv": (nq + 2 * nkv, h),
        "q_bias": (nq,), "k_bias": (nkv,), "v_bias": (nkv,), "qkv_bias": (nq + 2 * nkv,),
        "mlp_gate": (inter, h), "mlp_up": (inter, h), "mlp_gate_up": (2 * inter, h), "mlp_down": (h, inter),
        "mlp_up_bias": (inter,), "router": (d["num_experts"], h), "router_bias": (d["num_experts"],),
        "expert_gate": (moe, h), "expert_up": (moe, h), "expert_down": (h, moe),
        "shared_gate": (shared, h), "shared_up": (shared, h), "shared_down": (h, shared),
    }
    if role not in shapes:
        raise SpecError(f"no shape rule for role {role!r} of family {family.name}")
    shape = shapes[role]
    return shape[::-1] if role in family.transposed else shape


def _rng(seed: int, name: str) -> np.random.Generator:
    # One stream per tensor name, so adding or reordering tensors never changes the others.
    return np.random.default_rng([seed, int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")])


def _values(family: Family, role: str, layer: int | None, shape: tuple[int, ...], rng: np.random.Generator,
            norm_mean: float, num_layers: int) -> np.ndarray:
    if role in NORM_ROLES:
        depth = 0.5 if layer is None else min(layer, num_layers) / max(num_layers, 1)
        mean = norm_mean * (0.9 + 0.2 * depth)  # gains drift with depth, as trained ones do
        gains = mean + 0.05 * norm_mean * rng.standard_normal(shape)
        return gains - family.norm_offset  # Gemma stores w with gain 1 + w
    if role.endswith("_bias"):
        return 0.01 * rng.standard_normal(shape)
    return 0.02 * rng.standard_normal(shape)


def build_checkpoint(out_dir: str | Path, family: str, *, seed: int = 0, num_shards: int = 2,
                     overrides: dict[str, Any] | None = None, norm_mean: float | None = None,
                     tokenizer: bool = True) -> Path:
    """Write config.json, sharded safetensors (+ index) and tokenizer.json of a tiny `family` model; same seed, same bytes."""
    fam = load_family(family)
    config = tiny_config(fam, overrides)
    d = fam.dims(config)
    mean = PRESETS.get(fam.name, ({}, {}, 1.0))[2] if norm_mean is None else norm_mean
    tensors = {}
    for name in fam.expected_names(config):
        m = fam.match(name)
        shape = tensor_shape(fam, m.role, d)
        values = _values(fam, m.role, m.layer, shape, _rng(seed, name), mean, d["num_layers"])
        dtype = _DTYPES[fam.dtypes.get(m.role, fam.dtype)]
        tensors[name] = torch.from_numpy(values.astype(np.float32)).to(dtype)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    write_shards(out, tensors, num_shards)
    if tokenizer:
        write_tokenizer(out / "tokenizer.json", d["vocab_size"])
    return out


def _save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None) -> None:
    save_file(tensors, str(path), metadata=metadata)
    path.chmod(0o644)  # safetensors creates 0600 files; a served checkpoint should read like any other file


def write_shards(out: Path, tensors: dict[str, torch.Tensor], num_shards: int) -> list[str]:
    """Cut tensors (in order) into contiguous shards of about equal bytes; 1 shard = a lone model.safetensors."""
    names = list(tensors)
    if not 1 <= num_shards <= len(names):
        raise SpecError(f"num_shards must be between 1 and {len(names)}, got {num_shards}")
    if num_shards == 1:
        _save(tensors, out / "model.safetensors", {"format": "pt"})
        return ["model.safetensors"]
    sizes = [t.numel() * t.element_size() for t in tensors.values()]
    total, before, cuts = sum(sizes), 0, [0]
    for i, size in enumerate(sizes):
        k = len(cuts)
        # Start shard k once its byte quota is reached, but leave at least one tensor for every later shard.
        if k < num_shards and i > cuts[-1] and (before >= k * total / num_shards or len(names) - i == num_shards - k):
            cuts.append(i)
        before += size
    cuts.append(len(names))
    files, weight_map = [], {}
    for k in range(num_shards):
        file = f"model-{k + 1:05d}-of-{num_shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[cuts[k]:cuts[k + 1]]}
        _save(part, out / file, {"format": "pt"})
        weight_map.update(dict.fromkeys(part, file))
        files.append(file)
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return files


def shard_files(checkpoint: str | Path) -> list[Path]:
    """The safetensors files of a checkpoint folder, from its index when it has one."""
    folder = Path(checkpoint)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return [folder / f for f in sorted(set(weight_map.values()))]
    return sorted(folder.glob("*.safetensors"))


def tensor_names(checkpoint: str | Path) -> list[str]:
    """Every tensor name of a checkpoint folder, shard by shard."""
    names = []
    for shard in shard_files(checkpoint):
        with safe_open(str(shard), framework="pt") as handle:
            names += list(handle.keys())
    return names


def _rewrite(src_dir: str | Path, out_dir: str | Path, change) -> Path:
    """Copy a checkpoint, passing every tensor through change(name, tensor); other files are copied byte for byte."""
    src, out = Path(src_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for file in sorted(src.iterdir()):
        if file.is_file() and file.suffix != ".safetensors":
            shutil.copyfile(file, out / file.name)
    for shard in shard_files(src):
        with safe_open(str(shard), framework="pt") as handle:
            metadata = handle.metadata()
            tensors = {name: change(name, handle.get_tensor(name)) for name in handle.keys()}
        _save(tensors, out / shard.name, metadata)
    return out


def derive_checkpoint(src_dir: str | Path, out_dir: str | Path, *, seed: int = 1, noise: float = 1e-3) -> Path:
    """A "fine-tune" of a checkpoint: every float tensor + noise x its RMS x N(0, 1), in its own dtype."""
    def perturb(name: str, tensor: torch.Tensor) -> torch.Tensor:
        if not tensor.is_floating_point():
            return tensor
        x = tensor.to(torch.float64)
        rms = float(x.square().mean().sqrt()) or 1.0
        step = torch.from_numpy(_rng(seed, name).standard_normal(tuple(x.shape)))
        return (x + noise * rms * step).to(tensor.dtype)
    return _rewrite(src_dir, out_dir, perturb)


# Roles whose axis 1 (axis 0) runs over the residual stream, in nn.Linear (out, in) layout.
_RESIDUAL_IN = {"embed", "embed_pos", "embed_type", "lm_head", "mtp_embed", "mtp_head", "q", "k", "v", "qkv", "q_a",
                "kv_a", "router", "expert_gate", "expert_up", "shared_gate", "shared_up", "mlp_gate", "mlp_up",
                "mlp_gate_up", "pooler"}
_RESIDUAL_OUT = {"o", "o_bias", "expert_down", "shared_down", "mlp_down", "mlp_down_bias", "attn_norm",
                 "attn_norm_bias", "mlp_norm", "mlp_norm_bias", "attn_post_norm", "mlp_post_norm", "final_norm",
                 "final_norm_bias", "embed_norm", "embed_norm_bias", "mtp_enorm", "mtp_hnorm", "mtp_head_norm"}


def permute_residual(src_dir: str | Path, out_dir: str | Path, seed: int = 0) -> Path:
    """The same function with its residual dimensions permuted (a disguise that defeats element-wise comparison)."""
    src = Path(src_dir)
    config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    fam = find_family(config, tensor_names(src))
    hidden = fam.dims(config)["hidden_size"]
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(hidden))

    def permute(name: str, tensor: torch.Tensor) -> torch.Tensor:
        m = fam.match(name)
        role = m.role if m else None
        if role == "mtp_eh_proj":  # (hidden, [embedding; hidden]): both halves of the input follow the permutation
            return tensor[perm][:, torch.cat([perm, perm + hidden])]
        axis = 1 if role in _RESIDUAL_IN else 0 if role in _RESIDUAL_OUT else None
        if axis is None:
            return tensor
        if role in fam.transposed and tensor.dim() == 2:
            axis = 1 - axis
        return tensor.index_select(axis, perm)
    return _rewrite(src, out_dir, permute)


_TEXT = """The quick brown fox jumps over the lazy dog while the model reads only the bytes it needs.
Norm gains, router matrices and expert weights are compared layer by layer, with a null beside every number.
A forensic result must be reproducible: pin the revision, record the hashes, and say what was not tested.
Tokenizers split text into pieces; byte-level merges learn frequent pairs such as th, he, in, er, an and re.
Solar, GLM, Phi and INTELLECT are names of models; their tensors have shapes, dtypes and offsets in shards.
def compare(a, b): return sum(x * y for x, y in zip(a, b)) / (norm(a) * norm(b))  # cosine similarity
0123456789 + - * / = < > ( ) [ ] { } : ; , . ! ? ' " @ # $ % ^ & | ~ ` _ \\
"""


def write_tokenizer(path: str | Path, vocab_size: int) -> Path:
    """A byte-level BPE tokenizer.json with exactly `vocab_size` entries, trained on a small built-in text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|pad|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([_TEXT] * 4 + [line * 3 for line in _TEXT.splitlines()], trainer=trainer)
    if tok.get_vocab_size() < vocab_size:  # a text too small to learn enough merges: pad with reserved tokens
        tok.add_special_tokens([f"<|reserved_{i}|>" for i in range(vocab_size - tok.get_vocab_size())])
    tok.save(str(path))
    return Path(path)
