"""The GGUF format, owned here: magic `GGUF`, version (2 or 3), tensor and key/value counts, typed metadata, tensor
infos (name, dims with ne[0] fastest, ggml type, offset), then tensor data from the first aligned byte after them.

Parsing reads the header in growing ranges through a `fetch(start, end)` callable, so the same code serves a local
file and a Hub range reader. Every length and count is checked against caps and against the bytes the file really
has before anything is allocated for it: a hostile header ends in one clear error, never in a huge read.
"""

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass

from solarforensics.errors import FormatError
from solarforensics.sources.gguf_quants import GGML_TYPES, type_name
from solarforensics.sources.safetensors_format import MAX_ELEMENTS, TensorRef, check_no_overlap

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_HEADER_BYTES = 512 << 20  # real headers: ~7 MB for Gemma 3's 262k-token vocabulary with scores
MAX_STRING_BYTES = 16 << 20  # chat templates are tens of kB; a vocabulary entry a few bytes
MAX_ARRAY_ITEMS = 1 << 24  # vocabularies and merge lists hold up to ~10^6 entries
MAX_KEYS = 1 << 16
MAX_TENSORS = 1 << 20
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_NESTING = 3
FIRST_READ = 1 << 20
MAX_READ = 64 << 20

# value type id -> (name, struct format of a scalar; None for string/array)
VALUE_TYPES: dict[int, tuple[str, str | None]] = {
    0: ("UINT8", "<B"), 1: ("INT8", "<b"), 2: ("UINT16", "<H"), 3: ("INT16", "<h"), 4: ("UINT32", "<I"),
    5: ("INT32", "<i"), 6: ("FLOAT32", "<f"), 7: ("BOOL", "<B"), 8: ("STRING", None), 9: ("ARRAY", None),
    10: ("UINT64", "<Q"), 11: ("INT64", "<q"), 12: ("FLOAT64", "<d"),
}
_STRING, _ARRAY, _BOOL = 8, 9, 7
_MIN_ITEM_BYTES = {t: struct.calcsize(f) if f else 8 for t, (_, f) in VALUE_TYPES.items()}  # string/array: a length
_MIN_KV_BYTES = 8 + 4 + 1
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8


@dataclass(frozen=True)
class GGUFHeader:
    """A parsed GGUF header: metadata, tensor refs (PyTorch shape order, absolute byte spans) and layout facts."""

    version: int
    metadata: dict
    tensors: dict[str, TensorRef]
    alignment: int
    data_start: int
    type_ids: dict[str, int]


class _Cursor:
    """Sequential reads over the start of a file, fetching more (in doubling steps) only when a read needs it."""

    def __init__(self, fetch: Callable[[int, int], bytes], size: int, file: str):
        self.fetch, self.size, self.file = fetch, size, file
        self.buf = bytearray()
        self.pos = 0
        self.step = FIRST_READ

    def need(self, n: int, what: str) -> None:
        end = self.pos + n
        if end <= len(self.buf):
            return
        if end > self.size:
            raise FormatError(f"{self.file}: GGUF header is truncated: {what} at byte {self.pos:,} needs {n:,} bytes "
                              f"but the file has {self.size:,}", hint="the file is incomplete or not GGUF")
        if end > MAX_HEADER_BYTES:
            raise FormatError(f"{self.file}: GGUF header runs past {MAX_HEADER_BYTES:,} bytes ({what})")
        target = min(self.size, max(end, len(self.buf) + self.step))
        self.buf += self.fetch(len(self.buf), target)
        self.step = min(self.step * 2, MAX_READ)

    def take(self, n: int, what: str) -> bytes:
        self.need(n, what)
        out = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return out

    def scalar(self, fmt: str, what: str):
        size = struct.calcsize(fmt)
        self.need(size, what)
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return value

    def count(self, cap: int, item_bytes: int, what: str) -> int:
        """A uint64 count, checked against its cap and against the bytes left in the file."""
        n = self.scalar("<Q", what)
        if n > cap:
            raise FormatError(f"{self.file}: GGUF {what} is {n:,}, over the cap of {cap:,}")
        if n * item_bytes > self.size - self.pos:
            raise FormatError(f"{self.file}: GGUF {what} is {n:,} but only {self.size - self.pos:,} bytes follow",
                              hint="the file is truncated or corrupt")
        return n

    def string(self, what: str, strict: bool = True) -> str:
        n = self.count(MAX_STRING_BYTES, 1, f"length of {what}")
        raw = self.take(n, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            if strict:
                raise FormatError(f"{self.file}: GGUF {what} is not UTF-8") from None
            return raw.decode("utf-8", errors="replace")  # some vocabularies hold partial UTF-8 byte tokens


def _value(cur: _Cursor, type_id: int, key: str, depth: int = 0):
    if type_id not in VALUE_TYPES:
        raise FormatError(f"{cur.file}: GGUF key {key[:100]!r} has unknown value type {type_id}")
    if type_id == _STRING:
        return cur.string(f"value of {key[:100]!r}", strict=False)
    if type_id == _ARRAY:
        if depth >= MAX_NESTING:
            raise FormatError(f"{cur.file}: GGUF key {key[:100]!r} nests arrays deeper than {MAX_NESTING}")
        item_type = cur.scalar("<I", f"array type of {key[:100]!r}")
        if item_type not in VALUE_TYPES:
            raise FormatError(f"{cur.file}: GGUF key {key[:100]!r} is an array of unknown type {item_type}")
        n = cur.count(MAX_ARRAY_ITEMS, _MIN_ITEM_BYTES[item_type], f"array length of {key[:100]!r}")
        fmt = VALUE_TYPES[item_type][1]
        if fmt is None or item_type == _BOOL:
            return [_value(cur, item_type, key, depth + 1) for _ in range(n)]
        raw = cur.take(n * struct.calcsize(fmt), f"array {key[:100]!r}")
        return list(struct.unpack(f"<{n}{fmt[1]}", raw))
    value = cur.scalar(VALUE_TYPES[type_id][1], f"value of {key[:100]!r}")
    if type_id == _BOOL:
        if value not in (0, 1):
            raise FormatError(f"{cur.file}: GGUF key {key[:100]!r} is a bool of value {value}")
        return bool(value)
    return value


def parse_gguf(fetch: Callable[[int, int], bytes], size: int, file: str) -> GGUFHeader:
    """Parse and validate a GGUF header, reading bytes [start, end) through `fetch` as needed."""
    cur = _Cursor(fetch, size, file)
    if size < 4 or cur.take(4, "magic") != MAGIC:
        raise FormatError(f"{file}: not a GGUF file (no GGUF magic at the start)")
    version = cur.scalar("<I", "version")
    if version not in VERSIONS:
        swapped = struct.unpack("<I", struct.pack(">I", version))[0]
        detail = "a big-endian GGUF" if swapped in VERSIONS else f"GGUF version {version}"
        raise FormatError(f"{file}: {detail} is not supported (versions {VERSIONS[0]} and {VERSIONS[-1]} are)")
    n_tensors = cur.count(MAX_TENSORS, _MIN_TENSOR_INFO_BYTES, "tensor count")
    n_keys = cur.count(MAX_KEYS, _MIN_KV_BYTES, "metadata key count")
    metadata: dict = {}
    for _ in range(n_keys):
        key = cur.string("metadata key")
        if key in metadata:
            raise FormatError(f"{file}: GGUF metadata key {key[:100]!r} appears twice")
        metadata[key] = _value(cur, cur.scalar("<I", f"value type of {key[:100]!r}"), key)
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if type(alignment) is not int or alignment <= 0 or alignment & (alignment - 1):
        raise FormatError(f"{file}: GGUF general.alignment {alignment!r} is not a power of two")
    infos = [_tensor_info(cur) for _ in range(n_tensors)]
    data_start = -(-cur.pos // alignment) * alignment
    if data_start > size:
        raise FormatError(f"{file}: GGUF header is truncated: tensor data would start at byte {data_start:,} "
                          f"but the file has {size:,}")
    tensors, type_ids = _tensor_refs(infos, file, data_start, size, alignment)
    return GGUFHeader(version, metadata, tensors, alignment, data_start, type_ids)


def _tensor_info(cur: _Cursor) -> tuple[str, tuple[int, ...], int, int]:
    name = cur.string("tensor name")
    where = f"tensor {name[:100]!r}"
    n_dims = cur.scalar("<I", f"dimension count of {where}")
    if n_dims > MAX_DIMS:
        raise FormatError(f"{cur.file}: GGUF {where} has {n_dims} dimensions (at most {MAX_DIMS})")
    dims = tuple(cur.scalar("<Q", f"dimensions of {where}") for _ in range(n_dims))
    if any(d > MAX_ELEMENTS for d in dims) or math.prod(dims) > MAX_ELEMENTS:
        raise FormatError(f"{cur.file}: GGUF {where} has an absurd shape {list(dims)}")
    type_id = cur.scalar("<I", f"type of {where}")
    offset = cur.scalar("<Q", f"offset of {where}")
    return name, dims, type_id, offset


def _tensor_refs(infos, file: str, data_start: int, size: int, alignment: int):
    """TensorRefs with absolute spans; a type this version does not know spans up to the next tensor (or the end)."""
    data_size = size - data_start
    by_offset = sorted({offset for _, _, _, offset in infos})
    next_offset = dict(zip(by_offset, by_offset[1:] + [data_size]))
    tensors: dict[str, TensorRef] = {}
    type_ids: dict[str, int] = {}
    for name, dims, type_id, offset in infos:
        where = f"{file}: GGUF tensor {name[:100]!r}"
        if name in tensors:
            raise FormatError(f"{where} appears twice")
        if offset % alignment:
            raise FormatError(f"{where} has offset {offset:,}, not a multiple of the alignment {alignment}")
        if offset > data_size:
            raise FormatError(f"{where} starts beyond the end of the file")
        if type_id in GGML_TYPES:
            _, block_elems, block_bytes = GGML_TYPES[type_id]
            row = dims[0] if dims else 1
            if row % block_elems:
                raise FormatError(f"{where}: rows of {row} values do not fill whole {type_name(type_id)} blocks "
                                  f"of {block_elems}")
            nbytes = math.prod(dims) // block_elems * block_bytes
            if offset + nbytes > data_size:
                raise FormatError(f"{where} ends beyond the end of the file (truncated?)")
        else:
            nbytes = next_offset[offset] - offset  # unknown block size: readable never, countable still
        tensors[name] = TensorRef(name, file, type_name(type_id), tuple(reversed(dims)),
                                  data_start + offset, data_start + offset + nbytes)
        type_ids[name] = type_id
    check_no_overlap(tensors.values(), file, "GGUF tensors")
    return tensors, type_ids
