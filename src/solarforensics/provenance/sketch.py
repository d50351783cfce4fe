"""What a fingerprint holds and how it is computed from range reads: basis-free sketches of every decoder layer.

A model's residual stream has no canonical basis (a derivative may permute, flip or rotate it, and move scale between
norm gains and the matrices that read them), so nothing here is stored in that basis. Instead every residual-reading
matrix is seen through the same probe tokens: X̃ (the probe tokens' embedding rows, each divided by its RMS as the
first norm does) and, per layer and reader W̃ (W with its preceding norm gain folded in),

    G = X̃ W̃ᵀ W̃ X̃ᵀ   (probes x probes; output rows scaled to unit length first, per RoPE plane for q/k)

Any orthogonal map Q of the residual stream sends X̃ → X̃Q and W̃ → W̃Q and leaves G unchanged; G sums over every
output row, so head, unit and expert order do not matter either; folding the gains removes gain re-absorption; unit
rows remove per-row scaling. Probes are indexed by their surface string (probes.py), so two fingerprints compare on
the probes they share, whatever their vocabularies' ids. Beside the Grams: the probe embeddings' own Gram (to whiten
on any common subset), a leading block of MLP units in token coordinates (an exact test for undisguised copies),
per-residual-dimension signatures (for a vocabulary swap, when embeddings share nothing), and the norm gains.

Stored size is bounded by the shape, not the weights: L x (R x T(T+1)/2 + 2 x UNITS x T) half floats for the layer
sketches plus L x (R + 2) x d for signatures and gains (T probes, R readers, d hidden size).
"""

from __future__ import annotations

import math

import torch

from solarforensics.metrics.cka import u_center
from solarforensics.provenance.probes import probe_tokens
from solarforensics.provenance.weights import ModelWeights

HASHED_PROBES = 64  # bottom-k sample of the vocabulary, beside the core strings
CORE_STRINGS = [chr(c) for c in range(33, 127)]  # printable ASCII: a token in almost every vocabulary
READERS = ("k", "v", "gate", "up", "router")  # canonical reader name -> family roles below, first present wins
READER_ROLES = {"k": ("k",), "v": ("v",), "gate": ("mlp_gate", "shared_gate"), "up": ("mlp_up", "shared_up"),
                "router": ("router",)}
MAX_ROWS = 1024  # rows read per reader and layer: beyond, a leading block (whole heads for k/v)
UNITS = 64  # leading MLP units kept in token coordinates for the unit-order test


def select_probes(vocab) -> list[tuple[int, bytes, int]]:
    """(hash, surface, id): the core strings the vocabulary has, then the bottom-k hashed sample."""
    from solarforensics.provenance.probes import surface_hash

    surfaces, _ = vocab.by_surface()
    core = [(surface_hash(s.encode()), s.encode(), surfaces[s.encode()]) for s in CORE_STRINGS
            if s.encode() in surfaces]
    seen = {h for h, _, _ in core}
    hashed = [p for p in probe_tokens(vocab, HASHED_PROBES + len(core)) if p[0] not in seen][:HASHED_PROBES]
    return core + hashed


def reader_role(w: ModelWeights, reader: str, layer: int) -> str | None:
    return next((r for r in READER_ROLES[reader] if w.has(r, layer)), None)


def row_plan(w: ModelWeights) -> dict[str, list[int]]:
    """Per stored tensor, the rows to read for every layer (layer_plan of each)."""
    plan: dict[str, list[int]] = {}
    for layer in w.layers:
        plan.update(layer_plan(w, layer))
    return plan


def layer_plan(w: ModelWeights, layer: int) -> dict[str, list[int]]:
    """What one layer's sketch reads: every row of small readers, a leading block of big ones (whole heads for k/v);
    fused tensors (qkv, gate_up) whole, since their parts are split after reading; the layer's norm gains and the
    gains its readers fold (another layer's, or the embeddings', in a post-norm model)."""
    plan: dict[str, list[int]] = {}
    head_dim = w.dims.get("head_dim") or 0
    gains = [(norm, layer) for norm in ("attn_norm", "mlp_norm") if w.has(norm, layer)]
    for reader in READERS:
        role = reader_role(w, reader, layer)
        if role is None:
            continue
        gains.append(w.reading_norm(role, layer))
        name = w.stored_name(role, layer)
        rows = w.source.ref(name).shape[0]
        stored_role = w.fused_from.get((role, layer), role) if (role, layer) not in w.names else role
        if stored_role != role or stored_role in w.family.transposed:
            plan[name] = list(range(rows))
            continue
        keep = min(rows, MAX_ROWS)
        if reader in ("k", "v") and head_dim and keep < rows:
            keep = max(head_dim, keep - keep % head_dim)
        plan[name] = list(range(keep))
    for gain in filter(None, gains):
        name = w.stored_name(*gain)
        plan[name] = list(range(w.source.ref(name).shape[0]))
    return plan


def planned_bytes(w: ModelWeights, plan: dict[str, list[int]], probes: int) -> int:
    total = probes * (w.source.ref(w.stored_name("embed", None)).nbytes // w.source.ref(w.stored_name("embed", None)).shape[0])
    for name, rows in plan.items():
        ref = w.source.ref(name)
        total += len(rows) * (ref.nbytes // ref.shape[0]) if ref.shape else ref.nbytes
    return total


def rms_rows(x: torch.Tensor) -> torch.Tensor:
    """What a norm does to a row before its gain: divide by the root mean square."""
    return x / x.pow(2).mean(dim=1, keepdim=True).sqrt().clamp_min(1e-30)


def unit_rows(y: torch.Tensor, reader: str, head_dim: int | None) -> torch.Tensor:
    """Free per-row scales removed: q/k per RoPE plane (rows j and j + head_dim/2 of a head rotate together, and a
    scaled rotation per plane keeps q·k), everything else row by row."""
    tiny = torch.finfo(y.dtype).tiny
    if reader == "k" and head_dim and head_dim % 2 == 0 and y.shape[0] % head_dim == 0:
        h = y.reshape(-1, 2, head_dim // 2, y.shape[1])
        return (h / h.pow(2).sum(dim=(1, 3), keepdim=True).sqrt().clamp_min(tiny)).reshape(y.shape)
    return y / y.norm(dim=1, keepdim=True).clamp_min(tiny)


def layer_sketch(w: ModelWeights, layer: int, x: torch.Tensor, device="cpu") -> dict[str, torch.Tensor]:
    """One layer's Grams [T, T] per reader, the leading units of gate/up [UNITS, T] and signatures [d] per reader.
    Products in float32 on `device` (CPU or CUDA; what is kept is stored in half floats anyway), results in float64
    on the CPU."""
    out: dict[str, torch.Tensor] = {}
    head_dim = w.dims.get("head_dim")
    probes = x.to(device, torch.float32)
    for reader in READERS:
        role = reader_role(w, reader, layer)
        if role is None:
            continue
        folded = w.folded(role, layer, dtype=torch.float32, device=device)
        if reader in ("k", "v") and folded.shape[0] > MAX_ROWS:  # a fused tensor read whole: same rows as a split one
            keep = min(folded.shape[0], MAX_ROWS)
            folded = folded[: max(head_dim or 1, keep - keep % (head_dim or 1))]
        elif folded.shape[0] > MAX_ROWS:
            folded = folded[:MAX_ROWS]
        y = folded @ probes.T
        normed = unit_rows(y, reader, head_dim)
        out[f"gram.{reader}"] = (normed.T @ normed).to("cpu", torch.float64)
        out[f"signature.{reader}"] = folded.norm(dim=0).to("cpu", torch.float64).clamp_min(1e-300).log()
        if reader in ("gate", "up"):
            out[f"units.{reader}"] = y[:UNITS].to("cpu", torch.float64)
    for norm in ("attn_norm", "mlp_norm"):
        if w.has(norm, layer):
            out[f"gains.{norm}"] = w.gain(norm, layer)
    role = reader_role(w, "k", layer)
    if role is not None:
        out["int8_grid"] = torch.tensor([int8_grid_share(w.get(role, layer)[:64])])
    return out


def layer_signatures(w: ModelWeights, layer: int) -> dict[str, torch.Tensor]:
    """Only what needs no probe tokens (a model without a readable tokenizer): signatures per reader and gains."""
    out = {f"signature.{reader}": w.folded(role, layer).norm(dim=0).clamp_min(1e-300).log()
           for reader in READERS if (role := reader_role(w, reader, layer)) is not None}
    for norm in ("attn_norm", "mlp_norm"):
        if w.has(norm, layer):
            out[f"gains.{norm}"] = w.gain(norm, layer)
    return out


def int8_grid_share(rows: torch.Tensor) -> float:
    """Share of rows whose values all sit on a symmetric int8 grid (max |w| / 127): a quantised copy is a leaf."""
    scale = rows.abs().amax(dim=1, keepdim=True).clamp_min(1e-30) / 127
    steps = rows / scale
    return float(((steps - steps.round()).abs() < 1e-3).all(dim=1).double().mean())


def inverse_sqrt(gram: torch.Tensor) -> torch.Tensor:
    """K^-1/2 on the range of a symmetric PSD Gram: whitening by it puts rows in the orthonormal frame closest to
    them (Löwdin), the same frame whatever orthogonal map the residual stream went through."""
    values, vectors = torch.linalg.eigh(gram)
    keep = values > 1e-8 * values.max()
    return (vectors[:, keep] / values[keep].sqrt()[None, :]) @ vectors[:, keep].T


def triangle(g: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Upper triangle (diagonal included) scaled to unit maximum, as half floats, and the scale."""
    i = torch.triu_indices(g.shape[0], g.shape[0])
    values = g[i[0], i[1]]
    scale = float(values.abs().max().clamp_min(1e-300))
    return (values / scale).to(torch.float16), scale


def square(values: torch.Tensor, scale: float, n: int) -> torch.Tensor:
    """The symmetric matrix back from `triangle`."""
    i = torch.triu_indices(n, n)
    g = torch.zeros(n, n, dtype=torch.float64)
    g[i[0], i[1]] = values.to(torch.float64) * scale
    return g + g.T - torch.diag(torch.diag(g))


def stack_layers(per_layer: list[dict[str, torch.Tensor]], layers: list[int], probes: int) -> dict[str, torch.Tensor]:
    """Per-layer sketches as stored arrays: `{key}` [L, ...] half floats, a row of NaN where a layer lacks the reader;
    Gram triangles with their per-layer `scale.{reader}`."""
    keys = sorted({k for d in per_layer for k in d})
    out: dict[str, torch.Tensor] = {"layers": torch.tensor(layers, dtype=torch.int64)}
    n_tri = probes * (probes + 1) // 2
    for key in keys:
        if key.startswith("gram."):
            values, scales = [], []
            for d in per_layer:
                if key in d:
                    v, s = triangle(d[key])
                else:
                    v, s = torch.full((n_tri,), math.nan, dtype=torch.float16), math.nan
                values.append(v)
                scales.append(s)
            out[key] = torch.stack(values)
            out["scale." + key.removeprefix("gram.")] = torch.tensor(scales, dtype=torch.float64)
            continue
        shape = max((d[key].shape for d in per_layer if key in d), key=lambda s: tuple(s))
        rows = [_padded(d[key].to(torch.float32), shape) if key in d else torch.full(shape, math.nan)
                for d in per_layer]
        if key.startswith("units."):  # scaled per layer like the Grams: units in token coordinates vary in size
            rows = [r / r.abs().nan_to_num(0).max().clamp_min(1e-30) for r in rows]
        out[key] = torch.stack(rows).to(torch.float16)
    return out


def _padded(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Rows of NaN below a layer with fewer MLP units than UNITS (a small shared expert after dense layers)."""
    if t.shape == shape:
        return t
    return torch.cat([t, torch.full((shape[0] - t.shape[0], *t.shape[1:]), math.nan)])


PREFILTER_DIM = 128


def prefilter_vectors(per_layer: list[dict[str, torch.Tensor]], probes: list[tuple[int, bytes, int]],
                      x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per reader, [L, PREFILTER_DIM]: each layer's whitened, U-centred, unit Gram on the core strings, laid out in
    the fixed order of CORE_STRINGS (zeros where the model lacks one) and randomly projected with one seeded matrix
    for every model, so a dot product of two models' vectors approximates their CKA on the core strings they share.
    A scan ranks every indexed model by these before running the lean battery on the best."""
    slots = {s.encode(): i for i, s in enumerate(CORE_STRINGS)}
    core = [(i, slots[p[1]]) for i, p in enumerate(probes) if p[1] in slots]
    if len(core) < 8:
        return {}
    index = torch.tensor([c[0] for c in core])
    place = torch.tensor([c[1] for c in core])
    white = inverse_sqrt(x[index] @ x[index].T)
    n = len(CORE_STRINGS)
    projection = torch.randn(n * n, PREFILTER_DIM, generator=torch.Generator().manual_seed(20260101),
                             dtype=torch.float64) / math.sqrt(PREFILTER_DIM)
    out = {}
    for reader in READERS:
        rows = []
        for layer in per_layer:
            gram = layer.get(f"gram.{reader}")
            if gram is None:
                rows.append(torch.full((PREFILTER_DIM,), math.nan, dtype=torch.float64))
                continue
            g = u_center(white @ gram[index][:, index] @ white)
            full = torch.zeros(n, n, dtype=torch.float64)
            full[place[:, None], place[None, :]] = g
            v = full.reshape(-1) @ projection
            rows.append(v / v.norm().clamp_min(1e-300))
        if not all(torch.isnan(r).all() for r in rows):
            out[f"prefilter.{reader}"] = torch.stack(rows).to(torch.float16)
    return out
