"""`fingerprint`: one model's fingerprint from range reads (probe embedding rows, norm gains, a bounded block of rows
of every residual reader), with where it came from, what it is, and what reading it cost."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch

from solarforensics.errors import ForensicsError, SelectionError, SpecError
from solarforensics.evidence.card import parse_front_matter
from solarforensics.evidence.tokenizer import read_vocabulary
from solarforensics.models import OpenOptions, open_model
from solarforensics.population.record import FORMAT_VERSION, Fingerprint
from solarforensics.provenance import sketch
from solarforensics.provenance.weights import ModelWeights
from solarforensics.sources.base import TensorSource

BATCH_BYTES = 256 << 20  # layers are read and sketched in batches of about this many bytes
Known = Callable[[str | None, str | None, str | None], Fingerprint | None]


def source_key(source: TensorSource) -> tuple[str | None, str | None, str | None]:
    """(endpoint, repo or path, commit): a Hub commit, or for a folder a digest of its weight files' names, sizes
    and modification times (a changed file changes the key)."""
    record = source.provenance
    if record.resolved_commit:
        return record.endpoint, record.repo, record.resolved_commit
    root = Path(record.path or "")
    root = root if root.is_dir() else root.parent
    stats = sorted((name, (root / name).stat().st_size, (root / name).stat().st_mtime_ns)
                   for name in record.files if (root / name).is_file())
    return None, record.path, "local-" + hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:40]


def fingerprint_model(spec: str, options: OpenOptions | None = None, known: Known | None = None,
                      progress: Callable[[int], None] | None = None) -> tuple[Fingerprint, str]:
    """(fingerprint, "new" | "unchanged"): an unchanged commit already fingerprinted reads no tensor bytes."""
    started = time.perf_counter()
    source = open_model(spec, options)
    endpoint, repo, commit = source_key(source)
    existing = known(endpoint, repo, commit) if known else None
    if existing is not None and existing.meta.get("format_version") == FORMAT_VERSION:
        return Fingerprint(spec, {**existing.meta, "spec": spec}, existing.arrays), "unchanged"
    weights = ModelWeights.of("model", source)
    if not weights.layers or not weights.has("embed", None):
        raise SelectionError(f"{source.name}: no decoder layers or input embedding that the {weights.family.name} "
                             f"family map recognises", "fingerprints need a decoder with an embedding table")
    try:
        vocab = read_vocabulary(source)
    except ForensicsError as err:
        raise SpecError(f"{source.name}: a fingerprint needs the tokenizer ({err.one_line()})") from None
    probes = sketch.select_probes(vocab)
    embed_name = weights.stored_name("embed", None)
    rows = source.ref(embed_name).shape[0]
    probes = [p for p in probes if p[2] < rows]
    if len(probes) < 16:
        raise SelectionError(f"{source.name}: only {len(probes)} probe tokens found in its vocabulary")
    plan = sketch.row_plan(weights)
    planned = sketch.planned_bytes(weights, plan, len(probes))
    x = sketch.rms_rows(source.read_rows(embed_name, [p[2] for p in probes]).to(torch.float64))
    if progress:
        progress(len(probes) * (source.ref(embed_name).nbytes // rows))
    per_layer = [layer for _, layer in _sketched_layers(weights, plan, x, progress)]
    arrays = sketch.stack_layers(per_layer, weights.layers, len(probes))
    arrays.update(sketch.prefilter_vectors(per_layer, probes, x))
    arrays["probe_hash"] = torch.tensor([p[0] for p in probes], dtype=torch.int64)
    arrays["probe_gram"] = (x @ x.T).to(torch.float32)
    meta = _meta(spec, source, weights, vocab, probes, planned, time.perf_counter() - started,
                 _quantised(source, arrays.pop("int8_grid", None)))
    return Fingerprint(spec, meta, arrays), "new"


def _sketched_layers(weights: ModelWeights, plan: dict[str, list[int]], x: torch.Tensor, progress):
    """(layer, sketch) for every decoder layer, the rows of a few layers read at a time (memory stays bounded by
    BATCH_BYTES plus one layer's readers in float64). Norm gains (one row each) stay held: a post-norm layer folds
    the previous layer's."""
    pending: list[int] = []
    wanted: dict[str, list[int]] = {}
    for index, layer in enumerate(weights.layers):
        pending.append(layer)
        wanted.update({n: plan[n] for n in sketch.layer_plan(weights, layer) if n not in weights.tensors})
        size = sum(len(rows) * weights.source.ref(n).nbytes // max(weights.source.ref(n).shape[0], 1)
                   for n, rows in wanted.items())
        if size < BATCH_BYTES and index + 1 < len(weights.layers):
            continue
        weights.tensors.update(weights.source.read_row_blocks(wanted, progress))
        try:
            for done in pending:
                yield done, sketch.layer_sketch(weights, done, x)
        finally:
            for name in wanted:
                if name in weights.tensors and weights.tensors[name].dim() > 1:
                    del weights.tensors[name]
        pending, wanted = [], {}


def _quantised(source: TensorSource, grid: torch.Tensor | None) -> str | None:
    """Why the model is a quantised copy (a leaf of any lineage), or None."""
    card = getattr(source, "card_data", None) or _local_card(source)
    if str(card.get("base_model_relation", "")).lower() in ("quantized", "quantised"):
        return "model card: base_model_relation quantized"
    if isinstance(source.config, dict) and source.config.get("quantization_config"):
        return "config.json: quantization_config"
    quant_types = {str(r.dtype) for r in source.tensors.values()} - {"F32", "F16", "BF16", "F64"}
    if any(t.startswith(("Q", "IQ")) for t in quant_types):
        return f"GGUF quantised tensors ({', '.join(sorted(quant_types))})"
    if grid is not None and float(grid.to(torch.float64).nan_to_num(0).mean()) > 0.99:
        return "weights: every row on a symmetric int8 grid"
    return None


def _meta(spec: str, source: TensorSource, weights: ModelWeights, vocab, probes, planned: int, seconds: float,
          quantised: str | None) -> dict:
    record = source.provenance.as_dict()
    checkpoint = sum(f["size"] or 0 for f in record["files"]) or None
    _, _, commit = source_key(source)
    surfaces = sorted(vocab.by_surface()[0])
    card = getattr(source, "card_data", None) or _local_card(source)
    dims = weights.dims
    return {
        "spec": spec, "format_version": FORMAT_VERSION,
        "fingerprinted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": {key: record[key] for key in ("spec", "kind", "repo", "path", "endpoint", "requested_revision")}
        | {"resolved_commit": commit, "files": record["files"]},
        "arch": {"family": weights.family.name, "model_type": (source.config or {}).get("model_type"),
                 "num_layers": len(weights.layers), "hidden_size": dims.get("hidden_size"),
                 "num_heads": dims.get("num_heads"), "num_kv_heads": dims.get("num_kv_heads"),
                 "head_dim": dims.get("head_dim"), "vocab_size": source.ref(weights.stored_name("embed", None)).shape[0],
                 "num_experts": dims.get("num_experts"), "parameters": source.parameters(),
                 "layers": weights.layers, "quantised": quantised},
        "tokenizer": {"model": vocab.model, "tokens": len(vocab.tokens),
                      "surfaces_sha256": hashlib.sha256(b"\0".join(surfaces)).hexdigest(),
                      "probes": len(probes), "core_probes": sum(1 for p in probes if len(p[1]) == 1)},
        "hub": {"base_model": _base_models(card.get("base_model")), "license": card.get("license"),
                "created_at": getattr(source, "created_at", None), "tags": card.get("tags")},
        "cost": {"bytes_read": record["bytes_transferred"], "bytes_planned": planned, "requests": record["requests"],
                 "cache_hits": record["cache_hits"], "checkpoint_bytes": checkpoint,
                 "fraction_read": record["bytes_transferred"] / checkpoint if checkpoint else None,
                 "seconds": round(seconds, 3)},
        "sketch": {"readers": list(sketch.READERS), "max_rows": sketch.MAX_ROWS, "units": sketch.UNITS,
                   "hashed_probes": sketch.HASHED_PROBES},
    }


def _base_models(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value] if isinstance(value, list) else []


def _local_card(source: TensorSource) -> dict:
    """The front matter of a local folder's README.md (what the Hub serves as cardData)."""
    text = source.read_text("README.md") if source.provenance.kind == "local" else None
    return parse_front_matter(text or "")[0] or {}
