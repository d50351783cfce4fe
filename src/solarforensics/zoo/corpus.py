"""The offline training text: the Python standard library's own sources and its pydoc topics (the language docs).

Why this corpus: it ships with every Python install (no download, same bytes on every machine with the same
Python), and it mixes English prose (docstrings, the reference manual in pydoc_data) with code, so a tiny model
has real structure to learn rather than noise.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

import torch

from solarforensics.errors import NotFoundError

SLICES = ("a", "b")  # two disjoint halves of the file list: the "different corpus" negatives train on the other


def stdlib_files() -> list[Path]:
    """The stdlib's top-level modules plus the pydoc topics, in a fixed (sorted) order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(root.glob("*.py")) + sorted((root / "pydoc_data").glob("topics.py"))
    if not files:
        raise NotFoundError(f"no Python standard library sources under {root}", "the zoo trains on them; "
                            "use a Python install that ships its .py sources")
    return files


def corpus_text(slice_name: str, max_chars: int) -> str:
    """Text of one slice (every other file, starting at 0 for "a" and 1 for "b"), cut to max_chars."""
    start = SLICES.index(slice_name)
    parts, size = [], 0
    for file in stdlib_files()[start::2]:
        text = file.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        size += len(text)
        if size >= max_chars:
            break
    return "".join(parts)[:max_chars]


def train_tokenizer(text: str, vocab_size: int):
    """A byte-level BPE (tokenizers package) with exactly vocab_size entries, trained on text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(text.splitlines(), trainer=trainer)
    if tok.get_vocab_size() < vocab_size:  # too little text for enough merges: pad with reserved tokens
        tok.add_special_tokens([f"<|reserved_{i}|>" for i in range(vocab_size - tok.get_vocab_size())])
    return tok


def token_ids(tokenizer, text: str) -> torch.Tensor:
    """The whole text as one long int64 tensor of token ids."""
    chunks = [text[i:i + 65536] for i in range(0, len(text), 65536)]
    ids = [i for enc in tokenizer.encode_batch(chunks) for i in enc.ids]
    return torch.tensor(ids, dtype=torch.int64)
