"""Model families: canonical tensor roles <-> on-disk names, loaded from `configs/families/*.toml`."""

from __future__ import annotations

import functools
import json
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Iterable

from solarforensics.datafiles import config_path
from solarforensics.errors import FormatError, NotFoundError

# The canonical vocabulary every family file maps onto; the order here is the order of names within a layer.
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
_ROLE_ORDER = {role: i for i, role in enumerate(ROLES)}
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
_COUNTS_DEFAULT_ZERO = ("num_experts", "num_shared_experts", "first_k_dense", "num_mtp_layers")


@dataclass(frozen=True)
class Match:
    """One tensor name recognised as a canonical role, with its layer and expert index when it has them."""

    role: str
    layer: int | None
    expert: int | None
    name: str


@dataclass(frozen=True)
class Condition:
    """A role that exists only when a config flag is truthy (or, with `negate`, falsy)."""

    key: str
    default: Any
    negate: bool = False


@dataclass(frozen=True)
class Tied:
    """`role` is the same matrix as `same_as` when config[`flag`] is true, and is then not stored."""

    role: str
    same_as: str
    flag: str
    default: bool


@dataclass(frozen=True)
class FusedSplit:
    """How a fused tensor splits into canonical parts along `axis`: "equal" parts or "gqa" (q, k, v head sizes)."""

    parts: tuple[str, ...]
    axis: int
    split: str


@dataclass(frozen=True)
class Family:
    """One model family: which on-disk names play which canonical role, and where the config keeps its sizes."""

    name: str
    model_type: str
    aliases: tuple[str, ...]
    description: str
    source: str
    architectures: tuple[str, ...]
    roles: dict[str, tuple[str, ...]]
    config_keys: dict[str, tuple[str, ...]]
    config_section: str | None = None
    conditions: dict[str, Condition] = field(default_factory=dict)
    tied: Tied | None = None
    mtp_roles: tuple[str, ...] = ()
    mtp_unverified: tuple[str, ...] = ()
    fused: dict[str, FusedSplit] = field(default_factory=dict)
    transposed: tuple[str, ...] = ()
    extras: dict[str, tuple[str, ...]] = field(default_factory=dict)
    dtype: str = "BF16"
    dtypes: dict[str, str] = field(default_factory=dict)
    norm_offset: float = 0.0
    notes: tuple[str, ...] = ()
    inferred: bool = False
    warning: str | None = None
    _lookup: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def mtp(self) -> bool:
        """True when the family stores MTP/nextn layers after its decoder layers."""
        return bool(self.mtp_roles)

    @property
    def is_moe(self) -> bool:
        return "router" in self.roles

    def covers(self, model_type: str) -> bool:
        return model_type == self.model_type or model_type in self.aliases

    def slots(self, role: str) -> tuple[str, ...]:
        """The placeholders of a role's templates: (), ("layer",) or ("layer", "expert")."""
        return tuple(p for p in ("layer", "expert") if "{" + p + "}" in self.roles[role][0])

    def match(self, name: str) -> Match | None:
        """The role a tensor name plays (templates first, then the declared extras), or None."""
        found = self._template_match(name)
        if found is not None:
            return found
        for role, patterns in self.extras.items():
            if any(fnmatchcase(name, p) for p in patterns):
                return Match(role, None, None, name)
        return None

    def _template_match(self, name: str) -> Match | None:
        key, numbers = _name_key(name)
        hit = self._lookup.get(key)
        if hit is None:
            return None
        role, slots = hit
        values = dict(zip(slots, numbers))
        return Match(role, values.get("layer"), values.get("expert"), name)

    def classify(self, tensor_names: Iterable[str]) -> tuple[list[Match], list[str]]:
        """Every name either matches a role (or a declared extra) or is returned as unmapped; none is dropped."""
        matches, unmapped = [], []
        for name in tensor_names:
            found = self.match(name)
            if found is None:
                unmapped.append(name)
            else:
                matches.append(found)
        return matches, unmapped

    def config_value(self, config: dict | None, key: str) -> Any:
        """The first present config.json field named for canonical `key` (None if absent)."""
        section = self._section(config)
        for config_key in self.config_keys.get(key, ()):
            if section.get(config_key) is not None:
                return section[config_key]
        return None

    def dims(self, config: dict | None) -> dict[str, Any]:
        """Every canonical config value, with the usual defaults filled in."""
        d = {key: self.config_value(config, key) for key in CONFIG_KEYS}
        if d["num_kv_heads"] is None:
            d["num_kv_heads"] = d["num_heads"]
        if d["head_dim"] is None and d["hidden_size"] and d["num_heads"]:
            d["head_dim"] = d["hidden_size"] // d["num_heads"]
        if d["intermediate"] is None and d["hidden_size"]:
            d["intermediate"] = 4 * d["hidden_size"]  # GPT-2 (n_inner null) and BERT convention
        for key in _COUNTS_DEFAULT_ZERO:
            d[key] = d[key] or 0
        return d

    def num_layers(self, config: dict | None) -> int | None:
        value = self.config_value(config, "num_layers")
        return value if isinstance(value, int) else None

    def mtp_layers(self, config: dict | None = None, tensor_names: Iterable[str] = ()) -> set[int]:
        """Layer indices that are not decoder layers: MTP layers by config, by MTP-only tensors, or beyond num_layers."""
        layers: set[int] = set()
        n = self.num_layers(config)
        if n is not None and self.mtp:
            layers.update(range(n, n + (self.config_value(config, "num_mtp_layers") or 0)))
        for name in tensor_names:
            found = self.match(name)
            if found is None or found.layer is None:
                continue
            if found.role in MTP_ROLES or (n is not None and found.layer >= n):
                layers.add(found.layer)
        return layers

    def role_present(self, role: str, config: dict | None) -> bool:
        """Whether a checkpoint with this config stores `role` (conditions and tied weights)."""
        if role not in self.roles:
            return False
        condition = self.conditions.get(role)
        if condition is not None and bool(self._flag(config, condition.key, condition.default)) == condition.negate:
            return False
        if self.tied is not None and role == self.tied.role:
            return not self._flag(config, self.tied.flag, self.tied.default)
        return True

    def required_roles(self) -> set[str]:
        """Roles every checkpoint of the family stores (no condition, not tied away, not MTP-only)."""
        tied = {self.tied.role} if self.tied else set()
        return set(self.roles) - set(self.conditions) - tied - set(self.mtp_roles)

    def is_moe_layer(self, layer: int, dims: dict[str, Any]) -> bool:
        return self.is_moe and dims["num_experts"] > 0 and layer >= dims["first_k_dense"]

    def expected_names(self, config: dict) -> list[str]:
        """Every tensor name this family predicts for `config`, in module order (embeddings, layers, MTP, head)."""
        d = self.dims(config)
        if not isinstance(d["num_layers"], int):
            raise FormatError(f"config.json has no layer count for family {self.name}",
                              hint=f"expected one of {', '.join(self.config_keys.get('num_layers', ()))}")
        if self.is_moe and not d["num_experts"]:
            raise FormatError(f"config.json has no expert count for MoE family {self.name}",
                              hint=f"expected one of {', '.join(self.config_keys.get('num_experts', ()))}")
        global_roles = [r for r in self.roles if not self.slots(r) and self.role_present(r, config)]
        names = [self.roles[r][0] for r in global_roles if r.startswith("embed")]
        for layer in range(d["num_layers"]):
            names += self._layer_names(layer, d, config, is_mtp=False)
        for layer in range(d["num_layers"], d["num_layers"] + (d["num_mtp_layers"] if self.mtp else 0)):
            names += self._layer_names(layer, d, config, is_mtp=True)
        return names + [self.roles[r][0] for r in global_roles if not r.startswith("embed")]

    def _layer_names(self, layer: int, d: dict[str, Any], config: dict, is_mtp: bool) -> list[str]:
        moe = self.is_moe_layer(layer, d)
        names = []
        for role, templates in self.roles.items():
            slots = self.slots(role)
            if "layer" not in slots or not self.role_present(role, config):
                continue
            if role in MTP_ROLES and (not is_mtp or role in self.mtp_unverified):
                continue
            if (role in DENSE_MLP_ROLES and moe) or (role in MOE_ROLES and not moe):
                continue
            experts = range(d["num_experts"]) if "expert" in slots else (None,)
            names += [templates[0].format(layer=layer, expert=e) for e in experts]
        return names

    def _section(self, config: dict | None) -> dict:
        if not config:
            return {}
        nested = config.get(self.config_section) if self.config_section else None
        return {**config, **nested} if isinstance(nested, dict) else config

    def _flag(self, config: dict | None, key: str, default: Any) -> Any:
        value = self._section(config).get(key)
        return default if value is None else value

    def to_dict(self) -> dict[str, Any]:
        """A plain JSON-able description (for `families show`)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "_lookup"}
        out["tied"] = None if self.tied is None else asdict(self.tied)
        out["present_if"] = {role: asdict(c) for role, c in self.conditions.items()}
        out["fused"] = {role: asdict(f) for role, f in self.fused.items()}
        del out["conditions"]
        return json.loads(json.dumps(out))  # tuples -> lists, a deep copy


def _name_key(name: str) -> tuple[str, list[int]]:
    """`model.layers.3.mlp.experts.7.w1.weight` -> (`model.layers.#.mlp.experts.#.w1.weight`, [3, 7])."""
    numbers, segments = [], []
    for segment in name.split("."):
        if segment.isascii() and segment.isdigit():
            numbers.append(int(segment))
            segments.append("#")
        else:
            segments.append(segment)
    return ".".join(segments), numbers


def _template_key(template: str) -> tuple[str, tuple[str, ...]]:
    slots, segments = [], []
    for segment in template.split("."):
        if segment in ("{layer}", "{expert}"):
            slots.append(segment[1:-1])
            segments.append("#")
        elif "{" in segment or "}" in segment or segment.isdigit():
            raise ValueError(f"template {template!r}: placeholders must fill a whole dotted segment")
        else:
            segments.append(segment)
    return ".".join(segments), tuple(slots)


# --- loading -----------------------------------------------------------------------------------------------

_TOP_KEYS = {"model_type", "aliases", "description", "source", "architectures", "notes", "norm_offset", "dtype",
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
    for role in sorted(raw_roles, key=lambda r: _ROLE_ORDER.get(r, len(ROLES))):
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        if role in MTP_ROLES and role in data.get("roles", {}):
            raise ValueError(f"role {role!r} belongs under [mtp.roles]")
        templates = list(_strs(raw_roles[role], f"role {role!r}"))
        templates += [alt + t[len(old):] for old, alts in prefixes.items() for t in list(templates)
                      if t.startswith(old) for alt in alts]
        slot_sets = set()
        for template in templates:
            key, slots = _template_key(template)
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
