"""`arch`: two models side by side from config.json and the safetensors headers (no tensor bytes are read).

Config fields with their differences, derived facts (head_dim, GQA, experts, dense/MTP layers, rope), parameter counts
by component, active parameters per token, and which tensor groups can be compared: element-wise ("same shape"),
only after an alignment step ("after alignment"), or not at all ("no").
"""

import json
from collections import defaultdict

from solarforensics.errors import FormatError
from solarforensics.evidence.params import COMPONENTS, active_parameters, count_parameters
from solarforensics.families.family import Family, find_family
from solarforensics.families.selection import GROUPS
from solarforensics.models import OpenOptions, open_models, same_source_warning
from solarforensics.sources.base import TensorSource

SAME, ALIGN, NO = "same shape", "after alignment", "no"
# Why a group whose shapes differ can still be compared once something is aligned (same hidden size assumed).
_ALIGNMENT = {
    "embeddings": "different vocabularies: pair rows by token string (the tokenizer map)",
    "lm-head": "different vocabularies: pair rows by token string (the tokenizer map)",
    "attn-q": "different query head counts or widths: compare per head or by CKA over the hidden axis",
    "attn-o": "different query head counts or widths: compare per head or by CKA over the hidden axis",
    "attn": "different head counts or widths: compare per head or by CKA over the hidden axis",
    "attn-k": "different key/value widths: compare per head or by CKA over the hidden axis",
    "attn-v": "different key/value widths: compare per head or by CKA over the hidden axis",
    "router": "different expert counts: match router rows (experts) by assignment",
    "router-bias": "different expert counts: match experts by assignment first",
    "experts": "different expert counts or widths: match experts/neurons first, or use CKA over the hidden axis",
    "shared-experts": "different shared-expert widths: match neurons first, or use CKA over the hidden axis",
    "dense-mlp": "different MLP widths: match neurons first, or use CKA over the hidden axis",
}
_NOT_PAIRED = ("all",)  # 'all' mixes every role; it says nothing about comparability


def compare_architectures(spec_a: str, spec_b: str, options: OpenOptions | None = None) -> dict:
    """Fields of an `arch` results document."""
    source_a, source_b = open_models([spec_a, spec_b], options)
    for source in (source_a, source_b):
        if source.config is not None and not isinstance(source.config, dict):
            raise FormatError(f"{source.name}: config.json holds a JSON {type(source.config).__name__}, not an object")
    fam_a = find_family(source_a.config, list(source_a.tensors))
    fam_b = find_family(source_b.config, list(source_b.tensors))
    params = {"a": count_parameters(fam_a, source_a.config, source_a.tensors),
              "b": count_parameters(fam_b, source_b.config, source_b.tensors)}
    active = {"a": active_parameters(fam_a, source_a.config, source_a.tensors, params["a"]),
              "b": active_parameters(fam_b, source_b.config, source_b.tensors, params["b"])}
    derived = {"a": derived_facts(fam_a, source_a), "b": derived_facts(fam_b, source_b)}
    compatibility = compatibility_table(fam_a, source_a, fam_b, source_b)
    config_diff = diff_configs(source_a.config, source_b.config)
    warnings = [f"{src.name}: {fam.warning}" for src, fam in ((source_a, fam_a), (source_b, fam_b)) if fam.warning]
    warnings += [f"{src.name}: {line}" for src, fam in ((source_a, fam_a), (source_b, fam_b))
                 for line in fam.config_disagreements(src.config, src.tensors)]
    same = same_source_warning(source_a, source_b, spec_a, spec_b)
    warnings += [same] if same else []
    if source_a.config is None or source_b.config is None:
        missing = [src.name for src in (source_a, source_b) if src.config is None]
        warnings.append(f"no config.json in {', '.join(missing)}: config fields and derived facts are partial")
    return {
        "models": {"a": spec_a, "b": spec_b, "control": None},
        "families": {"a": fam_a.name, "b": fam_b.name},
        "config_diff": config_diff,
        "derived": derived,
        "parameters": params,
        "components": list(COMPONENTS),
        "active_parameters": active,
        "compatibility": compatibility,
        "comparable": {row["group"]: row["comparable"] for row in compatibility},
        "sources": [source_a.provenance.as_dict(), source_b.provenance.as_dict()],
        "warnings": warnings,
        "summary": {"statements": statements(params, active, derived, compatibility, config_diff)},
    }


def diff_configs(config_a: dict | None, config_b: dict | None) -> list[dict]:
    """Every top-level config.json field of either model: A's order first, then B's extra fields."""
    config_a, config_b = config_a or {}, config_b or {}
    rows = []
    for key in [*config_a, *(k for k in config_b if k not in config_a)]:
        in_a, in_b = key in config_a, key in config_b
        a, b = config_a.get(key), config_b.get(key)
        status = ("only in A" if not in_b else "only in B" if not in_a
                  else "same" if _canonical(a) == _canonical(b) else "different")
        rows.append({"key": key, "a": a, "b": b, "status": status})
    return rows


def _canonical(value):
    """1 and 1.0 are the same setting, and key order in nested objects is no difference."""
    if isinstance(value, bool):
        return ("bool", value)  # True == 1 in Python, not in a config
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return json.dumps({k: _canonical(v) for k, v in value.items()}, sort_keys=True, default=str)
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


def derived_facts(family: Family, source: TensorSource) -> dict:
    """Facts computed from the config (with the family's defaults) and checked against the tensors on disk."""
    config, tensors = source.config, source.tensors
    dims = family.dims(config)
    mtp = family.mtp_layers(config, tensors)
    layers, dense, moe = set(), set(), set()
    experts: dict[int, set[int]] = defaultdict(set)
    first_shape: dict[str, tuple[int, ...]] = {}
    for name, ref in tensors.items():
        found = family.match(name)
        if found is None:
            continue
        first_shape.setdefault(found.role, ref.shape)
        if found.layer is None or found.layer in mtp:
            continue
        layers.add(found.layer)
        if found.role in ("mlp_gate", "mlp_up", "mlp_gate_up", "mlp_down"):
            dense.add(found.layer)
        if found.role in ("router", "expert_gate", "expert_up", "expert_down"):
            moe.add(found.layer)
        if found.expert is not None:
            experts[found.layer].add(found.expert)
    heads, kv_heads = dims["num_heads"], dims["num_kv_heads"]
    q_rows = first_shape.get("q", (None,))[0]
    return {
        "model_type": (config or {}).get("model_type"),
        "family": family.name,
        "family_inferred": family.inferred,
        "hidden_size": dims["hidden_size"],
        "num_layers": dims["num_layers"],
        "decoder_layers_in_files": len(layers),
        "num_heads": heads,
        "num_kv_heads": kv_heads,
        "head_dim": dims["head_dim"],
        "head_dim_from_q": q_rows // heads if isinstance(q_rows, int) and heads else None,
        "gqa_ratio": _ratio(heads, kv_heads),
        "vocab_size": dims["vocab_size"],
        "embedding_rows": first_shape.get("embed", (None,))[0],
        "tie_word_embeddings": (config or {}).get("tie_word_embeddings"),
        "intermediate": dims["intermediate"],
        "num_experts": dims["num_experts"],
        "experts_in_files": max((len(e) for e in experts.values()), default=0),
        "experts_per_token": dims["experts_per_token"],
        "num_shared_experts": dims["num_shared_experts"],
        "moe_intermediate": dims["moe_intermediate"],
        "expert_width_in_files": _width(first_shape, "expert_gate", "expert_up", "expert_down"),
        "shared_expert_width_in_files": _width(first_shape, "shared_gate", "shared_up", "shared_down"),
        "first_k_dense": dims["first_k_dense"],
        "dense_layers": sorted(dense),
        "moe_layers": sorted(moe),
        "mtp_layers": sorted(mtp),
        "max_positions": dims["max_positions"],
        "rope": rope_settings(family, config),
        "tensors": len(tensors),
    }


def _ratio(heads, kv_heads):
    if not isinstance(heads, int) or not isinstance(kv_heads, int) or kv_heads <= 0:
        return None
    return heads // kv_heads if heads % kv_heads == 0 else heads / kv_heads


def _width(shapes: dict, gate: str, up: str, down: str) -> int | None:
    for role, axis in ((gate, 0), (up, 0), (down, -1)):
        if role in shapes and shapes[role]:
            return shapes[role][axis]
    return None


def rope_settings(family: Family, config: dict | None) -> dict:
    """Rotary-embedding fields of the config (and of its nested text section, for multimodal configs)."""
    config = config or {}
    nested = config.get(family.config_section) if family.config_section else None
    merged = {**config, **nested} if isinstance(nested, dict) else config
    keys = [k for k in merged if "rope" in k or "rotary" in k]
    return {k: merged[k] for k in sorted(keys)}


def group_shapes(family: Family, source: TensorSource) -> dict[str, dict[str, set[tuple[int, ...]]]]:
    """group -> role -> the shapes its tensors have (MTP layers left out; fused tensors under their fused role)."""
    mtp = family.mtp_layers(source.config, source.tensors)
    roles_to_groups: dict[str, list[str]] = defaultdict(list)
    for group, (roles, _) in GROUPS.items():
        for role in roles:
            roles_to_groups[role].append(group)
    out: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    for name, ref in source.tensors.items():
        found = family.match(name)
        if found is None or found.layer in mtp or found.role in family.mtp_roles:
            continue
        parts = family.fused[found.role].parts if found.role in family.fused else (found.role,)
        for group in dict.fromkeys(g for part in parts for g in roles_to_groups.get(part, ())):
            out[group][found.role].add(ref.shape)
    return out


def compatibility_table(fam_a: Family, source_a: TensorSource, fam_b: Family, source_b: TensorSource) -> list[dict]:
    """One row per tensor group present in either model (decoder layers only; MTP layers are never paired)."""
    shapes_a, shapes_b = group_shapes(fam_a, source_a), group_shapes(fam_b, source_b)
    hidden_a, hidden_b = fam_a.dims(source_a.config)["hidden_size"], fam_b.dims(source_b.config)["hidden_size"]
    rows = []
    for group in GROUPS:
        if group in _NOT_PAIRED or (group not in shapes_a and group not in shapes_b):
            continue
        a, b = shapes_a.get(group, {}), shapes_b.get(group, {})
        status, reason = _classify(group, a, b, hidden_a, hidden_b, set(fam_a.fused) | set(fam_b.fused))
        rows.append({
            "group": group, "status": status, "comparable": status == SAME,
            "shapes_a": {role: sorted(map(list, shapes)) for role, shapes in a.items()},
            "shapes_b": {role: sorted(map(list, shapes)) for role, shapes in b.items()},
            "reason": reason,
        })
    return rows


def _classify(group: str, a: dict, b: dict, hidden_a, hidden_b, fused: set[str]) -> tuple[str, str | None]:
    if not a or not b:
        return NO, f"only in {'A' if a else 'B'}"
    if a == b:
        return SAME, None
    if hidden_a != hidden_b:
        return NO, f"hidden sizes differ ({hidden_a} vs {hidden_b}): no common residual axis without a learned map"
    every = [s for shapes in (*a.values(), *b.values()) for s in shapes]
    if hidden_a and (group == "router-bias" or all(hidden_a in shape for shape in every)):  # bias follows the router
        if set(a) != set(b) and fused & (set(a) | set(b)):
            return ALIGN, f"stored fused ({', '.join(sorted(fused & (set(a) | set(b))))}) in one model: split it first"
        return ALIGN, _ALIGNMENT.get(group, "same hidden size, other dimensions differ: align them first")
    return NO, "shapes differ and do not all run over the hidden size"


def statements(params: dict, active: dict, derived: dict, compatibility: list[dict], config_diff: list[dict]) -> list[str]:
    """Plain-English sentences: sizes, active parameters, layers, and what can be compared how."""
    out = [f"Parameters (sum of header element counts): A {params['a']['total']:,}, B {params['b']['total']:,}."]
    if any(active[s]["value"] != params[s]["total"] for s in "ab"):
        values = [f"{active[s]['value']:,}" if active[s]["value"] is not None else "unknown" for s in "ab"]
        out.append(f"Active per token: A {values[0]}, B {values[1]} ({active['a']['formula']}).")
    for side, label in (("a", "A"), ("b", "B")):
        facts = derived[side]
        mtp = f", {len(facts['mtp_layers'])} MTP" if facts["mtp_layers"] else ""
        out.append(f"{label}: {facts['decoder_layers_in_files']} decoder layers ({len(facts['dense_layers'])} dense, "
                   f"{len(facts['moe_layers'])} MoE{mtp}), {facts['num_heads']} query / {facts['num_kv_heads']} KV "
                   f"heads of {facts['head_dim']}, hidden {facts['hidden_size']}.")
    differ = [row["key"] for row in config_diff if row["status"] != "same"]
    out.append(f"{len(differ)} of {len(config_diff)} config.json fields differ or exist in one model only.")
    for status, words in ((SAME, "Element-wise comparable (same shapes)"), (ALIGN, "Comparable only after alignment"),
                          (NO, "Not comparable")):
        groups = [row["group"] for row in compatibility if row["status"] == status]
        if groups:
            out.append(f"{words}: {', '.join(groups)}.")
    return out
