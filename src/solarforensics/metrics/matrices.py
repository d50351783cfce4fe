"""Row-by-row and layer-by-layer comparisons: per-row cosines, L_A x L_B cosine matrices, diagonal dominance."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from solarforensics.errors import SelectionError
from solarforensics.metrics.device import DeviceLike, resolve_device
from solarforensics.metrics.similarity import MAX_SCALE_EXPONENT, corr_from_moments, needs_scaling


@dataclass(frozen=True)
class RowStats:
    """Per-row cosine and Pearson of two equally shaped tensors (rows = first dimension); NaN where undefined."""

    cosine: torch.Tensor  # float64, CPU, one value per row
    pearson: torch.Tensor

    def as_dict(self) -> dict:
        return {name: [None if math.isnan(v) else v for v in t.tolist()]
                for name, t in (("cosine", self.cosine), ("pearson", self.pearson))}


def _as_rows(t: torch.Tensor) -> torch.Tensor:
    """[rows, everything else]: the first dimension indexes rows (a 1-D tensor is rows of one element)."""
    return t.reshape(t.shape[0], math.prod(t.shape[1:])) if t.dim() else t.reshape(1, 1)


def _pow2_scales(peaks: torch.Tensor) -> torch.Tensor:
    """[rows, 1]: per row, the power of two that brings its peak near 1 (multiplying by it is exact)."""
    exponents = torch.frexp(peaks).exponent.clamp(-MAX_SCALE_EXPONENT, MAX_SCALE_EXPONENT)
    return torch.ldexp(torch.ones_like(peaks), -exponents)[:, None]


def _row_scale_(x: torch.Tensor) -> None:
    """Divide each row by a power of two near its peak, in place (exact), so squares cannot overflow."""
    x.mul_(_pow2_scales(x.abs().amax(dim=1)))


@torch.no_grad()
def pair_stats_rows(
    a2d: torch.Tensor,
    b2d: torch.Tensor,
    *,
    device: DeviceLike = "cpu",
    accumulate: torch.dtype = torch.float64,
    chunk_elements: int = 1 << 24,
) -> RowStats:
    """Cosine and Pearson of row i of a with row i of b, for every row, a few rows at a time."""
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    if a2d.shape != b2d.shape:
        raise SelectionError(f"cannot compare rows of shapes {tuple(a2d.shape)} and {tuple(b2d.shape)}",
                             "select tensors of the same shape")
    a, b = _as_rows(a2d), _as_rows(b2d)
    rows, width = a.shape
    scaled = needs_scaling(a.dtype, accumulate) or needs_scaling(b.dtype, accumulate)
    step = max(1, chunk_elements // max(width, 1))
    cosines, pearsons = [], []
    for r0 in range(0, rows, step):
        x = a[r0:r0 + step].to(dev, accumulate, copy=True)
        y = b[r0:r0 + step].to(dev, accumulate, copy=True)
        moments = []
        for t in (x, y):
            if scaled and width:
                _row_scale_(t)
            shift = t[:, :1].clone() if width else torch.zeros_like(t[:, :1])
            t.sub_(shift)
            first_mean = t.sum(dim=1) / max(width, 1)
            t.sub_(first_mean[:, None])
            residual = t.sum(dim=1)
            moments.append((shift[:, 0] + (first_mean + residual / max(width, 1)), residual))
        (ux, rx), (uy, ry) = moments
        m2x = (x * x).sum(dim=1) - rx * rx / max(width, 1)
        m2y = (y * y).sum(dim=1) - ry * ry / max(width, 1)
        cxy = (x * y).sum(dim=1) - rx * ry / max(width, 1)
        zero = torch.zeros_like(ux)
        cosines.append(corr_from_moments(float(width), ux, uy, m2x, m2y, cxy).double().cpu())
        pearsons.append(corr_from_moments(float(width), zero, zero, m2x, m2y, cxy).double().cpu())
    empty = torch.empty(0, dtype=torch.float64)
    return RowStats(torch.cat(cosines) if cosines else empty, torch.cat(pearsons) if pearsons else empty)


@torch.no_grad()
def cosine_matrix(
    vectors_a: torch.Tensor,
    vectors_b: torch.Tensor,
    centered: bool,
    *,
    device: DeviceLike = "cpu",
    chunk_elements: int = 1 << 24,
) -> torch.Tensor:
    """[La, Lb] float64 matrix of cos(a_i, b_j) (Pearson if centered), streamed over columns; NaN where undefined."""
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    a, b = _as_rows(vectors_a), _as_rows(vectors_b)
    if a.shape[1] != b.shape[1]:
        raise SelectionError(f"cannot compare vectors of {a.shape[1]} and {b.shape[1]} elements",
                             "select tensors of the same size per layer")
    width = a.shape[1]
    step = max(1, chunk_elements // max(a.shape[0] + b.shape[0], 1))
    f64 = torch.float64

    def pieces(t: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor):
        for c0 in range(0, width, step):
            yield t[:, c0:c0 + step].to(dev, f64) * scale - offset

    scales, offsets = [], []
    for t in (a, b):
        scale = torch.ones((t.shape[0], 1), dtype=f64, device=dev)
        if needs_scaling(t.dtype, f64) and width:
            peaks = torch.stack([p.abs().amax(dim=1) for p in pieces(t, scale, 0.0)]).amax(dim=0)
            scale = _pow2_scales(peaks)
        offset = torch.zeros_like(scale)
        if centered and width:
            shift = t[:, :1].to(dev, f64) * scale
            total = sum(p.sum(dim=1, keepdim=True) for p in pieces(t, scale, shift))
            offset = shift + total / width
        scales.append(scale)
        offsets.append(offset)
    gram = torch.zeros((a.shape[0], b.shape[0]), dtype=f64, device=dev)
    sq_a, sq_b = torch.zeros(a.shape[0], dtype=f64, device=dev), torch.zeros(b.shape[0], dtype=f64, device=dev)
    sum_a, sum_b = torch.zeros_like(sq_a), torch.zeros_like(sq_b)
    for pa, pb in zip(pieces(a, scales[0], offsets[0]), pieces(b, scales[1], offsets[1])):
        gram += pa @ pb.T
        sq_a += (pa * pa).sum(dim=1)
        sq_b += (pb * pb).sum(dim=1)
        sum_a += pa.sum(dim=1)
        sum_b += pb.sum(dim=1)
    if centered and width:
        # Residual sums are ~0 after centring; removing them is the second half of the corrected two-pass formula.
        gram -= torch.outer(sum_a, sum_b) / width
        sq_a -= sum_a * sum_a / width
        sq_b -= sum_b * sum_b / width
    norm_a, norm_b = sq_a.clamp_min(0).sqrt(), sq_b.clamp_min(0).sqrt()
    matrix = (gram / norm_a[:, None] / norm_b[None, :]).clamp(-1.0, 1.0)
    defined = (norm_a[:, None] > 0) & (norm_b[None, :] > 0)
    return torch.where(defined, matrix, torch.full_like(matrix, math.nan)).cpu()


def diagonal_dominance(matrix: torch.Tensor) -> dict:
    """How strongly the diagonal (i, i), i < min(La, Lb), stands out of its rows and columns; NaN cells are ignored."""
    m = matrix.detach().to("cpu", torch.float64)
    rows, cols = m.shape
    k = min(rows, cols)
    if k == 0:
        return {"shape": [rows, cols], "n_diagonal": 0, "diagonal_mean": None, "off_diagonal_mean": None,
                "diagonal_row_max_fraction": None, "margins": [], "margin_mean": None, "margin_min": None}
    finite = torch.isfinite(m)
    on_diagonal = torch.eye(rows, cols, dtype=torch.bool)
    others = torch.where(finite & ~on_diagonal, m, torch.full_like(m, -math.inf))
    row_best, col_best = others.max(dim=1).values[:k], others.max(dim=0).values[:k]
    diagonal = m.diagonal()[:k]
    margins = diagonal - torch.maximum(row_best, col_best)
    diag_ok = torch.isfinite(diagonal)
    off_values = m[finite & ~on_diagonal]

    def mean(t: torch.Tensor) -> float | None:
        return float(t.mean()) if t.numel() else None

    margin_values = margins[torch.isfinite(margins)]
    return {
        "shape": [rows, cols],
        "n_diagonal": k,
        "diagonal_mean": mean(diagonal[diag_ok]),
        "off_diagonal_mean": mean(off_values),
        # strict: a tie with another cell of the row does not count as the diagonal being the maximum
        "diagonal_row_max_fraction": mean((diagonal[diag_ok] > row_best[diag_ok]).double()),
        "margins": [float(v) if math.isfinite(v) else None for v in margins.tolist()],
        "margin_mean": mean(margin_values),
        "margin_min": float(margin_values.min()) if margin_values.numel() else None,
    }
