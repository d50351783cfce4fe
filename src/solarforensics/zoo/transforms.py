"""Derivations (a model made from another's weights) and disguises (function-preserving re-parameterisations)."""

from __future__ import annotations

import copy
from dataclasses import replace

import torch

from solarforensics.zoo.train import Shape, TinyLlama, init_model

NORMS_AND_READERS = (("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
                     ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj")))


def clone(model: TinyLlama) -> TinyLlama:
    return copy.deepcopy(model)


def depth_upscale(model: TinyLlama, order: list[int]) -> TinyLlama:
    """A deeper model whose layer i is a copy of the parent's layer order[i] (SOLAR-style depth up-scaling)."""
    out = TinyLlama(replace(model.shape, layers=len(order)))
    state = {k: v for k, v in model.state_dict().items() if ".layers." not in k}
    for new, old in enumerate(order):
        prefix = f"model.layers.{old}."
        state.update({f"model.layers.{new}.{k[len(prefix):]}": v.clone()
                      for k, v in model.state_dict().items() if k.startswith(prefix)})
    out.load_state_dict(state)
    return out


def prune_width(model: TinyLlama, keep: int) -> TinyLlama:
    """Keep the `keep` MLP units of every layer with the largest |gate| x |up| x |down| norms, in their order."""
    out = TinyLlama(replace(model.shape, intermediate=keep))
    state = dict(model.state_dict())
    for i, layer in enumerate(model.model.layers):
        mlp = layer.mlp
        score = mlp.gate_proj.weight.norm(dim=1) * mlp.up_proj.weight.norm(dim=1) * mlp.down_proj.weight.norm(dim=0)
        units = score.topk(keep).indices.sort().values
        p = f"model.layers.{i}.mlp."
        state[p + "gate_proj.weight"] = mlp.gate_proj.weight[units].clone()
        state[p + "up_proj.weight"] = mlp.up_proj.weight[units].clone()
        state[p + "down_proj.weight"] = mlp.down_proj.weight[:, units].clone()
    out.load_state_dict(state)
    return out


def swap_vocab(model: TinyLlama, vocab: int, seed: int) -> TinyLlama:
    """Blocks kept, embeddings and lm_head re-initialised for a new tokenizer of `vocab` entries."""
    fresh = init_model(replace(model.shape, vocab=vocab), seed)
    state = {k: v for k, v in model.state_dict().items() if ".layers." in k or k == "model.norm.weight"}
    fresh.load_state_dict({**fresh.state_dict(), **state})
    return fresh


def quantise_dequantise(model: TinyLlama) -> TinyLlama:
    """Every matrix through symmetric per-row int8 and back (norm gains stay float, as int8 schemes keep them)."""
    out = clone(model)
    with torch.no_grad():
        for p in out.parameters():
            if p.dim() == 2:
                scale = p.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127.0
                p.copy_(torch.round(p / scale).clamp(-127, 127) * scale)
    return out


def merge(first: TinyLlama, second: TinyLlama, weight: float = 0.5) -> TinyLlama:
    """Element-wise weighted average of two models of the same shape (a model-soup merge)."""
    out = clone(first)
    other = second.state_dict()
    out.load_state_dict({k: weight * v + (1 - weight) * other[k] for k, v in first.state_dict().items()})
    return out


def rescale_norms(model: TinyLlama, seed: int, low: float = 0.5, high: float = 2.0) -> TinyLlama:
    """Norm gains x c per dimension, the matrices that read them / c: the same function, other numbers."""
    out = clone(model)
    gen = torch.Generator().manual_seed(seed)
    h = model.shape.hidden

    def factors():
        return low * (high / low) ** torch.rand(h, generator=gen)
    with torch.no_grad():
        for layer in out.model.layers:
            for norm, readers in NORMS_AND_READERS:
                c = factors()
                getattr(layer, norm).weight.mul_(c)
                for reader in readers:
                    module = layer.get_submodule(reader)
                    module.weight.div_(c[None, :])
        c = factors()
        out.model.norm.weight.mul_(c)
        out.lm_head.weight.div_(c[None, :])
    return out


def same_function(a: TinyLlama, b: TinyLlama, shape: Shape, seed: int = 0) -> float:
    """Max |logits difference| of two models on a random batch (to check a disguise preserved the function)."""
    ids = torch.randint(0, shape.vocab, (2, 16), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return float((a(ids) - b(ids)).abs().max())
