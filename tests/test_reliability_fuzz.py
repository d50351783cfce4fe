"""Hostile safetensors files end in one clear FormatError: property-based fuzzing of the header parser, alone, through
local folders and through the local Hub.

Every generated file is either accepted, and then every tensor it describes is a valid, in-bounds, non-overlapping
byte span whose bytes read exactly as the safetensors library reads them, or refused with one FormatError whose
message is a single bounded line. No other exception, no hang (hypothesis' deadline), and no allocation proportional
to a size the file claims but does not have (tracemalloc).
"""

import json
import math
import struct
import tracemalloc
from collections import Counter

import gguf
import pytest
import safetensors.torch
import torch
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from solarforensics.errors import FormatError
from solarforensics.sources.gguf import GGUFSource
from solarforensics.sources.gguf_format import DEFAULT_ALIGNMENT, VALUE_TYPES, parse_gguf
from solarforensics.sources.gguf_quants import BLOCKS_BY_NAME, GGML_TYPES, SUPPORTED
from solarforensics.sources.safetensors_format import (
    DTYPES,
    MAX_DIMS,
    MAX_HEADER_BYTES,
    TensorRef,
    header_length,
    parse_header,
    tensor_from_bytes,
)
from solarforensics.sources.spec import open_source

BATCH = 4  # files per hypothesis example: the engine's own cost per example is larger than a file's check
DEFAULT_FILES = 2000  # safetensors; GGUF runs half as many
SLOW_FILES = 30_000  # x 4 seeds = 120,000
MAX_MESSAGE = 600
FAST = settings(max_examples=DEFAULT_FILES // BATCH, deadline=2000, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))
# Where we refuse on purpose what the safetensors library reads: duplicate keys (it keeps the last one silently) and
# dtypes we do not compare (C64, F8_E8M0, F4, ...: each one a clear "unknown dtype").
STRICTER = ("duplicate key", "has unknown dtype")
UNKNOWN_DTYPES = ["bf16", "F4", "F8_E8M0", "C64", "Q4_0", "BF16 ", "", "F32\x00", "__metadata__"]
COUNTS: Counter = Counter()


# -- strategies: a valid file, then one of many ways to break it --------------------------------------------------

NAMES = st.lists(st.text(max_size=8).filter(lambda s: s != "__metadata__"), max_size=5, unique=True)
DTYPE_NAMES = st.sampled_from(sorted(DTYPES))
SHAPES = st.lists(st.integers(0, 5), max_size=3)
GAPS = st.sampled_from([0, 0, 0, 0, 1, 3])
TAILS = st.sampled_from([0, 0, 0, 1, 8])
METADATA = st.none() | st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=3)
PERMUTATIONS = [st.permutations(range(k)) for k in range(6)]


@st.composite
def valid_layout(draw):
    """(header object, data size): tensors with known dtypes and small shapes, laid out in any order, mostly
    contiguous (as safetensors writes them), sometimes with gaps, with or without __metadata__."""
    names = draw(NAMES)
    entries, sizes = {}, []
    for name in names:
        dtype, shape = draw(DTYPE_NAMES), draw(SHAPES)
        entries[name] = {"dtype": dtype, "shape": shape}
        sizes.append(math.prod(shape) * DTYPES[dtype][1])
    offset = 0
    for i in draw(PERMUTATIONS[len(names)]):
        offset += draw(GAPS)
        entries[names[i]]["data_offsets"] = [offset, offset + sizes[i]]
        offset += sizes[i]
    metadata = draw(METADATA)
    if metadata is not None:
        entries["__metadata__"] = metadata
    return entries, offset + draw(TAILS)


def tensor_entries(header: dict) -> list[str]:
    return [k for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]


def any_json(max_leaves: int = 4):
    scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=6)
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                                              max_size=3),
                        max_leaves=max_leaves)


JSON = any_json()
SMALL_JSON = any_json(2)
NOT_OBJECT = JSON.filter(lambda v: not isinstance(v, dict))
BAD_DTYPES = st.sampled_from(UNKNOWN_DTYPES) | SMALL_JSON
BAD_METADATA = (
    JSON
    | st.dictionaries(st.text(max_size=3), SMALL_JSON.filter(lambda v: not isinstance(v, str)), min_size=1)
    | st.just({"dtype": "F32", "shape": [1], "data_offsets": [0, 4]})
    | st.builds(lambda n: {"k" * n: "v" * n}, st.integers(1, 5000))
)


BAD_SHAPES = (
    st.lists(st.integers(-(2**70), 2**70), max_size=MAX_DIMS + 3)  # negative, huge, too many dims
    | st.lists(st.integers(2**16, 2**40), min_size=2, max_size=MAX_DIMS)  # products that overflow 64 bits
    | st.lists(st.floats() | st.booleans() | st.text(max_size=2) | st.none() | st.lists(st.integers(0, 3)),
               min_size=1, max_size=3)
    | JSON
)
BAD_OFFSETS = (
    st.lists(st.integers(-(2**70), 2**70), max_size=4)
    | st.tuples(st.integers(0, 64), st.integers(0, 64)).map(lambda t: [max(t), min(t) - 1])  # end before begin
    | st.lists(st.floats() | st.booleans() | st.text(max_size=2) | st.none(), min_size=2, max_size=2)
    | JSON
)


def overflowing_shape(draw, dtype: str) -> tuple[list[int], int]:
    """A shape whose byte size wraps around 2**64 to a small number, with offsets that fit the wrapped size."""
    k = draw(st.integers(1, 63))
    shape = [2**k, 2 ** (64 - k)] + draw(st.lists(st.integers(1, 3), max_size=2))
    wrapped = (math.prod(shape) * DTYPES[dtype][1]) % 2**64
    return shape, wrapped


@st.composite
def hostile_file(draw):
    """(label, file bytes): a valid layout broken in one labelled way (or left valid)."""
    header, data_size = draw(valid_layout())
    label = draw(LABELS)
    names = tensor_entries(header)
    target = draw(st.sampled_from(names)) if names else None
    text = None
    prefix = None
    if label == "valid":
        pass
    elif label == "unknown dtype" and target:
        header[target]["dtype"] = draw(BAD_DTYPES)
    elif label == "bad shape" and target:
        header[target]["shape"] = draw(BAD_SHAPES)
    elif label == "overflowing shape" and target:
        shape, wrapped = overflowing_shape(draw, header[target]["dtype"])
        begin = header[target]["data_offsets"][0]
        header[target].update(shape=shape, data_offsets=[begin, begin + wrapped])
        data_size = max(data_size, begin + wrapped)
    elif label == "bad offsets" and target:
        header[target]["data_offsets"] = draw(BAD_OFFSETS)
    elif label == "offsets out of bounds" and target:
        begin, end = header[target]["data_offsets"]
        grow = draw(st.integers(1, 2**64))
        header[target]["data_offsets"] = [begin + grow, end + grow]
    elif label == "overlapping ranges" and len(names) >= 2:
        first, second = draw(st.permutations(names))[:2]
        begin, end = header[first]["data_offsets"]
        size = header[second]["data_offsets"][1] - header[second]["data_offsets"][0]
        start = draw(st.integers(begin, max(begin, end - 1)))
        header[second]["data_offsets"] = [start, start + size]
        if draw(st.booleans()):  # an empty tensor sitting between the two must not hide the overlap
            header["\u2205"] = {"dtype": "U8", "shape": [0], "data_offsets": [start, start]}
    elif label == "numel x dtype mismatch" and target:
        begin, end = header[target]["data_offsets"]
        delta = draw(st.integers(-3, 3).filter(bool))
        header[target]["data_offsets"] = [begin, max(begin, end + delta)]
        if header[target]["data_offsets"][1] == end:
            header[target]["shape"] = header[target]["shape"] + [2]
    elif label == "missing or extra fields" and target:
        field = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
        if draw(st.booleans()):
            del header[target][field]
        else:
            header[target][draw(st.text(max_size=4))] = draw(SMALL_JSON)
    elif label == "entry not an object" and target:
        header[target] = draw(NOT_OBJECT)
    elif label == "__metadata__ abuse":
        header["__metadata__"] = draw(BAD_METADATA)
    elif label == "top level not an object":
        header = draw(NOT_OBJECT)
    elif label == "huge names":
        name = "n" * draw(st.integers(1000, 20_000)) + "\n\u2028"
        header[name] = {"dtype": "U8", "shape": [1], "data_offsets": [0, 2]}
    elif label == "duplicate keys":
        text = duplicate_key_text(draw, header)
    elif label == "deep nesting":
        depth = draw(st.integers(500, 20_000))
        text = draw(st.sampled_from(['{"a": {"dtype": "F32", "shape": ' + "[" * depth + "]" * depth + "}}",
                                     "[" * depth, '{"__metadata__": ' + '{"a": ' * depth + "1" + "}" * (depth + 1)]))
    elif label == "huge numbers":
        digits = draw(st.integers(20, 6000))
        number = draw(st.sampled_from(["9" * digits, "1e400", "-0", "1E+2", "NaN", "Infinity", "-Infinity"]))
        field = draw(st.sampled_from(["shape", "data_offsets"]))
        text = '{"a": {"dtype": "U8", "' + field + '": [' + number + ', 1], "shape": [1]}}'
    elif label == "invalid json":
        text = json.dumps(header)
        cut = draw(st.integers(0, len(text)))
        text = draw(st.sampled_from([text[:cut], text[:cut] + draw(st.text(max_size=3)) + text[cut + 1:],
                                     text + draw(st.text(min_size=1, max_size=3).filter(str.strip)),
                                     "\ufeff" + text, text.replace('"', "'"), text.replace("}", ",}", 1)]))
    elif label == "invalid utf-8":
        raw = json.dumps(header, ensure_ascii=False).encode()
        at = draw(st.integers(0, len(raw)))
        junk = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf8\x88\x80\x80\x80",
                                     b"\x80"]))
        text = raw[:at] + junk + raw[at:]
    elif label == "random header bytes":
        text = draw(st.binary(max_size=80))
    if text is None:
        text = json.dumps(header, ensure_ascii=draw(st.booleans()))
    raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    raw += b" " * draw(st.sampled_from([0, 0, (-len(raw)) % 8]))  # safetensors pads headers to 8 bytes
    data = draw(st.sampled_from([bytes(data_size), bytes(range(256)) * (data_size // 256) + bytes(data_size % 256)]))
    if label == "wrong length prefix":
        prefix = draw(st.sampled_from([len(raw) - 1, len(raw) + 1, len(raw) + len(data) + 1, 0, MAX_HEADER_BYTES,
                                       MAX_HEADER_BYTES + 1, 2**64 - 1, 2**63])
                      | st.integers(0, 2**64 - 1))
        prefix = max(0, min(prefix, 2**64 - 1))
    elif label == "header beyond the file":
        prefix = len(raw) + len(data) + draw(st.integers(1, MAX_HEADER_BYTES))
    blob = struct.pack("<Q", len(raw) if prefix is None else prefix) + raw + data
    if label == "truncated file":
        blob = blob[: draw(st.integers(0, max(0, len(blob) - 1)))]
    elif label == "random file bytes":
        blob = draw(st.binary(max_size=64))
    return label, blob


def duplicate_key_text(draw, header: dict) -> str:
    """JSON text with one key twice: at the top level, or inside a tensor entry."""
    items = [json.dumps(k) + ": " + json.dumps(v) for k, v in header.items()] or ['"a": 1']
    names = tensor_entries(header)
    if names and draw(st.booleans()):
        name = draw(st.sampled_from(names))
        entry = header[name]
        inner = [json.dumps(k) + ": " + json.dumps(v) for k, v in entry.items()]
        inner.insert(draw(st.integers(0, len(inner))), draw(st.sampled_from(inner)))
        items[list(header).index(name)] = json.dumps(name) + ": {" + ", ".join(inner) + "}"
    else:
        items.insert(draw(st.integers(0, len(items))), draw(st.sampled_from(items)))
    return "{" + ", ".join(items) + "}"


MUTATIONS = [
    "valid", "wrong length prefix", "header beyond the file", "truncated file", "random file bytes",
    "random header bytes", "invalid utf-8", "invalid json", "duplicate keys", "deep nesting", "huge numbers",
    "top level not an object", "entry not an object", "missing or extra fields", "unknown dtype", "bad shape",
    "overflowing shape", "bad offsets", "offsets out of bounds", "overlapping ranges", "numel x dtype mismatch",
    "__metadata__ abuse", "huge names",
]


LABELS = st.sampled_from(MUTATIONS)
BATCHES = st.lists(hostile_file(), min_size=BATCH, max_size=BATCH)


# -- the property ---------------------------------------------------------------------------------------------------

def parse_file(blob: bytes, name: str = "fuzz.safetensors") -> dict[str, TensorRef]:
    """What every source does with a safetensors file: the length prefix, then the header."""
    n = header_length(blob[:8], name, len(blob))
    tensors, _ = parse_header(blob[8 : 8 + n], name, len(blob))
    return tensors


def safetensors_reads(blob: bytes) -> dict[str, torch.Tensor] | None:
    """The safetensors library's reading of the file, or None if it refuses it (the reference for accepted files)."""
    try:
        return safetensors.torch.load(blob)
    except Exception:  # noqa: BLE001 - any refusal of the reference is fine here
        return None
    except BaseException as panic:  # a Rust panic surfaces as pyo3's PanicException (a BaseException)
        if type(panic).__name__ != "PanicException":
            raise
        return None


def raw_bytes(tensor: torch.Tensor) -> bytes:
    return tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def check_accepted(tensors: dict[str, TensorRef], blob: bytes) -> None:
    """Every accepted tensor is a valid, in-bounds span; non-empty spans never overlap."""
    n = struct.unpack("<Q", blob[:8])[0]
    for ref in tensors.values():
        assert ref.dtype in DTYPES and len(ref.shape) <= MAX_DIMS
        assert all(type(d) is int and d >= 0 for d in ref.shape)
        assert ref.nbytes == math.prod(ref.shape) * DTYPES[ref.dtype][1]
        assert 8 + n <= ref.start <= ref.end <= len(blob)
    spans = sorted((r.start, r.end) for r in tensors.values() if r.nbytes)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:])), spans


def check_refused(error: FormatError) -> None:
    assert "\n" not in error.message and "\u2028" not in error.message
    assert 0 < len(error.one_line()) <= MAX_MESSAGE, error.one_line()[:200]


def check_file(label: str, blob: bytes) -> str:
    """The property: accepted and valid (and equal to safetensors' reading), or one bounded FormatError."""
    error = None
    try:
        tensors = parse_file(blob)
    except FormatError as refused:
        check_refused(error := refused)
        outcome = "refused"
    else:
        check_accepted(tensors, blob)
        outcome = "accepted"
    reference = safetensors_reads(blob)
    if reference is not None and not (outcome == "refused" and any(why in error.message for why in STRICTER)):
        assert outcome == "accepted", f"safetensors reads it, we refused it ({label}): {error.message}"
        assert set(tensors) == set(reference)
        for name, ref in tensors.items():
            ours = tensor_from_bytes(bytearray(blob[ref.start : ref.end]), ref)
            assert ours.dtype == reference[name].dtype and tuple(ours.shape) == tuple(reference[name].shape)
            assert raw_bytes(ours) == raw_bytes(reference[name])
    COUNTS[(label, outcome)] += 1
    return outcome


def print_counts(capsys, title: str, counts: Counter) -> None:
    labels = dict.fromkeys(label for label, _ in counts)
    rows = ", ".join(f"{label} {counts[label, 'accepted']}/{counts[label, 'refused']}" for label in labels)
    with capsys.disabled():
        print(f"\n[reliability] {title}: {sum(counts.values()):,} files (accepted/refused: {rows})")


@pytest.fixture
def counts(capsys, request):
    COUNTS.clear()
    yield COUNTS
    print_counts(capsys, request.node.name, COUNTS)


# -- the tests ------------------------------------------------------------------------------------------------------

def test_every_hostile_header_is_accepted_validly_or_refused_with_one_formaterror(counts):
    @FAST
    @given(BATCHES)
    def run(cases):
        for case in cases:
            check_file(*case)

    run()
    refused = {label for (label, outcome) in counts if outcome == "refused"}
    assert sum(counts.values()) >= DEFAULT_FILES * 0.98  # hypothesis skips the odd exact duplicate
    assert refused >= set(MUTATIONS) - {"valid"}  # every kind of damage was generated and refused at least once
    assert counts["valid", "accepted"] > 50


@pytest.mark.slow
@pytest.mark.parametrize("part", range(4))
def test_120_000_hostile_headers(counts, part):
    @seed(part)
    @settings(FAST, max_examples=SLOW_FILES // BATCH, derandomize=False)
    @given(BATCHES)
    def run(cases):
        for case in cases:
            check_file(*case)

    run()
    assert sum(counts.values()) >= SLOW_FILES * 0.98


@settings(FAST, max_examples=100)
@given(BATCHES)
def test_no_allocation_follows_a_claimed_size(counts, cases):
    for label, blob in cases:
        tracemalloc.start()
        try:
            check_file(label, blob)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # JSON objects cost a small multiple of their text; the sizes files claim go up to 2**64 and never show.
        assert peak <= (1 << 20) + 64 * len(blob), (label, peak, len(blob))


def test_claims_of_huge_headers_and_tensors_allocate_nothing_like_them():
    small = json.dumps({"t": {"dtype": "F32", "shape": [2**24, 2**20], "data_offsets": [0, 2**46]}}).encode()
    claims = [
        struct.pack("<Q", MAX_HEADER_BYTES) + b"{}",  # a 100 MB header in a 10-byte file
        struct.pack("<Q", 2**64 - 1) + b"{}",
        struct.pack("<Q", len(small)) + small,  # a 256 TiB tensor in a 90-byte file
    ]
    for blob in claims:
        tracemalloc.start()
        with pytest.raises(FormatError) as refused:
            parse_file(blob)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < 64 << 10, refused.value.message


# -- through the sources: a local folder and the local Hub -----------------------------------------------------------

@settings(FAST, max_examples=50)
@given(BATCHES)
def test_a_local_folder_with_a_hostile_file_opens_validly_or_fails_with_one_formaterror(counts, tmp_path, cases):
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    for label, blob in cases:
        (folder / "model.safetensors").write_bytes(blob)
        check_source(label, blob, lambda: open_source(str(folder)))


@pytest.mark.parametrize("examples", [pytest.param(4, id="default"),  # x BATCH files
                                      pytest.param(500, id="slow", marks=pytest.mark.slow)])
def test_a_hub_repo_with_a_hostile_file_opens_validly_or_fails_with_one_formaterror(counts, hub_server, tmp_path,
                                                                                     examples):
    folder = tmp_path / "hub" / "acme" / "fuzz"
    folder.mkdir(parents=True)
    server = hub_server(tmp_path / "hub")

    @settings(FAST, max_examples=examples)
    @given(BATCHES)
    def run(cases):
        for label, blob in cases:
            (folder / "model.safetensors").write_bytes(blob)
            check_source(label, blob, lambda: open_source("acme/fuzz", endpoint=server.url, use_cache=False))

    run()


@pytest.mark.parametrize("blob", [b"", b"\x01", bytes(7)], ids=["empty", "1 byte", "7 bytes"])
def test_a_file_too_short_for_a_length_prefix_is_a_formaterror_locally_and_on_the_hub(hub_server, tmp_path, blob):
    folder = tmp_path / "hub" / "acme" / "short"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(blob)
    server = hub_server(tmp_path / "hub")
    for spec in (str(folder), "acme/short"):
        with pytest.raises(FormatError, match=f"too short to be a safetensors file \\({len(blob)} bytes\\)"):
            open_source(spec, endpoint=server.url, use_cache=False)


def check_source(label: str, blob: bytes, open_it) -> None:
    try:
        source = open_it()
    except FormatError as error:
        check_refused(error)
        COUNTS[(label, "refused")] += 1
        return
    check_accepted(source.tensors, blob)
    read = source.read_tensors(list(source.tensors))
    for name, ref in source.tensors.items():
        assert raw_bytes(read[name]) == blob[ref.start : ref.end]
    COUNTS[(label, "accepted")] += 1


# -- GGUF: the same property for the GGUF reader --------------------------------------------------------------------

ALIGN = DEFAULT_ALIGNMENT
GGUF_TYPES = sorted(t for t, (name, _, _) in GGML_TYPES.items() if name in SUPPORTED)
SCALAR_TYPES = [t for t, (_, fmt) in VALUE_TYPES.items() if fmt]
SCALAR_VALUES = {0: st.integers(0, 255), 1: st.integers(-128, 127), 2: st.integers(0, 2**16 - 1),
                 3: st.integers(-(2**15), 2**15 - 1), 4: st.integers(0, 2**32 - 1), 5: st.integers(-(2**31), 2**31 - 1),
                 6: st.floats(width=32), 7: st.integers(0, 1), 10: st.integers(0, 2**64 - 1),
                 11: st.integers(-(2**63), 2**63 - 1), 12: st.floats()}
GGUF_MUTATIONS = [
    "valid", "bad magic", "bad version", "huge counts", "huge string length", "unknown value type",
    "array of unknown type", "nested arrays", "bool not 0 or 1", "duplicate metadata key", "bad alignment",
    "invalid utf-8", "too many dims", "absurd dims", "unknown ggml type", "misaligned offset",
    "offset beyond the file", "rows not filling blocks", "overlapping tensors", "duplicate tensor name",
    "truncated file", "random file bytes",
]

GGUF_LABELS = st.sampled_from(GGUF_MUTATIONS)
PICKS = st.integers(0, 3)


def gguf_string(text: str | bytes) -> bytes:
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def gguf_value(type_id: int, value) -> bytes:
    if type_id not in VALUE_TYPES:
        return b""  # nothing a reader could know the size of
    if type_id == 8:
        return gguf_string(value)
    if type_id == 9:
        item_type, items = value
        return struct.pack("<IQ", item_type, len(items)) + b"".join(gguf_value(item_type, v) for v in items)
    return struct.pack(VALUE_TYPES[type_id][1], value)


def gguf_file(kvs: list, infos: list, data_size: int, version: int = 3, magic: bytes = b"GGUF") -> bytes:
    """A GGUF v2/v3 file: kvs are (key, value type, value); infos (name, ne dims, ggml type, offset)."""
    out = magic + struct.pack("<IQQ", version, len(infos), len(kvs))
    for key, type_id, value in kvs:
        out += gguf_string(key) + struct.pack("<I", type_id) + gguf_value(type_id, value)
    for name, dims, type_id, offset in infos:
        out += gguf_string(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", type_id, offset)
    out += bytes(-len(out) % ALIGN)
    return out + bytes(range(256)) * (data_size // 256) + bytes(data_size % 256)


KEYS = st.lists(st.text(min_size=1, max_size=6), max_size=3, unique=True)
TENSOR_NAMES = st.lists(st.text(min_size=1, max_size=6), max_size=4, unique=True)
VALUE_TYPE_IDS = st.sampled_from([*SCALAR_TYPES, 8, 9])
ITEM_TYPE_IDS = st.sampled_from([*SCALAR_TYPES, 8])
ARRAYS = {t: st.lists(st.text(max_size=3) if t == 8 else SCALAR_VALUES[t], max_size=4) for t in [*SCALAR_TYPES, 8]}
GGUF_TYPE_IDS = st.sampled_from(GGUF_TYPES)
EXTRA_DIMS = st.lists(st.integers(1, 3), max_size=2)
SHORT_TEXT = st.text(max_size=6)


@st.composite
def valid_gguf(draw):
    """(kvs, infos, data size): typed metadata and aligned, back-to-back tensors of supported types."""
    kvs = [("general.architecture", 8, "llama")]
    for key in draw(KEYS):
        type_id = draw(VALUE_TYPE_IDS)
        if type_id == 8:
            kvs.append((key, 8, draw(SHORT_TEXT)))
        elif type_id == 9:
            item = draw(ITEM_TYPE_IDS)
            kvs.append((key, 9, (item, draw(ARRAYS[item]))))
        else:
            kvs.append((key, type_id, draw(SCALAR_VALUES[type_id])))
    infos, offset = [], 0
    for name in draw(TENSOR_NAMES):
        type_id = draw(GGUF_TYPE_IDS)
        _, block_elems, block_bytes = GGML_TYPES[type_id]
        dims = [block_elems * draw(st.sampled_from([1, 2]))] + draw(EXTRA_DIMS)
        infos.append((name, dims, type_id, offset))
        offset += -(-math.prod(dims) // block_elems * block_bytes // ALIGN) * ALIGN
    return kvs, infos, offset


@st.composite
def hostile_gguf(draw):
    """(label, file bytes): a valid GGUF broken in one labelled way (or left valid)."""
    kvs, infos, data_size = draw(valid_gguf())
    label = draw(GGUF_LABELS)
    pick = draw(PICKS)
    version, magic = 3, b"GGUF"
    if label == "bad magic":
        magic = draw(st.sampled_from([b"GGUf", b"FUGG", b"\x00\x00\x00\x00", b"GGML"]))
    elif label == "bad version":
        version = draw(st.sampled_from([0, 1, 4, 2**24 * 3, 2**32 - 1]))
    elif label == "unknown value type":
        kvs.append(("x", draw(st.integers(13, 2**32 - 1)), None))
    elif label == "array of unknown type":
        kvs.append(("x", 9, (draw(st.integers(13, 2**32 - 1)), [])))
    elif label == "nested arrays":
        value = (0, [1])
        for _ in range(draw(st.integers(3, 40))):
            value = (9, [value])
        kvs.append(("x", 9, value))
    elif label == "bool not 0 or 1":
        kvs.append(("x", 7, draw(st.integers(2, 255))))
    elif label == "duplicate metadata key":
        kvs.append(kvs[pick % len(kvs)])
    elif label == "bad alignment":
        kvs.append(("general.alignment", *draw(st.sampled_from([(4, 0), (4, 3), (4, 48), (10, 2**63 + 1), (8, "32"),
                                                                 (6, 32.0), (7, 1)]))))
    elif label == "invalid utf-8":
        junk = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80"]))
        if infos and draw(st.booleans()):
            infos[pick % len(infos)] = (junk, *infos[pick % len(infos)][1:])
        else:
            kvs.append((junk, 4, 1))
    elif infos and label == "too many dims":
        name, dims, type_id, offset = infos[pick % len(infos)]
        infos[pick % len(infos)] = (name, dims + [1] * draw(st.integers(5 - len(dims), 40)), type_id, offset)
    elif infos and label == "absurd dims":
        name, _, type_id, offset = infos[pick % len(infos)]
        infos[pick % len(infos)] = (name, draw(st.lists(st.integers(2**24, 2**64 - 1), min_size=1, max_size=4)),
                                    type_id, offset)
    elif infos and label == "unknown ggml type":
        name, dims, _, offset = infos[pick % len(infos)]
        infos[pick % len(infos)] = (name, dims, draw(st.integers(42, 2**32 - 1)), offset)
    elif infos and label == "misaligned offset":
        name, dims, type_id, offset = infos[pick % len(infos)]
        infos[pick % len(infos)] = (name, dims, type_id, offset + draw(st.integers(1, ALIGN - 1)))
    elif infos and label == "offset beyond the file":
        name, dims, type_id, offset = infos[pick % len(infos)]
        infos[pick % len(infos)] = (name, dims, type_id, offset + ALIGN * draw(st.integers(1, 2**50)))
    elif infos and label == "rows not filling blocks":
        name, dims, type_id, offset = infos[pick % len(infos)]
        infos[pick % len(infos)] = (name, [dims[0] + draw(st.integers(1, 31))] + dims[1:], type_id, offset)
    elif len(infos) >= 2 and label == "overlapping tensors":
        first, second = infos[0], infos[1]
        inside = first[3] + draw(st.sampled_from([0, ALIGN]))  # the second starts where, or inside, the first does
        infos[1] = (second[0], second[1], second[2], inside)
        if draw(st.booleans()):  # an empty tensor starting there must not hide the overlap
            infos.append(("\u2205", [0], 0, inside))
    elif infos and label == "duplicate tensor name":
        infos.append(infos[pick % len(infos)])
    blob = gguf_file(kvs, infos, data_size, version, magic)
    header_end = len(blob) - data_size
    if label == "huge counts":
        at = draw(st.sampled_from([8, 16]))  # tensor count or key count
        blob = blob[:at] + struct.pack("<Q", draw(st.integers(2**16, 2**64 - 1))) + blob[at + 8:]
    elif label == "huge string length":
        blob = blob[:24] + struct.pack("<Q", draw(st.integers(2**20, 2**64 - 1))) + blob[32:]
    elif label == "truncated file":
        blob = blob[: draw(st.integers(0, max(0, header_end - 1)))]
    elif label == "random file bytes":
        blob = b"GGUF" * draw(st.booleans()) + draw(st.binary(max_size=64))
    return label, blob


GGUF_BATCHES = st.lists(hostile_gguf(), min_size=BATCH, max_size=BATCH)


def check_gguf(label: str, blob: bytes) -> str:
    """Accepted with in-bounds, non-overlapping, correctly sized spans, or one bounded FormatError."""
    try:
        header = parse_gguf(lambda start, end: blob[start:end], len(blob), "fuzz.gguf")
    except FormatError as error:
        check_refused(error)
        outcome = "refused"
    else:
        assert header.data_start % header.alignment == 0 and header.data_start <= len(blob)
        for name, ref in header.tensors.items():
            assert header.data_start <= ref.start <= ref.end <= len(blob)
            if ref.dtype in BLOCKS_BY_NAME:
                elems, size = BLOCKS_BY_NAME[ref.dtype]
                assert ref.nbytes == math.prod(ref.shape) // elems * size and ref.shape[-1] % elems == 0
        spans = sorted((r.start, r.end) for r in header.tensors.values() if r.nbytes)
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:])), spans
        outcome = "accepted"
    COUNTS[(label, outcome)] += 1
    return outcome


def test_every_hostile_gguf_is_accepted_validly_or_refused_with_one_formaterror(counts):
    @settings(FAST, max_examples=DEFAULT_FILES // 2 // BATCH)
    @given(GGUF_BATCHES)
    def run(cases):
        for case in cases:
            check_gguf(*case)

    run()
    refused = {label for (label, outcome) in counts if outcome == "refused"}
    assert sum(counts.values()) >= DEFAULT_FILES // 2 * 0.98
    assert refused >= set(GGUF_MUTATIONS) - {"valid", "unknown ggml type"}
    assert counts["valid", "accepted"] > 25 and counts["unknown ggml type", "accepted"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("part", range(4))
def test_120_000_hostile_ggufs(counts, part):
    @seed(part)
    @settings(FAST, max_examples=SLOW_FILES // BATCH, derandomize=False)
    @given(GGUF_BATCHES)
    def run(cases):
        for case in cases:
            check_gguf(*case)

    run()
    assert sum(counts.values()) >= SLOW_FILES * 0.98


def test_gguf_claims_of_huge_counts_and_lengths_allocate_nothing_like_them():
    kvs, infos = [("general.architecture", 8, "llama")], [("t", [32], 0, 0)]
    blob = gguf_file(kvs, infos, 128)
    claims = [blob[:8] + struct.pack("<Q", 2**20) + blob[16:],  # a million tensors in a 200-byte file
              blob[:16] + struct.pack("<Q", 2**16) + blob[24:],  # 65,536 keys
              blob[:24] + struct.pack("<Q", 2**63) + blob[32:],  # an 8-EiB key
              gguf_file(kvs + [("a", 9, (4, []))], infos, 128).replace(struct.pack("<IQ", 4, 0),
                                                                     struct.pack("<IQ", 4, 2**24))]  # 16M-item array
    for claim in claims:
        tracemalloc.start()
        with pytest.raises(FormatError) as refused:
            parse_gguf(lambda start, end: claim[start:end], len(claim), "claims.gguf")
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < 64 << 10, refused.value.message


@settings(FAST, max_examples=40)
@given(st.lists(valid_gguf(), min_size=BATCH, max_size=BATCH))
def test_the_valid_ggufs_of_the_fuzzer_read_the_same_in_the_gguf_package(tmp_path, layouts):
    for kvs, infos, data_size in layouts:
        path = tmp_path / "valid.gguf"
        path.write_bytes(gguf_file(kvs, infos, data_size))
        theirs = {t.name: (list(t.shape), int(t.tensor_type), t.data_offset) for t in gguf.GGUFReader(path).tensors}
        ours = GGUFSource(path)
        mine = {n: (list(reversed(r.shape)), ours.header.type_ids[n], r.start) for n, r in ours.tensors.items()}
        assert mine == theirs


@settings(FAST, max_examples=40)
@given(GGUF_BATCHES)
def test_a_hostile_local_gguf_reads_validly_or_fails_with_one_formaterror(counts, tmp_path, cases):
    for label, blob in cases:
        path = tmp_path / "fuzz.gguf"
        path.write_bytes(blob)
        try:
            source = GGUFSource(path)
            readable = [n for n, r in source.tensors.items() if r.dtype in SUPPORTED]
            tensors = source.read_tensors(readable)
        except FormatError as error:
            check_refused(error)
            COUNTS[(label, "refused")] += 1
            continue
        assert {n: tuple(t.shape) for n, t in tensors.items()} == {n: source.tensors[n].shape for n in readable}
        COUNTS[(label, "accepted")] += 1
