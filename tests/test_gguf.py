"""GGUF sources: our parser and dequantisation against files written, and values decoded, by the `gguf` package."""

import json
import struct

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q

from solarforensics.errors import FormatError, NotFoundError
from solarforensics.families.family import find_family
from solarforensics.families.selection import select
from solarforensics.sources.gguf import GGUFSource, unpermute_rope_rows
from solarforensics.sources.spec import open_source

ROW = 256  # one K-quant super-block per row, eight blocks of the 32-element types
QUANTISED = [Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.BF16, Q.F16]
K_QUANTS = {Q.Q2_K: (80, 82), Q.Q3_K: (108,), Q.Q4_K: (0, 2), Q.Q5_K: (0, 2), Q.Q6_K: (208,)}  # f16 scale offsets


def k_quant_blocks(qtype: Q, rows: int, rng) -> np.ndarray:
    """Random K-quant rows whose f16 super-block scales are finite (every other byte pattern is a valid block)."""
    size = gguf.GGML_QUANT_SIZES[qtype][1]
    raw = rng.integers(0, 256, size=(rows, size), dtype=np.uint8)
    for offset in K_QUANTS[qtype]:
        raw[:, offset : offset + 2] = rng.uniform(0.01, 1, (rows, 1)).astype(np.float16).view(np.uint8)
    return raw


@pytest.fixture(scope="module")
def typed_gguf(tmp_path_factory):
    """One tensor of each type we dequantise, plus every metadata value type."""
    path = tmp_path_factory.mktemp("gguf") / "types.gguf"
    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_uint8("test.u8", 200)
    writer.add_int8("test.i8", -100)
    writer.add_uint16("test.u16", 60000)
    writer.add_int16("test.i16", -30000)
    writer.add_int32("test.i32", -7)
    writer.add_float32("test.f32", 0.5)
    writer.add_bool("test.bool", True)
    writer.add_uint64("test.u64", 1 << 40)
    writer.add_int64("test.i64", -(1 << 40))
    writer.add_float64("test.f64", 0.25)
    writer.add_array("test.floats", [1.5, 2.5])
    writer.add_license("apache-2.0")
    writer.add_tensor("f32.weight", rng.standard_normal((3, ROW)).astype(np.float32))
    for qtype in QUANTISED:
        writer.add_tensor(f"{qtype.name.lower()}.weight", gguf.quants.quantize(
            rng.standard_normal((3, ROW)).astype(np.float32), qtype), raw_dtype=qtype)
    for qtype in K_QUANTS:
        writer.add_tensor(f"{qtype.name.lower()}.weight", k_quant_blocks(qtype, 3, rng), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def tiny_llama_gguf(path, *, qtype=Q.F32, heads=4, kv_heads=2, head_dim=8, layers=2, rng_seed=1):
    """A tiny llama-architecture GGUF in llama.cpp naming, with a vocabulary; the head is tied (no output.weight)."""
    rng = np.random.default_rng(rng_seed)
    hidden = heads * head_dim
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(layers)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(2 * hidden)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_context_length(128)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(["<s>", "a", "b", "ab"])
    writer.add_token_types([3, 1, 1, 1])
    writer.add_token_merges(["a b"])
    writer.add_bos_token_id(0)
    shapes = {"attn_norm": (hidden,), "attn_q": (hidden, hidden), "attn_k": (kv_heads * head_dim, hidden),
              "attn_v": (kv_heads * head_dim, hidden), "attn_output": (hidden, hidden), "ffn_norm": (hidden,),
              "ffn_gate": (2 * hidden, hidden), "ffn_up": (2 * hidden, hidden), "ffn_down": (hidden, 2 * hidden)}
    tensors = {"token_embd.weight": rng.standard_normal((4, hidden)).astype(np.float32)}
    for layer in range(layers):
        for role, shape in shapes.items():
            tensors[f"blk.{layer}.{role}.weight"] = rng.standard_normal(shape).astype(np.float32)
    tensors["output_norm.weight"] = np.ones(hidden, np.float32)
    for name, array in tensors.items():
        if qtype != Q.F32 and array.ndim == 2:
            writer.add_tensor(name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path, tensors


def test_header_metadata_types_alignment_and_pytorch_shapes(typed_gguf):
    source = open_source(str(typed_gguf))
    assert isinstance(source, GGUFSource)
    header = source.header
    assert (header.version, header.alignment) == (3, 32)
    assert header.data_start % 32 == 0
    md = header.metadata
    assert {k: md[k] for k in md if k.startswith("test.")} == {
        "test.u8": 200, "test.i8": -100, "test.u16": 60000, "test.i16": -30000, "test.i32": -7, "test.f32": 0.5,
        "test.bool": True, "test.u64": 1 << 40, "test.i64": -(1 << 40), "test.f64": 0.25, "test.floats": [1.5, 2.5]}
    assert md["general.architecture"] == "llama" and md["general.license"] == "apache-2.0"
    assert {name: (ref.dtype, ref.shape) for name, ref in source.tensors.items()} == {
        "f32.weight": ("F32", (3, ROW)), "q4_0.weight": ("Q4_0", (3, ROW)), "q4_1.weight": ("Q4_1", (3, ROW)),
        "q5_0.weight": ("Q5_0", (3, ROW)), "q5_1.weight": ("Q5_1", (3, ROW)), "q8_0.weight": ("Q8_0", (3, ROW)),
        "bf16.weight": ("BF16", (3, ROW)), "f16.weight": ("F16", (3, ROW)), "q2_k.weight": ("Q2_K", (3, ROW)),
        "q3_k.weight": ("Q3_K", (3, ROW)), "q4_k.weight": ("Q4_K", (3, ROW)), "q5_k.weight": ("Q5_K", (3, ROW)),
        "q6_k.weight": ("Q6_K", (3, ROW))}
    assert source.tensors["q4_k.weight"].nbytes == 3 * 144
    assert source.parameters() == 13 * 3 * ROW


def test_dequantised_values_equal_the_gguf_packages_own(typed_gguf):
    source = open_source(str(typed_gguf))
    ours = source.read_tensors(source.tensors)
    for tensor in gguf.GGUFReader(str(typed_gguf)).tensors:
        expected = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        got = ours[tensor.name]
        assert got.shape == (3, ROW), tensor.name
        assert np.array_equal(got.float().numpy(), expected.reshape(3, ROW)), tensor.name
    assert (ours["f32.weight"].dtype, ours["f16.weight"].dtype, ours["bf16.weight"].dtype) == (
        torch.float32, torch.float16, torch.bfloat16)  # plain types keep their dtype
    assert ours["q6_k.weight"].dtype == torch.float32


def test_q8_k_is_its_f32_scale_times_int8_values():
    from solarforensics.sources.gguf_quants import dequantize

    values = np.arange(-128, 128, dtype=np.int8)
    block = np.float32(0.5).tobytes() + values.tobytes() + bytes(32)  # bsums are not needed to dequantise
    assert dequantize(bytearray(block), "Q8_K", (1, 256)).flatten().tolist() == (values * 0.5).tolist()


def test_llama_q_and_k_rows_come_back_in_hf_order(tmp_path):
    path, written = tiny_llama_gguf(tmp_path / "tiny.gguf")
    source = open_source(str(path))
    read = source.read_tensors(["blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight"])
    for name, heads in (("blk.0.attn_q.weight", 4), ("blk.0.attn_k.weight", 2)):
        stored = torch.from_numpy(written[name])  # what llama.cpp's converter wrote: pairs interleaved per head
        hf = read[name]
        # the converter's permutation: HF rows (head, half, i) are written as (head, i, half)
        converted = hf.reshape(heads, 2, hf.shape[0] // heads // 2, -1).transpose(1, 2).reshape(hf.shape)
        assert torch.equal(converted, stored), name
        assert not torch.equal(hf, stored)
    assert torch.equal(read["blk.0.attn_v.weight"], torch.from_numpy(written["blk.0.attn_v.weight"]))
    rows = torch.arange(8.0).reshape(8, 1)
    assert unpermute_rope_rows(rows, 2).flatten().tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_read_rows_reads_only_those_rows_of_quantised_and_permuted_tensors(tmp_path):
    path, _ = tiny_llama_gguf(tmp_path / "tiny.gguf", qtype=Q.Q8_0)
    source = open_source(str(path))
    full = source.read_tensors(["token_embd.weight", "blk.1.attn_q.weight", "blk.1.attn_k.weight"])
    before = source.provenance.bytes_transferred
    assert torch.equal(source.read_rows("token_embd.weight", [3, 1]), full["token_embd.weight"][[3, 1]])
    assert source.provenance.bytes_transferred - before == 2 * 34  # one Q8_0 block per 32-wide row
    assert torch.equal(source.read_rows("blk.1.attn_q.weight", [0, 1, 5, 31]), full["blk.1.attn_q.weight"][[0, 1, 5, 31]])
    assert torch.equal(source.read_rows("blk.1.attn_k.weight", [15, 2]), full["blk.1.attn_k.weight"][[15, 2]])


def test_synthetic_config_family_groups_and_vocabulary(tmp_path):
    path, _ = tiny_llama_gguf(tmp_path / "tiny.gguf")
    source = open_source(str(path))
    assert {k: v for k, v in source.config.items() if k != "gguf"} == {
        "model_type": "gguf:llama", "architecture": "llama", "num_hidden_layers": 2, "hidden_size": 32,
        "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128,
        "vocab_size": 4, "tie_word_embeddings": True}
    family = find_family(source.config, source.tensors)
    assert (family.name, family.inferred) == ("gguf_llama", False)
    assert family.classify(source.tensors)[1] == []
    assert sorted(family.expected_names(source.config)) == sorted(source.tensors)
    picked = select(family, source.tensors, "layernorm,attn-q", config=source.config)
    assert [(s.role, s.layer, s.name) for s in picked] == [
        ("attn_norm", 0, "blk.0.attn_norm.weight"), ("mlp_norm", 0, "blk.0.ffn_norm.weight"),
        ("attn_norm", 1, "blk.1.attn_norm.weight"), ("mlp_norm", 1, "blk.1.ffn_norm.weight"),
        ("q", 0, "blk.0.attn_q.weight"), ("q", 1, "blk.1.attn_q.weight")]
    vocab = source.gguf_vocab()
    assert (vocab.model, vocab.tokens, vocab.token_types, vocab.merges, vocab.special_ids) == (
        "gpt2", ["<s>", "a", "b", "ab"], [3, 1, 1, 1], ["a b"], {"bos": 0})


def test_a_gguf_on_the_local_hub_reads_like_the_local_file(tmp_path, hub_server):
    (tmp_path / "hub" / "acme" / "tiny-gguf").mkdir(parents=True)
    path, _ = tiny_llama_gguf(tmp_path / "hub" / "acme" / "tiny-gguf" / "tiny-Q8_0.gguf", qtype=Q.Q8_0)
    hub_server(tmp_path / "hub")
    local = open_source(str(path))
    expected = local.read_tensors(local.tensors)
    for spec in ("acme/tiny-gguf", "hf:acme/tiny-gguf@main/tiny-Q8_0.gguf"):
        remote = open_source(spec)
        assert remote.provenance.kind == "hub" and remote.config == local.config
        assert {n: r.shape for n, r in remote.tensors.items()} == {n: r.shape for n, r in local.tensors.items()}
        got = remote.read_tensors(remote.tensors)
        assert all(torch.equal(got[n], expected[n]) for n in expected)
    again = open_source("acme/tiny-gguf")  # header and tensors now come from the range cache
    again.read_tensors(again.tensors)
    assert (again.provenance.bytes_transferred, again.provenance.cache_hits) == (0, 1 + len(again.tensors))


def test_inspect_counts_gguf_parameters_as_the_sum_of_element_counts(cli, typed_gguf):
    code, stdout, _ = cli("inspect", typed_gguf, "--json")
    assert code == 0
    doc = json.loads(stdout)
    assert doc["parameters"] == sum(t.n_elements for t in gguf.GGUFReader(str(typed_gguf)).tensors) == 13 * 3 * ROW
    assert doc["tensors"] == 13
    assert doc["dtypes"]["Q4_K"] == {"tensors": 1, "parameters": 3 * ROW, "bytes": 3 * 144}
    assert doc["config_summary"]["model_type"] == "gguf:llama"


# --- bad input: hand-packed headers, so each defect is exactly one --------------------------------------------------

def _str(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _kv(key: str, value_type: int, payload: bytes) -> bytes:
    return _str(key) + struct.pack("<I", value_type) + payload


def _info(name: str, dims: list[int], type_id: int, offset: int) -> bytes:
    return _str(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, type_id, offset)


ARCH = _kv("general.architecture", 8, _str("llama"))


def pack(kvs=(ARCH,), infos=(_info("w", [32, 2], 0, 0),), data=bytes(256), *, version=3, counts=None,
         magic=b"GGUF") -> bytes:
    n_tensors, n_kv = counts or (len(infos), len(kvs))
    head = magic + struct.pack("<IQQ", version, n_tensors, n_kv) + b"".join(kvs) + b"".join(infos)
    return head + bytes(-len(head) % 32) + data


def test_the_hand_packed_reference_file_is_valid(tmp_path):
    (tmp_path / "ok.gguf").write_bytes(pack())
    source = open_source(str(tmp_path / "ok.gguf"))
    assert source.read_tensors(["w"])["w"].shape == (2, 32)
    assert gguf.GGUFReader(str(tmp_path / "ok.gguf")).tensors[0].name == "w"


@pytest.mark.parametrize("data, message", [
    (pack(magic=b"GGUX"), "bad.gguf: not a GGUF file (no GGUF magic at the start)"),
    (pack()[:40], "bad.gguf: GGUF length of metadata key is 20 but only 8 bytes follow (the file is truncated or corrupt)"),
    (pack()[:54], "bad.gguf: GGUF header is truncated: value type of 'general.architecture' at byte 52 needs 4 bytes "
                  "but the file has 54 (the file is incomplete or not GGUF)"),
    (pack()[:-1], "bad.gguf: GGUF tensor 'w' ends beyond the end of the file (truncated?)"),
    (pack(version=1), "bad.gguf: GGUF version 1 is not supported (versions 2 and 3 are)"),
    (pack()[:4] + struct.pack(">I", 3) + pack()[8:], "bad.gguf: a big-endian GGUF is not supported (versions 2 and 3 are)"),
    (pack(counts=(1 << 40, 1)), "bad.gguf: GGUF tensor count is 1,099,511,627,776, over the cap of 1,048,576"),
    (pack(counts=(100_000, 1)), "bad.gguf: GGUF tensor count is 100,000 but only 368 bytes follow "
                                "(the file is truncated or corrupt)"),
    (pack(kvs=[struct.pack("<Q", 1 << 60)]), "bad.gguf: GGUF length of metadata key is 1,152,921,504,606,846,976, "
                                             "over the cap of 16,777,216"),
    (pack(kvs=[_kv("a", 9, struct.pack("<IQ", 4, 1 << 30))]),
     "bad.gguf: GGUF array length of 'a' is 1,073,741,824, over the cap of 16,777,216"),
    (pack(kvs=[ARCH, ARCH]), "bad.gguf: GGUF metadata key 'general.architecture' appears twice"),
    (pack(kvs=[_kv("a", 13, b"")]), "bad.gguf: GGUF key 'a' has unknown value type 13"),
    (pack(kvs=[ARCH, _kv("general.alignment", 4, struct.pack("<I", 48))]),
     "bad.gguf: GGUF general.alignment 48 is not a power of two"),
    (pack(infos=[_info("w", [2] * 5, 0, 0)]), "bad.gguf: GGUF tensor 'w' has 5 dimensions (at most 4)"),
    (pack(infos=[_info("w", [1 << 40, 1 << 40], 0, 0)]),
     "bad.gguf: GGUF tensor 'w' has an absurd shape [1099511627776, 1099511627776]"),
    (pack(infos=[_info("w", [32, 2], 0, 0), _info("w", [32], 0, 0)]), "bad.gguf: GGUF tensor 'w' appears twice"),
    (pack(infos=[_info("w", [32, 2], 0, 0), _info("v", [32], 0, 128)]), "bad.gguf: GGUF tensors 'w' and 'v' overlap"),
    (pack(infos=[_info("w", [32], 0, 16)]), "bad.gguf: GGUF tensor 'w' has offset 16, not a multiple of the alignment 32"),
    (pack(infos=[_info("w", [48], 2, 0)]), "bad.gguf: GGUF tensor 'w': rows of 48 values do not fill whole Q4_0 "
                                           "blocks of 32"),
    (pack(kvs=[]), "GGUF metadata has no general.architecture (the file is not a model GGUF)"),
])
def test_broken_ggufs_fail_with_one_line(tmp_path, data, message):
    (tmp_path / "bad.gguf").write_bytes(data)
    with pytest.raises(FormatError) as err:
        open_source(str(tmp_path / "bad.gguf"))
    assert err.value.one_line() == message


def test_an_unknown_quant_type_is_counted_but_not_read(tmp_path, cli):
    (tmp_path / "odd.gguf").write_bytes(pack(infos=[_info("w", [32, 2], 99, 0), _info("iq", [256], 16, 256)],
                                             data=bytes(256 + 66)))
    source = open_source(str(tmp_path / "odd.gguf"))
    assert {n: (r.dtype, r.numel, r.nbytes) for n, r in source.tensors.items()} == {
        "w": ("type99", 64, 256), "iq": ("IQ2_XXS", 256, 66)}  # an unknown type spans up to the next tensor
    for name, kind in (("w", "type99"), ("iq", "IQ2_XXS")):
        with pytest.raises(FormatError) as err:
            source.read_tensors([name])
        assert err.value.one_line().startswith(f"odd.gguf: tensor {name!r} has GGML type {kind}, which solarforensics "
                                               "cannot dequantise (supported: BF16, F16, F32, F64, I16, I32, I64, I8, ")
    code, stdout, _ = cli("inspect", tmp_path / "odd.gguf", "--json")
    assert code == 0 and json.loads(stdout)["parameters"] == 64 + 256


def test_a_truncated_gguf_is_one_line_and_a_non_zero_exit(tmp_path, cli):
    (tmp_path / "cut.gguf").write_bytes(pack()[:-1])
    code, stdout, stderr = cli("inspect", tmp_path / "cut.gguf")
    assert (code, stdout) == (2, "")
    assert stderr == "solarforensics: error: cut.gguf: GGUF tensor 'w' ends beyond the end of the file (truncated?)\n"


def test_a_folder_with_several_ggufs_asks_for_one(tmp_path):
    for name in ("a-Q4_0.gguf", "a-Q8_0.gguf"):
        (tmp_path / name).write_bytes(pack())
    with pytest.raises(NotFoundError) as err:
        open_source(str(tmp_path))
    assert err.value.one_line() == (f"{tmp_path}: no safetensors weights, but 2 .gguf files (a-Q4_0.gguf, a-Q8_0.gguf) "
                                    f"(name one: {tmp_path}/a-Q4_0.gguf)")


def test_the_tokenizer_analysis_reads_a_gguf_vocabulary(cli, tmp_path):
    """A GGUF has no tokenizer.json: its tokenizer.ggml.* metadata is the vocabulary (gpt2 = byte-level BPE)."""
    path, _ = tiny_llama_gguf(tmp_path / "a.gguf")
    out = tmp_path / "t.json"
    code, stdout, stderr = cli("tokenizer", path, path, "--json", "--out", out)
    assert code == 0, stderr
    doc = json.loads(stdout)
    assert (doc["vocab_size_a"], doc["vocab_size_b"], doc["shared_tokens"], doc["same_id"]) == (4, 4, 4, 4)
    assert doc["jaccard"] == 1.0
