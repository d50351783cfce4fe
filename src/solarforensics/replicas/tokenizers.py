"""Synthetic tokenizer.json files for the replicas: the real vocabulary sizes, overlaps and byte-alphabet positions,
with generated token strings (configs/replicas/tokenizers.toml holds the numbers and their sources).

The strings are words over a-z ('Ġ' marks a leading space, as in byte-level BPE). Every vocabulary is built so its
merges are valid (both parts and the result are tokens), so the files load in the `tokenizers` library:
Solar's vocabulary is prefix-closed with one merge per token, like a trained BPE; GLM's contains every string of up
to three letters, which gives its longer tokens several valid splits (GLM lists more merges than tokens).
"""

from __future__ import annotations

import functools
import json
import tomllib
from itertools import product

import numpy as np

from solarforensics.datafiles import config_path

LETTERS = "abcdefghijklmnopqrstuvwxyz"
SPACE = "Ġ"  # byte-level BPE's picture of the space byte
HANGUL_LEADS = range(0xEA, 0xEE)  # UTF-8 lead bytes of most Hangul syllables
CONTINUATION = range(0x80, 0xC0)
BYTE_LEVEL_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                    r"|\s*[\r\n]+|\s+(?!\S)|\s+")


@functools.lru_cache(maxsize=1)
def tokenizer_params() -> dict:
    with open(config_path("replicas", "tokenizers.toml"), "rb") as handle:
        return tomllib.load(handle)


@functools.lru_cache(maxsize=1)
def byte_chars() -> dict[int, str]:
    """GPT-2's byte -> character map: printable bytes stand for themselves, the others for chr(256 + n)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: chr(b) for b in printable}
    for n, b in enumerate(b for b in range(256) if b not in chars):
        chars[b] = chr(256 + n)
    return chars


def byte_alphabet() -> list[str]:
    """The 256 byte-level characters in vocabulary order: '!' first, then '"', '#', ... (printable bytes first)."""
    return list(byte_chars().values())


def _strings(length: int) -> list[str]:
    """Every string of `length` letters, plus every 'Ġ' + (length - 1) letters."""
    return ["".join(p) for p in product(LETTERS, repeat=length)] + [
        SPACE + "".join(p) for p in product(LETTERS, repeat=length - 1)]


def _extend(rng: np.random.Generator, parents: list[str], count: int, taken: set[str], next_chars) -> list[str]:
    """`count` new strings, each a parent plus one character; parents grow as strings are added (prefix-closed)."""
    pool, out = list(parents), []
    while len(out) < count:
        base = pool[int(rng.integers(len(pool)))]
        options = next_chars(base)
        grown = base + options[int(rng.integers(len(options)))]
        if grown not in taken:
            taken.add(grown)
            out.append(grown)
            pool.append(grown)
    return out


def _order(rng: np.random.Generator, tokens: list[str]) -> list[str]:
    """Shorter tokens first (they are merged earlier), ties in a seeded random order."""
    keys = rng.random(len(tokens))
    lengths = np.fromiter((len(t) for t in tokens), dtype=np.int64, count=len(tokens))
    return [tokens[i] for i in np.lexsort((keys, lengths))]


def _place(ordered: list[str], examples: dict[str, int], first_id: int) -> None:
    """Move each example token to its published id (swapping with the token there)."""
    for token, token_id in sorted(examples.items(), key=lambda item: item[1]):
        here, there = ordered.index(token), token_id - first_id
        ordered[here], ordered[there] = ordered[there], ordered[here]


@functools.lru_cache(maxsize=2)
def solar_glm_tokenizers(seed: int = 7) -> tuple[bytes, bytes]:
    """(Solar's tokenizer.json, GLM's tokenizer.json) as bytes: built together because their overlap is the point."""
    p = tokenizer_params()
    solar, glm, both = p["solar"], p["glm"], p["solar_glm"]
    rng = np.random.default_rng(seed)
    base = _strings(2) + _strings(3) + [SPACE * 2, SPACE * 3, SPACE * 4]  # in both vocabularies
    shared4 = both["shared"] - 256 - len(base)
    glm4 = glm["vocab"] - 256 - len(base)
    korean = solar["high_other"]
    latin_only = solar["vocab"] - solar["reserved"] - 256 - len(base) - shared4 - korean
    four = _strings(4)
    pinned = [four.index(t) for t in {**solar["examples"], **glm["examples"]} if len(t) == 4 and t in set(four)]
    perm = rng.permutation(len(four))
    perm = np.concatenate([pinned, perm[~np.isin(perm, pinned)]])
    shared_four = [four[i] for i in perm[:shared4]]
    glm_four = [four[i] for i in perm[shared4:glm4]]
    solar_four = [four[i] for i in perm[glm4:glm4 + latin_only // 2]]
    taken = set(base) | set(shared_four) | set(glm_four) | set(solar_four)
    solar_five = _extend(rng, shared_four + solar_four, latin_only - len(solar_four), taken, lambda _: LETTERS)
    solar_korean = _korean(rng, korean)
    # Solar ids: specials, the byte alphabet at 4096, then the low region and (from high_region) later additions.
    low_size = solar["high_region"] - solar["reserved"] - 256
    low = base + shared_four + solar_four + solar_five
    low, late = low[:low_size], low[low_size:]
    solar_low = _order(rng, low)
    _place(solar_low, solar["examples"], solar["reserved"] + 256)
    solar_tokens = solar_low + _order(rng, late + solar_korean)
    glm_tokens = _order(rng, base + shared_four + glm_four)
    _place(glm_tokens, glm["examples"], 256)
    specials = {int(k): v for k, v in solar["specials"].items()}
    solar_vocab = [specials.get(i, f"<|special_{i}|>") for i in range(solar["reserved"])]
    solar_vocab += byte_alphabet() + solar_tokens
    glm_vocab = byte_alphabet() + glm_tokens
    _pin_same_ids(solar_vocab, glm_vocab, both["same_id"], solar["reserved"] + 256, set(solar["examples"].values()))
    # Solar's merges differ from GLM's for some shared tokens: it splits them after the first character instead.
    alternative = set(rng.choice(shared_four, both["shared"] - 256 - both["shared_merges"], replace=False).tolist())
    solar_merges = [(t[0], t[1:]) if t in alternative else (t[:-1], t[-1])
                    for t in solar_vocab[solar["reserved"] + 256:]]
    glm_merges = _glm_merges(rng, glm_vocab[256:], glm["merges"], alternative)
    solar_added = [(i, text) for i, text in sorted(specials.items())]
    glm_added = [(int(i), text) for i, text in sorted(glm["added"].items(), key=lambda item: int(item[0]))]
    return (_byte_level_json(solar_vocab, solar_merges, solar_added),
            _byte_level_json(glm_vocab, glm_merges, glm_added))


def _korean(rng: np.random.Generator, count: int) -> list[str]:
    """Prefix-closed byte-level pieces of UTF-8 Hangul: lead byte, then two continuation bytes, per syllable."""
    conts = [byte_chars()[b] for b in CONTINUATION]
    leads = [byte_chars()[b] for b in HANGUL_LEADS]
    pairs = [lead + c for lead in leads for c in conts]
    taken = set(pairs)

    def next_chars(token: str) -> list[str]:
        return leads if len(token) % 3 == 0 else conts

    return pairs + _extend(rng, pairs, count - len(pairs), taken, next_chars)


def _pin_same_ids(solar: list[str], glm: list[str], wanted: int, first: int, fixed: set[int]) -> None:
    """Make exactly `wanted` strings sit at the same id in both vocabularies (SIO counted 1): break the chance
    matches by swapping with a later token, then plant `wanted` at deterministic spots clear of the examples."""
    for i in [i for i in range(first, len(glm)) if solar[i] == glm[i]]:
        j = next(k for k in range(i + 1, len(solar))
                 if k not in fixed and solar[k] != glm[i] and (k >= len(glm) or solar[i] != glm[k]))
        solar[i], solar[j] = solar[j], solar[i]
    where = {token: k for k, token in enumerate(solar)}
    planted = 0
    for i in range(first + 1000, len(glm)):
        j = where.get(glm[i])
        if planted == wanted:
            break
        if j is None or i in fixed or j in fixed or (j < len(glm) and glm[j] == solar[i]):
            continue
        solar[i], solar[j] = solar[j], solar[i]
        where[solar[i]], where[solar[j]] = i, j
        planted += 1


def _glm_merges(rng: np.random.Generator, tokens: list[str], total: int, excluded: set[str]) -> list[tuple[str, str]]:
    """One merge per token, plus extra valid splits of 3- and 4-character tokens up to `total` merges."""
    extras = []
    for t in tokens:
        if len(t) >= 3 and t not in excluded:
            extras.append((t[0], t[1:]))
        if len(t) == 4:
            extras.append((t[:2], t[2:]))
    chosen = rng.choice(len(extras), total - len(tokens), replace=False)
    by_result: dict[str, list[tuple[str, str]]] = {}
    for k in sorted(chosen.tolist()):
        a, b = extras[k]
        by_result.setdefault(a + b, []).append((a, b))
    merges = []
    for t in tokens:
        merges.append((t[:-1], t[-1]))
        merges += by_result.get(t, [])
    return merges


def _byte_level_json(vocab: list[str], merges: list[tuple[str, str]], added: list[tuple[int, str]]) -> bytes:
    doc = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [_added(i, text) for i, text in added],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": BYTE_LEVEL_SPLIT}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {token: i for i, token in enumerate(vocab)}, "merges": merges},  # pairs as JSON arrays
    }
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _added(token_id: int, text: str) -> dict:
    return {"id": token_id, "content": text, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": True}


@functools.lru_cache(maxsize=1)
def phi_tokenizer(seed: int = 11) -> bytes:
    """Phi-3.5-MoE's tokenizer.json: a Llama-style SentencePiece BPE with byte fallback and 11 added tokens."""
    p = tokenizer_params()["phi"]
    rng = np.random.default_rng(seed)
    specials = {int(k): v for k, v in p["specials"].items()}
    head = [specials[i] for i in range(len(specials))] + [f"<0x{b:02X}>" for b in range(256)]
    singles = ["▁", *LETTERS]
    taken = set(singles)
    grown = _extend(rng, singles, p["vocab"] - len(head) - len(singles), taken, lambda _: LETTERS)
    pieces = singles + _order(rng, grown)
    vocab = head + pieces
    added = [(i, text) for i, text in sorted(specials.items())]
    added += [(int(i), text) for i, text in sorted(p["added"].items(), key=lambda item: int(item[0]))]
    doc = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [_added(i, text) for i, text in added],
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                                                           {"type": "Replace", "pattern": {"String": " "},
                                                            "content": "▁"}]},
        "pre_tokenizer": None,
        "post_processor": None,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"},
            {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": {token: i for i, token in enumerate(vocab)},
                  "merges": [[t[:-1], t[-1]] for t in pieces if len(t) > 1]},
    }
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
