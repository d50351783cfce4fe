"""Unbiased linear CKA from Gram matrices: samples are rows, features are columns; CPU or CUDA.

HSIC is the unbiased estimator of Song et al. (2012), computed as the inner product of U-centered Gram matrices
(Székely & Rizzo), so its expectation is 0 for independent representations, whatever their sizes. Linear CKA of
X [n, p] and Y [n, q] depends on X only through X Xᵀ: it is invariant to any orthogonal transform of the features
(head permutations, rotations inside heads) and works for different feature counts (different head counts).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from solarforensics.errors import SelectionError
from solarforensics.metrics.device import DeviceLike, resolve_device


def _device(device: DeviceLike) -> torch.device:
    return device if isinstance(device, torch.device) else resolve_device(device)


def u_center(gram: torch.Tensor) -> torch.Tensor:
    """The U-centered copy of a symmetric Gram matrix (n >= 4): diagonal zero, rows and columns of the rest centered."""
    n = gram.shape[0]
    if n < 4:
        raise SelectionError(f"unbiased HSIC needs at least 4 samples, got {n}")
    k = gram.clone()
    k.fill_diagonal_(0)
    rows = k.sum(dim=0)
    total = rows.sum()
    k -= rows[:, None] / (n - 2)
    k -= rows[None, :] / (n - 2)
    k += total / ((n - 1) * (n - 2))
    k.fill_diagonal_(0)
    return k


@torch.no_grad()
def u_centered_gram(features: torch.Tensor, *, device: DeviceLike = "cpu", accumulate: torch.dtype = torch.float64,
                    squared: bool = False) -> torch.Tensor:
    """U-centered Gram matrix X Xᵀ of features [n samples, p features]; `squared`: its entries squared, the kernel of
    x ⊗ x, which a sign flip of any sample leaves unchanged (for samples whose signs are unknown)."""
    x = features.to(_device(device), accumulate)
    gram = x @ x.T
    return u_center(gram * gram if squared else gram)


def hsic(ku: torch.Tensor, lu: torch.Tensor) -> float:
    """Unbiased HSIC of two U-centered Gram matrices of the same n samples."""
    n = ku.shape[0]
    return float((ku * lu).sum()) / (n * (n - 3))


def cka(x: torch.Tensor, y: torch.Tensor, *, device: DeviceLike = "cpu",
        accumulate: torch.dtype = torch.float64) -> float | None:
    """Unbiased linear CKA of two representations of the same samples; None when either has no variation."""
    if x.shape[0] != y.shape[0]:
        raise SelectionError(f"CKA needs the same samples: {x.shape[0]} rows vs {y.shape[0]}")
    ku = u_centered_gram(x, device=device, accumulate=accumulate)
    lu = u_centered_gram(y, device=device, accumulate=accumulate)
    return _normalise(hsic(ku, lu), hsic(ku, ku), hsic(lu, lu))


def _normalise(cross: float, self_a: float, self_b: float) -> float | None:
    if self_a <= 0 or self_b <= 0:
        return None  # the unbiased self-HSIC of a rank-0/1 representation can be <= 0: CKA is undefined
    return cross / math.sqrt(self_a * self_b)


@torch.no_grad()
def stack_grams(features: Iterable[torch.Tensor], *, count: int | None = None, device: DeviceLike = "cpu",
                accumulate: torch.dtype = torch.float64, squared: bool = False) -> torch.Tensor:
    """[L, n, n] U-centered Gram matrices, one per representation (all with the same n samples), filled in place:
    given a generator (and `count`), only one representation is held beside the Grams."""
    total = len(features) if count is None else count
    out = None
    for index, f in enumerate(features):
        gram = u_centered_gram(f, device=device, accumulate=accumulate, squared=squared)
        if out is None:
            out = torch.empty((total, *gram.shape), dtype=gram.dtype, device=gram.device)
        elif gram.shape != out.shape[1:]:
            raise SelectionError(f"representations have different sample counts: {out.shape[1]} and {gram.shape[0]}")
        out[index] = gram
    if out is None:
        raise SelectionError("no representations to compare")
    return out


@torch.no_grad()
def cka_matrix(grams_a: torch.Tensor, grams_b: torch.Tensor, permutation: torch.Tensor | None = None,
               block_bytes: int = 1 << 30) -> torch.Tensor:
    """[L_A, L_B] float64 CKA of every pair of U-centered Grams; `permutation` reorders B's samples first (a null draw).

    NaN where a self-HSIC is not positive. B's Grams go through in blocks of about `block_bytes` (permuted copies
    when drawing a null), so A's Grams are read once per block rather than once per layer of B."""
    n = grams_a.shape[-1]
    if grams_b.shape[-1] != n:
        raise SelectionError(f"CKA needs the same samples: {n} vs {grams_b.shape[-1]}")
    flat_a = grams_a.reshape(grams_a.shape[0], -1)
    self_a = (flat_a * flat_a).sum(dim=1)
    step = max(1, block_bytes // max(1, n * n * grams_b.element_size()))
    if permutation is not None:  # U-centering commutes with a joint reordering of samples: permute the Gram
        permutation = permutation.to(grams_b.device)
        cells = (permutation[:, None] * n + permutation[None, :]).reshape(-1)
    columns, self_b = [], []
    for first in range(0, grams_b.shape[0], step):
        flat_b = grams_b[first:first + step].reshape(-1, n * n)
        if permutation is not None:
            flat_b = flat_b.index_select(1, cells)
        columns.append(flat_a @ flat_b.T)
        self_b.append((flat_b * flat_b).sum(dim=1))
    cross, self_b = torch.cat(columns, dim=1), torch.cat(self_b)
    denominator = torch.sqrt(torch.outer(self_a, self_b))
    defined = (self_a[:, None] > 0) & (self_b[None, :] > 0)
    values = torch.where(defined, cross / torch.where(defined, denominator, torch.ones_like(denominator)),
                         torch.full_like(cross, math.nan))
    return values.to("cpu", torch.float64)
