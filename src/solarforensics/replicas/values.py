"""The bytes of every replica tensor, generated on demand: element i of a tensor is a pure function of (repo seed,
tensor name, i), so any byte range of a 200 GB repo is produced in time proportional to its size, and the same range
always reads the same.

Elements are made in blocks of BLOCK; each block has its own counter-based stream (Philox keyed by the tensor and
the block number), so a read touches only the blocks it overlaps. Values are N(0, scale) through a 65,536-level
quantile table (16 random bits per element, exact to BF16 resolution), except norm gains, which follow the
per-layer mean and spread of the real models (configs/replicas/norm-gains.csv) with a pattern partly shared across
layers, and derived replicas (INTELLECT-3), whose elements are the parent's plus seeded noise.
"""

from __future__ import annotations

import functools
import hashlib
import math

import numpy as np
import torch
from scipy.special import ndtri

from solarforensics.families.family import NORM_ROLES
from solarforensics.replicas.specs import ReplicaSpec, TensorSpec, gain_statistics

BLOCK = 1 << 16
BLOCK_CACHE = 256  # blocks kept (about 32 MiB of BF16): a chunked read of one range regenerates nothing


@functools.lru_cache(maxsize=1)
def _quantiles() -> np.ndarray:
    """z-values of the 65,536 equal-probability cells of N(0, 1): a 16-bit index is one normal draw."""
    return ndtri((np.arange(1 << 16) + 0.5) / (1 << 16)).astype(np.float32)


def to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> BF16 bit patterns (uint16), rounded to nearest even (torch's conversion, 3x numpy's speed)."""
    as_bf16 = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).to(torch.bfloat16)
    return as_bf16.view(torch.int16).numpy().view("<u2")


def from_bf16_bits(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def _key(*parts: object) -> int:
    return int.from_bytes(hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest(), "little")


def _stream(key: int, block: int, count: int) -> np.ndarray:
    """`count` 16-bit draws of block `block` of the stream `key` (independent for every (key, block))."""
    generator = np.random.Philox(key=(key << 64) | block)
    return generator.random_raw((count + 3) // 4).view("<u2")[:count]


class ReplicaValues:
    """Element values of one replica; `parent` is the replica a derived one adds its noise to."""

    def __init__(self, spec: ReplicaSpec, parent: ReplicaValues | None = None):
        self.spec, self.parent = spec, parent
        self.scales = dict(spec.values.get("scale", {}))
        self.within = dict(spec.values.get("within_correlation", {}))
        self.independent = {role: set(layers) for role, layers in spec.values.get("independent_layers", {}).items()}
        self._block = functools.lru_cache(maxsize=BLOCK_CACHE)(self._make_block)
        self._tables: dict[tuple[str, float, bool], np.ndarray] = {}
        self._parent_tensors = {t.name: t for t in parent.spec.tensors} if parent else {}

    def read(self, tensor: TensorSpec, lo: int, hi: int) -> bytes:
        """Little-endian bytes of elements [lo, hi) of `tensor`."""
        if hi <= lo:
            return b""
        first, last = lo // BLOCK, (hi - 1) // BLOCK
        parts = [self._block(tensor, b) for b in range(first, last + 1)]
        joined = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return joined[lo - first * BLOCK: hi - first * BLOCK].tobytes()

    def values(self, tensor: TensorSpec) -> np.ndarray:
        """The whole tensor as float32 (for tests and small tensors)."""
        raw = np.frombuffer(self.read(tensor, 0, tensor.numel), dtype="<u2" if tensor.dtype == "BF16" else "<f4")
        flat = from_bf16_bits(raw) if tensor.dtype == "BF16" else raw.astype(np.float32)
        return flat.reshape(tensor.shape)

    # -- generation ------------------------------------------------------------------------------------------------

    def _make_block(self, tensor: TensorSpec, block: int) -> np.ndarray:
        """Stored values (BF16 bits or float32) of elements [block * BLOCK, ...) of `tensor`."""
        if self.parent is None and tensor.role not in NORM_ROLES:  # the fast path: draws -> stored values
            return self._table(tensor.dtype, self._scale(tensor.role), stored=True)[self._draws(tensor, block)]
        return self._store(tensor, self._master(tensor, block))

    def _master(self, tensor: TensorSpec, block: int) -> np.ndarray:
        """float32 values before rounding to the stored dtype, like a trainer's fp32 master weights: a derived
        replica adds its noise to these, so small updates flip some BF16 values and leave the rest."""
        if self.parent is not None:
            return self._derived(tensor, block)
        if tensor.role in NORM_ROLES:
            return self._gains(tensor)
        return self._table(tensor.dtype, self._scale(tensor.role), stored=False)[self._draws(tensor, block)]

    def _draws(self, tensor: TensorSpec, block: int) -> np.ndarray:
        return _stream(_key(self.spec.seed, tensor.name), block, min(BLOCK, tensor.numel - block * BLOCK))

    def _scale(self, role: str) -> float:
        scale = self.scales.get(role)
        if scale is None:
            raise KeyError(f"replica {self.spec.repo}: no value scale for role {role!r} (configs/replicas)")
        return float(scale)

    def _table(self, dtype: str, scale: float, stored: bool) -> np.ndarray:
        """Draw -> value table: float32 values, or (stored) the values as the file holds them."""
        table = self._tables.get((dtype, scale, stored))
        if table is None:
            values = _quantiles() * np.float32(scale)
            table = to_bf16_bits(values) if stored and dtype == "BF16" else values.astype("<f4")
            self._tables[(dtype, scale, stored)] = table
        return table

    @staticmethod
    def _store(tensor: TensorSpec, values: np.ndarray) -> np.ndarray:
        return to_bf16_bits(values) if tensor.dtype == "BF16" else values.astype("<f4")

    def _gains(self, tensor: TensorSpec) -> np.ndarray:
        """mean + std * z, z standardised exactly; z mixes a per-model pattern (shared by every layer of this role)
        with the layer's own draw, so different layers of one model correlate and different models do not."""
        if tensor.numel > BLOCK:
            raise ValueError(f"norm gain {tensor.name} is longer than one block")
        mean, std = gain_statistics(self.spec, tensor.role, tensor.layer)
        own = _quantiles()[_stream(_key(self.spec.seed, tensor.name), 0, tensor.numel)].astype(np.float64)
        shared = self.within.get(tensor.role, 0.0) if tensor.layer is not None else 0.0
        if tensor.layer in self.independent.get(tensor.role, ()):
            shared = 0.0
        if shared:
            common = _quantiles()[_stream(_key(self.spec.seed, "common", tensor.role), 0, tensor.numel)]
            own = math.sqrt(shared) * common + math.sqrt(1 - shared) * own
        z = (own - own.mean()) / own.std()
        return (mean + std * z).astype(np.float32)

    def _derived(self, tensor: TensorSpec, block: int) -> np.ndarray:
        """The parent's float32 values plus seeded noise."""
        base = self.parent._master(self._parent_tensors[tensor.name], block)
        derived = self.spec.derived
        if tensor.role in NORM_ROLES:
            layer = tensor.layer or 0
            sigma = derived["gain_noise"] * math.exp(-layer / derived["gain_decay"]) + derived["gain_floor"]
        else:
            sigma = derived["noise"] * self.parent._scale(tensor.role)
        return base + _quantiles()[self._draws(tensor, block)] * np.float32(sigma)
