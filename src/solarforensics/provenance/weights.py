"""One model's weights as the provenance tests see them: canonical roles by layer, gains folded, residual dims aligned."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from solarforensics.families.family import Family, find_family
from solarforensics.sources.base import TensorSource

# The norm whose gain multiplies the input of each residual-reading matrix (pre-norm decoders).
PRECEDING_NORM = {"q": "attn_norm", "k": "attn_norm", "v": "attn_norm", "router": "mlp_norm",
                  "mlp_gate": "mlp_norm", "mlp_up": "mlp_norm", "shared_gate": "mlp_norm", "shared_up": "mlp_norm"}
NORMS = ("attn_norm", "mlp_norm")
ATTENTION_READERS = ("q", "k", "v")


@dataclass
class ModelWeights:
    """Tensor names by (role, layer) for the decoder layers (MTP layers left out), and the tensors once read."""

    label: str
    source: TensorSource
    family: Family
    dims: dict
    layers: list[int]
    names: dict[tuple[str, int | None], str]
    fused_from: dict[tuple[str, int | None], str] = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    embed_rows: torch.Tensor | None = None  # rows of shared tokens, in token-map order

    @classmethod
    def of(cls, label: str, source: TensorSource) -> ModelWeights:
        family = find_family(source.config, list(source.tensors))
        excluded = family.mtp_layers(source.config, list(source.tensors))
        names, fused_from, layers = {}, {}, set()
        for match in family.classify(source.tensors)[0]:
            if match.expert is not None or (match.layer is not None and match.layer in excluded):
                continue
            if match.role in family.mtp_roles:
                continue
            names[(match.role, match.layer)] = match.name
            if match.layer is not None:
                layers.add(match.layer)
            for part in family.fused[match.role].parts if match.role in family.fused else ():
                fused_from[(part, match.layer)] = match.role
        dims = family.dims(source.config)
        dims["hidden_size"] = family.hidden_from_weights(source.tensors) or dims["hidden_size"]  # weights win
        return cls(label, source, family, dims, sorted(layers), names, fused_from)

    # -- what exists ---------------------------------------------------------------------------------------------

    def has(self, role: str, layer: int | None) -> bool:
        return (role, layer) in self.names or (role, layer) in self.fused_from

    def layers_with(self, role: str) -> list[int]:
        return [layer for layer in self.layers if self.has(role, layer)]

    def stored_name(self, role: str, layer: int | None) -> str:
        """The on-disk tensor holding a role (the fused tensor for a fused part)."""
        fused = self.fused_from.get((role, layer))
        return self.names[(fused, layer)] if fused and (role, layer) not in self.names else self.names[(role, layer)]

    def names_for(self, roles, layers=None) -> list[str]:
        """Tensor names to read for these roles (all decoder layers unless given), each once."""
        wanted = self.layers if layers is None else layers
        out = []
        for role in roles:
            for layer in ([None] if (role, None) in self.names else wanted):
                if self.has(role, layer):
                    out.append(self.stored_name(role, layer))
        return list(dict.fromkeys(out))

    def names_with_gains(self, roles) -> list[str]:
        """names_for(roles) and the norms those readers read (reading_norm), which in a post-norm model belong to
        another layer (or the embeddings) than the reader."""
        out = self.names_for(roles)
        for role in roles:
            for layer in self.layers_with(role):
                norm = self.reading_norm(role, layer)
                if norm is not None:
                    out.append(self.stored_name(*norm))
        return list(dict.fromkeys(out))

    def zero_nonfinite(self, only: dict[str, torch.Tensor] | None = None) -> tuple[int, int, list[str]]:
        """Set NaN/Inf values of the held tensors (or of `only`, what one read brought) to 0 in place; (tensors,
        values, names) of what was changed. The tests need finite numbers (eigen-solvers do not converge on NaN);
        the caller reports what was replaced."""
        tensors = values = 0
        names = []
        held = list(only.items()) if only is not None else \
            [(name, t) for name, t in self.tensors.items()] + [("embedding rows", self.embed_rows)]
        for name, t in held:
            if t is None or not t.is_floating_point():
                continue
            bad = int(t.numel() - torch.isfinite(t).sum())
            if bad:
                t.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
                tensors, values = tensors + 1, values + bad
                names.append(name)
        return tensors, values, names

    @property
    def hidden(self) -> int | None:
        return self.dims.get("hidden_size")

    # -- values --------------------------------------------------------------------------------------------------

    def get(self, role: str, layer: int | None, dtype: torch.dtype = torch.float64, device="cpu") -> torch.Tensor:
        """A role's matrix in (out, in) layout, split from its fused tensor when needed, converted to `dtype`."""
        fused = self.fused_from.get((role, layer)) if (role, layer) not in self.names else None
        stored = fused or role
        t = self.tensors[self.names[(stored, layer)]].to(device, dtype)
        if stored in self.family.transposed and t.dim() == 2:
            t = t.T
        if fused is None:
            return t
        split = self.family.fused[fused]
        parts = split.parts
        if split.split == "gqa":
            head_dim = self.dims["head_dim"]
            sizes = [self.dims["num_heads"] * head_dim] + [self.dims["num_kv_heads"] * head_dim] * (len(parts) - 1)
        else:
            sizes = [t.shape[split.axis] // len(parts)] * len(parts)
        return torch.split(t, sizes, dim=split.axis)[parts.index(role)]

    def gain(self, norm: str, layer: int | None, dtype: torch.dtype = torch.float64, device="cpu") -> torch.Tensor:
        """The multiplicative gain of a norm (families storing `w` for a gain of `1 + w` have norm_offset 1)."""
        return self.get(norm, layer, dtype, device) + self.family.norm_offset

    def reading_norm(self, role: str, layer: int) -> tuple[str, int | None] | None:
        """(norm role, its layer): the norm whose gain scales what this reader reads, or None.

        Pre-norm decoders: the norm opening the block, same layer (attn_norm for q/k/v, mlp_norm for the MLP and the
        router). Post-norm encoders (BERT): a block ends with LayerNorm(x + block(x)), so the residual stream a layer's
        q/k/v read is the previous layer's closing norm output (mlp_norm of the layer before; the embeddings'
        LayerNorm, embed_norm, for the first layer), and its MLP reads the output of the same layer's attn_norm. That
        gain is what a disguise can move into the readers (scale g by s, divide the readers' columns by s), so that is
        the one folded; the norm's bias only adds a constant to the readers' output and is not folded."""
        if self.family.norm_position == "pre":
            norm = PRECEDING_NORM.get(role)
            return (norm, layer) if norm is not None and self.has(norm, layer) else None
        if role in ATTENTION_READERS:
            position = self.layers.index(layer)
            found = ("mlp_norm", self.layers[position - 1]) if position else ("embed_norm", None)
        elif PRECEDING_NORM.get(role) == "mlp_norm":
            found = ("attn_norm", layer)
        else:
            return None
        return found if self.has(*found) else None

    def folded(self, role: str, layer: int, dtype: torch.dtype = torch.float64, device="cpu") -> torch.Tensor:
        """W diag(g): the matrix with the gain of the norm it reads (reading_norm) folded in, so moving scale between
        them changes nothing."""
        w = self.get(role, layer, dtype, device)
        norm = self.reading_norm(role, layer)
        if norm is None:
            return w
        return w * self.gain(*norm, dtype, device)[None, :]

    def folded_layers(self, role: str, layers: list[int], device="cpu", batch_bytes: int = 512 << 20
                      ) -> Iterator[tuple[int, torch.Tensor]]:
        """(layer, W diag(g)) for each layer; tensors not held yet are read in batches of about `batch_bytes` and
        let go after use, so a role too big to hold for every layer at once (W_Q of a 100B model) stays bounded."""
        pending: list[int] = []
        for index, layer in enumerate(layers):
            pending.append(layer)
            missing = [n for n in self.names_for([role], pending) if n not in self.tensors]
            size = sum(self.source.ref(n).nbytes for n in missing)
            if size < batch_bytes and index + 1 < len(layers):
                continue
            self.tensors.update(self.source.read_tensors(missing))
            try:
                for done in pending:
                    yield done, self.folded(role, done, device=device)
            finally:
                for name in missing:
                    self.tensors.pop(name, None)
            pending = []


def proportional_pairs(layers_a: list[int], layers_b: list[int]) -> list[tuple[int, int]]:
    """Layer pairs at the same relative depth (the shorter model's layers each paired once): a map-free default."""
    if not layers_a or not layers_b:
        return []
    short, long_, flip = (layers_a, layers_b, False) if len(layers_a) <= len(layers_b) else (layers_b, layers_a, True)
    pairs = []
    for i, layer in enumerate(short):
        j = round(i * (len(long_) - 1) / max(len(short) - 1, 1))
        pairs.append((long_[j], layer) if flip else (layer, long_[j]))
    return pairs


def result(name: str, applicable: bool = True, *, statistic=None, null=None, p_value=None, log10_p_value=None,
           effect=None, notes: str = "", **details) -> dict:
    """One row of the results' `tests` list (the keys every test has), plus test-specific details."""
    return {"name": name, "applicable": applicable, "statistic": statistic, "null": null, "p_value": p_value,
            "log10_p_value": log10_p_value, "effect": effect, "notes": notes, **details}


def not_applicable(name: str, reason: str) -> dict:
    return result(name, False, notes=reason, reason=reason)
