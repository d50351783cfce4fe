"""The canonical vocabulary every family file maps onto: tensor roles, role groups and config keys."""

from __future__ import annotations

# The order here is the order of names within a layer.
# q_a/q_b/kv_a/kv_b are MLA (DeepSeek) low-rank projections; attn_post_norm/mlp_post_norm are Gemma's sandwich norms;
# attn_norm/mlp_norm are the norms that open (pre-norm) or close (post-norm, BERT) the attention and MLP blocks.
ROLES: tuple[str, ...] = (
    "embed", "embed_pos", "embed_type", "embed_norm", "embed_norm_bias",
    "attn_norm", "attn_norm_bias",
    "q", "k", "v", "qkv", "q_a", "q_a_norm", "q_b", "kv_a", "kv_a_norm", "kv_b",
    "q_bias", "k_bias", "v_bias", "qkv_bias", "q_norm", "k_norm", "o", "o_bias", "attn_post_norm",
    "mlp_norm", "mlp_norm_bias", "mlp_gate", "mlp_up", "mlp_gate_up", "mlp_up_bias", "mlp_down", "mlp_down_bias",
    "mlp_post_norm",
    "router", "router_bias", "expert_gate", "expert_up", "expert_down", "shared_gate", "shared_up", "shared_down",
    "mtp_embed", "mtp_enorm", "mtp_hnorm", "mtp_eh_proj", "mtp_head_norm", "mtp_head",
    "final_norm", "final_norm_bias", "lm_head", "lm_head_bias", "pooler", "pooler_bias",
)
ROLE_ORDER = {role: i for i, role in enumerate(ROLES)}
MTP_ROLES = frozenset(r for r in ROLES if r.startswith("mtp_"))
NORM_ROLES = frozenset(r for r in ROLES if r.endswith("norm"))
DENSE_MLP_ROLES = frozenset({"mlp_gate", "mlp_up", "mlp_gate_up", "mlp_up_bias", "mlp_down", "mlp_down_bias"})
MOE_ROLES = frozenset({"router", "router_bias", "expert_gate", "expert_up", "expert_down",
                       "shared_gate", "shared_up", "shared_down"})

# Canonical config values; defaults: num_kv_heads = num_heads, head_dim = hidden_size // num_heads,
# intermediate = 4 * hidden_size, expert/MTP/dense-layer counts 0. num_layers excludes MTP layers.
CONFIG_KEYS: tuple[str, ...] = (
    "num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim", "vocab_size", "intermediate",
    "num_experts", "experts_per_token", "num_shared_experts", "moe_intermediate", "first_k_dense", "num_mtp_layers",
    "max_positions", "type_vocab_size",
    "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
)
