"""The safetensors header parser pins the format: 8-byte little-endian length, JSON, data at 8 + N; anything else is
one clear FormatError."""

import json
import struct

import pytest
import torch
from safetensors.torch import save

from solarforensics.errors import FormatError
from solarforensics.sources.safetensors_format import (
    MAX_HEADER_BYTES,
    TensorRef,
    header_length,
    parse_header,
    tensor_from_bytes,
)


def header_bytes(entries) -> bytes:
    return json.dumps(entries).encode()


def test_offsets_are_absolute_and_match_the_safetensors_library():
    blob = save({"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(4, dtype=torch.bfloat16)})
    n = header_length(blob[:8], "x", len(blob))
    tensors, metadata = parse_header(blob[8 : 8 + n], "x", len(blob))
    a = tensors["a"]
    assert (a.dtype, a.shape, a.nbytes) == ("F32", (2, 3), 24)
    assert tensor_from_bytes(blob[a.start : a.end], a).tolist() == [[0, 1, 2], [3, 4, 5]]
    assert tensors["b"].end <= len(blob)


def test_metadata_is_returned():
    header = header_bytes({"__metadata__": {"format": "pt"}, "t": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}})
    _, metadata = parse_header(header, "x", 8 + len(header) + 2)
    assert metadata == {"format": "pt"}


@pytest.mark.parametrize(
    "entries, message",
    [
        ({"t": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 2]}}, "unknown dtype"),
        ({"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 7]}}, "do not match shape"),
        ({"t": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, "invalid shape"),
        ({"t": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 4]}}, "absurd shape"),
        ({"t": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}}, "invalid shape"),
        ({"t": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}}, "out of order"),
        ({"t": {"dtype": "F32", "shape": [1], "data_offsets": [0]}}, "invalid data_offsets"),
        ({"t": {"dtype": "F32", "shape": [100], "data_offsets": [0, 400]}}, "beyond the end"),
        ({"t": [1, 2]}, "is not an object"),
        (
            {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}},
            "overlap",
        ),
        ({"__metadata__": {"k": 1}}, "__metadata__"),
    ],
)
def test_hostile_entries_are_refused(entries, message):
    header = header_bytes(entries)
    with pytest.raises(FormatError, match=message):
        parse_header(header, "x", 8 + len(header) + 16)


def test_duplicate_keys_invalid_json_and_non_objects_are_refused():
    with pytest.raises(FormatError, match="duplicate key"):
        parse_header(b'{"a": {}, "a": {}}', "x")
    with pytest.raises(FormatError, match="not valid UTF-8 JSON"):
        parse_header(b"\xff\xfe{", "x")
    with pytest.raises(FormatError, match="not a JSON object"):
        parse_header(b"[1, 2]", "x")


def test_header_length_is_capped_and_checked_against_the_file():
    with pytest.raises(FormatError, match="over the"):
        header_length(struct.pack("<Q", MAX_HEADER_BYTES + 1), "x")
    with pytest.raises(FormatError, match="but the file has"):
        header_length(struct.pack("<Q", 100), "x", file_size=50)
    with pytest.raises(FormatError, match="too short"):
        header_length(b"\x01\x02", "x")


def test_bytes_of_the_wrong_length_are_refused():
    ref = TensorRef("t", "x", "F32", (2,), 0, 8)
    with pytest.raises(FormatError, match="expected 8"):
        tensor_from_bytes(b"\x00" * 7, ref)
