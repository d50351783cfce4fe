"""The forest zoo: the plan (six roots of two sizes, two tokenizers, dense and MoE; trees three generations deep
with every derivation and disguise; 1,000+ independent pairs; Hub-like cards) checked without training, a micro
forest built through the CLI and served by the local Hub with its cards, and the tiny forest (slow)."""

import datetime
import json
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

import solarforensics.cli.zoo  # noqa: F401 - registers `zoo build`
from solarforensics.zoo.build import SIZES
from solarforensics.zoo.forest import FOREST_SIZES, forest_section, plan_forest, read_forest

OPS = {"train", "distil", "tune", "upscale", "prune", "vocab", "upcycle", "quant", "merge", "disguise"}
DISGUISES = {"residual permutation", "residual rotation", "norm-gain rescaling", "head permutation",
             "MLP neuron permutation", "expert permutation", "matrix scaling", "bfloat16"}


def _section(size="tiny", seed=0) -> dict:
    nodes = plan_forest(FOREST_SIZES[size], seed)
    types = {n.recipe.name: {"family": "mixtral" if "experts" in n.recipe.params or n.family.startswith("m")
                             or n.recipe.op == "upcycle" else "llama"} for n in nodes}
    return forest_section(nodes, types, seed)


def test_the_plan_has_six_rooted_trees_three_generations_deep_and_every_operation():
    nodes = plan_forest(FOREST_SIZES["tiny"], seed=0)
    names = [n.recipe.name for n in nodes]
    assert len(names) == len(set(names)) == 95
    assert all(p in names[:names.index(n.recipe.name)] for n in nodes for p in n.recipe.parents)
    trees = Counter(n.family for n in nodes)
    big = [f for f, count in trees.items() if count > 1]
    assert len(big) == 6 and all(count >= 14 for f, count in trees.items() if f in big)
    for family in big:
        assert max(n.generation for n in nodes if n.family == family) >= 3
    roots = [n for n in nodes if n.family in big and not n.parents]
    assert sorted((bool(r.recipe.params.get("experts")), r.recipe.params["shape"]["hidden"],
                   r.recipe.params["shape"]["layers"], r.tokenizer) for r in roots) == [
        (False, 64, 2, "a"), (False, 64, 2, "b"), (False, 96, 3, "a"), (False, 96, 3, "b"), (True, 64, 2, "a"),
        (True, 96, 3, "b")]
    assert {n.recipe.op for n in nodes} == OPS
    ops_of = {n.recipe.name: n.recipe.op for n in nodes}
    chains = {(ops_of[p], n.recipe.op) for n in nodes for p in n.parents}
    assert {("tune", "tune"), ("upscale", "tune"), ("tune", "quant"), ("merge", "quant"), ("tune", "disguise")} <= chains
    assert all(ops_of[p] not in ("disguise", "quant") for n in nodes for p in n.recipe.parents)  # leaves stay leaves
    assert DISGUISES <= {t for n in nodes if n.recipe.op == "disguise" for t in n.transformations}
    merges = [n for n in nodes if n.recipe.op == "merge"]
    assert len(merges) == 6 and all(len(n.parents) == 2 for n in merges)
    student = next(n for n in nodes if n.recipe.op == "distil")
    assert student.parents == () and student.recipe.parents == ("d64a",) and trees[student.family] == 1


def test_the_plan_counts_over_a_thousand_independent_pairs_and_hub_like_cards():
    forest = _section()
    counts = forest["counts"]
    assert counts == {"models": 95, "families": 12, "trees": 6, "roots": 12, "edges": 89, "derived_models": 83,
                      "max_generation": 3, "independent_pairs": 3848, "derived_pairs": 617, "ancestor_pairs": 163,
                      "cards": {"correct": 44, "missing": 37, "wrong": 2, "none": 12}}
    assert counts["independent_pairs"] >= 1000
    models = {m["name"]: m for m in forest["models"]}
    assert list(models["d64a-ft-ft"]) == ["name", "parents", "op", "generation", "family", "model_type", "tokenizer",
                                          "transformations", "quantised", "disguised", "teacher", "created_at",
                                          "declared_base_model", "declared_status"]
    derived = [m for m in models.values() if m["parents"]]
    assert abs(counts["cards"]["missing"] / len(derived) - 0.45) < 0.01
    assert all(m["declared_status"] == "missing" for m in derived if m["disguised"])
    for m in derived:
        declared = m["declared_base_model"]
        if m["declared_status"] == "correct":
            assert declared == (m["parents"][0] if len(m["parents"]) == 1 else m["parents"])
        elif m["declared_status"] == "wrong":
            assert declared in forest["roots"] and models[declared]["family"] != m["family"]
        else:
            assert declared is None
    when = {name: datetime.datetime.fromisoformat(m["created_at"]) for name, m in models.items()}
    assert all(when[p] < when[e["child"]] for e in forest["edges"] for p in [e["parent"]])
    assert when["solo-distil"] > when["d64a"]  # a student comes after its teacher
    assert models["d64a-ft-ft-q"]["quantised"] and models["d64a-ft-ft-q"]["generation"] == 3
    assert [f["id"] for f in forest["families"]] == forest["roots"] and forest["roots"][:6] == [
        "d64a", "d64b", "d96a", "d96b", "m64a", "m96b"]


def test_another_seed_is_a_forest_nothing_was_tuned_on():
    seeds = {}
    for seed in (0, 1):
        seeds[seed] = {n.recipe.name: {k: v for k, v in n.recipe.params.items() if isinstance(v, int) and (
            k in ("init", "order", "router") or n.recipe.op == "disguise")}
            for n in plan_forest(FOREST_SIZES["tiny"], seed)}
    for name, params in seeds[0].items():
        assert set(params.values()).isdisjoint(seeds[1][name].values()), name
    inits = [p["init"] for p in seeds[0].values() if "init" in p]
    assert len(inits) == len(set(inits))  # no two models of one forest share an init
    assert _section(seed=1)["counts"]["independent_pairs"] == 3848


def test_forest_sizes_are_apart_from_the_pair_zoo_sizes():
    assert FOREST_SIZES["tiny"].shape == SIZES["tiny"].shape and FOREST_SIZES["tiny"].large.layers == 3
    assert set(FOREST_SIZES) == {"micro", "tiny", "small"}


def test_a_micro_forest_builds_caches_and_serves_its_cards(cli, tmp_path, hub_server):
    zoo = tmp_path / "forest"
    code, out, err = cli("zoo", "build", zoo, "--forest", "--size", "micro", "--seed", "3")
    assert code == 0, err
    assert out.strip() == str(zoo / "manifest.json")
    assert ("zoo: forest of 95 models in 6 trees and 6 singletons, 89 edges, 3848 independent and 617 same-family "
            "pairs") in err
    manifest = read_forest(zoo)
    assert (manifest["kind"], manifest["size"], manifest["seed"], manifest["families"]) == (
        "forest", "micro", 3, ["llama", "mixtral"])
    forest = manifest["forest"]
    assert forest["counts"]["independent_pairs"] == 3848 and len(manifest["models"]) == 95
    labels = Counter(p["label"] for p in manifest["pairs"])
    assert labels == {"derived": 89, "independent": 66}
    types = {m["name"]: m["model_type"] for m in forest["models"]}
    assert types["d64a-upcycle"] == types["m96b-merge-q"] == "mixtral" and types["d96b-up-ft-scaled"] == "llama"
    for model in forest["models"]:
        folder = zoo / model["name"]
        assert {"config.json", "tokenizer.json", "README.md", "model.safetensors.index.json"} <= {
            f.name for f in folder.iterdir()}
        card = (folder / "README.md").read_text()
        assert card.startswith("---\n") and ("base_model:" in card) == (model["declared_base_model"] is not None)
    assert json.loads((zoo / "d96a-up" / "config.json").read_text())["num_hidden_layers"] == 5
    assert json.loads((zoo / "d64b-cpt-ft-perm" / "config.json").read_text())["torch_dtype"] == "bfloat16"

    code, _, err = cli("zoo", "build", zoo, "--forest", "--size", "micro", "--seed", "3")
    assert code == 0 and err.count("cached") == 95
    assert read_forest(zoo)["forest"] == forest

    (tmp_path / "hub").mkdir()
    (tmp_path / "hub" / "zoo").symlink_to(zoo, target_is_directory=True)
    server = hub_server(tmp_path / "hub")
    models = {m["name"]: m for m in forest["models"]}
    for name in ("d64a-ft", "d64a-merge", "d64a"):
        with urllib.request.urlopen(f"{server.url}/api/models/zoo/{name}") as response:
            info = json.load(response)
        declared = models[name]["declared_base_model"]
        expected = None if declared is None else f"zoo/{declared}" if isinstance(declared, str) else [
            f"zoo/{d}" for d in declared]
        assert (info.get("cardData") or {}).get("base_model") == expected
        assert info["lastModified"] == models[name]["created_at"].replace("Z", ".000Z")


def test_a_pair_zoo_is_not_a_forest(tmp_path):
    from solarforensics.errors import FormatError

    (tmp_path / "manifest.json").write_text('{"models": {}, "pairs": []}')
    with pytest.raises(FormatError, match="not a forest manifest"):
        read_forest(tmp_path)


@pytest.mark.slow
def test_the_tiny_forest_builds(cli, tmp_path):
    code, _, err = cli("zoo", "build", tmp_path / "forest", "--forest", "--size", "tiny")
    assert code == 0, err
    forest = read_forest(tmp_path / "forest")["forest"]
    assert forest["counts"]["independent_pairs"] >= 1000 and forest["counts"]["trees"] == 6
    assert all(Path(tmp_path / "forest" / m["name"] / "README.md").is_file() for m in forest["models"])
