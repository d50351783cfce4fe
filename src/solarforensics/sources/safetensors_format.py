"""The safetensors format, owned here: an 8-byte little-endian header length N, N bytes of JSON, then data at 8 + N.

Headers are parsed strictly, because a hostile or broken header must end in one clear error, never in a huge
allocation, a crash or silently wrong bytes.
"""

import json
import math
import struct
from dataclasses import dataclass

import torch

from solarforensics.errors import FormatError

MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit; real 100B-model shards have headers of ~100 kB
MAX_DIMS = 8
MAX_ELEMENTS = 1 << 48  # far above any real tensor; stops overflowing or absurd shapes early

# dtype name in the header -> (torch dtype, bytes per element)
DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "BOOL": (torch.bool, 1),
    "U8": (torch.uint8, 1),
    "I8": (torch.int8, 1),
    "F8_E4M3": (torch.float8_e4m3fn, 1),
    "F8_E5M2": (torch.float8_e5m2, 1),
    "I16": (torch.int16, 2),
    "U16": (torch.uint16, 2),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "I32": (torch.int32, 4),
    "U32": (torch.uint32, 4),
    "F32": (torch.float32, 4),
    "I64": (torch.int64, 8),
    "U64": (torch.uint64, 8),
    "F64": (torch.float64, 8),
}


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor's bytes are: file, absolute byte span [start, end), dtype and shape."""

    name: str
    file: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.end - self.start


def header_length(prefix: bytes, file: str, file_size: int | None = None) -> int:
    """The header length N from the first 8 bytes, checked against the cap and the file size."""
    if len(prefix) < 8:
        raise FormatError(f"{file}: too short to be a safetensors file ({len(prefix)} bytes)")
    (n,) = struct.unpack("<Q", prefix[:8])
    if n > MAX_HEADER_BYTES:
        raise FormatError(f"{file}: safetensors header claims {n:,} bytes, over the {MAX_HEADER_BYTES:,}-byte cap")
    if file_size is not None and 8 + n > file_size:
        raise FormatError(f"{file}: safetensors header claims {n:,} bytes but the file has {file_size:,}")
    return n


def _no_duplicates(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise FormatError(f"duplicate key {key[:200]!r}")
        seen[key] = value
    return seen


def parse_header(
    header: bytes, file: str, file_size: int | None = None, where: str | None = None
) -> tuple[dict[str, TensorRef], dict]:
    """Parse and validate the JSON header (the N bytes after the length); returns tensors and `__metadata__`.
    `where` names the file in errors (e.g. repo/shard); refs keep `file`."""
    label = where or file
    data_start = 8 + len(header)
    data_size = None if file_size is None else file_size - data_start
    try:
        parsed = json.loads(header.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except FormatError as err:
        raise FormatError(f"{label}: safetensors header has a {err.message}") from None
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise FormatError(f"{label}: safetensors header is not valid UTF-8 JSON") from None
    if not isinstance(parsed, dict):
        raise FormatError(f"{label}: safetensors header is not a JSON object")
    metadata = parsed.pop("__metadata__", None)
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise FormatError(f"{label}: safetensors __metadata__ must map strings to strings")
    tensors = {name: _tensor_ref(name, entry, file, data_start, data_size, label) for name, entry in parsed.items()}
    check_no_overlap(tensors.values(), label)
    return tensors, metadata


def _tensor_ref(name: str, entry, file: str, data_start: int, data_size: int | None, label: str) -> TensorRef:
    where = f"{label}: tensor {name[:200]!r}"
    if not isinstance(entry, dict):
        raise FormatError(f"{where} is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise FormatError(f"{where} has unknown dtype {str(dtype)[:40]!r}")
    if not isinstance(shape, list) or len(shape) > MAX_DIMS:
        raise FormatError(f"{where} has an invalid shape")
    if not all(type(d) is int and 0 <= d <= MAX_ELEMENTS for d in shape):
        raise FormatError(f"{where} has an invalid shape")
    numel = math.prod(shape)
    if numel > MAX_ELEMENTS:
        raise FormatError(f"{where} has an absurd shape {shape}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
        raise FormatError(f"{where} has invalid data_offsets")
    begin, end = offsets
    if not 0 <= begin <= end:
        raise FormatError(f"{where} has data_offsets out of order")
    if data_size is not None and end > data_size:
        raise FormatError(f"{where} ends beyond the end of the file")
    if end - begin != numel * DTYPES[dtype][1]:
        raise FormatError(f"{where}: {end - begin} bytes do not match shape {shape} of {dtype}")
    return TensorRef(name, file, dtype, tuple(shape), data_start + begin, data_start + end)


def check_no_overlap(refs, label: str, kind: str = "tensors") -> None:
    """No two non-empty tensors may share a byte: overlapping tensors would silently alias each other's data."""
    previous = None
    for ref in sorted(refs, key=lambda r: (r.start, r.end)):
        if previous is not None and ref.start < previous.end and ref.nbytes and previous.nbytes:
            raise FormatError(f"{label}: {kind} {previous.name[:100]!r} and {ref.name[:100]!r} overlap")
        previous = ref if ref.nbytes else previous  # an empty tensor must not hide an overlap


def tensor_from_bytes(buf, ref: TensorRef) -> torch.Tensor:
    """Turn exactly `ref.nbytes` bytes into a tensor of the ref's dtype and shape (a copy; safetensors is little-endian)."""
    if len(buf) != ref.nbytes:
        raise FormatError(f"{ref.file}: got {len(buf)} bytes for tensor {ref.name!r}, expected {ref.nbytes}")
    dtype = DTYPES[ref.dtype][0]
    if ref.nbytes == 0:
        return torch.empty(ref.shape, dtype=dtype)
    if not (isinstance(buf, bytearray) or (isinstance(buf, memoryview) and not buf.readonly)):
        buf = bytearray(buf)
    flat = torch.frombuffer(buf, dtype=torch.uint8)
    return flat.view(dtype).reshape(ref.shape)
