"""Parameter counts by component, from the safetensors headers alone (shapes, never bytes).

Every header entry lands in exactly one component, so the components always add up to the sum of numel over all
tensors; names the family map does not know go to "other", never dropped.
"""

from collections import defaultdict
from fractions import Fraction

from solarforensics.families.family import MTP_ROLES, NORM_ROLES, Family
from solarforensics.sources.safetensors_format import TensorRef

COMPONENTS = ("embeddings", "attention", "norms", "router", "routed_experts", "shared_experts", "dense_mlp",
              "lm_head", "mtp", "other")
_ROLE_COMPONENT = {
    **dict.fromkeys(("embed", "embed_pos", "embed_type"), "embeddings"),
    **dict.fromkeys(("q", "k", "v", "qkv", "q_a", "q_b", "kv_a", "kv_b", "q_bias", "k_bias", "v_bias", "qkv_bias",
                     "o", "o_bias"), "attention"),
    **dict.fromkeys(("mlp_gate", "mlp_up", "mlp_gate_up", "mlp_up_bias", "mlp_down", "mlp_down_bias"), "dense_mlp"),
    **dict.fromkeys(("router", "router_bias"), "router"),
    **dict.fromkeys(("expert_gate", "expert_up", "expert_down"), "routed_experts"),
    **dict.fromkeys(("shared_gate", "shared_up", "shared_down"), "shared_experts"),
    **dict.fromkeys(("lm_head", "lm_head_bias"), "lm_head"),
}
ACTIVE_FORMULA = ("active = total - mtp - routed_experts + sum over MoE layers of "
                  "experts_per_token x (routed expert parameters of the layer / experts in the layer)")
ACTIVE_COUNTS = ("every non-expert parameter counts once per token (embeddings and lm_head included, as model cards "
                 "count them); of the routed experts only experts_per_token of each MoE layer; MTP layers are left "
                 "out (they only serve speculative decoding)")


def component_of(role: str | None, layer: int | None, mtp_layers: set[int]) -> str:
    """The component a tensor of `role` (None = unmapped) in `layer` belongs to."""
    if role is None:
        return "other"
    if role in MTP_ROLES or (layer is not None and layer in mtp_layers):
        return "mtp"
    if role in NORM_ROLES or role.endswith("_norm_bias"):
        return "norms"
    return _ROLE_COMPONENT.get(role, "other")


def count_parameters(family: Family, config: dict | None, tensors: dict[str, TensorRef]) -> dict:
    """{component: int for every component, "total": int}; total == sum of numel over every header entry."""
    mtp_layers = family.mtp_layers(config, tensors)
    counts = dict.fromkeys(COMPONENTS, 0)
    for name, ref in tensors.items():
        found = family.match(name)
        role, layer = (found.role, found.layer) if found else (None, None)
        counts[component_of(role, layer, mtp_layers)] += ref.numel
    counts["total"] = sum(ref.numel for ref in tensors.values())
    return counts


def active_parameters(family: Family, config: dict | None, tensors: dict[str, TensorRef], counts: dict) -> dict:
    """Parameters used per token, with the formula and what was counted; `value` None when the config lacks k."""
    mtp_layers = family.mtp_layers(config, tensors)
    routed: dict[int, int] = defaultdict(int)
    experts: dict[int, set[int]] = defaultdict(set)
    for name, ref in tensors.items():
        found = family.match(name)
        if found and component_of(found.role, found.layer, mtp_layers) == "routed_experts":
            routed[found.layer] += ref.numel
            experts[found.layer].add(found.expert)
    base = counts["total"] - counts["mtp"]
    if not routed:
        return {"value": base, "formula": "active = total - mtp (dense: every parameter is used for every token)",
                "counts": ACTIVE_COUNTS, "experts_per_token": None, "moe_layers": 0}
    k = family.dims(config).get("experts_per_token")
    value = None
    if isinstance(k, int) and k > 0:
        used = sum(Fraction(k * routed[layer], len(experts[layer])) for layer in routed)
        value = base - counts["routed_experts"] + round(used)
    return {"value": value, "formula": ACTIVE_FORMULA, "counts": ACTIVE_COUNTS, "experts_per_token": k,
            "moe_layers": len(routed), "experts_per_layer": sorted({len(e) for e in experts.values()}),
            "note": None if value is not None else "config.json gives no experts-per-token count"}
