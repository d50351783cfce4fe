"""Null distributions for similarity scores: element shuffles, joint symmetry permutations, Gaussian references."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from solarforensics.errors import SelectionError, SpecError
from solarforensics.metrics.device import DeviceLike, resolve_device
from solarforensics.metrics.stats import empirical_p, log10_p

STATISTICS = ("pearson", "cosine", "cos_minus_one")
# Elements gathered per batch of null draws (float64): bounds memory; results do not depend on it.
_BATCH_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class NullResult:
    """An observed statistic, its one-sided empirical p-value ("at least as similar") and the null's summary."""

    statistic: str
    observed: float | None
    p_value: float | None
    log10_p_value: float | None
    permutations: int  # null draws (permutations, or Gaussian draws for the reference null)
    null_mean: float | None
    null_std: float | None  # population
    null_q05: float | None
    null_q50: float | None
    null_q95: float | None
    seed: int
    pairs: int = 1  # tensor pairs whose mean statistic was tested

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _device(device: DeviceLike) -> torch.device:
    return device if isinstance(device, torch.device) else resolve_device(device)


def _finite_pair(a: torch.Tensor, b: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Both tensors flattened to float64 on `device`, pairs with a NaN/Inf on either side dropped."""
    if a.numel() != b.numel():
        raise SelectionError(f"cannot compare tensors of {a.numel()} and {b.numel()} elements",
                             "select tensors of the same size")
    x, y = a.reshape(-1).to(device, torch.float64), b.reshape(-1).to(device, torch.float64)
    keep = torch.isfinite(x) & torch.isfinite(y)
    return x[keep], y[keep]


def _unit(x: torch.Tensor, statistic: str) -> torch.Tensor | None:
    """The unit vector whose dot products give `statistic`; None when its norm is zero (statistic undefined)."""
    if statistic == "pearson":
        if not x.numel():
            return None
        z = x - x[0]  # a data value as shift: a constant vector becomes exactly zero
        z -= z.mean()
        z -= z.mean()  # second pass removes what rounding left of the mean
    elif statistic == "cosine":
        z = x.clone()
    elif statistic == "cos_minus_one":
        z = x - 1.0
    else:
        raise SpecError(f"unknown null statistic {statistic!r}", f"use one of {', '.join(STATISTICS)}")
    peak = float(z.abs().max()) if z.numel() else 0.0
    if peak == 0.0:
        return None
    z *= math.ldexp(1.0, -math.frexp(peak)[1])  # exact power-of-two scaling: the norm cannot overflow
    return z / torch.linalg.vector_norm(z)


def _summary(statistic: str, observed: float | None, null: torch.Tensor, draws: int, seed: int, pairs: int = 1):
    null = null[torch.isfinite(null)].cpu()
    if observed is None or not null.numel():
        return NullResult(statistic, observed, None, None, draws, None, None, None, None, None, seed, pairs)
    p = empirical_p(observed, null)
    q05, q50, q95 = torch.quantile(null, torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64)).tolist()
    return NullResult(statistic, observed, p, log10_p(p), draws, float(null.mean()), float(null.std(correction=0)),
                      q05, q50, q95, seed, pairs)


CROSS_MAX = 8192  # vector length up to which joint draws read an n x n cross-product matrix (8 * n^2 bytes)


def _permuted_sums(groups, permutations: int, generator: torch.Generator, joint: bool) -> torch.Tensor:
    """Per draw, the sum over pairs of za . zb[perm]; groups = [(Za[P, n], Zb[P, n])] of equal-length pairs.

    Drawn draw by draw, then group by group (pair by pair unless joint): batching cannot change them."""
    device = groups[0][0].device
    widest = max(za.shape[0] * za.shape[1] for za, _ in groups)
    batch = max(1, _BATCH_ELEMENTS // widest)
    # Joint draws over many pairs: the n x n cross products once, then n entries per draw instead of P x n products.
    cross = [za.T @ zb if joint and za.shape[0] > 1 and za.shape[1] <= CROSS_MAX else None for za, zb in groups]
    sums = []
    for first in range(0, permutations, batch):
        draws = min(batch, permutations - first)
        perms = [[] for _ in groups]
        for _ in range(draws):
            for g, (za, _) in enumerate(groups):
                count = 1 if joint else za.shape[0]
                perms[g].append(torch.stack([torch.randperm(za.shape[1], generator=generator) for _ in range(count)]))
        total = torch.zeros(draws, dtype=torch.float64, device=device)
        for g, ((za, zb), drawn) in enumerate(zip(groups, perms)):
            index = torch.stack(drawn).to(device)  # [draws, 1 or P, n]
            if joint and cross[g] is not None:  # sum_p za[p, i] zb[p, perm[i]] = M[i, perm[i]], M = za^T zb
                total += cross[g].gather(1, index[:, 0].T).sum(dim=0)
                continue
            if joint:  # one permutation for all pairs: gather whole rows of the dimensions x pairs layout
                total += (zb.T[index[:, 0]] * za.T).sum(dim=(1, 2))
                continue
            gathered = torch.gather(zb.expand(draws, *zb.shape), 2, index.expand(draws, *zb.shape))
            total += (gathered * za).sum(dim=(1, 2))
        sums.append(total)
    return torch.cat(sums)


def shuffle_null(
    a: torch.Tensor,
    b: torch.Tensor,
    statistic: str = "pearson",
    permutations: int = 1000,
    seed: int = 0,
    device: DeviceLike = "cpu",
) -> NullResult:
    """Permute the elements of b `permutations` times (seeded, on CPU) -> p = (1 + #{null >= observed}) / (B + 1)."""
    return aggregate_shuffle_null([(a, b)], statistic, permutations, seed, joint=True, device=device)


@torch.no_grad()
def aggregate_shuffle_null(
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
    statistic: str = "pearson",
    permutations: int = 1000,
    seed: int = 0,
    joint: bool = True,
    device: DeviceLike = "cpu",
) -> NullResult:
    """Mean statistic over pairs vs a permutation null of the b's; joint=True draws ONE permutation per length per draw
    (the residual-dimension symmetry of norm gains), so layers are not independent. Undefined pairs are left out."""
    if permutations < 1:
        raise SpecError(f"permutations must be at least 1, got {permutations}")
    dev = _device(device)
    by_length: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for a, b in pairs:
        za, zb = (_unit(v, statistic) for v in _finite_pair(a, b, dev))
        if za is not None and zb is not None:
            by_length.setdefault(za.numel(), []).append((za, zb))
    groups = [(torch.stack([p[0] for p in g]), torch.stack([p[1] for p in g])) for _, g in sorted(by_length.items())]
    used = sum(za.shape[0] for za, _ in groups)
    if not used:
        return _summary(statistic, None, torch.empty(0), permutations, seed, 0)
    observed = float(sum((za * zb).sum() for za, zb in groups)) / used
    generator = torch.Generator().manual_seed(seed)
    null = _permuted_sums(groups, permutations, generator, joint) / used
    return _summary(statistic, observed, null, permutations, seed, used)


@torch.no_grad()
def shuffle_nulls(
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
    statistic: str = "pearson",
    permutations: int = 1000,
    seed: int = 0,
    device: DeviceLike = "cpu",
) -> list[NullResult]:
    """`shuffle_null` for many pairs at once: one seeded set of permutations per vector length serves every pair of
    that length. Each pair's p-value is exactly as valid as alone (its permutations are uniform); the p-values are
    correlated across pairs, so never combine them as if independent."""
    if permutations < 1:
        raise SpecError(f"permutations must be at least 1, got {permutations}")
    dev = _device(device)
    units = []
    for a, b in pairs:
        za, zb = (_unit(v, statistic) for v in _finite_pair(a, b, dev))
        units.append(None if za is None or zb is None else (za, zb))
    by_length: dict[int, list[int]] = {}
    for index, unit in enumerate(units):
        if unit is not None:
            by_length.setdefault(unit[0].numel(), []).append(index)
    nulls: dict[int, torch.Tensor] = {}
    for n, members in by_length.items():
        # dimensions x pairs, so that permuting the dimensions gathers whole contiguous rows; float32 is plenty for
        # null draws of unit vectors (the observed value stays float64) and halves the memory traffic
        za = torch.stack([units[i][0] for i in members], dim=1).float()
        zb = torch.stack([units[i][1] for i in members], dim=1).float()
        generator = torch.Generator().manual_seed(seed)
        perms = torch.stack([torch.randperm(n, generator=generator) for _ in range(permutations)]).to(dev)
        drawn = torch.empty((len(members), permutations), dtype=torch.float64, device=dev)
        step = max(1, _BATCH_ELEMENTS // (n * len(members)))
        for first in range(0, permutations, step):  # each gather serves every pair of this length
            block = zb[perms[first : first + step]]  # [draws, n, pairs]
            drawn[:, first : first + step] = (block * za).sum(dim=1).T.double()
        nulls.update({i: drawn[row] for row, i in enumerate(members)})
    return [
        _summary(statistic, None, torch.empty(0), permutations, seed) if unit is None
        else _summary(statistic, float(unit[0] @ unit[1]), nulls[i], permutations, seed)
        for i, unit in enumerate(units)
    ]


def _row_cos(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x * y).sum(dim=1) / (torch.linalg.vector_norm(x, dim=1) * torch.linalg.vector_norm(y, dim=1))


@torch.no_grad()
def reference_null_norm_gains(
    a: torch.Tensor,
    b: torch.Tensor,
    draws: int = 1000,
    seed: int = 0,
    device: DeviceLike = "cpu",
) -> dict[str, NullResult]:
    """Cosine and Pearson of independent Gaussian vectors with a's and b's mean and std, beside the observed ones:
    how high the raw cosine of unrelated all-positive vectors runs. p = share of draws at least as similar (+1)."""
    if draws < 1:
        raise SpecError(f"draws must be at least 1, got {draws}")
    dev = _device(device)
    x, y = _finite_pair(a, b, dev)
    n = x.numel()
    observed = {}
    for name in ("cosine", "pearson"):
        ux, uy = _unit(x, name), _unit(y, name)
        observed[name] = None if ux is None or uy is None else float(ux @ uy)
    if n == 0:
        return {name: _summary(name, None, torch.empty(0), draws, seed) for name in observed}
    mean_x, std_x = float(x.mean()), float(x.std(correction=0))
    mean_y, std_y = float(y.mean()), float(y.std(correction=0))
    generator = torch.Generator().manual_seed(seed)
    batch = max(1, _BATCH_ELEMENTS // (2 * n))
    cosines, pearsons = [], []
    for first in range(0, draws, batch):
        noise = torch.randn(min(batch, draws - first), 2, n, generator=generator, dtype=torch.float64).to(dev)
        gx, gy = mean_x + std_x * noise[:, 0], mean_y + std_y * noise[:, 1]
        cosines.append(_row_cos(gx, gy))
        pearsons.append(_row_cos(gx - gx.mean(dim=1, keepdim=True), gy - gy.mean(dim=1, keepdim=True)))
    return {
        "cosine": _summary("cosine", observed["cosine"], torch.cat(cosines), draws, seed),
        "pearson": _summary("pearson", observed["pearson"], torch.cat(pearsons), draws, seed),
    }
