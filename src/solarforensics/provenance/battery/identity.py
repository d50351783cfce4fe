"""Identity: exact copies found by SHA-256 of whole tensors, of rows and of fixed byte windows, and near-copies
(quantised then dequantised, or barely trained) found by a small relative L2 distance between matching tensors.

Pools are compared across all tensors read, so a row or tensor moved to another layer or name still counts.
Constant data (zero padding, untrained all-ones gains, zero biases) is left out: two independent models can share
it. Independent initialisations never share a non-constant row of bytes, so there is no p-value to compute.
"""

from __future__ import annotations

import hashlib

import torch

from solarforensics.metrics.hashing import row_hashes, shared_rows, tensor_sha256
from solarforensics.provenance.weights import ModelWeights, not_applicable, result

NAME = "identity"
WINDOW_BYTES = 4096
MIN_ROW_ELEMENTS = 8
NEAR_EQUAL_REL_L2 = 0.25  # Q4 round trips land near 0.1, light fine-tunes lower; independent pairs near 1.41
EXAMPLES = 5


def _constant(t: torch.Tensor) -> bool:
    flat = t.reshape(-1)
    return flat.numel() == 0 or bool((flat == flat[0]).all())


def _tensor_hashes(tensors: dict[str, torch.Tensor]) -> dict[str, str]:
    return {name: tensor_sha256(t) for name, t in tensors.items() if t.numel() >= MIN_ROW_ELEMENTS and not _constant(t)}


def _row_pool(tensors: list[torch.Tensor]) -> list[str]:
    pool = []
    for t in tensors:
        if t.dim() != 2 or t.shape[1] < MIN_ROW_ELEMENTS:
            continue
        varied = ~(t == t[:, :1]).all(dim=1)
        pool += [h for h, keep in zip(row_hashes(t), varied.tolist()) if keep]
    return pool


def _window_pool(tensors: list[torch.Tensor]) -> list[str]:
    pool = []
    for t in tensors:
        raw = t.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
        for start in range(0, len(raw) - WINDOW_BYTES + 1, WINDOW_BYTES):
            window = raw[start:start + WINDOW_BYTES]
            if (window.reshape(-1, t.element_size()) != window[:t.element_size()]).any():
                pool.append(hashlib.sha256(window).digest())
    return pool


def _near_equal(a: ModelWeights, b: ModelWeights) -> list[dict]:
    """Matrices at the same (role, layer) whose relative L2 distance is small, whatever their dtypes."""
    found = []
    for key, name_a in a.names.items():
        name_b = b.names.get(key)
        if name_b is None or name_a not in a.tensors or name_b not in b.tensors:
            continue
        ta, tb = a.tensors[name_a], b.tensors[name_b]
        if ta.shape != tb.shape or ta.dim() != 2 or _constant(ta):
            continue
        x, y = ta.to(torch.float64), tb.to(torch.float64)
        distance = float(torch.linalg.vector_norm(x - y) / torch.linalg.vector_norm(x).clamp_min(1e-300))
        if distance <= NEAR_EQUAL_REL_L2:
            found.append({"role": key[0], "layer": key[1], "tensor_a": name_a, "tensor_b": name_b,
                          "rel_l2": distance})
    return found


def identity_test(a: ModelWeights, b: ModelWeights) -> dict:
    """Counts of identical tensors, rows and windows, and of near-equal matrices, with examples."""
    if not a.tensors or not b.tensors:
        return not_applicable(NAME, f"no recognised tensor was read from {a.label if not a.tensors else b.label}")
    hashes_a, hashes_b = _tensor_hashes(a.tensors), _tensor_hashes(b.tensors)
    by_hash = {h: name for name, h in hashes_a.items()}
    same = [(by_hash[h], name) for name, h in hashes_b.items() if h in by_hash]
    extra_a = [a.embed_rows] if a.embed_rows is not None else []
    extra_b = [b.embed_rows] if b.embed_rows is not None else []
    rows = shared_rows(_row_pool([*a.tensors.values(), *extra_a]), _row_pool([*b.tensors.values(), *extra_b]))
    windows = shared_rows(_window_pool(list(a.tensors.values())), _window_pool(list(b.tensors.values())))
    near = _near_equal(a, b)
    statistic = {"identical_tensors": len(same), "identical_rows": rows, "identical_windows": windows,
                 "near_equal_tensors": len(near), "tensors_a": len(hashes_a), "tensors_b": len(hashes_b)}
    parts = [f"{len(same)} identical tensors", f"{rows} identical rows", f"{windows} identical {WINDOW_BYTES}-byte "
             f"windows", f"{len(near)} near-equal matrices (rel L2 <= {NEAR_EQUAL_REL_L2})"]
    return result(
        NAME, statistic=statistic, null="0 for independent initialisations (non-constant data only)",
        effect=", ".join(parts),
        notes=f"SHA-256 over every tensor read ({len(hashes_a)} in A, {len(hashes_b)} in B), their rows and windows; "
              "constant data left out",
        examples={"identical": [list(pair) for pair in same[:EXAMPLES]], "near_equal": near[:EXAMPLES]},
    )
