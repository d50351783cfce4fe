"""One family's map between canonical roles and on-disk tensor names: matching, config values, expected names."""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, field, fields
from fnmatch import fnmatchcase
from typing import Any, Iterable

from solarforensics.errors import FormatError
from solarforensics.families.roles import CONFIG_KEYS, DENSE_MLP_ROLES, MOE_ROLES, MTP_ROLES

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
    norm_position: str = "pre"  # "pre": a norm opens each block (decoders); "post": it closes it (BERT)
    notes: tuple[str, ...] = ()
    inferred: bool = False
    warning: str | None = None
    _lookup: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict, repr=False, compare=False)
    # Names already classified (a 100B MoE has ~20,000 tensor names, classified by every command that opens it).
    _matches: dict[str, Match | None] = field(default_factory=dict, repr=False, compare=False)

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
        if name in self._matches:
            return self._matches[name]
        found = self._template_match(name)
        if found is None:
            found = next((Match(role, None, None, name) for role, patterns in self.extras.items()
                          if any(fnmatchcase(name, p) for p in patterns)), None)
        self._matches[name] = found
        return found

    def _template_match(self, name: str) -> Match | None:
        key, numbers = name_key(name)
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
        """Layer indices that are not decoder layers. The weights decide: a layer holding an MTP-only tensor is an MTP
        layer; when none does, the config's MTP range (num_layers .. num_layers + num_mtp_layers - 1) is. A layer
        beyond both is a decoder layer whatever num_layers says (config_disagreements reports it)."""
        marked = set()
        for name in tensor_names:
            found = self.match(name)
            if found is not None and found.layer is not None and found.role in MTP_ROLES:
                marked.add(found.layer)
        n = self.num_layers(config)
        if marked or n is None or not self.mtp:
            return marked
        return set(range(n, n + (self.config_value(config, "num_mtp_layers") or 0)))

    def config_disagreements(self, config: dict | None, tensors: dict) -> list[str]:
        """Where config.json and the weights on disk (`tensors`: name -> anything with a `shape`) disagree about the
        decoder's size. The weights are what gets compared, so they are trusted; these lines say so."""
        mtp = self.mtp_layers(config, tensors)
        layers = {found.layer for found in map(self.match, tensors)
                  if found is not None and found.layer is not None and found.layer not in mtp}
        out = []
        n = self.num_layers(config)
        if n is not None and layers and layers != set(range(n)):
            out.append(f"config.json says {n} decoder layers but the weights hold {len(layers)} "
                       f"(layers {min(layers)}-{max(layers)}); the weights are used")
        hidden, width = self.config_value(config, "hidden_size"), self.hidden_from_weights(tensors)
        if isinstance(hidden, int) and width is not None and hidden != width:
            out.append(f"config.json says hidden_size {hidden} but the norm gains in the weights have {width} "
                       "values; the weights are used")
        return out

    def hidden_from_weights(self, tensors: dict) -> int | None:
        """The residual width the norm gains on disk have (None if they do not agree or are absent)."""
        widths = {ref.shape[0] for name, ref in tensors.items() if len(ref.shape) == 1
                  and (found := self.match(name)) is not None and found.role in ("attn_norm", "mlp_norm", "final_norm")}
        return min(widths) if len(widths) == 1 else None

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
        out = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
        out["tied"] = None if self.tied is None else asdict(self.tied)
        out["present_if"] = {role: asdict(c) for role, c in self.conditions.items()}
        out["fused"] = {role: asdict(f) for role, f in self.fused.items()}
        del out["conditions"]
        return json.loads(json.dumps(out))  # tuples -> lists, a deep copy


@functools.lru_cache(maxsize=1 << 18)
def name_key(name: str) -> tuple[str, tuple[int, ...]]:
    """`model.layers.3.mlp.experts.7.w1.weight` -> (`model.layers.#.mlp.experts.#.w1.weight`, (3, 7))."""
    numbers, segments = [], []
    for segment in name.split("."):
        if segment.isascii() and segment.isdigit():
            numbers.append(int(segment))
            segments.append("#")
        else:
            segments.append(segment)
    return ".".join(segments), tuple(numbers)


def template_key(template: str) -> tuple[str, tuple[str, ...]]:
    """`model.layers.{layer}.w1.weight` -> (`model.layers.#.w1.weight`, ("layer",)): the key `name_key` gives names."""
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
