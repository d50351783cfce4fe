"""`zoo build`: the plan of models and labelled pairs for a size and seed, built in order, cached by recipe hash,
and the manifest (manifest.json) that `validate` reads."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from solarforensics.checkpoints import permute_residual
from solarforensics.errors import FormatError, SpecError
from solarforensics.zoo import moe, transforms
from solarforensics.zoo.architecture import MoEShape, Shape
from solarforensics.zoo.corpus import corpus_text, stdlib_files, token_ids, train_tokenizer
from solarforensics.zoo.train import Schedule, init_model, load_model, save_model, train

MANIFEST = "manifest.json"
ZOO_VERSION = 1
LABELS = ("derived", "independent")
CORPUS_NOTE = ("Python standard library sources + pydoc topics (sysconfig stdlib path), "
               f"Python {sys.version.split()[0]}")


@dataclass(frozen=True)
class Size:
    shape: Shape
    base_steps: int
    tune_steps: int
    cpt_steps: int
    batch: int
    seq: int
    chars: int
    full: bool = True  # False: the micro plan (4 models, 4 pairs) for fast tests


SIZES = {
    "micro": Size(Shape(), base_steps=12, tune_steps=6, cpt_steps=12, batch=4, seq=32, chars=60_000, full=False),
    "tiny": Size(Shape(), base_steps=200, tune_steps=60, cpt_steps=300, batch=8, seq=64, chars=400_000),
    "small": Size(Shape(hidden=128, layers=4, intermediate=256, vocab=1024), base_steps=400, tune_steps=100,
                  cpt_steps=600, batch=8, seq=96, chars=1_000_000),
}


@dataclass(frozen=True)
class Recipe:
    name: str
    op: str  # train | distil | tune | upscale | prune | vocab | upcycle | quant | merge | disguise
    parents: tuple[str, ...] = ()
    params: dict = field(default_factory=dict)
    steps: str = ""  # what was done, for the pair's transformation list


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    label: str
    transformations: tuple[str, ...]


def plan(size: Size, seed: int) -> tuple[list[Recipe], list[Pair]]:
    """Every model (parents before children) and every labelled pair of the zoo."""
    s = seed
    tune = {"steps": size.tune_steps, "lr": 1e-3, "slice": "b"}
    models = [
        Recipe("base", "train", params={"init": s, "order": s, "slice": "a"}),
        Recipe("indep-seed", "train", params={"init": s + 1, "order": s, "slice": "a"}),
        Recipe("ft", "tune", ("base",), {**tune, "order": s + 201}, "fine-tune"),
        Recipe("ft-disguised", "disguise", ("ft",), {"rescale": s + 301, "permute": s + 302},
               "norm-gain rescaling folded into the next matrices + residual permutation"),
    ]
    pairs = [Pair("base", "indep-seed", "independent", ("different init seed, same data and order",)),
             Pair("base", "ft", "derived", ("fine-tune",)),
             Pair("base", "ft-disguised", "derived", ("fine-tune", "norm-gain rescaling", "residual permutation")),
             Pair("indep-seed", "ft", "independent", ("different init seed; B fine-tuned from another model",))]
    if not size.full:
        return models, pairs
    layers = size.shape.layers
    models += [
        Recipe("indep-order", "train", params={"init": s + 2, "order": s + 101, "slice": "a"}),
        Recipe("indep-corpus", "train", params={"init": s + 3, "order": s + 102, "slice": "b"}),
        Recipe("ft2", "tune", ("base",), {**tune, "order": s + 202}, "fine-tune"),
        Recipe("cpt", "tune", ("base",), {"steps": size.cpt_steps, "lr": 3e-3, "slice": "b", "order": s + 203},
               "continued pre-training"),
        Recipe("upscale", "upscale", ("base",), {**tune, "order": s + 204,
                                                 "layers": [i // 2 for i in range(2 * layers)]},
               "depth up-scaling (every layer duplicated) + training"),
        Recipe("prune", "prune", ("base",), {**tune, "order": s + 205, "keep": 3 * size.shape.intermediate // 4},
               "width pruning (25% of MLP units dropped) + training"),
        Recipe("vocab", "vocab", ("base",), {**tune, "steps": 2 * size.tune_steps, "order": s + 206,
                                             "init": s + 401},
               "vocabulary swap (new tokenizer, new embeddings) + training"),
        Recipe("quant", "quant", ("base",), {}, "int8 quantise-dequantise"),
        Recipe("merge", "merge", ("ft", "ft2"), {}, "average of two fine-tunes"),
        Recipe("cpt-disguised", "disguise", ("cpt",), {"permute": s + 303, "dtype": "bfloat16"},
               "residual permutation + bfloat16"),
        Recipe("upscale-disguised", "disguise", ("upscale",), {"rescale": s + 304, "permute": s + 305},
               "norm-gain rescaling + residual permutation"),
    ]
    pairs += [
        Pair("base", "indep-order", "independent", ("different init seed and data order",)),
        Pair("base", "indep-corpus", "independent", ("different init seed, order and corpus slice",)),
        Pair("indep-seed", "indep-order", "independent", ("different init seed and data order",)),
        Pair("indep-order", "indep-corpus", "independent", ("different init seed, order and corpus slice",)),
        Pair("indep-corpus", "cpt-disguised", "independent", ("unrelated init; B derived from another model",)),
        Pair("indep-seed", "upscale", "independent", ("unrelated init; B up-scaled from another model",)),
        Pair("base", "ft2", "derived", ("fine-tune",)),
        Pair("base", "cpt", "derived", ("continued pre-training",)),
        Pair("base", "upscale", "derived", ("depth up-scaling", "training")),
        Pair("base", "prune", "derived", ("width pruning", "training")),
        Pair("base", "vocab", "derived", ("vocabulary swap", "training")),
        Pair("base", "quant", "derived", ("int8 quantise-dequantise",)),
        Pair("base", "merge", "derived", ("fine-tune x2", "weight average")),
        Pair("ft", "ft2", "derived", ("siblings: two fine-tunes of one base",)),
        Pair("base", "cpt-disguised", "derived", ("continued pre-training", "residual permutation", "bfloat16")),
        Pair("base", "upscale-disguised", "derived", ("depth up-scaling", "training", "norm-gain rescaling",
                                                      "residual permutation")),
    ]
    more_models, more_pairs = _plan_more(size, seed)
    return models + more_models, pairs + more_pairs


def _plan_more(size: Size, seed: int) -> tuple[list[Recipe], list[Pair]]:
    """MoE models, sparse upcycling, unit/scaling/rotation disguises, distillation, a corpus with its own tokenizer."""
    s = seed
    tune = {"steps": size.tune_steps, "lr": 1e-3, "slice": "b"}
    experts = {"experts": 4, "top_k": 2, "width": size.shape.intermediate // 2}
    models = [
        Recipe("moe-base", "train", params={"init": s + 10, "order": s, "slice": "a", **experts}),
        Recipe("moe-indep-seed", "train", params={"init": s + 11, "order": s, "slice": "a", **experts}),
        Recipe("moe-ft", "tune", ("moe-base",), {**tune, "order": s + 207}, "fine-tune (MoE)"),
        Recipe("moe-ft-experts", "disguise", ("moe-ft",), {"experts": s + 306},
               "experts relabelled per layer, router rows permuted with them"),
        Recipe("upcycle", "upcycle", ("base",), {**tune, "order": s + 208, "experts": 4, "top_k": 2,
                                                 "router": s + 402, "noise": 0.01},
               "sparse upcycling (every expert a copy of the dense MLP, fresh router) + training"),
        Recipe("ft-units", "disguise", ("ft",), {"units": s + 307},
               "head permutation (KV groups with their query heads) + MLP neuron permutation"),
        Recipe("ft-scaled", "disguise", ("ft2",), {"scale": s + 308}, "q/k and v/o matrix scaling"),
        Recipe("ft-rotated", "disguise", ("ft",), {"rotate": s + 309},
               "norm gains folded + orthogonal rotation of the residual stream"),
        Recipe("rotated-tuned", "tune", ("base",), {**tune, "steps": max(1, size.tune_steps // 2), "order": s + 209,
                                                    "before": {"units": s + 310, "rotate": s + 311}},
               "rotation + head/neuron permutation, then a short fine-tune"),
        Recipe("distilled", "distil", ("base",), {"init": s + 12, "order": s, "slice": "a", "temperature": 2.0},
               "trained from its own init on the teacher's soft logits"),
        Recipe("indep-tokenizer", "train", params={"init": s + 4, "order": s + 104, "slice": "b", "tokenizer": "b"}),
        Recipe("vocab-disguised", "disguise", ("vocab",), {"rescale": s + 312, "permute": s + 313, "tokenizer": "b"},
               "norm-gain rescaling + residual permutation"),
    ]
    pairs = [
        Pair("moe-base", "moe-indep-seed", "independent", ("different init seed, same data and order (MoE)",)),
        Pair("moe-indep-seed", "moe-ft-experts", "independent", ("unrelated init; B fine-tuned and expert-relabelled "
                                                                 "from another MoE",)),
        Pair("base", "distilled", "independent", ("distillation from A's outputs (H0 holds: no weights shared)",)),
        Pair("base", "indep-tokenizer", "independent", ("different init seed, order, corpus slice and tokenizer",)),
        Pair("indep-seed", "upcycle", "independent", ("unrelated init; B upcycled from another model",)),
        Pair("moe-base", "moe-ft", "derived", ("fine-tune",)),
        Pair("moe-base", "moe-ft-experts", "derived", ("fine-tune", "expert permutation")),
        Pair("base", "upcycle", "derived", ("dense -> MoE sparse upcycling", "training")),
        Pair("base", "ft-units", "derived", ("fine-tune", "head permutation", "MLP neuron permutation")),
        Pair("base", "ft-scaled", "derived", ("fine-tune", "matrix scaling")),
        Pair("base", "ft-rotated", "derived", ("fine-tune", "norm-gain folding", "residual rotation")),
        Pair("base", "rotated-tuned", "derived", ("norm-gain folding", "residual rotation", "head permutation",
                                                  "MLP neuron permutation", "short fine-tune")),
        Pair("base", "vocab-disguised", "derived", ("vocabulary swap", "training", "norm-gain rescaling",
                                                    "residual permutation")),
    ]
    return models, pairs


class _Data:
    """Tokenizers and token streams, made on first use (a fully cached zoo never trains a tokenizer)."""

    def __init__(self, size: Size):
        self.size, self._cache = size, {}

    def tokenizer(self, slice_name: str, vocab: int | None = None):
        """The BPE trained on one corpus slice with `vocab` entries (default: the size's vocabulary)."""
        vocab = vocab or self.size.shape.vocab
        key = ("tok", slice_name, vocab)
        if key not in self._cache:
            self._cache[key] = train_tokenizer(corpus_text(slice_name, self.size.chars), vocab)
        return self._cache[key]

    def ids(self, slice_name: str, tokenizer_slice: str = "a", vocab: int | None = None) -> torch.Tensor:
        key = ("ids", slice_name, tokenizer_slice, vocab or self.size.shape.vocab)
        if key not in self._cache:
            self._cache[key] = token_ids(self.tokenizer(tokenizer_slice, vocab),
                                         corpus_text(slice_name, self.size.chars))
        return self._cache[key]


def _hash(recipe: Recipe, parents: list[str], size: Size, seed: int) -> str:
    corpus = [(f.name, f.stat().st_size) for f in stdlib_files()]
    text = json.dumps({"v": ZOO_VERSION, "recipe": asdict(recipe), "parents": parents, "size": asdict(size),
                       "seed": seed, "corpus": corpus, "torch": torch.__version__}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _disguise(model: nn.Module, p: dict) -> nn.Module:
    """The in-memory disguises named in p, in a fixed order (residual permutation and dtype act on the files)."""
    if "rescale" in p:
        model = transforms.rescale_norms(model, p["rescale"])
    if "units" in p:
        model = transforms.permute_heads_and_units(model, p["units"])
    if "scale" in p:
        model = transforms.scale_attention(model, p["scale"])
    if "rotate" in p:
        model = transforms.rotate_residual(model, p["rotate"])
    if "experts" in p:
        model = moe.permute_experts(model, p["experts"])
    return model


def _make(recipe: Recipe, parents: list[nn.Module], data: _Data, size: Size, out: Path, device: str
          ) -> tuple[nn.Module, dict]:
    """The model of one recipe and its tokenizer (the recipe's `tokenizer` slice, default a; a vocabulary swap's
    default b), at the vocabulary of the model's shape; `shape` in a trained recipe overrides the size's."""
    p = recipe.params
    tok = p.get("tokenizer", "b" if recipe.op == "vocab" else "a")

    def run(model: nn.Module, slice_name: str) -> float:
        sched = Schedule(steps=p["steps"], lr=p["lr"], batch=size.batch, seq=size.seq, data_seed=p["order"])
        return train(model, data.ids(slice_name, tok, model.shape.vocab), sched, device)

    loss = None
    if recipe.op in ("train", "distil"):
        shape = Shape(**p["shape"]) if "shape" in p else size.shape
        if "experts" in p:
            shape = MoEShape(**{**asdict(shape), "intermediate": p["width"]}, experts=p["experts"], top_k=p["top_k"])
        model = init_model(shape, p["init"], device)
        sched = Schedule(p.get("steps", size.base_steps), 3e-3, size.batch, size.seq, p["order"])
        teacher = parents[0] if recipe.op == "distil" else None
        loss = train(model, data.ids(p["slice"], tok, shape.vocab), sched, device, teacher=teacher,
                     temperature=p.get("temperature", 2.0))
    elif recipe.op == "tune":
        model = _disguise(transforms.clone(parents[0]), p.get("before", {}))
        loss = run(model, p["slice"])
    elif recipe.op == "upscale":
        model = transforms.depth_upscale(parents[0], p["layers"])
        loss = run(model, p["slice"])
    elif recipe.op == "prune":
        model = transforms.prune_width(parents[0], p["keep"])
        loss = run(model, p["slice"])
    elif recipe.op == "vocab":
        model = transforms.swap_vocab(parents[0], p.get("vocab", size.shape.vocab), p["init"])
        loss = run(model, p["slice"])
    elif recipe.op == "upcycle":
        model = moe.upcycle(parents[0], p["experts"], p["top_k"], p["router"], p["noise"])
        loss = run(model, p["slice"])
    elif recipe.op == "quant":
        model = transforms.quantise_dequantise(parents[0])
    elif recipe.op == "merge":
        model = transforms.merge(parents[0], parents[1])
    elif recipe.op == "disguise":
        model = _disguise(parents[0], p)
    else:
        raise SpecError(f"unknown zoo operation {recipe.op!r}")
    tokenizer = data.tokenizer(tok, model.shape.vocab)
    folder = out / recipe.name
    if folder.exists():
        shutil.rmtree(folder)
    dtype = torch.bfloat16 if p.get("dtype") == "bfloat16" else torch.float32
    if recipe.op == "disguise" and "permute" in p:
        staging = out / f".{recipe.name}.staging"
        shutil.rmtree(staging, ignore_errors=True)
        save_model(model, staging, tokenizer, dtype)
        permute_residual(staging, folder, seed=p["permute"])
        shutil.rmtree(staging)
    else:
        save_model(model, folder, tokenizer, dtype)
    return model, {"loss": loss}


def build_recipes(recipes: list[Recipe], out: Path, size: Size, seed: int, device: str = "cpu",
                  log: Callable[[str], None] | None = None) -> dict:
    """Build (or reuse, by recipe hash) every recipe in order under out; the manifest entry of each model."""
    data, built, hashes, entries = _Data(size), {}, {}, {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread beats two fighting on a shared, loaded machine
    try:
        for recipe in recipes:
            digest = _hash(recipe, [hashes[n] for n in recipe.parents], size, seed)
            hashes[recipe.name] = digest
            stamp = out / recipe.name / "zoo-recipe.json"
            started = time.perf_counter()
            cached = stamp.is_file() and json.loads(stamp.read_text(encoding="utf-8")).get("hash") == digest
            if cached:
                extra = json.loads(stamp.read_text(encoding="utf-8"))
            else:
                # A parent built in an earlier run is read back; a disguise is a leaf, so none is read permuted.
                parents = [built[n] if n in built else load_model(out / n, device) for n in recipe.parents]
                built.update(zip(recipe.parents, parents))
                torch.manual_seed(seed)
                built[recipe.name], extra = _make(recipe, parents, data, size, out, device)
                extra = {"hash": digest, "recipe": asdict(recipe), **extra,
                         "seconds": round(time.perf_counter() - started, 2)}
                stamp.write_text(json.dumps(extra, indent=2, default=str) + "\n", encoding="utf-8")
            config = json.loads((out / recipe.name / "config.json").read_text(encoding="utf-8"))
            entries[recipe.name] = {"path": recipe.name, "op": recipe.op, "parents": list(recipe.parents),
                                    "family": config["model_type"], "hash": digest, "loss": extra.get("loss"),
                                    "cached": cached, "build_seconds": extra.get("seconds")}
            if log:
                log(f"{recipe.name}: cached" if cached else f"{recipe.name}: built in {extra['seconds']:.1f} s")
    finally:
        torch.set_num_threads(threads)
    return entries


def build_zoo(out_dir: str | Path, size_name: str = "tiny", seed: int = 0, device: str = "cpu",
              log: Callable[[str], None] | None = None, size: Size | None = None) -> dict:
    """Build (or reuse) every model of the plan under out_dir and write the manifest; returns the manifest.

    `size` overrides SIZES[size_name] (tests build the full plan with a few steps; the name is only recorded)."""
    if size is None and size_name not in SIZES:
        raise SpecError(f"unknown zoo size {size_name!r}", f"use one of: {', '.join(SIZES)}")
    size, out = size or SIZES[size_name], Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    recipes, pairs = plan(size, seed)
    entries = build_recipes(recipes, out, size, seed, device, log)
    families = sorted({entry["family"] for entry in entries.values()})
    manifest = {"zoo_version": ZOO_VERSION, "size": size_name, "seed": seed,
                "family": families[0] if len(families) == 1 else "mixed", "families": families,
                "corpus": CORPUS_NOTE, "models": entries, "pairs": [asdict(p) for p in pairs]}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def read_manifest(zoo_dir: str | Path) -> dict:
    """The manifest of a built zoo, checked: every pair names two model folders and a known label."""
    folder = Path(zoo_dir)
    path = folder / MANIFEST
    if not path.is_file():
        raise FormatError(f"no {MANIFEST} in {folder}", "build the zoo first: solarforensics zoo build DIR")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        models, pairs = manifest["models"], manifest["pairs"]
        for pair in pairs:
            for side in ("a", "b"):
                if pair[side] not in models or not (folder / models[pair[side]]["path"]).is_dir():
                    raise KeyError(f"model {pair[side]!r} of a pair has no folder")
            if pair["label"] not in LABELS:
                raise KeyError(f"label {pair['label']!r} is not derived/independent")
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise FormatError(f"zoo manifest {path} is malformed ({exc})",
                          "rebuild it with: solarforensics zoo build DIR") from None
    return manifest
