"""GGML tensor types: their block sizes, and dequantisation of the common ones to float32 torch tensors.

A quantised tensor is a flat run of blocks; each block packs `block_elems` values of one row (rows are ne[0] long,
a whole number of blocks) into `block_bytes` bytes. The layouts follow ggml's reference C code (ggml-quants.c).
"""

from collections.abc import Callable

import torch

from solarforensics.errors import FormatError

QK_K = 256  # elements in a K-quant super-block

# ggml type id -> (name, elements per block, bytes per block); ids and sizes are part of the GGUF format.
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40), 10: ("Q2_K", QK_K, 84), 11: ("Q3_K", QK_K, 110),
    12: ("Q4_K", QK_K, 144), 13: ("Q5_K", QK_K, 176), 14: ("Q6_K", QK_K, 210), 15: ("Q8_K", QK_K, 292),
    16: ("IQ2_XXS", QK_K, 66), 17: ("IQ2_XS", QK_K, 74), 18: ("IQ3_XXS", QK_K, 98), 19: ("IQ1_S", QK_K, 50),
    20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", QK_K, 110), 22: ("IQ2_S", QK_K, 82), 23: ("IQ4_XS", QK_K, 136),
    24: ("I8", 1, 1), 25: ("I16", 1, 2), 26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8),
    29: ("IQ1_M", QK_K, 56), 30: ("BF16", 1, 2), 34: ("TQ1_0", QK_K, 54), 35: ("TQ2_0", QK_K, 66),
    39: ("MXFP4", 32, 17), 40: ("NVFP4", 64, 36), 41: ("Q1_0", 128, 18),
}
BLOCKS_BY_NAME = {name: (elems, size) for name, elems, size in GGML_TYPES.values()}

# Plain element types keep their dtype (so an F16 tensor hashes like the same F16 tensor in safetensors).
PLAIN: dict[str, torch.dtype] = {
    "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
    "I8": torch.int8, "I16": torch.int16, "I32": torch.int32, "I64": torch.int64,
}
CHUNK_BLOCKS = 1 << 16  # blocks dequantised at a time: bounds the temporaries of a 600 MB embedding to ~50 MB


def type_name(type_id: int) -> str:
    """The ggml name of a type id, or `type<id>` for an id this version does not know."""
    known = GGML_TYPES.get(type_id)
    return known[0] if known else f"type{type_id}"


def _f16(raw: torch.Tensor) -> torch.Tensor:
    """Little-endian half floats stored as byte pairs (column slices of a block tensor) -> float32, shape (n, 1)."""
    return raw.contiguous().view(torch.float16).float()


def _low_high(qs: torch.Tensor) -> torch.Tensor:
    """Bytes of 4-bit pairs -> values: all low nibbles, then all high nibbles (ggml's order within a 32-block)."""
    return torch.cat([qs & 0x0F, qs >> 4], dim=1)


def _bits(raw: torch.Tensor, count: int) -> torch.Tensor:
    """Little-endian bit field of `raw` bytes -> its first `count` bits as a (n, count) 0/1 tensor."""
    shifts = torch.arange(8, device=raw.device, dtype=torch.uint8)
    return ((raw.unsqueeze(-1) >> shifts) & 1).reshape(raw.shape[0], -1)[:, :count]


def _q4_0(b):
    return (_low_high(b[:, 2:18]).float() - 8) * _f16(b[:, 0:2])


def _q4_1(b):
    return _low_high(b[:, 4:20]).float() * _f16(b[:, 0:2]) + _f16(b[:, 2:4])


def _q5(b, offset: int):
    q = _low_high(b[:, offset + 4 : offset + 20]) | (_bits(b[:, offset : offset + 4], 32) << 4)
    return q.float()


def _q5_0(b):
    return (_q5(b, 2) - 16) * _f16(b[:, 0:2])


def _q5_1(b):
    return _q5(b, 4) * _f16(b[:, 0:2]) + _f16(b[:, 2:4])


def _q8_0(b):
    return b[:, 2:34].contiguous().view(torch.int8).float() * _f16(b[:, 0:2])


def _q8_k(b):
    d = b[:, 0:4].contiguous().view(torch.float32)
    return b[:, 4:260].contiguous().view(torch.int8).float() * d


def _k_scales(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 8 six-bit scales and 8 six-bit mins packed in 12 bytes (Q4_K, Q5_K)."""
    d, m, low = s[:, 0:4], s[:, 4:8], s[:, 8:12]
    scales = torch.cat([d & 0x3F, (low & 0x0F) | ((d >> 2) & 0x30)], dim=1)
    mins = torch.cat([m & 0x3F, (low >> 4) | ((m >> 2) & 0x30)], dim=1)
    return scales.float(), mins.float()


def _nibbles_by_32(qs: torch.Tensor) -> torch.Tensor:
    """K-quant 4-bit data: each 32 bytes give two sub-blocks of 32, low nibbles first -> (n, 8, 32)."""
    qs = qs.reshape(qs.shape[0], -1, 1, 32)
    return torch.cat([qs & 0x0F, qs >> 4], dim=2).reshape(qs.shape[0], -1, 32)


def _q4_k(b):
    scales, mins = _k_scales(b[:, 4:16])
    q = _nibbles_by_32(b[:, 16:144]).float()
    return _f16(b[:, 0:2]).unsqueeze(-1) * scales.unsqueeze(-1) * q - (_f16(b[:, 2:4]) * mins).unsqueeze(-1)


def _q5_k(b):
    scales, mins = _k_scales(b[:, 4:16])
    shifts = torch.arange(8, device=b.device, dtype=torch.uint8).reshape(1, 8, 1)
    high = (b[:, 16:48].unsqueeze(1) >> shifts) & 1  # sub-block i takes bit i of each of the 32 qh bytes
    q = (_nibbles_by_32(b[:, 48:176]) | (high << 4)).float()
    return _f16(b[:, 0:2]).unsqueeze(-1) * scales.unsqueeze(-1) * q - (_f16(b[:, 2:4]) * mins).unsqueeze(-1)


def _crumbs(raw: torch.Tensor, width: int) -> torch.Tensor:
    """2-bit fields: each `width` bytes hold four groups of `width` values at shifts 0, 2, 4, 6 -> (n, groups, width)."""
    shifts = torch.tensor([0, 2, 4, 6], device=raw.device, dtype=torch.uint8).reshape(1, 1, 4, 1)
    return ((raw.reshape(raw.shape[0], -1, 1, width) >> shifts) & 3).reshape(raw.shape[0], -1, width)


def _q6_k(b):
    n = b.shape[0]
    low = b[:, 0:128].reshape(n, 2, 1, 64)
    low = torch.cat([low & 0x0F, low >> 4], dim=2).reshape(n, 8, 32)
    q = (low | (_crumbs(b[:, 128:192], 32) << 4)).to(torch.int16) - 32
    scales = b[:, 192:208].contiguous().view(torch.int8).float()
    return (_f16(b[:, 208:210]) * scales).unsqueeze(-1) * q.reshape(n, 16, 16).float()


def _q2_k(b):
    n = b.shape[0]
    scales, q = b[:, 0:16], _crumbs(b[:, 16:80], 32).reshape(n, 16, 16).float()
    d, dmin = _f16(b[:, 80:82]), _f16(b[:, 82:84])
    return (d * (scales & 0x0F).float()).unsqueeze(-1) * q - (dmin * (scales >> 4).float()).unsqueeze(-1)


def _q3_k(b):
    n = b.shape[0]
    packed = b[:, 96:108]
    low = torch.cat([packed[:, 0:8] & 0x0F, packed[:, 0:8] >> 4], dim=1)
    high = _crumbs(packed[:, 8:12], 4).reshape(n, 16)
    scales = (low | (high << 4)).to(torch.int16) - 32
    shifts = torch.arange(8, device=b.device, dtype=torch.uint8).reshape(1, 8, 1)
    hbit = ((b[:, 0:32].unsqueeze(1) >> shifts) & 1).reshape(n, 16, 16)
    q = _crumbs(b[:, 32:96], 32).reshape(n, 16, 16).to(torch.int16) - 4 * (1 - hbit.to(torch.int16))  # bit set: no -4
    return (_f16(b[:, 108:110]) * scales.float()).unsqueeze(-1) * q.float()


DEQUANTIZERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "Q4_0": _q4_0, "Q4_1": _q4_1, "Q5_0": _q5_0, "Q5_1": _q5_1, "Q8_0": _q8_0, "Q2_K": _q2_k, "Q3_K": _q3_k,
    "Q4_K": _q4_k, "Q5_K": _q5_k, "Q6_K": _q6_k, "Q8_K": _q8_k,
}
SUPPORTED = frozenset(PLAIN) | frozenset(DEQUANTIZERS)


def dequantize(buf, ggml_type: str, shape: tuple[int, ...], device: str | torch.device = "cpu") -> torch.Tensor:
    """Bytes of one GGML tensor -> a tensor of `shape` (PyTorch order): plain types keep their dtype, quants give float32."""
    if ggml_type not in SUPPORTED:
        raise FormatError(f"GGML type {ggml_type} cannot be dequantised by solarforensics",
                          hint=f"supported: {', '.join(sorted(SUPPORTED))}")
    if not isinstance(buf, bytearray):
        buf = bytearray(buf)
    raw = torch.frombuffer(buf, dtype=torch.uint8) if buf else torch.empty(0, dtype=torch.uint8)
    elems, size = BLOCKS_BY_NAME[ggml_type]
    numel = 1
    for d in shape:
        numel *= d
    if raw.numel() != numel // elems * size or numel % elems:
        raise FormatError(f"{raw.numel()} bytes cannot hold {ggml_type} values of shape {list(shape)}")
    if ggml_type in PLAIN:
        return raw.view(PLAIN[ggml_type]).reshape(shape).to(device)
    blocks = raw.reshape(-1, size)
    out = torch.empty(blocks.shape[0], elems, dtype=torch.float32, device=device)
    kernel = DEQUANTIZERS[ggml_type]
    for first in range(0, blocks.shape[0], CHUNK_BLOCKS):
        chunk = blocks[first : first + CHUNK_BLOCKS].to(device)
        out[first : first + CHUNK_BLOCKS] = kernel(chunk).reshape(chunk.shape[0], elems)
    return out.reshape(shape)
