"""tokenizer.json, parsed by us: the model's vocabulary (BPE, WordPiece, Unigram, WordLevel), merges, added tokens,
and each token's surface text, so the same piece of text matches whatever encoding a tokenizer stores it in.

Surface text is bytes: byte-level BPE tokens (GPT-2's byte-to-unicode table, 'Ġ' = space) are mapped back to their
bytes, metaspace tokens ('▁' = space, '<0xNN>' byte fallback) likewise, and WordPiece marks word starts with a space
('##' continuations carry none), as byte-level and metaspace pieces do. Added tokens are literal text.
"""

import re
from dataclasses import dataclass, field
from typing import Any

from solarforensics.errors import FormatError

MODELS = ("BPE", "WordPiece", "Unigram", "WordLevel")
METASPACE = "\u2581"
_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")
ENCODING_NOTES = {
    "byte-level": "byte-level BPE: GPT-2 byte-to-unicode characters mapped back to bytes ('Ġ' -> space)",
    "metaspace": "metaspace: '▁' -> space, '<0xNN>' byte-fallback tokens -> that byte",
    "wordpiece": "WordPiece: word-initial pieces get a leading space, '##' continuations lose the prefix",
    "plain": "compared as stored (no encoding recognised)",
}


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table: printable bytes map to themselves, the other 68 to code points from 256 up."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


_BYTE_OF_CHAR = {char: byte for byte, char in bytes_to_unicode().items()}
# str.translate table: alphabet characters -> the Latin-1 character of their byte; any other character below 256
# -> U+FFFF, so that encoding as Latin-1 fails exactly when a token is not written in the byte alphabet.
_TO_LATIN1 = {**{b: "\uffff" for b in range(256)}, **{ord(char): byte for char, byte in _BYTE_OF_CHAR.items()}}


@dataclass(frozen=True)
class AddedToken:
    id: int
    content: str
    special: bool


@dataclass
class Vocabulary:
    """One tokenizer.json: vocabulary by id, merges, added tokens, and the pipeline around the model."""

    model: str
    encoding: str
    tokens: dict[int, str]
    added: list[AddedToken]
    merges: list[tuple[str, str]]
    pipeline: dict[str, Any]
    options: dict[str, Any]
    prefix: str = "##"
    literal: dict[int, str] = field(default_factory=dict)
    _surfaces: dict[int, bytes] = field(default_factory=dict, repr=False)
    _by_surface: tuple[dict[bytes, int], int] | None = field(default=None, repr=False)

    def surface(self, token_id: int) -> bytes:
        """The bytes of text a model-vocabulary token stands for (see the module docstring)."""
        cached = self._surfaces.get(token_id)
        if cached is None:
            literal = self.literal.get(token_id)  # an added token that also sits in the vocabulary is plain text
            cached = literal.encode("utf-8") if literal is not None else surface_of(
                self.tokens[token_id], self.encoding, self.prefix)
            self._surfaces[token_id] = cached
        return cached

    def by_surface(self) -> tuple[dict[bytes, int], int]:
        """surface -> lowest id over the model vocabulary, and how many ids lost to a lower one (collisions)."""
        if self._by_surface is None:
            out: dict[bytes, int] = {}
            for token_id in sorted(self.tokens):
                out.setdefault(self.surface(token_id), token_id)
            self._by_surface = (out, len(self.tokens) - len(out))
        return self._by_surface

    def merge_surfaces(self) -> list[tuple[bytes, bytes]]:
        """The merges as pairs of surface texts, so merges compare across encodings like tokens do."""
        memo: dict[str, bytes] = {}

        def one(piece: str) -> bytes:
            found = memo.get(piece)
            if found is None:
                found = memo[piece] = surface_of(piece, self.encoding, self.prefix)
            return found

        return [(one(left), one(right)) for left, right in self.merges]


def surface_of(token: str, encoding: str, prefix: str = "##") -> bytes:
    """The text a vocabulary token written in `encoding` stands for, as UTF-8 bytes (raw bytes for byte pieces)."""
    if encoding == "byte-level":
        try:
            return token.translate(_TO_LATIN1).encode("latin-1")
        except UnicodeEncodeError:
            return token.encode("utf-8")  # not an encoded piece (a special token written as text)
    if encoding == "metaspace":
        fallback = _BYTE_FALLBACK.fullmatch(token)
        return bytes([int(fallback[1], 16)]) if fallback else token.replace(METASPACE, " ").encode("utf-8")
    if encoding == "wordpiece":
        if token.startswith(prefix) and len(token) > len(prefix):
            return token[len(prefix):].encode("utf-8")
        return (" " + token).encode("utf-8")
    return token.encode("utf-8")


def display(surface: bytes) -> str:
    """Surface bytes as readable text; bytes that are not whole UTF-8 characters are shown as \\xNN."""
    return surface.decode("utf-8", errors="backslashreplace")


def parse_tokenizer(data: Any, where: str) -> Vocabulary:
    """A Vocabulary from the parsed JSON of a tokenizer.json; FormatError naming the first problem."""
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise FormatError(f"{where} has no 'model' object; not a Hugging Face tokenizers file")
    model = data["model"]
    kind = model.get("type") or _guess_model(model)
    if kind not in MODELS:
        raise FormatError(f"{where}: unsupported tokenizer model {kind!r}", hint=f"supported: {', '.join(MODELS)}")
    tokens = _unigram_vocab(model.get("vocab"), where) if kind == "Unigram" else _dict_vocab(model.get("vocab"), where)
    merges = _merges(model.get("merges", []), where) if kind == "BPE" else []
    pipeline = {key: data.get(key) for key in ("normalizer", "pre_tokenizer", "decoder", "post_processor")}
    options = {key: value for key, value in model.items() if key not in ("vocab", "merges")}
    prefix = model.get("continuing_subword_prefix") or "##"
    added = _added(data.get("added_tokens"), where)
    literal = {t.id: t.content for t in added if t.id in tokens}
    return Vocabulary(kind, detect_encoding(kind, pipeline, model), tokens, added, merges, pipeline, options,
                      prefix if isinstance(prefix, str) else "##", literal)


def _guess_model(model: dict) -> str | None:
    if "merges" in model:
        return "BPE"
    if isinstance(model.get("vocab"), list):
        return "Unigram"
    if "continuing_subword_prefix" in model or "max_input_chars_per_word" in model:
        return "WordPiece"
    return "WordLevel" if isinstance(model.get("vocab"), dict) else None


def _dict_vocab(vocab: Any, where: str) -> dict[int, str]:
    if not isinstance(vocab, dict):
        raise FormatError(f"{where}: model.vocab is not an object of token -> id")
    tokens: dict[int, str] = {}
    for token, token_id in vocab.items():
        if not isinstance(token_id, int) or isinstance(token_id, bool) or token_id < 0:
            raise FormatError(f"{where}: token {token[:40]!r} has id {str(token_id)[:40]}, not a non-negative integer")
        if token_id in tokens:
            raise FormatError(f"{where}: id {token_id} is given to both {tokens[token_id][:40]!r} and {token[:40]!r}")
        tokens[token_id] = token
    return tokens


def _unigram_vocab(vocab: Any, where: str) -> dict[int, str]:
    if not isinstance(vocab, list):
        raise FormatError(f"{where}: Unigram model.vocab is not a list of [piece, score]")
    tokens = {}
    for token_id, entry in enumerate(vocab):
        if not isinstance(entry, list) or not entry or not isinstance(entry[0], str):
            raise FormatError(f"{where}: Unigram vocab entry {token_id} is not [piece, score]")
        tokens[token_id] = entry[0]
    return tokens


def _merges(merges: Any, where: str) -> list[tuple[str, str]]:
    if not isinstance(merges, list):
        raise FormatError(f"{where}: model.merges is not a list")
    out = []
    for rank, merge in enumerate(merges):
        if isinstance(merge, str) and merge.count(" ") >= 1:
            left, right = merge.split(" ", 1)  # the old "a b" form; the new form is a list, for pieces with spaces
        elif isinstance(merge, list) and len(merge) == 2 and all(isinstance(p, str) for p in merge):
            left, right = merge
        else:
            raise FormatError(f"{where}: merge {rank} is {str(merge)[:40]!r}, not 'a b' or [a, b]")
        out.append((left, right))
    return out


def _added(added: Any, where: str) -> list[AddedToken]:
    if added is None:
        return []
    if not isinstance(added, list):
        raise FormatError(f"{where}: added_tokens is not a list")
    out = []
    for entry in added:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), int) or not isinstance(entry.get("content"), str):
            raise FormatError(f"{where}: an added_tokens entry lacks an integer id or a string content")
        out.append(AddedToken(entry["id"], entry["content"], bool(entry.get("special", False))))
    return out


def pipeline_types(node: Any) -> list[str]:
    """The component types of a normalizer/pre-tokenizer/decoder, Sequences flattened: ['Split', 'ByteLevel']."""
    if isinstance(node, list):
        return [t for item in node for t in pipeline_types(item)]
    if not isinstance(node, dict):
        return []
    inner = [node.get(key) for key in ("pretokenizers", "decoders", "normalizers", "processors") if key in node]
    if inner:
        return [t for item in inner for t in pipeline_types(item)]
    return [str(node.get("type"))] if node.get("type") else []


def describe(node: Any) -> str | None:
    """A short form of a pipeline component: 'Sequence[Split, ByteLevel]', or None when absent."""
    if not isinstance(node, dict):
        return None
    types = pipeline_types(node)
    return f"{node.get('type')}[{', '.join(types)}]" if node.get("type") == "Sequence" else ", ".join(types) or None


def detect_encoding(model: str, pipeline: dict[str, Any], options: dict) -> str:
    """How the vocabulary writes text: byte-level, metaspace, wordpiece or plain (from the pipeline, not guessed)."""
    pre, dec = pipeline_types(pipeline.get("pre_tokenizer")), pipeline_types(pipeline.get("decoder"))
    if "ByteLevel" in pre or "ByteLevel" in dec:
        return "byte-level"
    replaces = _replace_patterns(pipeline.get("normalizer")) + _replace_patterns(pipeline.get("decoder"))
    if "Metaspace" in pre or "Metaspace" in dec or METASPACE in replaces or options.get("byte_fallback"):
        return "metaspace"
    if model == "WordPiece" or "WordPiece" in dec:
        return "wordpiece"
    return "plain"


def _replace_patterns(node: Any) -> list[str]:
    if isinstance(node, list):
        return [p for item in node for p in _replace_patterns(item)]
    if not isinstance(node, dict):
        return []
    found = []
    if node.get("type") == "Replace":
        pattern, content = node.get("pattern"), node.get("content")
        found += [v for v in (pattern.get("String") if isinstance(pattern, dict) else None, content)
                  if isinstance(v, str)]
    for key in ("normalizers", "decoders"):
        found += _replace_patterns(node.get(key))
    return found
