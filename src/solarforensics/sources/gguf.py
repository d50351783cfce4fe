"""Tensors from a GGUF file, local or in a Hub repo (range reads: the header at the start, tensors at offsets).

Tensors come out in PyTorch layout: shapes reversed from GGUF's ne[0]-fastest order, quantised types dequantised to
float32, and llama.cpp's RoPE row permutation of llama Q/K weights undone, so they compare element-wise with the
same model's safetensors. The config is synthetic, built from the GGUF metadata, with model_type `gguf:<arch>`.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from solarforensics.errors import FormatError, NotFoundError
from solarforensics.sources.base import FileRecord, Provenance, TensorSource
from solarforensics.sources.gguf_format import GGUFHeader, parse_gguf
from solarforensics.sources.gguf_quants import SUPPORTED, dequantize
from solarforensics.sources.hub import HubSource
from solarforensics.sources.local import read_file_range

# llama.cpp's converter interleaves the two RoPE halves of each head's Q/K rows for these architectures only.
ROPE_PERMUTED_ARCHS = frozenset({"llama"})
_QK = {"attn_q.weight": "attention.head_count", "attn_k.weight": "attention.head_count_kv"}
_SMALL_ARRAY = 64  # metadata arrays up to this length are copied into the synthetic config


@dataclass(frozen=True)
class GGUFVocab:
    """The tokenizer stored in GGUF metadata (tokenizer.ggml.*); lists are empty where the file has none."""

    model: str | None
    pre: str | None
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    scores: list[float]
    special_ids: dict[str, int]


def gguf_config(metadata: dict, tensor_names: Iterable[str]) -> dict:
    """A config.json-like dict from GGUF metadata, in transformers' field names, with model_type `gguf:<arch>`."""
    arch = metadata.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise FormatError("GGUF metadata has no general.architecture", hint="the file is not a model GGUF")
    names = set(tensor_names)

    def arch_key(key: str):
        return metadata.get(f"{arch}.{key}")

    tokens = metadata.get("tokenizer.ggml.tokens")
    config = {
        "model_type": f"gguf:{arch}",
        "architecture": arch,
        "num_hidden_layers": arch_key("block_count"),
        "hidden_size": arch_key("embedding_length"),
        "intermediate_size": arch_key("feed_forward_length"),
        "num_attention_heads": arch_key("attention.head_count"),
        "num_key_value_heads": arch_key("attention.head_count_kv"),
        "head_dim": arch_key("attention.key_length"),
        "max_position_embeddings": arch_key("context_length"),
        "vocab_size": arch_key("vocab_size") or (len(tokens) if isinstance(tokens, list) else None),
        "num_local_experts": arch_key("expert_count"),
        "num_experts_per_tok": arch_key("expert_used_count"),
        "rms_norm_eps": arch_key("attention.layer_norm_rms_epsilon"),
        "rope_theta": arch_key("rope.freq_base"),
        "tie_word_embeddings": "output.weight" not in names,
        "name": metadata.get("general.name"),
        "license": metadata.get("general.license"),
    }
    config = {k: v for k, v in config.items() if v is not None}
    config["gguf"] = {k: v for k, v in metadata.items() if not isinstance(v, list) or len(v) <= _SMALL_ARRAY}
    return config


def unpermute_rope_rows(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Undo llama.cpp's Q/K permutation: rows of each head go from interleaved pairs back to HF's two halves."""
    rows = weight.shape[0]
    if heads <= 0 or rows % (2 * heads):
        raise FormatError(f"cannot un-permute {rows} rows over {heads} heads (rows must be a multiple of 2 x heads)")
    rest = weight.shape[1:]
    return weight.reshape(heads, rows // heads // 2, 2, *rest).transpose(1, 2).reshape(weight.shape)


class _GGUFTensors:
    """What a GGUF source adds to TensorSource: header parsing, the synthetic config, dequantising reads, vocabulary."""

    header: GGUFHeader
    gguf_file: str

    def _open_gguf(self, fetch: Callable[[int, int], bytes], size: int) -> None:
        self.header = parse_gguf(fetch, size, self.gguf_file)
        splits = self.header.metadata.get("split.count", 1)
        if isinstance(splits, int) and splits > 1:
            raise FormatError(f"{self.gguf_file} is part {self.header.metadata.get('split.no', 0) + 1} of a GGUF split "
                              f"into {splits} files; solarforensics reads single-file GGUFs",
                              hint="merge the parts first (llama-gguf-split --merge)")
        self.tensors = self.header.tensors
        self.config = gguf_config(self.header.metadata, self.tensors)
        self.gguf_metadata = self.header.metadata
        self.rope_unpermuted = self.config["architecture"] in ROPE_PERMUTED_ARCHS

    def read_tensors(self, names: Iterable[str], progress=None, device: str | torch.device = "cpu"):
        """The named tensors in PyTorch layout: plain types as stored, quantised ones dequantised to float32."""
        names = list(dict.fromkeys(names))
        self._check_supported(names)
        raw = self.read_bytes(names, progress)
        return {name: self._to_tensor(name, raw[name], device) for name in names}

    def read_rows(self, name: str, row_indices: Iterable[int]) -> torch.Tensor:
        """Rows (first dimension, PyTorch order) of one tensor; only the blocks of those rows are read."""
        ref = self.ref(name)
        rows = [int(r) for r in row_indices]
        if not ref.shape or any(not 0 <= r < ref.shape[0] for r in rows):
            raise NotFoundError(f"{self.name}: tensor {name!r} of shape {list(ref.shape)} has no rows {rows[:5]}…")
        if len(ref.shape) < 2:  # a row of a 1-D tensor is one value, not a whole block: read it all
            return self.read_tensors([name])[name][rows]
        self._check_supported([name])
        heads = self._rope_heads(name)
        order = unpermute_rope_rows(torch.arange(ref.shape[0]).unsqueeze(1), heads).flatten() if heads else None
        stored = [int(order[r]) for r in rows] if order is not None else rows
        width = ref.nbytes // ref.shape[0]
        spans = {r: (ref.file, ref.start + r * width, ref.start + (r + 1) * width) for r in set(stored)}
        fetched = self.read_ranges(spans.values())
        buf = b"".join(bytes(fetched[spans[r]]) for r in stored)
        return dequantize(buf, ref.dtype, (len(rows), *ref.shape[1:]))

    def read_row_blocks(self, blocks: dict[str, list[int]], progress=None) -> dict[str, torch.Tensor]:
        """Rows of several tensors, each through read_rows (quantised blocks dequantised, RoPE rows un-permuted)."""
        out = {}
        for name, rows in blocks.items():
            out[name] = self.read_rows(name, rows)
            if progress:
                progress(len(rows) * (self.ref(name).nbytes // max(self.ref(name).shape[0], 1)))
        return out

    def _rope_heads(self, name: str) -> int | None:
        """The head count to un-permute this tensor's rows over, or None if it is not a permuted Q/K weight."""
        heads_key = _QK.get(name.rsplit(".", 2)[-2] + ".weight") if name.startswith("blk.") else None
        if not (self.rope_unpermuted and heads_key and len(self.tensors[name].shape) == 2):
            return None
        arch = self.config["architecture"]
        heads = self.gguf_metadata.get(f"{arch}.{heads_key}")
        if heads is None and heads_key.endswith("_kv"):
            heads = self.gguf_metadata.get(f"{arch}.attention.head_count")  # no GQA key: one KV head per query head
        return heads if isinstance(heads, int) else None

    def _to_tensor(self, name: str, buf, device) -> torch.Tensor:
        ref = self.tensors[name]
        tensor = dequantize(buf, ref.dtype, ref.shape, device)
        heads = self._rope_heads(name)
        return unpermute_rope_rows(tensor, heads) if heads else tensor

    def _check_supported(self, names: list[str]) -> None:
        for name in names:
            if self.ref(name).dtype not in SUPPORTED:
                raise FormatError(f"{self.name}: tensor {name!r} has GGML type {self.tensors[name].dtype}, which "
                                  f"solarforensics cannot dequantise", hint=f"supported: {', '.join(sorted(SUPPORTED))}")

    def gguf_vocab(self) -> GGUFVocab:
        """The vocabulary, token types, merges and special token ids from tokenizer.ggml.* metadata."""
        md = self.header.metadata

        def strings(key: str) -> list:
            value = md.get(f"tokenizer.ggml.{key}")
            return list(value) if isinstance(value, list) else []

        special = {k.removeprefix("tokenizer.ggml.").removesuffix("_token_id"): v for k, v in md.items()
                   if k.startswith("tokenizer.ggml.") and k.endswith("_token_id") and isinstance(v, int)}
        return GGUFVocab(md.get("tokenizer.ggml.model"), md.get("tokenizer.ggml.pre"), strings("tokens"),
                         strings("token_type"), strings("merges"), strings("scores"), special)


class GGUFSource(_GGUFTensors, TensorSource):
    """One local .gguf file, read with positioned reads."""

    def __init__(self, path: Path, spec: str | None = None, max_gap: int | None = None, workers: int | None = None):
        path = Path(path)
        if not path.is_file():
            raise NotFoundError(f"{path}: no such file")
        self.spec, self.name = spec or str(path), path.name
        self.root, self.gguf_file = path.parent, path.name
        if max_gap is not None:
            self.max_gap = max_gap
        if workers is not None:
            self.workers = workers
        size = path.stat().st_size
        self.provenance = Provenance(spec=self.spec, kind="local", path=str(path.resolve()))
        self.provenance.files[self.gguf_file] = FileRecord(self.gguf_file, size)
        self._open_gguf(lambda start, end: self._fetch(self.gguf_file, start, end), size)

    def list_files(self) -> list[str]:
        return [self.gguf_file]

    def _fetch(self, file: str, start: int, end: int) -> bytearray:
        buf = read_file_range(self.root / file, start, end)
        self.provenance.count(nbytes=len(buf), requests=1, ranges=1)
        return buf

    def _read_small(self, filename: str, max_bytes: int) -> bytes | None:
        return None  # a lone .gguf has no companion files: everything is in its metadata


class HubGGUFSource(_GGUFTensors, HubSource):
    """One .gguf file of a Hub repo, pinned to a commit; the header and tensors come by HubSource's checked ranges."""

    def __init__(self, repo: str, file: str, revision: str | None = None, *, spec: str | None = None, **options):
        self.gguf_file = file
        super().__init__(repo, revision, spec=spec or f"{repo}/{file}", **options)
        self.name = f"{repo}/{file}"

    def _open_weights(self) -> None:
        if self.gguf_file not in self._sizes:
            shown = ", ".join(f for f in sorted(self._sizes) if f.endswith(".gguf"))[:400] or "none"
            raise NotFoundError(f"{self.repo} has no file {self.gguf_file!r} (its .gguf files: {shown})")
        self._read_gguf_header()

    def _read_gguf_header(self) -> None:
        """Parse the header through checked ranged reads; with a cache, its bytes are kept so a re-run reads none."""
        file, size = self.gguf_file, self._file_size(self.gguf_file)
        key = (*self.cache_namespace, "gguf-header", file)
        record = self.cache.get_json(key) if self.cache else None
        blob = self.cache.get((*key, record["length"]), record["length"]) if record else None
        if blob is not None:
            self._remember_etag(file, record["etag"])
            self.provenance.count(cache_hits=1)
            self._open_gguf(lambda start, end: blob[start:end] if end <= len(blob) else self._fetch(file, start, end),
                            size)
            return
        seen = bytearray()

        def fetch(start: int, end: int) -> bytes:
            data = self._fetch(file, start, end)
            if start == len(seen):  # the parser reads the header front to back
                seen.extend(data)
            return data

        self._open_gguf(fetch, size)
        if self.cache is not None:
            self.cache.put((*key, len(seen)), seen)
            self.cache.put_json(key, {"etag": self._etags.get(file), "length": len(seen)})
