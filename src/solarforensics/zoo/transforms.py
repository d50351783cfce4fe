"""Derivations (a model made from another's weights) and disguises (function-preserving re-parameterisations)."""

from __future__ import annotations

import copy
from dataclasses import replace

import torch
from torch import nn

from solarforensics.zoo.architecture import Shape, TinyLlama
from solarforensics.zoo.train import init_model


def _mlp_readers_writers(layer: nn.Module) -> tuple[list[nn.Linear], list[nn.Linear]]:
    """The MLP matrices that read the residual stream and those that write to it, dense or MoE."""
    if hasattr(layer, "block_sparse_moe"):
        moe = layer.block_sparse_moe
        return [moe.gate] + [m for e in moe.experts for m in (e.w1, e.w3)], [e.w2 for e in moe.experts]
    return [layer.mlp.gate_proj, layer.mlp.up_proj], [layer.mlp.down_proj]


def _norms_and_readers(layer: nn.Module) -> list[tuple[nn.Module, list[nn.Linear]]]:
    """Each pre-norm of a layer with the matrices that read its output."""
    attn = layer.self_attn
    return [(layer.input_layernorm, [attn.q_proj, attn.k_proj, attn.v_proj]),
            (layer.post_attention_layernorm, _mlp_readers_writers(layer)[0])]


def clone(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)


def depth_upscale(model: nn.Module, order: list[int]) -> nn.Module:
    """A deeper model (dense or MoE) whose layer i is a copy of the parent's layer order[i] (SOLAR-style depth
    up-scaling)."""
    out = type(model)(replace(model.shape, layers=len(order)))
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


def rescale_norms(model: nn.Module, seed: int, low: float = 0.5, high: float = 2.0) -> TinyLlama:
    """Norm gains x c per dimension, the matrices that read them / c: the same function, other numbers."""
    out = clone(model)
    gen = torch.Generator().manual_seed(seed)
    h = model.shape.hidden

    def factors():
        return low * (high / low) ** torch.rand(h, generator=gen)
    with torch.no_grad():
        for layer in out.model.layers:
            for norm, readers in _norms_and_readers(layer):
                c = factors()
                norm.weight.mul_(c)
                for reader in readers:
                    reader.weight.div_(c[None, :])
        c = factors()
        out.model.norm.weight.mul_(c)
        out.lm_head.weight.div_(c[None, :])
    return out


def same_function(a: nn.Module, b: nn.Module, shape: Shape, seed: int = 0) -> float:
    """Max |logits difference| of two models on a random batch (to check a disguise preserved the function)."""
    ids = torch.randint(0, shape.vocab, (2, 16), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return float((a(ids) - b(ids)).abs().max())


def fold_norms(model: nn.Module) -> nn.Module:
    """Every norm gain multiplied into the matrices that read it (the final one into lm_head), gains set to 1."""
    out = clone(model)
    with torch.no_grad():
        pairs = [pair for layer in out.model.layers for pair in _norms_and_readers(layer)]
        for norm, readers in pairs + [(out.model.norm, [out.lm_head])]:
            for reader in readers:
                reader.weight.mul_(norm.weight[None, :])
            norm.weight.fill_(1.0)
    return out


def random_orthogonal(n: int, seed: int) -> torch.Tensor:
    """A Haar-random n x n orthogonal matrix (float64): QR of a Gaussian, signs fixed by R's diagonal."""
    gen = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))[None, :]


def rotate_residual(model: nn.Module, seed: int) -> nn.Module:
    """The residual stream turned by a random orthogonal Q after folding the norm gains: the same function.

    Embeddings become E Q, readers W Q, writers (o_proj, down/w2) Q^T W; a unit-gain RMSNorm commutes with Q."""
    out = fold_norms(model)
    q = random_orthogonal(model.shape.hidden, seed)

    def turn(module: nn.Module, reads: bool) -> None:
        w = module.weight.double()
        module.weight.copy_((w @ q if reads else q.T @ w).to(module.weight.dtype))
    with torch.no_grad():
        turn(out.model.embed_tokens, reads=True)
        turn(out.lm_head, reads=True)
        for layer in out.model.layers:
            readers, writers = _mlp_readers_writers(layer)
            attn = layer.self_attn
            for module in [attn.q_proj, attn.k_proj, attn.v_proj, *readers]:
                turn(module, reads=True)
            for module in [attn.o_proj, *writers]:
                turn(module, reads=False)
    return out


def _head_rows(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    """The rows of a q/k/v projection (or columns of o_proj) that belong to `heads`, head by head."""
    return (heads[:, None] * head_dim + torch.arange(head_dim)[None, :]).reshape(-1)


def permute_heads_and_units(model: nn.Module, seed: int) -> nn.Module:
    """KV groups permuted with their query heads, query heads permuted within each group (o_proj columns follow),
    and the MLP's hidden units permuted (gate/up rows, down columns; per expert in an MoE): the same function."""
    out = clone(model)
    s, gen = model.shape, torch.Generator().manual_seed(seed)
    per_group = s.heads // s.kv_heads
    with torch.no_grad():
        for layer in out.model.layers:
            attn = layer.self_attn
            groups = torch.randperm(s.kv_heads, generator=gen)  # new group g = old group groups[g]
            heads = torch.cat([g * per_group + torch.randperm(per_group, generator=gen) for g in groups.tolist()])
            q_rows, kv_rows = _head_rows(heads, s.head_dim), _head_rows(groups, s.head_dim)
            attn.q_proj.weight.copy_(attn.q_proj.weight[q_rows])
            attn.k_proj.weight.copy_(attn.k_proj.weight[kv_rows])
            attn.v_proj.weight.copy_(attn.v_proj.weight[kv_rows])
            attn.o_proj.weight.copy_(attn.o_proj.weight[:, q_rows])
            mlps = ([(layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj)] if hasattr(layer, "mlp") else
                    [(e.w1, e.w3, e.w2) for e in layer.block_sparse_moe.experts])
            for gate, up, down in mlps:
                units = torch.randperm(gate.weight.shape[0], generator=gen)
                gate.weight.copy_(gate.weight[units])
                up.weight.copy_(up.weight[units])
                down.weight.copy_(down.weight[:, units])
    return out


def scale_attention(model: nn.Module, seed: int, low: float = 0.5, high: float = 2.0) -> nn.Module:
    """Per KV group, q x c and k / c (RoPE and the scores unchanged); v x d per dimension and o_proj's columns / d."""
    out = clone(model)
    s, gen = model.shape, torch.Generator().manual_seed(seed)
    per_group, d = s.heads // s.kv_heads, s.head_dim
    with torch.no_grad():
        for layer in out.model.layers:
            attn = layer.self_attn
            c = low * (high / low) ** torch.rand(s.kv_heads, generator=gen)
            v = low * (high / low) ** torch.rand(s.kv_heads, d, generator=gen)
            attn.q_proj.weight.mul_(c.repeat_interleave(per_group * d)[:, None])
            attn.k_proj.weight.div_(c.repeat_interleave(d)[:, None])
            attn.v_proj.weight.mul_(v.reshape(-1)[:, None])
            attn.o_proj.weight.div_(v.repeat_interleave(per_group, dim=0).reshape(-1)[None, :])
    return out
