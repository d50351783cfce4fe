"""Model families: canonical tensor roles <-> on-disk names, loaded from `configs/families/*.toml`."""

from __future__ import annotations

import functools
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable

from solarforensics.datafiles import config_path
from solarforensics.errors import FormatError, NotFoundError
from solarforensics.families.family_map import Condition, Family, FusedSplit, Match, Tied, template_key
from solarforensics.families.roles import (
    CONFIG_KEYS,
    DENSE_MLP_ROLES,
    MOE_ROLES,
    MTP_ROLES,
    NORM_ROLES,
    ROLE_ORDER,
    ROLES,
)

# The vocabulary (roles.py) and the Family map (family_map.py) live beside this module and are re-exported here,
# so callers import everything about families from one place.
__all__ = [
    "CONFIG_KEYS", "DENSE_MLP_ROLES", "MOE_ROLES", "MTP_ROLES", "NORM_ROLES", "ROLES",
    "Condition", "Family", "FusedSplit", "Match", "Tied",
    "find_family", "list_families", "load_family", "load_family_file",
]


_TOP_KEYS = {"model_type", "aliases", "description", "source", "architectures", "notes", "norm_offset",
             "norm_position", "dtype",
             "dtypes", "config_section", "config", "roles", "present_if", "present_unless", "tied", "mtp", "fused",
             "transposed", "extras", "alternative_prefixes"}


def load_family_file(path: Path) -> Family:
    """Parse and validate one family TOML file."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        return _parse_family(Path(path).stem, data)
    except (tomllib.TOMLDecodeError, ValueError, TypeError, KeyError) as exc:
        raise FormatError(f"family file {Path(path).name} is malformed: {exc}",
                          hint="fix it (see configs/families/llama.toml for the format)") from None


def _strs(value: Any, what: str) -> tuple[str, ...]:
    items = (value,) if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items or not all(isinstance(i, str) for i in items):
        raise ValueError(f"{what} must be a string or a non-empty list of strings")
    return tuple(items)


def _parse_family(name: str, data: dict[str, Any]) -> Family:
    unknown = set(data) - _TOP_KEYS
    if unknown or not isinstance(data.get("model_type"), str):
        raise ValueError(f"unknown keys {sorted(unknown)}" if unknown else "model_type (a string) is required")
    mtp = data.get("mtp", {})
    raw_roles = {**data.get("roles", {}), **mtp.get("roles", {})}
    prefixes = {old: _strs(new, f"alternative_prefixes[{old!r}]")
                for old, new in data.get("alternative_prefixes", {}).items()}
    roles: dict[str, tuple[str, ...]] = {}
    lookup: dict[str, tuple[str, tuple[str, ...]]] = {}
    for role in sorted(raw_roles, key=lambda r: ROLE_ORDER.get(r, len(ROLES))):
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        if role in MTP_ROLES and role in data.get("roles", {}):
            raise ValueError(f"role {role!r} belongs under [mtp.roles]")
        templates = list(_strs(raw_roles[role], f"role {role!r}"))
        templates += [alt + t[len(old):] for old, alts in prefixes.items() for t in list(templates)
                      if t.startswith(old) for alt in alts]
        slot_sets = set()
        for template in templates:
            key, slots = template_key(template)
            if key in lookup and lookup[key][0] != role:
                raise ValueError(f"template {template!r} of role {role!r} also matches role {lookup[key][0]!r}")
            lookup[key] = (role, slots)
            slot_sets.add(frozenset(slots))
        if len(slot_sets) != 1:
            raise ValueError(f"templates of role {role!r} disagree on their placeholders")
        roles[role] = tuple(dict.fromkeys(templates))
    if "embed" not in roles:
        raise ValueError("every family needs an 'embed' role")
    config_keys = {}
    for key, value in data.get("config", {}).items():
        if key not in CONFIG_KEYS:
            raise ValueError(f"unknown config key {key!r}; known: {', '.join(CONFIG_KEYS)}")
        config_keys[key] = _strs(value, f"config.{key}")
    conditions = {}
    for table, negate in (("present_if", False), ("present_unless", True)):
        for flag, spec in data.get(table, {}).items():
            for role in _strs(spec["roles"], f"{table}.{flag}.roles"):
                if role not in roles:
                    raise ValueError(f"{table}.{flag} names role {role!r} that has no template")
                conditions[role] = Condition(flag, spec.get("default"), negate)
    tied = None
    if "tied" in data:
        t = data["tied"]
        tied = Tied(t["role"], t["same_as"], t["flag"], bool(t.get("default", False)))
        if tied.same_as not in roles:
            raise ValueError(f"tied.same_as {tied.same_as!r} has no template")
    fused = {}
    for role, spec in data.get("fused", {}).items():
        parts = _strs(spec["parts"], f"fused.{role}.parts")
        if role not in roles or any(p not in ROLES for p in parts) or spec["split"] not in ("equal", "gqa"):
            raise ValueError(f"fused.{role} needs a templated role, canonical parts and split 'equal' or 'gqa'")
        fused[role] = FusedSplit(parts, int(spec["axis"]), spec["split"])
    norm_position = data.get("norm_position", "pre")
    if norm_position not in ("pre", "post"):
        raise ValueError(f"norm_position must be 'pre' or 'post', not {norm_position!r}")
    extras = {}
    for role, patterns in data.get("extras", {}).items():
        if role in ROLES:
            raise ValueError(f"extras.{role} reuses a canonical role name")
        extras[role] = _strs(patterns, f"extras.{role}")
    return Family(
        name=name, model_type=data["model_type"], aliases=tuple(data.get("aliases", ())),
        description=data.get("description", ""), source=data.get("source", ""),
        architectures=tuple(data.get("architectures", ())), roles=roles, config_keys=config_keys,
        config_section=data.get("config_section"), conditions=conditions, tied=tied,
        mtp_roles=tuple(r for r in roles if r in MTP_ROLES),
        mtp_unverified=tuple(mtp.get("unverified", ())), fused=fused,
        transposed=tuple(data.get("transposed", ())), extras=extras, dtype=data.get("dtype", "BF16"),
        dtypes=dict(data.get("dtypes", {})), norm_offset=float(data.get("norm_offset", 0.0)),
        norm_position=norm_position,
        notes=tuple(data.get("notes", ())), _lookup=lookup,
    )


@functools.cache
def _families_in(directory: str) -> dict[str, Family]:
    families = [load_family_file(p) for p in sorted(Path(directory).glob("*.toml"))]
    claimed: dict[str, str] = {}
    for family in families:
        for model_type in (family.model_type, *family.aliases):
            if model_type in claimed:
                raise FormatError(f"model_type {model_type!r} is claimed by families {claimed[model_type]} "
                                  f"and {family.name}", hint="keep each model_type in one family file")
            claimed[model_type] = family.name
    return {family.name: family for family in families}


def list_families() -> list[Family]:
    """Every family shipped in configs/families/, sorted by name."""
    return list(_families_in(str(config_path("families"))).values())


def load_family(model_type: str) -> Family:
    """The family for a model_type (or family file name); NotFoundError listing the known ones otherwise."""
    for family in list_families():
        if family.name == model_type or family.covers(model_type):
            return family
    known = ", ".join(f.model_type for f in list_families())
    raise NotFoundError(f"no model family for model_type {model_type!r}",
                        hint=f"known: {known}; add configs/families/{model_type}.toml")


def find_family(config: dict | None, tensor_names: Iterable[str]) -> Family:
    """The family named by config's model_type, else the one whose templates match the most names (inferred)."""
    names = list(tensor_names)
    model_type = (config or {}).get("model_type")
    for family in list_families():
        if model_type and family.covers(model_type):
            return family
    scored = []
    for family in list_families():
        matches = [m for m in map(family._template_match, names) if m is not None]
        # Among equal counts prefer the family that expects what it sees: fewest unconditional roles left unmatched,
        # then fewest matches explained only by an optional role (Qwen2's always-there biases beat Llama's optional).
        seen = {m.role for m in matches}
        if matches:
            scored.append((-len(matches), len(family.required_roles() - seen), len(seen - family.required_roles()),
                           family.name, family))
    if not scored:
        what = f"model_type {model_type!r} is unknown" if model_type else "there is no config.json model_type"
        raise NotFoundError(f"no model family fits: {what} and none of {len(names)} tensor names match a family",
                            hint="add a configs/families/<model_type>.toml for it")
    scored.sort(key=lambda s: s[:4])
    best = scored[0][4]
    ties = [s[3] for s in scored[1:] if s[:3] == scored[0][:3]]
    also = f"; equally good: {', '.join(ties)}" if ties else ""
    origin = f"model_type {model_type!r} has no family file" if model_type else "config.json has no model_type"
    warning = (f"{origin}; guessed family {best.name} from tensor names "
               f"({-scored[0][0]} of {len(names)} matched){also}")
    return replace(best, inferred=True, warning=warning)
