"""Hashes are SHA-256 of the exact little-endian bytes a safetensors file would hold, whole tensor and per row."""

import hashlib
import struct

import torch

from solarforensics.metrics.hashing import row_hashes, sha256_bytes, shared_rows, tensor_sha256

EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_sha256_bytes_is_plain_sha256():
    assert sha256_bytes(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert sha256_bytes(memoryview(b"")) == EMPTY


def test_tensor_hash_covers_the_little_endian_bytes_in_its_own_dtype():
    assert tensor_sha256(torch.tensor([1.0, -2.0])) == sha256_bytes(struct.pack("<2f", 1.0, -2.0))
    assert tensor_sha256(torch.tensor([1.0], dtype=torch.bfloat16)) == sha256_bytes(b"\x80\x3f")
    assert tensor_sha256(torch.tensor([1.0], dtype=torch.float16)) == sha256_bytes(b"\x00\x3c")
    assert tensor_sha256(torch.tensor([258], dtype=torch.int16)) == sha256_bytes(b"\x02\x01")
    assert tensor_sha256(torch.tensor(3.0, dtype=torch.float64)) == sha256_bytes(struct.pack("<d", 3.0))
    assert tensor_sha256(torch.tensor([True, False])) == sha256_bytes(b"\x01\x00")
    assert tensor_sha256(torch.empty(0, 4)) == EMPTY


def test_same_values_in_another_dtype_hash_differently():
    values = torch.tensor([0.5, 1.5])
    assert tensor_sha256(values) != tensor_sha256(values.to(torch.bfloat16))


def test_non_contiguous_tensors_hash_in_row_major_order():
    t = torch.arange(6, dtype=torch.float32).reshape(2, 3).T  # rows [0, 3], [1, 4], [2, 5]
    assert tensor_sha256(t) == sha256_bytes(struct.pack("<6f", 0, 3, 1, 4, 2, 5))


def test_tensor_larger_than_one_hash_piece():
    t = torch.arange(70 << 20, dtype=torch.int64).to(torch.uint8)  # 70 MiB: crosses the 64 MiB update size
    assert tensor_sha256(t) == hashlib.sha256(t.numpy().tobytes()).hexdigest()


def test_row_hashes_hash_each_row_and_flatten_the_rest():
    t = torch.arange(12, dtype=torch.int16).reshape(3, 2, 2)
    assert row_hashes(t) == [sha256_bytes(struct.pack("<4h", *range(4 * r, 4 * r + 4))) for r in range(3)]
    assert row_hashes(torch.zeros(2, 0)) == [EMPTY, EMPTY]
    assert row_hashes(torch.zeros(0, 5)) == []


def test_shared_rows_counts_a_partial_copy():
    embed_a = torch.randn(10, 8, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    embed_b = torch.randn(12, 8, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    embed_b[[0, 5, 11]] = embed_a[[7, 2, 3]]  # three rows copied, in another order
    assert shared_rows(row_hashes(embed_a), row_hashes(embed_b)) == 3


def test_shared_rows_matches_each_row_of_b_at_most_once():
    assert shared_rows(["x", "x", "y", "z"], ["x", "y", "y", "w"]) == 2
    assert shared_rows(["x", "x"], ["x", "x", "x"]) == 2
    assert shared_rows([], ["x"]) == 0
