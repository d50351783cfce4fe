"""Similarity of tensor pairs, streamed in bounded memory: cosines, Pearson, Spearman, differences, equality.

Numerics: each block is shifted by one of its own values and centred in two passes; blocks merge by Chan's
co-moment update; a mean is kept as (data value + small residual) so cos(a - 1, b - 1) stays exact near 1.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from solarforensics.errors import SelectionError, SpecError
from solarforensics.metrics.device import DeviceLike, dtype_name, resolve_device

# A CPU block makes ~12 passes over its data; at this size they run from the L2/L3 cache, not from RAM.
CPU_BLOCK_ELEMENTS = 1 << 18
# Power-of-two scale exponents stay in this range so that 2**-e is a normal float64.
MAX_SCALE_EXPONENT = 1000


@dataclass(frozen=True)
class PairStats:
    """Element-wise comparison of two equally sized tensors; None where a value is undefined (zero norm or variance)."""

    n: int  # elements in each tensor
    n_used: int  # pairs where both values are finite; every statistic but equal_fraction uses only these
    cosine: float | None
    pearson: float | None  # centred cosine: cos(a - mean a, b - mean b)
    cos_minus_one: float | None  # cos(a - 1, b - 1), the variant one public analysis called "centered"
    spearman: float | None
    spearman_sampled: bool  # True when Spearman ran on a seeded subsample of the positions
    mad: float | None  # mean |a - b|
    max_abs_diff: float | None
    rel_l2: float | None  # ||a - b|| / ||a||
    equal_fraction: float | None  # exactly equal elements (value equality in the original dtypes) / n
    equal_count: int
    nonfinite_a: int
    nonfinite_b: int
    mean_a: float | None
    std_a: float | None  # population standard deviation
    mean_b: float | None
    std_b: float | None
    accumulation_dtype: str
    chunks: int  # blocks streamed through the device

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class _Moments:
    """Mergeable sums of one stretch of pairs, in units of 2**ex (x), 2**ey (y) and 2**ed (x - y)."""

    n: int = 0
    ex: int = 0
    ey: int = 0
    ed: int = 0
    hx: float = 0.0  # a data value; the mean of x is hx + lx, so x - 1 near 1 loses nothing to rounding
    hy: float = 0.0
    lx: float = 0.0
    ly: float = 0.0
    m2x: float = 0.0  # sum of squared deviations from the mean
    m2y: float = 0.0
    cxy: float = 0.0  # sum of co-deviations
    sabs: float = 0.0  # sum |x - y|
    ssq: float = 0.0  # sum (x - y)**2
    maxd: float = 0.0
    equal: int = 0
    nfa: int = 0
    nfb: int = 0
    blocks: int = 0

    def rescaled(self, ex: int, ey: int, ed: int) -> _Moments:
        """The same sums in coarser units (exponents only grow, so ldexp loses nothing but underflow)."""
        if (ex, ey, ed) == (self.ex, self.ey, self.ed):
            return self
        sx, sy, sd = self.ex - ex, self.ey - ey, self.ed - ed
        return dataclasses.replace(
            self, ex=ex, ey=ey, ed=ed,
            hx=math.ldexp(self.hx, sx), lx=math.ldexp(self.lx, sx), m2x=math.ldexp(self.m2x, 2 * sx),
            hy=math.ldexp(self.hy, sy), ly=math.ldexp(self.ly, sy), m2y=math.ldexp(self.m2y, 2 * sy),
            cxy=math.ldexp(self.cxy, sx + sy),
            sabs=math.ldexp(self.sabs, sd), ssq=math.ldexp(self.ssq, 2 * sd), maxd=math.ldexp(self.maxd, sd),
        )


def _merge(s: _Moments, b: _Moments) -> _Moments:
    """Chan et al.'s pairwise update of means and co-moments, plus the plain sums and counts."""
    counts = dict(equal=s.equal + b.equal, nfa=s.nfa + b.nfa, nfb=s.nfb + b.nfb, blocks=s.blocks + b.blocks)
    if b.n == 0 or s.n == 0:
        return dataclasses.replace(b if s.n == 0 else s, **counts)
    ex, ey, ed = max(s.ex, b.ex), max(s.ey, b.ey), max(s.ed, b.ed)
    s, b = s.rescaled(ex, ey, ed), b.rescaled(ex, ey, ed)
    total = s.n + b.n
    weight = s.n * b.n / total
    dx = (b.hx - s.hx) + (b.lx - s.lx)
    dy = (b.hy - s.hy) + (b.ly - s.ly)
    return _Moments(
        n=total, ex=ex, ey=ey, ed=ed, hx=s.hx, hy=s.hy,
        lx=s.lx + dx * (b.n / total), ly=s.ly + dy * (b.n / total),
        m2x=s.m2x + b.m2x + dx * dx * weight, m2y=s.m2y + b.m2y + dy * dy * weight,
        cxy=s.cxy + b.cxy + dx * dy * weight,
        sabs=s.sabs + b.sabs, ssq=s.ssq + b.ssq, maxd=max(s.maxd, b.maxd), **counts,
    )


def _exponent(peak: float) -> int:
    """Power of two that brings `peak` to [0.5, 1), clamped. An all-zero block gets the smallest exponent, so merging
    it never coarsens the units of a block of tiny values (which would underflow their squares); 0 if non-finite."""
    if peak == 0.0:
        return -MAX_SCALE_EXPONENT
    if not math.isfinite(peak):
        return 0
    return max(-MAX_SCALE_EXPONENT, min(MAX_SCALE_EXPONENT, math.frexp(peak)[1]))


def _upcast_is_exact(src: torch.dtype, acc: torch.dtype) -> bool:
    """Whether every value of `src` is represented exactly in `acc` (so equality survives the conversion)."""
    if src in (acc, torch.bool):
        return True
    target = torch.finfo(acc)
    if not src.is_floating_point:
        info = torch.iinfo(src)
        return max(-info.min, info.max) <= 2 ** round(1 - math.log2(target.eps))
    s = torch.finfo(src)
    return (s.eps >= target.eps and s.max <= target.max
            and s.smallest_normal * s.eps >= target.smallest_normal * target.eps)


def needs_scaling(src: torch.dtype, acc: torch.dtype) -> bool:
    """Whether squares of `src` values (summed over up to 2**40 terms) could overflow or underflow in `acc`."""
    target = torch.finfo(acc)
    if src == torch.bool:
        return False
    if src.is_floating_point:
        s = torch.finfo(src)
        top, bottom = math.log2(s.max), math.log2(s.smallest_normal * s.eps)
    else:
        info = torch.iinfo(src)
        top, bottom = math.log2(max(-info.min, info.max)), 0.0
    return 2 * top + 40 > math.log2(target.max) or 2 * bottom < math.log2(target.smallest_normal)


def _block_moments(buf: torch.Tensor, k: int, scaled: bool) -> list[float]:
    """Raw sums of rows 0 (x) and 1 (y) of buf[:, :k] (row 2 is scratch); non-finite output flags NaN/Inf input."""
    xy, x, y, d = buf[:2, :k], buf[0, :k], buf[1, :k], buf[2, :k]
    ex = ey = 0
    if scaled:
        ex, ey = (_exponent(peak) for peak in xy.abs().amax(dim=1).tolist())
        factors = torch.tensor([math.ldexp(1.0, -ex), math.ldexp(1.0, -ey)], dtype=buf.dtype, device=buf.device)
        xy.mul_(factors[:, None])
    # d = (a - b) / 2**max(ex, ey); its sign does not matter, only |d|, d**2 and its zeros are used.
    if ex >= ey:
        torch.sub(x, y, alpha=math.ldexp(1.0, ey - ex), out=d)
    else:
        torch.sub(y, x, alpha=math.ldexp(1.0, ex - ey), out=d)
    shift = xy[:, :1].clone()
    xy.sub_(shift)
    first_mean = xy.sum(dim=1) / k
    xy.sub_(first_mean[:, None])
    residual = xy.sum(dim=1)
    parts = [
        shift[0, 0], shift[1, 0], first_mean[0], first_mean[1], residual[0], residual[1],
        torch.dot(x, x), torch.dot(y, y), torch.dot(x, y), torch.dot(d, d),
    ]
    d.abs_()
    parts += [d.sum(), d.amax(), (k - torch.count_nonzero(d)).to(buf.dtype)]
    return [float(ex), float(ey)] + torch.stack(parts).to(torch.float64).tolist()


def _moments_from(values: list[float], k: int, equal: int, nfa: int = 0, nfb: int = 0) -> _Moments:
    ex, ey, hx, hy, mx, my, rx, ry, qx, qy, qxy, ssq, sabs, maxd, _zeros = values
    return _Moments(
        n=k, ex=int(ex), ey=int(ey), ed=int(max(ex, ey)), hx=hx, hy=hy, lx=mx + rx / k, ly=my + ry / k,
        m2x=max(qx - rx * rx / k, 0.0), m2y=max(qy - ry * ry / k, 0.0), cxy=qxy - rx * ry / k,
        sabs=sabs, ssq=ssq, maxd=maxd, equal=equal, nfa=nfa, nfb=nfb, blocks=1,
    )


def _block(sa: torch.Tensor, sb: torch.Tensor, buf: torch.Tensor, exact: bool, scaled: bool) -> _Moments:
    """Moments of one block; the common all-finite case reuses `buf`, NaN/Inf blocks take a masked second pass."""
    k = sa.numel()
    buf[0, :k].copy_(sa)
    buf[1, :k].copy_(sb)
    values = _block_moments(buf, k, scaled)
    if all(math.isfinite(v) for v in values):
        equal = int(values[-1]) if exact else int((sa == sb).sum())
        return _moments_from(values, k, equal)
    x, y = sa.to(buf.dtype), sb.to(buf.dtype)
    finite_x, finite_y = torch.isfinite(x), torch.isfinite(y)
    equal = int((x == y).sum()) if exact else int((sa == sb).sum())
    nfa, nfb = k - int(finite_x.sum()), k - int(finite_y.sum())
    keep = finite_x & finite_y
    used = int(keep.sum())
    if used == 0:
        return _Moments(equal=equal, nfa=nfa, nfb=nfb, blocks=1)
    kept = torch.empty((3, used), dtype=buf.dtype, device=buf.device)
    kept[0], kept[1] = x[keep], y[keep]
    return _moments_from(_block_moments(kept, used, scaled), used, equal, nfa, nfb)


def corr_from_moments(n, ux, uy, m2x, m2y, cxy) -> torch.Tensor:
    """cos(x - c, y - c') from co-moments about the means (u = mean - c), elementwise; NaN where a norm is zero.

    Each side is divided by its own scale first, so nothing overflows."""
    sx = torch.maximum(torch.sqrt(m2x.clamp_min(0) / n), ux.abs())
    sy = torch.maximum(torch.sqrt(m2y.clamp_min(0) / n), uy.abs())
    nx = (m2x / sx) / sx + n * (ux / sx) ** 2
    ny = (m2y / sy) / sy + n * (uy / sy) ** 2
    num = (cxy / sx) / sy + n * (ux / sx) * (uy / sy)
    r = (num / torch.sqrt(nx * ny)).clamp(-1.0, 1.0)
    return torch.where((sx > 0) & (sy > 0) & (nx > 0) & (ny > 0), r, torch.full_like(r, math.nan))


def _scalar_corr(n: int, ux: float, uy: float, m2x: float, m2y: float, cxy: float) -> float | None:
    t = torch.tensor([ux, uy, m2x, m2y, cxy], dtype=torch.float64)
    r = float(corr_from_moments(float(n), t[0], t[1], t[2], t[3], t[4]))
    return None if math.isnan(r) else r


def _flat_pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    for t in (a, b):
        if t.is_complex():
            raise SelectionError(f"cannot compare complex tensors ({t.dtype})", "select real-valued tensors")
    if a.numel() != b.numel():
        shapes = f"shapes {tuple(a.shape)} and {tuple(b.shape)}"
        raise SelectionError(f"cannot compare tensors of {shapes}: {a.numel()} vs {b.numel()} elements",
                             "select tensors of the same size")
    return a.reshape(-1), b.reshape(-1)


def _block_elements(device: torch.device, chunk_elements: int, acc: torch.dtype) -> int:
    if chunk_elements < 1:
        raise SpecError(f"chunk size must be at least 1 element, got {chunk_elements}")
    block = min(chunk_elements, CPU_BLOCK_ELEMENTS) if device.type == "cpu" else chunk_elements
    # Counts travel in the accumulation dtype; float32 holds integers exactly only up to 2**24.
    return min(block, 1 << 24) if acc == torch.float32 else block


def _centred_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n minus their mean (n + 1) / 2, ties sharing their average rank (scipy's rankdata 'average')."""
    order = torch.argsort(x)  # tie order is irrelevant: tied values all get the same average rank
    _, inverse, counts = torch.unique_consecutive(x[order], return_inverse=True, return_counts=True)
    group_rank = torch.cumsum(counts, 0).to(torch.float64) - (counts.to(torch.float64) - 1) / 2 - (x.numel() + 1) / 2
    del counts
    ranks = torch.empty(x.numel(), dtype=torch.float64, device=x.device)
    ranks[order] = group_rank[inverse]
    return ranks


RANK_CACHE_MAX = 1 << 16  # elements: ranks of vectors up to this size are kept when a rank cache is given


def _ranks(x: torch.Tensor, cache: dict | None, key) -> torch.Tensor:
    if cache is None or key is None or x.numel() > RANK_CACHE_MAX:
        return _centred_ranks(x)
    if key not in cache:
        cache[key] = _centred_ranks(x)
    return cache[key]


def _spearman(a: torch.Tensor, b: torch.Tensor, device: torch.device, limit: int, seed: int,
              cache: dict | None = None, keys: tuple = (None, None)):
    """Spearman on all finite pairs, or on `limit` positions: one drawn (seeded) from each of `limit` equal strata.
    `cache` with `keys` (one per input, stable while the caller holds the tensors): each vector ranked once when it
    takes part in many pairs (all-pairs comparisons); only used when every position is finite in both."""
    n = a.numel()
    if limit <= 0 or n < 2:
        return None, False
    sampled = n > limit
    if sampled:
        # Stratified draws are distinct and already sorted: no O(limit log limit) unique(), and gathers stay local.
        starts = torch.arange(limit + 1, dtype=torch.int64) * n // limit
        draws = torch.rand(limit, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        positions = starts[:-1] + (draws * (starts[1:] - starts[:-1])).to(torch.int64)
        del starts, draws
        a, b = a[positions.to(a.device)], b[positions.to(b.device)]
        del positions
    x, y = a.to(device, torch.float64), b.to(device, torch.float64)
    keep = torch.isfinite(x) & torch.isfinite(y)
    if not bool(keep.all()):
        x, y = x[keep], y[keep]
        cache = None  # ranks of a filtered vector depend on the other tensor
    del keep
    if x.numel() < 2:
        return None, sampled
    x = _ranks(x, cache, keys[0])  # rebinding frees each value vector as soon as its ranks exist
    y = _ranks(y, cache, keys[1])
    denom = math.sqrt(float(torch.dot(x, x))) * math.sqrt(float(torch.dot(y, y)))
    return (None if denom == 0 else max(-1.0, min(1.0, float(torch.dot(x, y)) / denom))), sampled


@torch.no_grad()
def pair_stats(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    device: DeviceLike = "cpu",
    accumulate: torch.dtype = torch.float64,
    chunk_elements: int = 1 << 24,
    spearman_max: int = 1 << 22,
    seed: int = 0,
    rank_cache: dict | None = None,
    rank_keys: tuple = (None, None),
) -> PairStats:
    """Compare two tensors element by element (flattened), streaming blocks of <= chunk_elements to `device`.

    Memory beyond the inputs: 3 x block elements in `accumulate`, plus ~128 bytes x min(n, spearman_max) for ranks.
    `rank_cache`/`rank_keys`: see _spearman (a caller comparing every pair of many small vectors ranks each once)."""
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    if accumulate not in (torch.float64, torch.float32):
        raise SpecError(f"cannot accumulate in {accumulate}", "use torch.float64, or torch.float32 on CUDA")
    a_flat, b_flat = _flat_pair(a, b)
    n = a_flat.numel()
    block = _block_elements(dev, chunk_elements, accumulate)
    exact = _upcast_is_exact(a.dtype, accumulate) and _upcast_is_exact(b.dtype, accumulate)
    scaled = needs_scaling(a.dtype, accumulate) or needs_scaling(b.dtype, accumulate)
    total = _Moments()
    if n:
        buf = torch.empty((3, min(block, n)), dtype=accumulate, device=dev)
        for start in range(0, n, block):
            sa, sb = a_flat[start:start + block].to(dev), b_flat[start:start + block].to(dev)
            total = _merge(total, _block(sa, sb, buf, exact, scaled))
    keys = tuple(None if k is None else (k, n, spearman_max, seed) for k in rank_keys)
    spearman, sampled = _spearman(a_flat, b_flat, dev, spearman_max, seed, rank_cache, keys)
    return _finish(total, n, spearman, sampled, dtype_name(accumulate))


def _finish(m: _Moments, n: int, spearman, sampled: bool, acc_name: str) -> PairStats:
    used = m.n
    defined = used > 0
    ux, uy = m.hx + m.lx, m.hy + m.ly
    # a - 1 in units of 2**ex is a - 2**-ex; the data value hx is subtracted first so near 1 it is exact (Sterbenz).
    ux1 = (m.hx - math.ldexp(1.0, -m.ex)) + m.lx
    uy1 = (m.hy - math.ldexp(1.0, -m.ey)) + m.ly
    norm_a = math.sqrt(m.m2x + used * ux * ux) if defined else 0.0
    return PairStats(
        n=n,
        n_used=used,
        cosine=_scalar_corr(used, ux, uy, m.m2x, m.m2y, m.cxy) if defined else None,
        pearson=_scalar_corr(used, 0.0, 0.0, m.m2x, m.m2y, m.cxy) if defined else None,
        cos_minus_one=_scalar_corr(used, ux1, uy1, m.m2x, m.m2y, m.cxy) if defined else None,
        spearman=spearman,
        spearman_sampled=sampled,
        mad=math.ldexp(m.sabs / used, m.ed) if defined else None,
        max_abs_diff=math.ldexp(m.maxd, m.ed) if defined else None,
        rel_l2=math.ldexp(math.sqrt(m.ssq) / norm_a, m.ed - m.ex) if norm_a > 0 and math.isfinite(norm_a) else None,
        equal_fraction=m.equal / n if n else None,
        equal_count=m.equal,
        nonfinite_a=m.nfa,
        nonfinite_b=m.nfb,
        mean_a=math.ldexp(ux, m.ex) if defined else None,
        std_a=math.ldexp(math.sqrt(m.m2x / used), m.ex) if defined else None,
        mean_b=math.ldexp(uy, m.ey) if defined else None,
        std_b=math.ldexp(math.sqrt(m.m2y / used), m.ey) if defined else None,
        accumulation_dtype=acc_name,
        chunks=m.blocks,
    )
