"""`tokenizer`: what two tokenizers share, compared by the text their tokens stand for.

Shared strings, Jaccard, tokens at the same id, the offsets between the ids of shared tokens and the longest run of
consecutive ids shared at one offset (a block copied from one vocabulary into the other), merges and their ranks,
added/special tokens and the pipeline around the model. `shared_token_map` is the token mapping other analyses use
to pair embedding rows.
"""

import hashlib
import json
from collections import Counter
from pathlib import Path

from solarforensics.errors import NotFoundError
from solarforensics.evidence.tokenizer_vocab import ENCODING_NOTES, Vocabulary, describe, display, parse_tokenizer
from solarforensics.models import OpenOptions, open_models
from solarforensics.results.document import write_text_atomic
from solarforensics.sources.base import TensorSource

TOKENIZER_FILE = "tokenizer.json"
TOP_OFFSETS = 10
MERGE_PREFIX = 1000  # the published fingerprint hashes and compares the first 1000 merges
LISTED_TOKENS = 50
RUN_SAMPLE = 8
MAP_FORMAT = "solarforensics/token-map-v1"


_PARSED: dict[tuple, Vocabulary] = {}  # by Hub commit: a commit's files never change (a few, kept while the process lives)
_PARSED_MAX = 8


def read_vocabulary(source: TensorSource) -> Vocabulary:
    """The source's tokenizer.json, parsed; NotFoundError naming the files that are there when it has none. A Hub
    repo at a resolved commit is parsed once per process (a case reads each model's tokenizer in several steps)."""
    record = source.provenance
    key = (record.endpoint, record.repo, record.resolved_commit) if record.resolved_commit else None
    if key is not None and key in _PARSED:
        return _PARSED[key]
    vocabulary = _read_vocabulary(source)
    if key is not None:
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.pop(next(iter(_PARSED)))
        _PARSED[key] = vocabulary
    return vocabulary


def _read_vocabulary(source: TensorSource) -> Vocabulary:
    data = source.read_json(TOKENIZER_FILE)
    if data is None and hasattr(source, "gguf_vocab"):
        return parse_tokenizer(_from_gguf(source.gguf_vocab()), f"{source.name} (GGUF tokenizer metadata)")
    if data is None:
        files = source.list_files()
        only = " (it has tokenizer.model, a SentencePiece file this tool does not read)" if "tokenizer.model" in files else ""
        shown = ", ".join(files[:12]) + (f", … ({len(files)} files)" if len(files) > 12 else "")
        raise NotFoundError(f"{source.name} has no {TOKENIZER_FILE}{only}", hint=f"files there: {shown or 'none'}")
    return parse_tokenizer(data, f"{source.name}/{TOKENIZER_FILE}")


def _from_gguf(vocab) -> dict:
    """The tokenizer.json a GGUF vocabulary corresponds to: 'gpt2' is byte-level BPE, 'llama' SentencePiece."""
    if vocab.model == "gpt2":
        return {
            "model": {"type": "BPE", "vocab": {t: i for i, t in enumerate(vocab.tokens)}, "merges": list(vocab.merges)},
            "pre_tokenizer": {"type": "ByteLevel"}, "decoder": {"type": "ByteLevel"},
        }  # fmt: skip
    scores = vocab.scores or [0.0] * len(vocab.tokens)
    return {
        "model": {"type": "Unigram", "vocab": [[t, float(s)] for t, s in zip(vocab.tokens, scores)]},
        "pre_tokenizer": {"type": "Metaspace"}, "decoder": {"type": "Metaspace"},
    }  # fmt: skip


def shared_pairs(a: Vocabulary, b: Vocabulary) -> list[tuple[bytes, int, int]]:
    """(surface, id in A, id in B) for every surface text in both model vocabularies, sorted by id in A."""
    surfaces_b, _ = b.by_surface()
    surfaces_a, _ = a.by_surface()
    pairs = [(text, id_a, surfaces_b[text]) for text, id_a in surfaces_a.items() if text in surfaces_b]
    return sorted(pairs, key=lambda pair: pair[1])


def shared_token_map(source_a: TensorSource, source_b: TensorSource) -> list[tuple[str, int, int]]:
    """(surface text, id_a, id_b) of the tokens both vocabularies hold, sorted by id_a (rows to pair in embeddings)."""
    a, b = read_vocabulary(source_a), read_vocabulary(source_b)
    return [(display(text), id_a, id_b) for text, id_a, id_b in shared_pairs(a, b)]


def compare_tokenizers(spec_a: str, spec_b: str, options: OpenOptions | None = None,
                       export_map: Path | None = None) -> dict:
    """Fields of a `tokenizer` results document; with `export_map`, also write the shared-token map there."""
    source_a, source_b = open_models([spec_a, spec_b], options)
    a, b = read_vocabulary(source_a), read_vocabulary(source_b)
    pairs = shared_pairs(a, b)
    fields = vocabulary_overlap(a, b, pairs)
    if export_map is not None:
        write_token_map(export_map, pairs, a, b, spec_a, spec_b)
    fields.update({
        "models": {"a": spec_a, "b": spec_b, "control": None},
        "merges": merge_overlap(a, b),
        "added_tokens": added_token_overlap(a, b),
        "pipeline": pipeline_differences(a, b),
        "exported_map": str(export_map) if export_map is not None else None,
        "sources": [source_a.provenance.as_dict(), source_b.provenance.as_dict()],
    })
    fields["summary"] = {"statements": statements(fields)}
    return fields


def vocabulary_overlap(a: Vocabulary, b: Vocabulary, pairs: list[tuple[bytes, int, int]]) -> dict:
    """Sizes, shared strings, Jaccard, same-id count, offset histogram and longest runs (model vocabularies only)."""
    surfaces_a, collisions_a = a.by_surface()
    surfaces_b, collisions_b = b.by_surface()
    shared = len(pairs)
    union = len(surfaces_a) + len(surfaces_b) - shared
    smaller = min(len(surfaces_a), len(surfaces_b))
    same_id = sum(1 for _, id_a, id_b in pairs if id_a == id_b)
    offsets = Counter(id_a - id_b for _, id_a, id_b in pairs)
    top = sorted(offsets.items(), key=lambda item: (-item[1], item[0]))[:TOP_OFFSETS]
    overall, per_offset = longest_runs(pairs)
    common = top[0][0] if top else None
    return {
        "vocab_size_a": len(a.tokens),
        "vocab_size_b": len(b.tokens),
        "vocab_size_with_added_a": len(set(a.tokens) | {t.id for t in a.added}),
        "vocab_size_with_added_b": len(set(b.tokens) | {t.id for t in b.added}),
        "tokenizer_model": {"a": a.model, "b": b.model},
        "encoding": {"a": a.encoding, "b": b.encoding, "how": comparison_note(a, b)},
        "surface_collisions": {"a": collisions_a, "b": collisions_b},
        "shared_tokens": shared,
        "only_in_a": len(surfaces_a) - shared,
        "only_in_b": len(surfaces_b) - shared,
        "union": union,
        "jaccard": shared / union if union else None,
        "overlap_vs_smaller": shared / smaller if smaller else None,
        "overlap_vs_a": shared / len(surfaces_a) if surfaces_a else None,
        "overlap_vs_b": shared / len(surfaces_b) if surfaces_b else None,
        "same_id": same_id,
        "same_id_ratio": same_id / min(len(a.tokens), len(b.tokens)) if a.tokens and b.tokens else None,
        "offset_definition": "offset = id in A - id in B, over the shared strings",
        "offset_histogram": [{"offset": offset, "count": count} for offset, count in top],
        "longest_run": _run_record(overall, pairs),
        "most_common_offset_run": _run_record(per_offset.get(common), pairs),
    }


def longest_runs(pairs: list[tuple[bytes, int, int]]) -> tuple[tuple | None, dict[int, tuple]]:
    """Longest stretch of consecutive A ids whose B ids are consecutive too (one offset): overall and per offset.

    Runs are (length, start index into pairs); ties go to the run that starts at the lowest id in A.
    """
    b_of = {id_a: id_b for _, id_a, id_b in pairs}
    length_at: dict[int, int] = {}
    best: tuple | None = None
    per_offset: dict[int, tuple] = {}
    for index, (_, id_a, id_b) in enumerate(pairs):
        length = length_at.get(id_a - 1, 0) + 1 if b_of.get(id_a - 1) == id_b - 1 else 1
        length_at[id_a] = length
        run = (length, index - length + 1)
        if best is None or length > best[0]:
            best = run
        offset = id_a - id_b
        if offset not in per_offset or length > per_offset[offset][0]:
            per_offset[offset] = run
    return best, per_offset


def _run_record(run: tuple | None, pairs: list[tuple[bytes, int, int]]) -> dict | None:
    if run is None:
        return None
    length, start = run
    _, start_a, start_b = pairs[start]
    return {"length": length, "offset": start_a - start_b, "start_a": start_a, "end_a": start_a + length - 1,
            "start_b": start_b, "end_b": start_b + length - 1,
            "sample": [display(text) for text, _, _ in pairs[start:start + min(length, RUN_SAMPLE)]]}


def merge_overlap(a: Vocabulary, b: Vocabulary) -> dict | None:
    """Shared merges (by surface pair), how many keep their rank, and the SHA-256 fingerprints; None unless both BPE."""
    if a.model != "BPE" or b.model != "BPE":
        return None
    norm_a, norm_b = a.merge_surfaces(), b.merge_surfaces()
    rank_b: dict[tuple, int] = {}
    for rank, merge in enumerate(norm_b):
        rank_b.setdefault(merge, rank)
    set_a = set(norm_a)
    shared = sum(1 for merge in set_a if merge in rank_b)
    same_rank = sum(1 for rank, merge in enumerate(norm_a) if rank_b.get(merge) == rank)
    prefix = min(MERGE_PREFIX, len(norm_a), len(norm_b))
    return {
        "count_a": len(a.merges), "count_b": len(b.merges), "shared": shared,
        "only_in_a": len(set_a) - shared, "only_in_b": len(set(norm_b)) - shared,
        "b_in_a_ratio": shared / len(set(norm_b)) if norm_b else None,
        "same_rank": same_rank,
        f"same_rank_first_{MERGE_PREFIX}": sum(1 for i in range(prefix) if norm_a[i] == norm_b[i]),
        "sha256_a": _merges_sha(a), "sha256_b": _merges_sha(b),
        f"sha256_first_{MERGE_PREFIX}_a": _merges_sha(a, MERGE_PREFIX),
        f"sha256_first_{MERGE_PREFIX}_b": _merges_sha(b, MERGE_PREFIX),
    }


def _merges_sha(vocab: Vocabulary, limit: int | None = None) -> str:
    # "a b" lines joined with "\n", the form the published fingerprints hashed
    lines = [f"{left} {right}" for left, right in vocab.merges[:limit]]
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def added_token_overlap(a: Vocabulary, b: Vocabulary) -> dict:
    """Added (mostly special) tokens by content: which are shared, at which ids, and which exist on one side only."""
    by_a = {t.content: t for t in a.added}
    by_b = {t.content: t for t in b.added}
    shared = [{"content": c, "id_a": by_a[c].id, "id_b": by_b[c].id, "special_a": by_a[c].special,
               "special_b": by_b[c].special} for c in sorted(by_a.keys() & by_b.keys(), key=lambda c: by_a[c].id)]
    only_a = [{"content": t.content, "id": t.id, "special": t.special} for t in a.added if t.content not in by_b]
    only_b = [{"content": t.content, "id": t.id, "special": t.special} for t in b.added if t.content not in by_a]
    return {
        "count_a": len(a.added), "count_b": len(b.added),
        "special_a": sum(t.special for t in a.added), "special_b": sum(t.special for t in b.added),
        "shared": shared, "same_id": sum(1 for s in shared if s["id_a"] == s["id_b"]),
        "only_in_a": only_a[:LISTED_TOKENS], "only_in_a_count": len(only_a),
        "only_in_b": only_b[:LISTED_TOKENS], "only_in_b_count": len(only_b),
    }


def pipeline_differences(a: Vocabulary, b: Vocabulary) -> dict:
    """Normalizer, pre-tokenizer, decoder, post-processor and model options: short forms and whether they are equal."""
    out = {}
    for key in ("normalizer", "pre_tokenizer", "decoder", "post_processor"):
        left, right = a.pipeline.get(key), b.pipeline.get(key)
        out[key] = {"a": describe(left), "b": describe(right), "same": _json(left) == _json(right)}
    for key in sorted(a.options.keys() | b.options.keys()):
        left, right = a.options.get(key), b.options.get(key)
        out[f"model.{key}"] = {"a": left, "b": right, "same": _json(left) == _json(right)}
    return out


def _json(value) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def comparison_note(a: Vocabulary, b: Vocabulary) -> str:
    how = "; ".join(dict.fromkeys(ENCODING_NOTES[e] for e in (a.encoding, b.encoding)))
    return (f"tokens compared by the bytes of text they stand for ({how}); the same text matches across encodings; "
            "added tokens are literal text and are compared separately")


def write_token_map(path: Path, pairs: list[tuple[bytes, int, int]], a: Vocabulary, b: Vocabulary,
                    spec_a: str, spec_b: str) -> Path:
    """The shared-token map as JSON: one [text, id_a, id_b, token_a, token_b] row per shared string, by id_a."""
    doc = {
        "format": MAP_FORMAT, "a": spec_a, "b": spec_b, "count": len(pairs),
        "how": comparison_note(a, b),
        "columns": ["text", "id_a", "id_b", "token_a", "token_b"],
        "pairs": [[display(text), id_a, id_b, a.tokens[id_a], b.tokens[id_b]] for text, id_a, id_b in pairs],
    }
    return write_text_atomic(json.dumps(doc, ensure_ascii=False) + "\n", Path(path))


def statements(fields: dict) -> list[str]:
    """Plain-English sentences: sizes and overlap, ids, the longest shared block, merges, specials."""
    out = [f"Vocabularies: A {fields['vocab_size_a']:,} tokens ({fields['tokenizer_model']['a']}, "
           f"{fields['encoding']['a']}), B {fields['vocab_size_b']:,} ({fields['tokenizer_model']['b']}, "
           f"{fields['encoding']['b']}); model vocabularies only, added tokens are compared separately."]
    if fields["shared_tokens"]:
        out.append(f"{fields['shared_tokens']:,} token strings are in both (Jaccard {fields['jaccard']:.4f}; "
                   f"{fields['overlap_vs_smaller']:.1%} of the smaller vocabulary, {fields['overlap_vs_a']:.1%} of A, "
                   f"{fields['overlap_vs_b']:.1%} of B).")
    else:
        out.append("No token string is in both vocabularies.")
    out.append(f"{fields['same_id']:,} shared strings have the same id in both.")
    run = fields["longest_run"]
    if run and run["length"] > 1:
        out.append(f"Longest block of consecutive ids shared at one offset: {run['length']:,} tokens, A ids "
                   f"{run['start_a']:,}-{run['end_a']:,} = B ids {run['start_b']:,}-{run['end_b']:,} "
                   f"(offset {run['offset']:+,}).")
    merges = fields["merges"]
    if merges:
        out.append(f"Merges: A {merges['count_a']:,}, B {merges['count_b']:,}; {merges['shared']:,} shared, "
                   f"{merges['same_rank']:,} at the same rank ({merges[f'same_rank_first_{MERGE_PREFIX}']:,} of the "
                   f"first {MERGE_PREFIX})."
                   + (" The merge lists are identical." if merges["sha256_a"] == merges["sha256_b"] else ""))
    added = fields["added_tokens"]
    out.append(f"Added tokens: A {added['count_a']:,}, B {added['count_b']:,}; {len(added['shared']):,} with the same "
               f"content ({added['same_id']:,} at the same id).")
    differ = [key for key, row in fields["pipeline"].items() if not row["same"] and not key.startswith("model.")]
    if differ:
        out.append(f"Pipeline parts that differ: {', '.join(differ)}.")
    out.append(f"How tokens were matched: {fields['encoding']['how']}.")
    return out
