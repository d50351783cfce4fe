"""A tiny Mixtral-style sparse MoE decoder (the dense model's attention and norms, a routed SwiGLU expert MLP),
sparse upcycling of a dense model into it, and the expert-relabelling disguise.

Module names follow transformers' MixtralForCausalLM (block_sparse_moe.gate, experts.E.w1/w3/w2), so
`state_dict()` keys are the mixtral family's tensor names.
"""

from __future__ import annotations

import copy
from dataclasses import asdict

import torch
from torch import nn
from torch.nn import functional as F

from solarforensics.zoo.architecture import Attention, Body, MoEShape, RMSNorm, TinyLlama

BALANCE_WEIGHT = 0.01  # Switch Transformer's coefficient for the load-balancing loss


class Expert(nn.Module):
    """One SwiGLU expert: w1 = gate, w3 = up, w2 = down (Mixtral's names)."""

    def __init__(self, hidden: int, width: int):
        super().__init__()
        self.w1 = nn.Linear(hidden, width, bias=False)
        self.w3 = nn.Linear(hidden, width, bias=False)
        self.w2 = nn.Linear(width, hidden, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class SparseMoE(nn.Module):
    """Softmax router, top-k experts per token with their weights renormalised to sum to 1."""

    def __init__(self, s: MoEShape):
        super().__init__()
        self.top_k = s.top_k
        self.gate = nn.Linear(s.hidden, s.experts, bias=False)
        self.experts = nn.ModuleList(Expert(s.hidden, s.intermediate) for _ in range(s.experts))

    def forward(self, x):
        """The mixed expert outputs and the load-balancing loss (experts x sum of routed share x mean probability)."""
        probs = F.softmax(self.gate(x), dim=-1)
        top, chosen = probs.topk(self.top_k, dim=-1)
        weights = torch.zeros_like(probs).scatter(-1, chosen, top / top.sum(-1, keepdim=True))
        # Every expert runs on every token and unchosen ones get weight 0: at these widths a dense pass is cheaper
        # than gathering tokens, and the gradients are the same.
        out = sum(weights[..., e, None] * expert(x) for e, expert in enumerate(self.experts))
        routed = torch.zeros_like(probs).scatter(-1, chosen, 1.0).flatten(0, -2).mean(0) / self.top_k
        balance = len(self.experts) * (routed * probs.flatten(0, -2).mean(0)).sum()
        return out, balance


class MoELayer(nn.Module):
    def __init__(self, s: MoEShape):
        super().__init__()
        self.input_layernorm, self.post_attention_layernorm = RMSNorm(s.hidden), RMSNorm(s.hidden)
        self.self_attn, self.block_sparse_moe = Attention(s), SparseMoE(s)

    def forward(self, x):
        x = x + self.self_attn(self.input_layernorm(x))
        out, balance = self.block_sparse_moe(self.post_attention_layernorm(x))
        return x + out, balance


class TinyMoE(nn.Module):
    """MixtralForCausalLM in miniature: `model.*` body with a sparse MoE MLP in every layer, untied `lm_head`."""

    def __init__(self, s: MoEShape):
        super().__init__()
        self.shape = s
        self.model = Body(s, MoELayer)
        self.lm_head = nn.Linear(s.hidden, s.vocab, bias=False)

    def logits_and_aux(self, ids):
        """Logits and the load-balancing loss averaged over layers, x BALANCE_WEIGHT."""
        x, balance = self.model.embed_tokens(ids), 0.0
        for layer in self.model.layers:
            x, b = layer(x)
            balance = balance + b
        return self.lm_head(self.model.norm(x)), BALANCE_WEIGHT * balance / len(self.model.layers)

    def forward(self, ids):
        return self.logits_and_aux(ids)[0]


def upcycle(dense: TinyLlama, experts: int = 4, top_k: int = 2, seed: int = 0, noise: float = 0.0) -> TinyMoE:
    """Sparse upcycling: every expert a copy of the dense MLP (+ noise x its std), a fresh router, the rest copied.

    With noise 0 the MoE computes the dense model's function: identical experts and top-k weights summing to 1."""
    moe = TinyMoE(MoEShape(**asdict(dense.shape), experts=experts, top_k=top_k))
    state = {k: v.clone() for k, v in dense.state_dict().items() if ".mlp." not in k}
    gen = torch.Generator().manual_seed(seed)
    for i, layer in enumerate(dense.model.layers):
        prefix = f"model.layers.{i}.block_sparse_moe."
        state[prefix + "gate.weight"] = 0.02 * torch.randn(experts, dense.shape.hidden, generator=gen)
        for e in range(experts):
            for name, matrix in (("w1", layer.mlp.gate_proj), ("w3", layer.mlp.up_proj), ("w2", layer.mlp.down_proj)):
                w = matrix.weight.detach()
                jitter = noise * float(w.std()) * torch.randn(w.shape, generator=gen) if noise else 0.0
                state[f"{prefix}experts.{e}.{name}.weight"] = (w + jitter).clone()
    moe.load_state_dict(state)
    return moe.to(dense.lm_head.weight.device).eval()


def permute_experts(model: TinyMoE, seed: int) -> TinyMoE:
    """Experts relabelled per layer and the router's rows permuted with them: the same function, other numbers."""
    out = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in out.model.layers:
            moe = layer.block_sparse_moe
            order = torch.randperm(len(moe.experts), generator=gen).tolist()  # new expert i = old expert order[i]
            moe.gate.weight.copy_(moe.gate.weight[order])
            moe.experts = nn.ModuleList(moe.experts[j] for j in order)
    return out
