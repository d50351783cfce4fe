"""What each virtual replica repo holds: files, tensors in module order, shard files with their safetensors headers,
and the index, all derived from configs/replicas/<owner>__<name>/replica.toml and the family maps."""

from __future__ import annotations

import csv
import functools
import json
import math
import tomllib
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from solarforensics.checkpoints import tensor_shape
from solarforensics.datafiles import config_path
from solarforensics.errors import FormatError
from solarforensics.families.family import MOE_ROLES, Family, load_family

ITEM_BYTES = {"BF16": 2, "F32": 4}
# safetensors writes tensors sorted by dtype (larger dtype codes first: F32 before BF16), then by name, and lists
# them in the header in that same order; the replicas keep that layout so byte offsets look like the real files'.
DTYPE_RANK = {"F32": 0, "BF16": 1}
INDEX_FILE = "model.safetensors.index.json"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    role: str
    layer: int | None
    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * ITEM_BYTES[self.dtype]


@dataclass(frozen=True)
class ShardLayout:
    """One safetensors file: its tensors in data order, their absolute start offsets, and the header bytes."""

    name: str
    tensors: tuple[TensorSpec, ...]
    starts: tuple[int, ...]
    header: bytes  # the 8-byte length, then the JSON header padded with spaces to a multiple of 8

    @property
    def size(self) -> int:
        last = self.tensors[-1]
        return self.starts[-1] + last.nbytes if self.tensors else len(self.header)

    def tensor_at(self, offset: int) -> int:
        """Index of the tensor whose bytes hold absolute `offset` (tensors are contiguous after the header)."""
        return max(0, bisect_right(self.starts, offset) - 1)


@dataclass
class ReplicaSpec:
    repo: str
    folder: Path
    family: Family
    config: dict
    seed: int
    files: list[str]
    tokenizer: str
    last_modified: float
    tensors: list[TensorSpec]  # module (state_dict) order
    shards: list[ShardLayout]
    norm_table: str | None = None
    parent: str | None = None
    values: dict = field(default_factory=dict)
    derived: dict = field(default_factory=dict)

    @property
    def total_size(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    def index_bytes(self) -> bytes:
        """model.safetensors.index.json as transformers writes it (sorted keys, indent 2, trailing newline)."""
        weight_map = {t.name: shard.name for shard in self.shards for t in shard.tensors}
        index = {"metadata": {"total_size": self.total_size}, "weight_map": weight_map}
        return (json.dumps(index, indent=2, sort_keys=True) + "\n").encode()


def replica_folders() -> list[Path]:
    root = config_path("replicas")
    return sorted(p.parent for p in root.glob("*/replica.toml")) if root.is_dir() else []


@functools.lru_cache(maxsize=None)
def load_replica_spec(folder: Path) -> ReplicaSpec:
    """The spec of one replica folder (cached: specs are immutable)."""
    try:
        with open(folder / "replica.toml", "rb") as handle:
            data = tomllib.load(handle)
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FormatError(f"replica {folder.name}: {exc}", hint="fix configs/replicas/") from exc
    family = load_family(data["family"])
    tensors = _module_order(family, config, data["layout"])
    shards = _shards(tensors, data["shards"], family, config)
    stamp = datetime.fromisoformat(data["last_modified"].replace("Z", "+00:00")).timestamp()
    return ReplicaSpec(
        repo=data["repo"], folder=folder, family=family, config=config, seed=int(data["seed"]),
        files=list(data["files"]), tokenizer=data["tokenizer"], last_modified=stamp, tensors=tensors,
        shards=shards, norm_table=data.get("norm_table"), parent=data.get("parent"),
        values=data.get("values", {}), derived=data.get("derived", {}),
    )  # fmt: skip


def load_replica_specs() -> dict[str, ReplicaSpec]:
    specs = [load_replica_spec(folder) for folder in replica_folders()]
    return {spec.repo: spec for spec in specs}


def _module_order(family: Family, config: dict, layout: dict) -> list[TensorSpec]:
    """Every tensor in the order the model's modules register them (the order save_pretrained shards in)."""
    dims = family.dims(config)
    out: list[TensorSpec] = []

    def add(role: str, layer: int | None = None, expert: int | None = None) -> None:
        name = family.roles[role][0].format(layer=layer, expert=expert)
        dtype = family.dtypes.get(role, family.dtype)
        out.append(TensorSpec(name, role, layer, dtype, tensor_shape(family, role, dims)))

    def add_layer(layer: int, extra: list[str]) -> None:
        moe = family.is_moe_layer(layer, dims)
        for role in layout["layer"] + extra:
            if role == "experts":
                if moe:
                    for expert in range(dims["num_experts"]):
                        for part in layout["experts"]:
                            add(part, layer, expert)
            elif family.role_present(role, config) and (moe or role not in MOE_ROLES) and not (
                    moe and role in ("mlp_gate", "mlp_up", "mlp_down")):
                add(role, layer)

    for role in layout["head"]:
        add(role)
    for layer in range(dims["num_layers"]):
        add_layer(layer, [])
    if layout.get("include_mtp", False):
        first = dims["num_layers"]
        for layer in range(first, first + dims["num_mtp_layers"]):
            add_layer(layer, layout.get("mtp", []))
    for role in layout["tail"]:
        if family.role_present(role, config):
            add(role)
    return out


def _shards(tensors: list[TensorSpec], rule: dict, family: Family, config: dict) -> list[ShardLayout]:
    if rule["rule"] == "greedy":
        groups = _greedy(tensors, int(rule["max_bytes"]))
    elif rule["rule"] == "per_layer":
        groups = _per_layer(tensors, rule.get("place", {}))
    else:
        raise FormatError(f"unknown shard rule {rule['rule']!r}", hint="use greedy or per_layer")
    n = len(groups)
    return [_layout(f"model-{i:05d}-of-{n:05d}.safetensors", members) for i, members in enumerate(groups, start=1)]


def _greedy(tensors: list[TensorSpec], max_bytes: int) -> list[list[TensorSpec]]:
    """huggingface_hub's split: a new shard when the next tensor would push this one past `max_bytes`."""
    groups: list[list[TensorSpec]] = [[]]
    size = 0
    for tensor in tensors:
        if groups[-1] and size + tensor.nbytes > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append(tensor)
        size += tensor.nbytes
    return groups


def _per_layer(tensors: list[TensorSpec], place: dict[str, int]) -> list[list[TensorSpec]]:
    """Layer N in shard N + 1; layer-less tensors in the shard `place` names for their role."""
    shard_of = [place[t.role] if t.layer is None else t.layer + 1 for t in tensors]
    groups: list[list[TensorSpec]] = [[] for _ in range(max(shard_of))]
    for tensor, shard in zip(tensors, shard_of):
        groups[shard - 1].append(tensor)
    return groups


def _layout(name: str, members: list[TensorSpec]) -> ShardLayout:
    ordered = sorted(members, key=lambda t: (DTYPE_RANK[t.dtype], t.name))
    entries, offset = ['"__metadata__":{"format":"pt"}'], 0
    for t in ordered:
        shape = ",".join(str(d) for d in t.shape)
        span = f"[{offset},{offset + t.nbytes}]"
        entries.append(f'"{t.name}":{{"dtype":"{t.dtype}","shape":[{shape}],"data_offsets":{span}}}')
        offset += t.nbytes
    text = "{" + ",".join(entries) + "}"
    text += " " * (-len(text) % 8)
    header = len(text).to_bytes(8, "little") + text.encode()
    starts, position = [], len(header)
    for t in ordered:
        starts.append(position)
        position += t.nbytes
    return ShardLayout(name, tuple(ordered), tuple(starts), header)


@functools.lru_cache(maxsize=1)
def _norm_rows() -> dict[tuple[str, str], list[tuple[int, float, float]]]:
    rows: dict[tuple[str, str], list[tuple[int, float, float]]] = {}
    with open(config_path("replicas", "norm-gains.csv"), newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            rows.setdefault((row["model"], row["role"]), []).append(
                (int(row["layer"]), float(row["mean"]), float(row["std"])))
    return {key: sorted(value) for key, value in rows.items()}


def gain_statistics(spec: ReplicaSpec, role: str, layer: int | None) -> tuple[float, float]:
    """(mean, std) of a norm gain: the table's row, linear between anchor layers, held beyond the last one."""
    rows = _norm_rows().get((spec.norm_table or "", role))
    if not rows or layer is None:
        default = spec.values.get("default_gain", {}).get(role)
        if default is None:
            raise FormatError(f"replica {spec.repo}: no gain statistics for {role}", hint="add a default_gain")
        return float(default[0]), float(default[1])
    layers = [r[0] for r in rows]
    k = bisect_right(layers, layer)
    if k == 0 or k == len(rows) or rows[k - 1][0] == layer:
        _, mean, std = rows[max(0, k - 1)]
        return mean, std
    (l0, m0, s0), (l1, m1, s1) = rows[k - 1], rows[k]
    w = (layer - l0) / (l1 - l0)
    return m0 + w * (m1 - m0), s0 + w * (s1 - s0)
