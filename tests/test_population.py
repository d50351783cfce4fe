"""Fingerprint once, scan many, recover lineage: over the real local Hub, through the real command line, on Ray.

The models: a tiny llama "base", a fine-tune of it (noise), that fine-tune disguised (residual permutation), and two
independently initialised models. Every weight is random but fixed by its seed, so the relations are exact truth.
"""

import json
import sqlite3

import pytest

from solarforensics.checkpoints import build_checkpoint, derive_checkpoint, permute_residual

LLAMA = {"hidden_size": 128, "num_hidden_layers": 3, "intermediate_size": 256}


@pytest.fixture(scope="session")
def family_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("population-hub")
    base = build_checkpoint(root / "acme" / "base", "llama", seed=0, overrides=LLAMA)
    derive_checkpoint(base, root / "acme" / "tuned", seed=1, noise=0.05)
    permute_residual(root / "acme" / "tuned", root / "acme" / "disguised", seed=2)
    build_checkpoint(root / "other" / "x", "llama", seed=5, overrides=LLAMA)
    build_checkpoint(root / "other" / "y", "llama", seed=9, overrides=LLAMA)
    (root / "acme" / "tuned" / "README.md").write_text("---\nbase_model: acme/base\nlicense: mit\n---\n# tuned\n")
    return root


@pytest.fixture
def hub(family_root, hub_server):
    return hub_server(family_root)


def run_json(cli, *args):
    code, out, err = cli(*args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_fingerprint_reads_a_small_share_and_an_unchanged_commit_reads_no_tensor(cli, hub, tmp_path):
    index = tmp_path / "index.sqlite"
    doc = run_json(cli, "fingerprint", "acme/base", "acme/tuned", "--index", index, "--out", tmp_path / "f.json")
    assert doc["kind"] == "fingerprint" and doc["complete"] is True
    rows = {r["model"]: r for r in doc["fingerprints"]}
    assert {r["status"] for r in rows.values()} == {"new"}
    assert all(0 < r["bytes_read"] and r["fraction_read"] < 0.5 for r in rows.values())
    hub.reset_stats()
    again = run_json(cli, "fingerprint", "acme/base", "--index", index, "--out", tmp_path / "g.json")
    assert again["fingerprints"][0]["status"] == "unchanged" and again["fingerprints"][0]["bytes_read"] == 0
    log = hub.stats()["log"]
    weight_bytes = sum(e["bytes"] for e in log if e["range"] and ".safetensors" in e["path"])
    assert log and weight_bytes < 10_000  # the commit was resolved again; at most shard headers, never a tensor
    assert rows["acme/base"]["bytes_read"] > 50 * max(weight_bytes, 1)
    shown = run_json(cli, "index", "list", "--index", index)
    assert [f["model"] for f in shown["fingerprints"]] == ["acme/base", "acme/tuned"]
    tuned = [f for f in shown["fingerprints"] if f["model"] == "acme/tuned"][0]
    assert tuned["declared_base_model"] == ["acme/base"] and tuned["license"] == "mit"


def test_scan_finds_the_disguised_fine_tunes_family_and_nothing_for_an_unrelated_model(cli, hub, tmp_path):
    index = tmp_path / "index.sqlite"
    run_json(cli, "fingerprint", "acme/base", "acme/tuned", "other/x", "--index", index, "--out", tmp_path / "f.json")
    doc = run_json(cli, "scan", "acme/disguised", "--index", index, "--out", tmp_path / "s.json")
    assert doc["kind"] == "scan" and doc["model"] == "acme/disguised"
    verdicts = {c["model"]: c for c in doc["candidates"]}
    assert verdicts["acme/base"]["verdict"] == verdicts["acme/tuned"]["verdict"] == "derived"
    assert verdicts["other/x"]["verdict"] == "independent"
    assert verdicts["acme/tuned"]["relation"] in ("parent", "child", "sibling", "ancestor", "same family")
    assert "invariant-cka" in verdicts["acme/base"]["decisive"]  # the permutation defeats element-wise tests
    for key in ("p_value", "log10_p_value", "declared_base_model", "metadata_agrees"):
        assert key in verdicts["acme/base"]
    alone = run_json(cli, "scan", "other/y", "--index", index, "--out", tmp_path / "t.json")
    assert alone["root"]["model"] is None
    assert "derived from no indexed model, as far as weight tests can see" in alone["root"]["statement"]
    assert {c["verdict"] for c in alone["candidates"]} == {"independent"}


def test_lineage_puts_related_models_in_one_family_with_directed_edges(cli, hub, tmp_path):
    index = tmp_path / "index.sqlite"
    doc = run_json(cli, "lineage", "acme/base", "acme/tuned", "acme/disguised", "other/x", "other/y",
                   "--index", index, "--out", tmp_path / "l.json")
    assert doc["kind"] == "lineage"
    families = sorted(sorted(f["members"]) for f in doc["families"])
    assert families == [["acme/base", "acme/disguised", "acme/tuned"], ["other/x"], ["other/y"]]
    assert len(doc["edges"]) == 2 and all(0 <= e["confidence"] <= 1 and e["evidence"] for e in doc["edges"])
    assert {(e["parent"], e["child"]) for e in doc["edges"]} == {("acme/base", "acme/tuned"),
                                                                  ("acme/tuned", "acme/disguised")}
    disguised = next(e for e in doc["edges"] if e["child"] == "acme/disguised")
    assert any("residual basis" in line for line in disguised["evidence"])  # the permuted copy is the child
    assert set(doc["roots"]) >= {"other/x", "other/y"}


def test_index_export_import_rm_and_a_newer_schema(cli, hub, tmp_path):
    index, shared, mine = tmp_path / "a.sqlite", tmp_path / "shared.sqlite", tmp_path / "b.sqlite"
    run_json(cli, "fingerprint", "acme/base", "other/x", "--index", index, "--out", tmp_path / "f.json")
    assert cli("index", "export", shared, "--index", index)[0] == 0
    assert cli("index", "import", shared, "--index", mine)[0] == 0
    assert [f["model"] for f in run_json(cli, "index", "list", "--index", mine)["fingerprints"]] == \
        ["acme/base", "other/x"]
    code, _, err = cli("index", "rm", "acme/base", "nope", "--index", mine)
    assert code == 2 and "nope" in err and "nothing was removed" in err
    code, out, _ = cli("index", "show", "other/x", "--index", mine)
    assert code == 0 and json.loads(out)["meta"]["arch"]["family"] == "llama"
    db = sqlite3.connect(mine)
    db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    db.commit()
    db.close()
    code, _, err = cli("index", "list", "--index", mine)
    assert code == 2 and err.count("\n") == 1 and "newer than this solarforensics" in err


def test_a_model_of_no_known_family_and_a_silent_ray_address_are_one_line_each(cli, hub, tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    import torch
    from safetensors.torch import save_file

    save_file({"mystery.weight": torch.zeros(4, 4)}, str(folder / "model.safetensors"))
    code, _, err = cli("fingerprint", folder, "--index", tmp_path / "i.sqlite", "--out", tmp_path / "f.json")
    assert code != 0 and "could not be fingerprinted" in err and "Traceback" not in err
    code, _, err = cli("fingerprint", "acme/base", "--ray", "127.0.0.1:9", "--index", tmp_path / "i.sqlite",
                       "--out", tmp_path / "g.json")
    assert code == 2 and "does not answer" in err and err.count("\n") == 1


@pytest.fixture(scope="session")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()


def test_fingerprinting_on_a_local_ray_cluster_writes_the_index_from_the_driver(cli, hub, tmp_path, ray_cluster):
    index = tmp_path / "index.sqlite"
    doc = run_json(cli, "fingerprint", "--ray", "acme/base", "acme/tuned", "other/x", "--index", index,
                   "--endpoint", hub.url, "--out", tmp_path / "f.json")
    assert doc["runner"] == "ray" and doc["ray_address"] == "local"
    assert [r["status"] for r in doc["fingerprints"]] == ["new", "new", "new"]
    assert run_json(cli, "index", "list", "--index", index)["fingerprints"][0]["model"] == "acme/base"


@pytest.mark.slow
def test_validate_lineage_scores_a_micro_forest_against_its_truth(cli, tmp_path):
    zoo = tmp_path / "forest"
    assert cli("zoo", "build", zoo, "--forest", "--size", "micro", "--seed", "3")[0] == 0
    doc = run_json(cli, "validate", "--zoo", zoo, "--lineage", "--no-peer", "--out", tmp_path / "v.json")
    report = doc["lineage"]
    assert doc["kind"] == "validation" and report["independent_pairs"] >= 1000
    assert set(doc["targets"]) >= {"top1_parent_accuracy", "edge_f1", "family_ari", "fpr_ci95_upper"}
    assert 0 <= report["fpr"] <= 1 and len(report["fpr_ci95"]) == 2
    assert doc["baselines"]["cards"]["edge_f1"] is not None
    # barely trained models (2-step fine-tunes) still drift 25x more than a copy's rounding: the tree holds
    assert report["top1_parent_accuracy"] >= 0.95 and report["edge_f1"] >= 0.9
    assert report["per_op"]["merge"]["accuracy"] == 1.0 and report["per_op"]["disguise"]["accuracy"] == 1.0
    # over a local Hub the upload times are known: where the weights cannot order, they do, and say so
    hub = run_json(cli, "validate", "--zoo", zoo, "--lineage", "--via-hub", "--no-peer", "--out", tmp_path / "h.json")
    assert hub["lineage"]["top1_parent_accuracy"] >= report["top1_parent_accuracy"]
    assert hub["lineage"]["false_positives"] == report["false_positives"]
    names = {m["name"] for m in json.loads((zoo / "manifest.json").read_text())["forest"]["models"]}
    listed = run_json(cli, "index", "list", "--index", hub["index"])["fingerprints"]
    assert {row["model"] for row in listed} == {f"zoo/{n}" for n in names}
    assert all(row["created_at"] for row in listed)
    for edge in hub["edges"]:
        upload = [line for line in edge["evidence"] if "upload" in line]
        assert all("tie-breaker" in line for line in upload)


def _additive_family():
    """A family as points in weight space: every derivation adds an independent increment, so squared distances add
    up along each lineage. root -> ft -> ft-ft -> ft-ft-ft, root -> ft2, root -> up (more layers) -> up-ft,
    merge = (ft + ft2) / 2, ft-ft-q a quantised copy of ft-ft, up-ft-perm a disguised copy of up-ft (another residual
    basis), vocab (new token embeddings: no probe geometry shared, placed by signatures)."""
    import torch

    g = torch.Generator().manual_seed(0)
    step = {name: torch.randn(400, generator=g, dtype=torch.float64) * scale for name, scale in
            (("ft", 0.3), ("ft-ft", 0.2), ("ft-ft-ft", 0.15), ("ft2", 0.25), ("up", 0.3), ("up-ft", 0.2),
             ("vocab", 0.2))}
    parent = {"ft": "root", "ft-ft": "ft", "ft-ft-ft": "ft-ft", "ft2": "root", "up": "root", "up-ft": "up",
              "vocab": "root"}
    point = {"root": torch.zeros(400, dtype=torch.float64)}
    for name in parent:  # parents first
        point[name] = point[parent[name]] + step[name]
    point["merge"] = (point["ft"] + point["ft2"]) / 2
    point["ft-ft-q"] = point["ft-ft"] + 1e-4
    point["up-ft-perm"] = point["up-ft"].clone()
    names = sorted(point)
    gram = {frozenset((a, b)): float((point[a] - point[b]).pow(2).sum()) for i, a in enumerate(names)
            for b in names[i + 1:]}
    linked = {k for k in gram if "vocab" not in k}
    depth = {"root": 0, "ft": 1, "ft2": 1, "up": 1, "vocab": 1, "merge": 2, "ft-ft": 2, "up-ft": 2, "ft-ft-q": 2,
             "up-ft-perm": 2, "ft-ft-ft": 3}
    traits = {n: {"layers": 3 if n.startswith("up") else 2, "experts": 0, "units": 128, "quantised": n == "ft-ft-q",
                  "gain_drift": 1.0 + depth[n], "folded": False} for n in names}

    def basis(a: str, b: str) -> float:  # the disguise moved the residual basis; everything else kept it
        return gram[frozenset((a, b))] * (3.0 if "up-ft-perm" in (a, b) else 1.0)  # forest disguises: x1.9-73

    return names, gram, linked, basis, traits


def test_an_additive_family_is_recovered_exactly_copies_merges_and_vocabulary_swaps_included():
    from solarforensics.population import tree

    names, gram, linked, basis, traits = _additive_family()
    built = tree.build_tree(names, gram, linked, basis, basis, traits, {}, {n: None for n in names})
    assert built["root"] == "root"
    parents = {child: sorted(p for p, _, _ in options) for child, options in built["parents"].items()}
    assert parents == {"ft": ["root"], "ft-ft": ["ft"], "ft-ft-ft": ["ft-ft"], "ft2": ["root"], "up": ["root"],
                       "up-ft": ["up"], "vocab": ["root"], "merge": ["ft", "ft2"], "ft-ft-q": ["ft-ft"],
                       "up-ft-perm": ["up-ft"]}
    evidence = {child: " ".join(options[0][2]) for child, options in built["parents"].items()}
    assert "midpoint" in evidence["merge"] and "quantised" in evidence["ft-ft-q"]
    assert "residual basis" in evidence["up-ft-perm"] and "fewer layers" in evidence["up"]
    assert "signatures" in evidence["vocab"]


def test_two_copies_with_no_weight_evidence_are_ordered_by_a_labelled_tie_breaker():
    from solarforensics.population import tree

    traits = {n: {"layers": 2, "experts": 0, "units": 64, "quantised": False, "gain_drift": 1.0, "folded": False}
              for n in ("b", "a")}
    built = tree.build_tree(["a", "b"], {frozenset("ab"): 0.0}, {frozenset("ab")}, lambda a, b: 0.0,
                            lambda a, b: 0.0, traits, {}, {"a": "2024-03-01", "b": "2024-01-01"})
    (parent, confidence, evidence), = built["parents"]["a"]
    assert parent == "b" and "tie-breaker: the earlier upload" in " ".join(evidence) and confidence <= 0.5


def test_a_post_norm_encoder_folds_the_gain_of_the_norm_its_readers_read(tmp_path):
    """BERT closes each block with LayerNorm: layer 0's q/k/v read the embeddings' LayerNorm, a later layer's read
    the previous layer's output LayerNorm, and the MLP reads its own layer's attention LayerNorm. A per-dimension
    factor moved from those gains into their readers leaves the fingerprint as it was."""
    import torch

    from solarforensics.checkpoints import _rewrite
    from solarforensics.models import open_model
    from solarforensics.population.fingerprint import fingerprint_model
    from solarforensics.provenance.weights import ModelWeights

    base = build_checkpoint(tmp_path / "bert", "bert", seed=0)
    weights = ModelWeights.of("bert", open_model(str(base)))
    assert [weights.reading_norm(role, 1) for role in ("q", "k", "v", "mlp_up")] == [("mlp_norm", 0)] * 3 + [
        ("attn_norm", 1)]
    assert weights.reading_norm("k", 0) == ("embed_norm", None)
    hidden = weights.hidden
    scale = {n: torch.rand(hidden, generator=torch.Generator().manual_seed(i)) + 0.5
             for i, n in enumerate(("embeddings.LayerNorm", "encoder.layer.0.output.LayerNorm",
                                    "encoder.layer.1.attention.output.LayerNorm"))}
    readers = {"embeddings.LayerNorm": ("encoder.layer.0.attention.self.",),
               "encoder.layer.0.output.LayerNorm": ("encoder.layer.1.attention.self.",),
               "encoder.layer.1.attention.output.LayerNorm": ("encoder.layer.1.intermediate.dense",)}

    def move(name: str, t: torch.Tensor) -> torch.Tensor:
        for norm, s in scale.items():
            if name in (f"{norm}.weight", f"{norm}.bias"):
                return (t.double() * s).to(t.dtype)
            if name.endswith(".weight") and name.startswith(readers[norm]):
                return (t.double() / s).to(t.dtype)
        return t

    moved = _rewrite(base, tmp_path / "bert-moved", move)
    a, _ = fingerprint_model(str(base))
    b, _ = fingerprint_model(str(moved))
    for key in ("gram.k", "gram.v", "gram.up"):
        assert torch.allclose(a.arrays[key].float(), b.arrays[key].float(), atol=2e-3), key


def _chain(gain_drift: dict[str, float]) -> dict[str, dict]:
    return {n: {"layers": 2, "experts": 0, "units": 64, "quantised": False, "gain_drift": g, "folded": False}
            for n, g in gain_drift.items()}


def test_a_fine_tune_that_drifts_back_towards_the_root_is_put_in_upload_order_labelled():
    """root -> cpt (continued pre-training on other data, a long branch) -> cpt-ft (a short fine-tune on the
    root's data): the fine-tune moves back towards the root, so it is nearer the root than its own parent. Within
    DRIFT_TIE of each other the drift cannot order them: the Hub's upload times do, and the edge says so."""
    from solarforensics.population import tree

    names = ["root", "cpt", "cpt-ft"]
    gram = {frozenset(("root", "cpt")): 0.62, frozenset(("root", "cpt-ft")): 0.606,
            frozenset(("cpt", "cpt-ft")): 0.029}
    linked = set(gram)
    traits = _chain({"root": 1.0, "cpt": 2.0, "cpt-ft": 2.0})

    def build(uploaded):
        built = tree.build_tree(names, gram, linked, lambda a, b: 0.0, lambda a, b: 0.0, traits, {}, uploaded)
        return {child: (options[0][0], " ".join(options[0][2])) for child, options in built["parents"].items()}

    weights_only = build({n: None for n in names})
    assert weights_only["cpt-ft"][0] == "root" and "tie-breaker" not in weights_only["cpt"][1]
    dated = build({"root": "2024-01-01", "cpt": "2024-02-01", "cpt-ft": "2024-03-01"})
    assert dated["cpt"][0] == "root" and dated["cpt-ft"][0] == "cpt"
    assert "tie-breaker: the earlier upload" in dated["cpt-ft"][1]
    far = dict(gram) | {frozenset(("root", "cpt-ft")): 0.5}  # 20% nearer: the drift decides, whatever the dates
    built = tree.build_tree(names, far, linked, lambda a, b: 0.0, lambda a, b: 0.0, traits, {},
                            {"root": "2024-01-01", "cpt": "2024-02-01", "cpt-ft": "2024-03-01"})
    assert built["parents"]["cpt-ft"][0][0] == "root"


def test_a_root_whose_gains_say_little_is_the_earliest_upload_labelled():
    """A short fine-tune may move the norm gains back towards 1: by the gains alone it would be the root. Gains
    within ROOT_TIE go by the earliest upload, labelled; gains far apart decide whatever the dates."""
    from solarforensics.population import tree

    names = ["base", "ft", "ft-ft"]
    gram = {frozenset(("base", "ft")): 0.05, frozenset(("ft", "ft-ft")): 0.04, frozenset(("base", "ft-ft")): 0.1}
    dates = {"base": "2024-01-01", "ft": "2024-02-01", "ft-ft": "2024-03-01"}

    def root(gains, uploaded):
        built = tree.build_tree(names, gram, set(gram), lambda a, b: 0.0, lambda a, b: 0.0, _chain(gains), {},
                                uploaded)
        return built["root"], " ".join(e for options in built["parents"].values() for e in options[0][2])

    alike = {"base": 1.0, "ft": 0.99, "ft-ft": 1.1}
    assert root(alike, {n: None for n in names})[0] == "ft"
    found, evidence = root(alike, dates)
    assert found == "base" and "tie-breaker: the earliest upload" in evidence
    assert root({"base": 1.0, "ft": 0.5, "ft-ft": 1.1}, dates)[0] == "ft"
