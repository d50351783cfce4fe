"""`zoo build --forest`: ground truth at population scale. Six independently trained roots (dense llama and MoE
mixtral, two sizes, two tokenizers), each the root of a derivation tree three generations deep, plus independent
singletons; every pair of models in different families is an independent pair. Model cards declare `base_model`
as the Hub does: right for most, missing for ~45% of derived models, wrong for ~2%.

The plan is data (plan_forest); the models are built by build.py's recipe loop and cached by recipe hash.
"""

from __future__ import annotations

import datetime
import itertools
import json
import os
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from solarforensics.errors import FormatError, SpecError
from solarforensics.zoo.architecture import Shape
from solarforensics.zoo.build import (
    CORPUS_NOTE,
    MANIFEST,
    ZOO_VERSION,
    Pair,
    Recipe,
    Size,
    build_recipes,
    read_manifest,
)

FOREST_VERSION = 1
CARD_OWNER = "zoo"  # cards name parents as repo ids zoo/NAME, the repos `validate --via-hub` serves the folders as
MISSING_SHARE, WRONG_SHARE = 0.45, 0.02  # Hub base_model: 100 of 222 derived models missing, 2 wrong (TensorLock)
EPOCH = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
SEEDS_PER_FOREST = 10_000  # init/order/disguise seeds of forest seed S lie in [S * 10,000, (S + 1) * 10,000)


@dataclass(frozen=True)
class ForestSize(Size):
    large: Shape = field(default_factory=Shape)  # the second model size: wider and deeper than `shape`


FOREST_SIZES = {
    "micro": ForestSize(Shape(hidden=32, intermediate=64, vocab=320), base_steps=4, tune_steps=2, cpt_steps=3,
                        batch=2, seq=16, chars=30_000, large=Shape(hidden=48, layers=3, intermediate=96, vocab=384)),
    "tiny": ForestSize(Shape(), base_steps=150, tune_steps=40, cpt_steps=100, batch=8, seq=64, chars=400_000,
                       large=Shape(hidden=96, layers=3, intermediate=192, vocab=768)),
    "small": ForestSize(Shape(hidden=128, layers=4, intermediate=256, vocab=1024), base_steps=400, tune_steps=100,
                        cpt_steps=300, batch=8, seq=96, chars=1_000_000,
                        large=Shape(hidden=192, layers=6, heads=6, intermediate=384, vocab=1536)),
}


@dataclass(frozen=True)
class Node:
    """One forest model: how to build it and its place in the truth."""

    recipe: Recipe
    family: str
    generation: int
    parents: tuple[str, ...]  # weight parents; () for a root and for a distilled student (its teacher is not one)
    transformations: tuple[str, ...]
    tokenizer: str


# Disguises: recipe params (seed placeholders filled per use), name suffix, what they do. Each keeps the function.
DISGUISES = {
    "rotation": ({"rotate": 0}, "rot", ("norm-gain folding", "residual rotation")),
    "permutation": ({"permute": 0, "dtype": "bfloat16"}, "perm", ("residual permutation", "bfloat16")),
    "rescale-permutation": ({"rescale": 0, "permute": 0}, "rsp", ("norm-gain rescaling", "residual permutation")),
    "units": ({"units": 0}, "units", ("head permutation", "MLP neuron permutation")),
    "scaling": ({"scale": 0}, "scaled", ("matrix scaling",)),
    "experts": ({"experts": 0}, "experts", ("expert permutation",)),
    "units-experts": ({"units": 0, "experts": 0}, "shuffled", ("head permutation", "MLP neuron permutation",
                                                                "expert permutation")),
}
# (name, MoE?, large?, tokenizer, disguise of cpt-ft, disguise of up-ft or ft-ft)
ROOTS = (("d64a", False, False, "a", "rotation", "rescale-permutation"),
         ("d64b", False, False, "b", "permutation", "units"),
         ("d96a", False, True, "a", "units", "rotation"),
         ("d96b", False, True, "b", "rescale-permutation", "scaling"),
         ("m64a", True, False, "a", "rotation", "experts"),
         ("m96b", True, True, "b", "rescale-permutation", "units-experts"))


class _Tree:
    """Adds the nodes of one family, numbering seeds and generations."""

    def __init__(self, nodes: list[Node], family: str, tokenizer: str, first_seed: int):
        self.nodes, self.family, self.tok, self._seed = nodes, family, tokenizer, first_seed
        self.generation = {n.recipe.name: n.generation for n in nodes}
        self.tokenizers = {n.recipe.name: n.tokenizer for n in nodes}

    def seed(self) -> int:
        self._seed += 1
        return self._seed

    def add(self, name: str, op: str, parents: tuple[str, ...], params: dict, transformations: tuple[str, ...],
            tokenizer: str | None = None, lineage: tuple[str, ...] | None = None) -> str:
        lineage = parents if lineage is None else lineage
        generation = 1 + max((self.generation[p] for p in lineage), default=-1)
        tok = tokenizer or (self.tokenizers[parents[0]] if parents else self.tok)  # a child keeps its parent's
        recipe = Recipe(name, op, parents, {**params, "tokenizer": tok}, "; ".join(transformations))
        self.nodes.append(Node(recipe, self.family, generation, lineage, transformations, tok))
        self.generation[name], self.tokenizers[name] = generation, tok
        return name

    def disguise(self, parent: str, kind: str) -> str:
        params, suffix, what = DISGUISES[kind]
        return self.add(f"{parent}-{suffix}", "disguise", (parent,),
                        {k: v if isinstance(v, str) else self.seed() for k, v in params.items()}, what)


def _root_params(shape: Shape, moe: bool, tok: str, init: int, order: int, size: ForestSize) -> dict:
    params = {"shape": asdict(shape), "init": init, "order": order, "slice": tok, "steps": size.base_steps}
    if moe:
        params.update(experts=4, top_k=2, width=shape.intermediate // 2)
    return params


def _tree(nodes: list[Node], index: int, spec: tuple, size: ForestSize, seed: int) -> None:
    """One family: a root, fine-tunes of fine-tunes, continued pre-training then fine-tune, up-scaling then
    fine-tune, pruning (dense), a vocabulary swap, a merge of siblings, quantised leaves and disguised branches."""
    root, moe, large, tok, cpt_disguise, other_disguise = spec
    shape = size.large if large else size.shape
    t = _Tree(nodes, root, tok, seed * SEEDS_PER_FOREST + 100 * index)
    other = "b" if tok == "a" else "a"

    def tune(generation: int, slice_name: str, steps: int | None = None, lr: float = 1e-3) -> dict:
        return {"steps": steps or max(1, size.tune_steps // generation), "lr": lr, "slice": slice_name,
                "order": t.seed()}

    t.add(root, "train", (), _root_params(shape, moe, tok, t.seed(), t.seed(), size), ("pre-training",))
    ft = t.add(f"{root}-ft", "tune", (root,), tune(1, other), ("fine-tune",))
    ft2 = t.add(f"{root}-ft2", "tune", (root,), tune(1, tok), ("fine-tune",))
    cpt = t.add(f"{root}-cpt", "tune", (root,), tune(1, other, size.cpt_steps, 3e-3), ("continued pre-training",))
    layers = list(range(shape.layers)) + list(range(shape.layers // 2, shape.layers))
    up = t.add(f"{root}-up", "upscale", (root,), {**tune(1, tok), "layers": layers},
               ("depth up-scaling", "training"))
    if not moe:
        t.add(f"{root}-prune", "prune", (root,), {**tune(1, tok), "keep": 3 * shape.intermediate // 4},
              ("width pruning", "training"))
    t.add(f"{root}-vocab", "vocab", (root,), {**tune(1, other, 2 * size.tune_steps), "init": t.seed(),
                                              "vocab": shape.vocab}, ("vocabulary swap", "training"), other)
    if root == "d64a":
        t.add(f"{root}-upcycle", "upcycle", (root,), {**tune(1, other), "experts": 4, "top_k": 2,
                                                      "router": t.seed(), "noise": 0.01},
              ("dense -> MoE sparse upcycling", "training"))
    ftft = t.add(f"{ft}-ft", "tune", (ft,), tune(2, tok), ("fine-tune",))
    merge = t.add(f"{root}-merge", "merge", (ft, ft2), {}, ("weight average",))
    cptft = t.add(f"{cpt}-ft", "tune", (cpt,), tune(2, tok), ("fine-tune",))
    upft = t.add(f"{up}-ft", "tune", (up,), tune(2, other), ("fine-tune",))
    t.add(f"{ftft}-ft", "tune", (ftft,), tune(3, other), ("fine-tune",))
    t.disguise(cptft, cpt_disguise)
    if moe:
        t.disguise(ftft, other_disguise)
        t.add(f"{merge}-q", "quant", (merge,), {}, ("int8 quantise-dequantise",))
    else:
        t.disguise(upft, other_disguise)
        t.add(f"{ftft}-q", "quant", (ftft,), {}, ("int8 quantise-dequantise",))


def _singletons(nodes: list[Node], size: ForestSize, seed: int) -> None:
    """Independent models, each its own family: another init (same data and order as a root), another order,
    another corpus half with its tokenizer, and a student distilled from d64a's outputs (no weights shared)."""
    first = {n.family: n.recipe.params for n in nodes if not n.parents}
    base = seed * SEEDS_PER_FOREST + 100 * len(ROOTS)
    specs = (("solo-seed", False, size.shape, "a", first["d64a"]["order"], "another init; d64a's data and order"),
             ("solo-order", False, size.shape, "a", base + 11, "another init and data order"),
             ("solo-corpus", False, size.large, "b", base + 12, "another init, corpus half and tokenizer"),
             ("solo-large", False, size.large, "a", first["d96a"]["order"], "another init; d96a's data and order"),
             ("solo-moe", True, size.shape, "a", first["m64a"]["order"], "another init; m64a's data and order"))
    for i, (name, moe, shape, tok, order, what) in enumerate(specs):
        t = _Tree(nodes, name, tok, base + 20 + i)
        t.add(name, "train", (), _root_params(shape, moe, tok, t.seed(), order, size), (f"pre-training ({what})",))
    t = _Tree(nodes, "solo-distil", "a", base + 40)
    t.add("solo-distil", "distil", ("d64a",), {**_root_params(size.shape, False, "a", t.seed(), t.seed(), size),
                                                "temperature": 2.0},
          ("distillation from d64a's outputs (H0 holds: no weights shared)",), lineage=())


def plan_forest(size: ForestSize, seed: int) -> list[Node]:
    """Every model of the forest, parents before children."""
    nodes: list[Node] = []
    for index, spec in enumerate(ROOTS):
        _tree(nodes, index, spec, size, seed)
    _singletons(nodes, size, seed)
    return nodes


def _created(nodes: list[Node], seed: int) -> dict[str, datetime.datetime]:
    """Synthetic upload times: roots within 90 days of EPOCH, every child 1-30 days after its last parent/teacher."""
    rng, when = random.Random(f"forest-created-{seed}"), {}
    for n in nodes:
        before = [when[p] for p in n.recipe.parents]
        start = max(before) if before else EPOCH
        days = rng.uniform(1, 30) if before else rng.uniform(0, 90)
        when[n.recipe.name] = (start + datetime.timedelta(days=days)).replace(microsecond=0)
    return when


def _cards(nodes: list[Node], seed: int) -> dict[str, tuple[str, object]]:
    """(status, declared base_model) per model: none for roots and students; for derived models a seeded ~45%
    missing (every disguised one among them: a launderer does not declare), ~2% naming another family's root,
    the rest the true parent(s)."""
    rng = random.Random(f"forest-cards-{seed}")
    derived = [n for n in nodes if n.parents]
    n_missing, n_wrong = round(MISSING_SHARE * len(derived)), max(1, round(WRONG_SHARE * len(derived)))
    disguised = [n.recipe.name for n in derived if n.recipe.op == "disguise"]
    others = [n.recipe.name for n in derived if n.recipe.op != "disguise"]
    rng.shuffle(others)
    missing = set(disguised + others[:max(0, n_missing - len(disguised))])
    wrong = set(others[max(0, n_missing - len(disguised)):][:n_wrong])
    roots = [n.recipe.name for n in nodes if not n.parents]
    cards = {}
    for n in nodes:
        name = n.recipe.name
        if not n.parents:
            cards[name] = ("none", None)
        elif name in missing:
            cards[name] = ("missing", None)
        elif name in wrong:
            cards[name] = ("wrong", rng.choice([r for r in roots if r != n.family]))
        else:
            cards[name] = ("correct", n.parents[0] if len(n.parents) == 1 else list(n.parents))
    return cards


def write_card(folder: Path, name: str, declared: object, relation: str | None) -> None:
    """README.md with YAML front matter (what the local Hub serves as cardData); base_model only when declared."""
    lines = ["---", "license: apache-2.0", "tags:", "- solarforensics-forest"]
    if isinstance(declared, str):
        lines.append(f'base_model: "{CARD_OWNER}/{declared}"')
    elif declared:
        lines += ["base_model:"] + [f'- "{CARD_OWNER}/{d}"' for d in declared]
    if declared and relation:
        lines.append(f"base_model_relation: {relation}")
    lines += ["---", f"# {name}", "", "A tiny model of the solarforensics forest zoo (synthetic ground truth).", ""]
    (folder / "README.md").write_text("\n".join(lines), encoding="utf-8")


def _stamp_times(folder: Path, when: datetime.datetime) -> None:
    """Every file's mtime set to the synthetic upload time (the local Hub's lastModified is the newest mtime)."""
    seconds = when.timestamp()
    for file in folder.iterdir():
        if file.is_file():
            os.utime(file, (seconds, seconds))


def forest_section(nodes: list[Node], entries: dict, seed: int) -> dict:
    """The `forest` block of the manifest: models, edges, families, roots and counts (see README, Ground truth)."""
    when, cards = _created(nodes, seed), _cards(nodes, seed)
    models = []
    for n in nodes:
        status, declared = cards[n.recipe.name]
        models.append({
            "name": n.recipe.name, "parents": list(n.parents), "op": n.recipe.op, "generation": n.generation,
            "family": n.family, "model_type": entries[n.recipe.name]["family"], "tokenizer": n.tokenizer,
            "transformations": list(n.transformations), "quantised": n.recipe.op == "quant",
            "disguised": n.recipe.op == "disguise", "teacher": n.recipe.parents[0] if n.recipe.op == "distil" else None,
            "created_at": when[n.recipe.name].strftime("%Y-%m-%dT%H:%M:%SZ"), "declared_base_model": declared,
            "declared_status": status})
    edges = [{"parent": p, "child": n.recipe.name, "op": n.recipe.op, "transformations": list(n.transformations)}
             for n in nodes for p in n.parents]
    members: dict[str, list[str]] = {}
    for n in nodes:
        members.setdefault(n.family, []).append(n.recipe.name)
    families = [{"id": f, "root": names[0], "members": names,
                 "model_types": sorted({entries[m]["family"] for m in names})} for f, names in members.items()]
    parents = {n.recipe.name: n.parents for n in nodes}

    def ancestors(name: str) -> set[str]:
        return {a for p in parents[name] for a in (p, *ancestors(p))}
    total = len(nodes) * (len(nodes) - 1) // 2
    related = sum(len(m) * (len(m) - 1) // 2 for m in members.values())
    statuses = [status for status, _ in cards.values()]
    counts = {"models": len(nodes), "families": len(families), "trees": sum(len(m) > 1 for m in members.values()),
              "roots": len(families), "edges": len(edges), "derived_models": sum(bool(n.parents) for n in nodes),
              "max_generation": max(n.generation for n in nodes), "independent_pairs": total - related,
              "derived_pairs": related, "ancestor_pairs": sum(len(ancestors(n.recipe.name)) for n in nodes),
              "cards": {s: statuses.count(s) for s in ("correct", "missing", "wrong", "none")}}
    return {"version": FOREST_VERSION, "card_owner": CARD_OWNER, "models": models, "edges": edges,
            "families": families, "roots": [f["root"] for f in families], "counts": counts}


def forest_pairs(forest: dict) -> list[Pair]:
    """Labelled pairs for the pairwise `validate`: every edge (derived) and every two family roots (independent)."""
    pairs = [Pair(e["parent"], e["child"], "derived", tuple(e["transformations"])) for e in forest["edges"]]
    pairs += [Pair(a, b, "independent", ("roots of different families",))
              for a, b in itertools.combinations(forest["roots"], 2)]
    return pairs


def build_forest(out_dir: str | Path, size_name: str = "tiny", seed: int = 0, device: str = "cpu",
                 log: Callable[[str], None] | None = None) -> dict:
    """Build (or reuse) every forest model under out_dir, write the cards and the manifest; returns the manifest."""
    if size_name not in FOREST_SIZES:
        raise SpecError(f"unknown forest size {size_name!r}", f"use one of: {', '.join(FOREST_SIZES)}")
    size, out = FOREST_SIZES[size_name], Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    nodes = plan_forest(size, seed)
    entries = build_recipes([n.recipe for n in nodes], out, size, seed, device, log)
    forest = forest_section(nodes, entries, seed)
    relation = {"merge": "merge", "quant": "quantized"}
    for model in forest["models"]:
        folder = out / model["name"]
        write_card(folder, model["name"], model["declared_base_model"], relation.get(model["op"], "finetune"))
        _stamp_times(folder, datetime.datetime.strptime(model["created_at"], "%Y-%m-%dT%H:%M:%S%z"))
    types = sorted({entry["family"] for entry in entries.values()})
    manifest = {"zoo_version": ZOO_VERSION, "kind": "forest", "size": size_name, "seed": seed, "family": "mixed",
                "families": types, "corpus": CORPUS_NOTE, "models": entries,
                "pairs": [asdict(p) for p in forest_pairs(forest)], "forest": forest}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def read_forest(zoo_dir: str | Path) -> dict:
    """A forest zoo's manifest, checked: a forest block whose families partition its models and whose edges join
    them."""
    manifest = read_manifest(zoo_dir)
    try:
        forest = manifest["forest"]
        names = [m["name"] for m in forest["models"]]
        grouped = sorted(name for family in forest["families"] for name in family["members"])
        if grouped != sorted(names) or len(set(names)) != len(names):
            raise KeyError("the families do not partition the models")
        for edge in forest["edges"]:
            if edge["parent"] not in manifest["models"] or edge["child"] not in manifest["models"]:
                raise KeyError(f"edge {edge['parent']!r} -> {edge['child']!r} names a model with no entry")
    except (KeyError, TypeError) as exc:
        raise FormatError(f"{Path(zoo_dir) / MANIFEST} is not a forest manifest ({exc})",
                          "build one with: solarforensics zoo build DIR --forest") from None
    return manifest
