"""Training, saving and loading the zoo's tiny models (dense from architecture.py, sparse from moe.py) on the CPU."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from solarforensics.checkpoints import tiny_config, write_shards
from solarforensics.families.family import load_family
from solarforensics.zoo.architecture import MoEShape, Shape, TinyLlama
from solarforensics.zoo.moe import TinyMoE


@dataclass(frozen=True)
class Schedule:
    steps: int
    lr: float
    batch: int = 8
    seq: int = 64
    data_seed: int = 0  # the order the batches are drawn in; the init seed is separate


def new_model(s: Shape) -> nn.Module:
    """An untrained model of shape s: a TinyMoE for an MoEShape, else a TinyLlama."""
    if isinstance(s, MoEShape):
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
