"""Disguises and architecture changes applied to tiny checkpoints, for the provenance tests (derived-model makers).

Each function reads a checkpoint folder written by solarforensics.checkpoints and writes a transformed copy; the
transformations are the ones a derived model may carry: gains re-scaled into the next matrices, layers duplicated
(depth up-scaling), a new vocabulary with re-initialised embeddings.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from solarforensics.checkpoints import shard_files, write_shards, write_tokenizer
from solarforensics.families.family import find_family

# The matrices that read each norm's output (nn.Linear (out, in) layout: their columns follow the gain).
READERS = {"attn_norm": ("q", "k", "v"), "mlp_norm": ("mlp_gate", "mlp_up", "router", "shared_gate", "shared_up")}


def load(folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    config = json.loads((folder / "config.json").read_text())
    tensors = {}
    for shard in shard_files(folder):
        with safe_open(str(shard), framework="pt") as handle:
            tensors.update({name: handle.get_tensor(name) for name in handle.keys()})
    return config, tensors


def save(folder: Path, config: dict, tensors: dict[str, torch.Tensor], tokenizer_from: Path | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    write_shards(folder, tensors, 2)
    if tokenizer_from is not None:
        (folder / "tokenizer.json").write_bytes((tokenizer_from / "tokenizer.json").read_bytes())
    return folder


def rescale_gains(src: Path, out: Path, seed: int = 0) -> Path:
    """Every norm gain times a random positive factor per dimension, its reader matrices' columns divided by it."""
    config, tensors = load(src)
    family = find_family(config, tensors)
    rng = np.random.default_rng(seed)
    by_key = {(m.role, m.layer): m.name for m in family.classify(tensors)[0] if m.expert is None}
    for (role, layer), name in by_key.items():
        if role not in READERS:
            continue
        factor = torch.from_numpy(np.exp(rng.normal(0.0, 0.5, tensors[name].shape[0])))
        tensors[name] = (tensors[name].double() * factor).to(tensors[name].dtype)
        for reader in READERS[role]:
            if (reader, layer) in by_key:
                matrix = by_key[(reader, layer)]
                tensors[matrix] = (tensors[matrix].double() / factor[None, :]).to(tensors[matrix].dtype)
    return save(out, config, tensors, src)


def rotate_residual(src: Path, out: Path, seed: int = 0) -> Path:
    """The same function in a randomly rotated residual basis (llama-style pre-norm): every gain folded into its
    readers and set to 1 (RMSNorm then commutes with an orthogonal map), embeddings E Q, readers W Q, writers Q^T W."""
    config, tensors = load(src)
    family = find_family(config, tensors)
    by_key = {(m.role, m.layer): m.name for m in family.classify(tensors)[0] if m.expert is None}
    work = {name: t.double() for name, t in tensors.items()}
    for (role, layer), name in by_key.items():
        readers = READERS.get(role, ("lm_head",) if role == "final_norm" else ())
        for reader in readers:
            if (reader, layer) in by_key:
                work[by_key[(reader, layer)]] *= work[name][None, :]
        if readers:
            work[name] = torch.ones_like(work[name])
    hidden = work[by_key[("embed", None)]].shape[1]
    q, _ = torch.linalg.qr(torch.from_numpy(np.random.default_rng(seed).standard_normal((hidden, hidden))))
    writers = ("o", "mlp_down")
    for (role, _), name in by_key.items():
        if role in ("embed",) or role in READERS["attn_norm"] + READERS["mlp_norm"] + ("lm_head",):
            work[name] = work[name] @ q
        elif role in writers:
            work[name] = q.T @ work[name]
    return save(out, config, {n: work[n].to(tensors[n].dtype) for n in tensors}, src)


def duplicate_layers(src: Path, out: Path, order: list[int]) -> Path:
    """A deeper model whose layer i is a copy of layer order[i] of the source (e.g. [0, 1, 2, 3, 2, 3, 4, 5])."""
    config, tensors = load(src)
    family = find_family(config, tensors)
    renamed = {}
    for match in family.classify(tensors)[0]:
        if match.layer is None:
            renamed[match.name] = tensors[match.name]
    for new_layer, old_layer in enumerate(order):
        for match in family.classify(tensors)[0]:
            if match.layer == old_layer:
                template = family.roles[match.role][0]
                renamed[template.format(layer=new_layer, expert=match.expert)] = tensors[match.name].clone()
    config[family.config_keys["num_layers"][0]] = len(order)
    names = [n for n in family.expected_names(config) if n in renamed]
    return save(out, config, {n: renamed[n] for n in names}, src)


def new_vocabulary(src: Path, out: Path, vocab_size: int, seed: int = 0) -> Path:
    """A new tokenizer and freshly initialised embedding and head; every block kept."""
    config, tensors = load(src)
    family = find_family(config, tensors)
    rng = np.random.default_rng(seed)
    for match in family.classify(tensors)[0]:
        if match.role in ("embed", "lm_head"):
            shape = (vocab_size, tensors[match.name].shape[1])
            tensors[match.name] = torch.from_numpy(0.02 * rng.standard_normal(shape)).to(tensors[match.name].dtype)
    config[family.config_keys["vocab_size"][0]] = vocab_size
    save(out, config, tensors, None)
    write_tokenizer(out / "tokenizer.json", vocab_size)
    return out


def unrelated_layout(out: Path, seed: int = 0) -> Path:
    """A checkpoint no family knows (its tensor names match no template)."""
    rng = np.random.default_rng(seed)
    tensors = {f"blob.{i}.weight": torch.from_numpy(rng.standard_normal((16, 16)).astype(np.float32)) for i in range(3)}
    return save(out, {"note": "no model_type"}, tensors, None)


