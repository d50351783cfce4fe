"""`inspect`: what a checkpoint holds, from its config and safetensors/GGUF headers alone (no tensor data is read)."""

from collections import Counter

from solarforensics.models import OpenOptions, open_model

# config.json keys differ by family; the first present wins
_CONFIG_KEYS = {
    "model_type": ("model_type",),
    "hidden_size": ("hidden_size", "n_embd", "d_model"),
    "num_layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "num_heads": ("num_attention_heads", "n_head"),
    "num_kv_heads": ("num_key_value_heads", "multi_query_group_num"),
    "num_experts": ("n_routed_experts", "num_local_experts", "num_experts"),
    "vocab_size": ("vocab_size", "padded_vocab_size"),
}


def config_summary(config: dict | None) -> dict:
    config = config or {}
    summary = {}
    for field, keys in _CONFIG_KEYS.items():
        summary[field] = next((config[k] for k in keys if k in config), None)
    if summary["num_kv_heads"] is None and summary["num_heads"] is not None:
        summary["num_kv_heads"] = summary["num_heads"]  # no GQA key means one KV head per query head
    return summary


def inspect_model(spec: str, options: OpenOptions | None = None) -> dict:
    """Fields of an `inspect` results document (the caller adds the common envelope)."""
    source = open_model(spec, options)
    per_shard = Counter(ref.file for ref in source.tensors.values())
    dtypes: dict[str, dict] = {}
    for ref in source.tensors.values():
        entry = dtypes.setdefault(ref.dtype, {"tensors": 0, "parameters": 0, "bytes": 0})
        entry["tensors"] += 1
        entry["parameters"] += ref.numel
        entry["bytes"] += ref.nbytes  # the stored span: numel x size for safetensors, whole blocks for GGUF quants
    provenance = source.provenance
    return {
        "model": spec,
        "parameters": source.parameters(),
        "tensors": len(source.tensors),
        "shards": [
            {"name": f.name, "size": f.size, "tensors": per_shard.get(f.name, 0)}
            for f in sorted(provenance.files.values(), key=lambda f: f.name)
        ],
        "dtypes": dict(sorted(dtypes.items())),
        "config_summary": config_summary(source.config),
        "bytes_transferred": provenance.bytes_transferred,
        "requests": provenance.requests,
        "source": provenance.as_dict(),
        "sources": [provenance.as_dict()],
    }
