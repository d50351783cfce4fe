"""Tensor selection: `--tensors` groups and glob patterns -> concrete tensors, and pairing of two selections."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from itertools import product
from typing import Iterable

from solarforensics.errors import SelectionError
from solarforensics.families.family import ROLES, Family

_Q = ("q", "q_a", "q_b")
_K = ("k", "kv_a", "kv_b")  # MLA's joint key/value projections carry the keys
_V = ("v",)
_O = ("o",)

# The public names of `--tensors`: group -> (canonical roles, description). Biases are only in `all` (or a glob),
# so each group pairs tensors of one kind. Fused tensors (GPT-2 c_attn, Phi-3 qkv_proj) are selected as their parts.
GROUPS: dict[str, tuple[tuple[str, ...], str]] = {
    "layernorm": (("attn_norm", "mlp_norm"), "norm gains opening (or, post-norm, closing) attention and MLP"),
    "attn-norm": (("attn_norm",), "input (pre-attention) norm gains"),
    "mlp-norm": (("mlp_norm",), "post-attention (pre-MLP) norm gains"),
    "attn-q": (_Q, "query projections (MLA: q_a, q_b)"),
    "attn-k": (_K, "key projections (MLA: kv_a, kv_b)"),
    "attn-v": (_V, "value projections"),
    "attn-o": (_O, "attention output projections"),
    "qk-norm": (("q_norm", "k_norm", "q_a_norm", "kv_a_norm"), "per-head query/key norm gains (MLA latent norms)"),
    "router": (("router",), "MoE router matrices"),
    "router-bias": (("router_bias",), "MoE router selection biases (e_score_correction_bias)"),
    "embeddings": (("embed",), "token embedding matrix"),
    "lm-head": (("lm_head",), "output head"),
    "final-norm": (("final_norm",), "final norm gain"),
    "experts": (("expert_gate", "expert_up", "expert_down"), "routed expert matrices"),
    "shared-experts": (("shared_gate", "shared_up", "shared_down"), "shared expert matrices"),
    "dense-mlp": (("mlp_gate", "mlp_up", "mlp_down"), "dense MLP matrices"),
    "attn": (_Q + _K + _V + _O, "all attention projections (q, k, v, o)"),
    "all": ((), "every tensor, mapped or not"),
}
LAYER_MODES = ("same", "all-pairs")
_ROLE_ORDER = {role: i for i, role in enumerate(ROLES)}


@dataclass(frozen=True)
class Selected:
    """One selected tensor; `fused` names the fused role when this is one part of a fused tensor (e.g. qkv)."""

    group: str
    role: str | None
    layer: int | None
    expert: int | None
    name: str
    fused: str | None = None

    @property
    def by_name(self) -> bool:
        """Globs, unmapped tensors and extras pair by exact name; everything else by (role, layer, expert)."""
        return self.group not in GROUPS or self.role not in _ROLE_ORDER

    @property
    def key(self) -> tuple:
        return ("name", self.name) if self.by_name else (self.role, self.layer, self.expert)


def is_glob(item: str) -> bool:
    return any(c in item for c in "*?[")


def _parse_spec(spec: str) -> list[str]:
    items = list(dict.fromkeys(i.strip() for i in spec.split(",") if i.strip()))
    if not items:
        raise SelectionError("empty tensor selection", hint=f"give groups ({', '.join(GROUPS)}) or glob patterns")
    for item in items:
        if not is_glob(item) and item not in GROUPS:
            raise SelectionError(f"unknown tensor group {item!r}",
                                 hint=f"valid groups: {', '.join(GROUPS)}; or a glob pattern on tensor names")
    return items


def _sort_key(item_index: int, sel: Selected) -> tuple:
    return (item_index, -1 if sel.layer is None else sel.layer, _ROLE_ORDER.get(sel.role, len(_ROLE_ORDER)),
            -1 if sel.expert is None else sel.expert, sel.name)


def _select_group(family: Family, group: str, names: list[str], excluded_layers: set[int],
                  exclude_mtp: bool) -> list[Selected]:
    roles = GROUPS[group][0]
    out = []
    for name in names:
        m = family.match(name)
        if m is None:
            if group == "all":
                out.append(Selected(group, None, None, None, name))
            continue
        if exclude_mtp and (m.layer in excluded_layers or m.role in family.mtp_roles):
            continue
        if group == "all" or m.role in roles:
            out.append(Selected(group, m.role, m.layer, m.expert, name))
        elif m.role in family.fused:
            out += [Selected(group, part, m.layer, m.expert, name, fused=m.role)
                    for part in family.fused[m.role].parts if part in roles]
    return out


def _select_glob(family: Family, pattern: str, names: list[str]) -> list[Selected]:
    out = []
    for name in names:
        if fnmatchcase(name, pattern):
            m = family.match(name)
            out.append(Selected(pattern, m.role if m else None, m.layer if m else None,
                                m.expert if m else None, name))
    return out


def select(family: Family, tensor_names: Iterable[str], spec: str, *, exclude_mtp: bool = True,
           config: dict | None = None, allow_empty: bool = False) -> list[Selected]:
    """Resolve a comma-separated list of groups and/or globs; groups skip MTP layers unless exclude_mtp=False.

    Globs are explicit and are never filtered. Order: spec item, layer, role, expert, name. A spec matching nothing is
    a SelectionError, unless allow_empty (a model lacking a group another model has: the caller lists the others).
    """
    names = list(tensor_names)
    items = _parse_spec(spec)
    excluded = family.mtp_layers(config, names) if exclude_mtp else set()
    chosen: list[tuple[tuple, Selected]] = []
    seen: set[tuple[str, str | None]] = set()
    empty = []
    for index, item in enumerate(items):
        found = (_select_glob(family, item, names) if is_glob(item)
                 else _select_group(family, item, names, excluded, exclude_mtp))
        if not found:
            empty.append(item)
        for sel in found:
            if (sel.name, sel.role) not in seen:
                seen.add((sel.name, sel.role))
                chosen.append((_sort_key(index, sel), sel))
    if not chosen and not allow_empty:
        present = available_groups(family, names, config=config, exclude_mtp=exclude_mtp)
        raise SelectionError(
            f"nothing selected: {', '.join(repr(i) for i in empty)} matched none of the {len(names)} tensors "
            f"of this {family.name} checkpoint",
            hint=f"groups with tensors here: {', '.join(present) or 'none'}")
    return [sel for _, sel in sorted(chosen, key=lambda pair: pair[0])]


def available_groups(family: Family, tensor_names: Iterable[str], *, config: dict | None = None,
                     exclude_mtp: bool = True) -> list[str]:
    """The groups that select at least one of these tensors."""
    names = list(tensor_names)
    excluded = family.mtp_layers(config, names) if exclude_mtp else set()
    return [g for g in GROUPS if _select_group(family, g, names, excluded, exclude_mtp)]


def pair_selections(sel_a: list[Selected], sel_b: list[Selected], layers: str = "same"
                    ) -> tuple[list[tuple[Selected, Selected]], list[Selected], list[Selected]]:
    """Pair two selections: (pairs, only in A, only in B).

    layers="same" pairs equal (role, layer, expert) (globs: equal names); "all-pairs" pairs every layer of A with
    every layer of B within each (role, expert). Nothing unpaired is dropped: it is returned in only_a / only_b.
    """
    if layers not in LAYER_MODES:
        raise SelectionError(f"unknown layer pairing {layers!r}", hint=f"use one of: {', '.join(LAYER_MODES)}")
    if layers == "same":
        by_key = {sel.key: sel for sel in sel_b}
        pairs = [(a, by_key[a.key]) for a in sel_a if a.key in by_key]
        keys_a = {a.key for a in sel_a}
        return (pairs, [a for a in sel_a if a.key not in by_key], [b for b in sel_b if b.key not in keys_a])

    def family_key(sel: Selected) -> tuple:
        # Layer-less tensors (embeddings, final norm) and name-paired ones keep their exact key.
        return sel.key if sel.by_name or sel.layer is None else (sel.role, sel.expert)

    classes_b: dict[tuple, list[Selected]] = {}
    for b in sel_b:
        classes_b.setdefault(family_key(b), []).append(b)
    classes_a: dict[tuple, list[Selected]] = {}
    for a in sel_a:
        classes_a.setdefault(family_key(a), []).append(a)
    pairs = []
    for key, members_a in classes_a.items():
        pairs += list(product(members_a, classes_b.get(key, [])))
    only_a = [a for a in sel_a if family_key(a) not in classes_b]
    only_b = [b for b in sel_b if family_key(b) not in classes_a]
    return pairs, only_a, only_b
