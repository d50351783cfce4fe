"""A tiny llama-style decoder in plain torch (RMSNorm, RoPE, grouped-query attention, SwiGLU), trained on the CPU.

Module names follow transformers' LlamaForCausalLM, so `state_dict()` keys are the llama family's tensor names;
zoo/moe.py builds its Mixtral-style sparse variant from the same blocks.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from solarforensics.families.family import load_family
from solarforensics.testing.checkpoints import tiny_config, write_shards


@dataclass(frozen=True)
class Shape:
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 128
    vocab: int = 512

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def family(self) -> str:
        return "llama"


@dataclass(frozen=True)
class MoEShape(Shape):
    """A sparse MoE shape: `intermediate` is the width of each of `experts` experts, `top_k` of them per token."""

    experts: int = 4
    top_k: int = 2

    @property
    def family(self) -> str:
        return "mixtral"


@dataclass(frozen=True)
class Schedule:
    steps: int
    lr: float
    batch: int = 8
    seq: int = 64
    data_seed: int = 0  # the order the batches are drawn in; the init seed is separate


class RMSNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)


def _rope(x, positions):
    half = x.shape[-1] // 2
    freqs = 10000.0 ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angles = positions[:, None].float() * freqs[None, :]
    cos, sin = angles.cos(), angles.sin()
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Attention(nn.Module):
    def __init__(self, s: Shape):
        super().__init__()
        self.s = s
        self.q_proj = nn.Linear(s.hidden, s.heads * s.head_dim, bias=False)
        self.k_proj = nn.Linear(s.hidden, s.kv_heads * s.head_dim, bias=False)
        self.v_proj = nn.Linear(s.hidden, s.kv_heads * s.head_dim, bias=False)
        self.o_proj = nn.Linear(s.heads * s.head_dim, s.hidden, bias=False)

    def forward(self, x):
        b, t, _ = x.shape
        s, pos = self.s, torch.arange(t, device=x.device)
        q = self.q_proj(x).view(b, t, s.heads, s.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, s.kv_heads, s.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, s.kv_heads, s.head_dim).transpose(1, 2)
        q, k = _rope(q, pos), _rope(k, pos)
        repeat = s.heads // s.kv_heads
        k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    def __init__(self, s: Shape):
        super().__init__()
        self.gate_proj = nn.Linear(s.hidden, s.intermediate, bias=False)
        self.up_proj = nn.Linear(s.hidden, s.intermediate, bias=False)
        self.down_proj = nn.Linear(s.intermediate, s.hidden, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, s: Shape):
        super().__init__()
        self.input_layernorm, self.post_attention_layernorm = RMSNorm(s.hidden), RMSNorm(s.hidden)
        self.self_attn, self.mlp = Attention(s), MLP(s)

    def forward(self, x):
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class Body(nn.Module):
    def __init__(self, s: Shape, layer: type[nn.Module] = Layer):
        super().__init__()
        self.embed_tokens = nn.Embedding(s.vocab, s.hidden)
        self.layers = nn.ModuleList(layer(s) for _ in range(s.layers))
        self.norm = RMSNorm(s.hidden)


class TinyLlama(nn.Module):
    """LlamaForCausalLM in miniature: `model.*` body and an untied `lm_head`."""

    def __init__(self, s: Shape):
        super().__init__()
        self.shape = s
        self.model = Body(s)
        self.lm_head = nn.Linear(s.hidden, s.vocab, bias=False)

    def forward(self, ids):
        x = self.model.embed_tokens(ids)
        for layer in self.model.layers:
            x = layer(x)
        return self.lm_head(self.model.norm(x))

    def logits_and_aux(self, ids):
        """Logits and the auxiliary training loss (none for a dense model; the MoE's is load balancing)."""
        return self(ids), 0.0


def new_model(s: Shape) -> nn.Module:
    """An untrained model of shape s: a TinyMoE for an MoEShape, else a TinyLlama."""
    if isinstance(s, MoEShape):
        from solarforensics.zoo.moe import TinyMoE  # moe.py builds on this module's blocks

        return TinyMoE(s)
    return TinyLlama(s)


def init_model(s: Shape, seed: int, device: str = "cpu") -> nn.Module:
    """A fresh model; every weight drawn from a generator seeded by `seed` (std 0.02, norm gains 1)."""
    torch.manual_seed(seed)
    model = new_model(s)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("norm.weight"):
                p.normal_(0.0, 0.02)
    return model.to(device)


def train(model: nn.Module, ids: torch.Tensor, sched: Schedule, device: str = "cpu",
          teacher: nn.Module | None = None, temperature: float = 2.0) -> float:
    """Next-token training for sched.steps steps (AdamW, warmup then cosine); returns the last loss.

    With a teacher, the targets are its soft logits at `temperature` (KL, scaled by T^2) instead of the next tokens."""
    gen = torch.Generator().manual_seed(sched.data_seed)
    opt = torch.optim.AdamW(model.parameters(), lr=sched.lr, weight_decay=0.0)
    warm = max(1, sched.steps // 10)
    model.train()
    loss = torch.tensor(float("nan"))
    for step in range(sched.steps):
        scale = (step + 1) / warm if step < warm else 0.5 * (1 + math.cos(math.pi * (step - warm) / sched.steps))
        for group in opt.param_groups:
            group["lr"] = sched.lr * scale
        starts = torch.randint(0, len(ids) - sched.seq - 1, (sched.batch,), generator=gen)
        batch = torch.stack([ids[i:i + sched.seq + 1] for i in starts.tolist()]).to(device)
        logits, aux = model.logits_and_aux(batch[:, :-1])
        logits = logits.reshape(-1, logits.shape[-1])
        if teacher is None:
            loss = F.cross_entropy(logits, batch[:, 1:].reshape(-1))
        else:
            with torch.no_grad():
                target = F.log_softmax(teacher(batch[:, :-1]).reshape(logits.shape) / temperature, dim=-1)
            loss = temperature ** 2 * F.kl_div(F.log_softmax(logits / temperature, dim=-1), target,
                                               reduction="batchmean", log_target=True)
        loss = loss + aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    return float(loss.detach())


def load_model(folder: str | Path, device: str = "cpu") -> nn.Module:
    """A zoo checkpoint folder back into a TinyLlama or TinyMoE (float32), as its zoo-shape.json says."""
    from safetensors.torch import load_file

    folder = Path(folder)
    fields = json.loads((folder / "zoo-shape.json").read_text(encoding="utf-8"))
    model = new_model(MoEShape(**fields) if "experts" in fields else Shape(**fields))
    state = {}
    for file in sorted(folder.glob("*.safetensors")):
        state.update({k: v.float() for k, v in load_file(str(file)).items()})
    model.load_state_dict(state)
    return model.to(device).eval()


def save_model(model: nn.Module, folder: Path, tokenizer, dtype: torch.dtype = torch.float32,
               state: dict | None = None, num_shards: int = 2) -> Path:
    """config.json (llama or mixtral field names), sharded safetensors + index, tokenizer.json and the shape file."""
    s = model.shape
    folder.mkdir(parents=True, exist_ok=True)
    overrides = {"num_layers": s.layers, "hidden_size": s.hidden, "num_heads": s.heads, "num_kv_heads": s.kv_heads,
                 "head_dim": s.head_dim, "intermediate": s.intermediate, "vocab_size": s.vocab,
                 "torch_dtype": {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}[dtype]}
    if isinstance(s, MoEShape):  # Mixtral's intermediate_size is the expert width; its flags as llama's preset
        overrides.update(moe_intermediate=overrides.pop("intermediate"), num_experts=s.experts,
                         experts_per_token=s.top_k, tie_word_embeddings=False, rms_norm_eps=1e-5)
    config = tiny_config(load_family(s.family), overrides)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (folder / "zoo-shape.json").write_text(json.dumps(asdict(s)) + "\n", encoding="utf-8")
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in (state or model.state_dict()).items()}
    write_shards(folder, tensors, num_shards)
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder
