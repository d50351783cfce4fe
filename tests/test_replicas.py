"""The full-scale virtual replicas: real layouts and sizes from MODEL-FACTS, bytes generated on demand, served by the
local Hub to the real client code."""

import hashlib
import json
import random
import time
from pathlib import Path

import httpx2
import numpy as np
import pytest

from solarforensics.localhub.store import FolderStore, MultiStore
from solarforensics.replicas.specs import load_replica_specs
from solarforensics.replicas.store import MARKER_FILE, ReplicaStore, read_shard, replica_store
from solarforensics.replicas.tokenizers import byte_alphabet, phi_tokenizer, solar_glm_tokenizers

SOLAR, GLM, PHI, INTELLECT = ("upstage/Solar-Open-100B", "zai-org/GLM-4.5-Air", "microsoft/Phi-3.5-MoE-instruct",
                              "PrimeIntellect/INTELLECT-3")
# shared/ sits beside the checkout (development machines and CI)
RECONSTRUCTED_INDEX = (Path(__file__).resolve().parents[2] / "shared" / "reference-data" / "model-files"
                       / "upstage__Solar-Open-100B" / "model.safetensors.index.RECONSTRUCTED.json")


@pytest.fixture(scope="module")
def store() -> ReplicaStore:
    return replica_store()


@pytest.fixture(scope="module")
def specs():
    return load_replica_specs()


@pytest.fixture
def one_thread():
    """Torch on one thread: on a busy 2-core machine the OpenMP pool's spin-waits make each small float64 reduction
    cost ~10 ms (a 4,096-element dot product takes 1.7 us alone), which dominates comparisons of norm gains."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_the_store_serves_the_four_models_of_the_dispute(store):
    assert store.repo_ids() == sorted([SOLAR, GLM, PHI, INTELLECT])
    assert store.get("upstage/not-a-replica") is None


@pytest.mark.parametrize("repo, tensors, shards, total_bytes, parameters", [
    (SOLAR, 18_963, 42, 205_303_611_392, 102_651_799_552),       # MODEL-FACTS §1.3, §1.6
    (GLM, 18_328, 47, 219_696_147_456, 109_848_067_840),         # §2.2-2.3: with the MTP layer 46
    (PHI, 1_957, 17, 83_746_306_688, 41_873_153_344),            # §3, §5
    (INTELLECT, 17_925, 43, 213_704_514_048, 106_852_251_264),   # §4: GLM without the MTP layer
])
def test_layouts_have_the_published_counts_and_sizes(specs, repo, tensors, shards, total_bytes, parameters):
    spec = specs[repo]
    assert (len(spec.tensors), len(spec.shards), spec.total_size) == (tensors, shards, total_bytes)
    assert sum(t.numel for t in spec.tensors) == parameters


def test_glm_without_its_mtp_layer_has_the_published_total(specs):
    decoder = [t for t in specs[GLM].tensors if t.layer is None or t.layer < 46]
    assert sum(t.nbytes for t in decoder) == 213_704_514_048


def test_solar_index_is_the_reconstructed_weight_map(specs):
    index = json.loads(specs[SOLAR].index_bytes())
    assert index["metadata"] == {"total_size": 205_303_611_392}
    weight_map = index["weight_map"]
    assert weight_map["model.layers.0.input_layernorm.weight"] == "model-00002-of-00042.safetensors"
    assert weight_map["model.layers.45.mlp.gate.weight"] == "model-00040-of-00042.safetensors"
    assert weight_map["model.norm.weight"] == "model-00041-of-00042.safetensors"
    assert weight_map["lm_head.weight"] == "model-00042-of-00042.safetensors"
    if RECONSTRUCTED_INDEX.is_file():  # shared reference data, present in the development checkout
        assert specs[SOLAR].index_bytes() == RECONSTRUCTED_INDEX.read_bytes()


def test_glm_shards_hold_one_decoder_layer_each(specs):
    shard_of = {t.name: shard.name for shard in specs[GLM].shards for t in shard.tensors}
    assert shard_of["model.layers.0.mlp.gate_proj.weight"] == "model-00001-of-00047.safetensors"
    assert shard_of["model.layers.45.post_attention_layernorm.weight"] == "model-00046-of-00047.safetensors"
    assert shard_of["model.layers.46.eh_proj.weight"] == "model-00047-of-00047.safetensors"


def test_hub_source_reads_the_headers_over_http(store, hub_server):
    from solarforensics.sources.hub import HubSource

    server = hub_server(store)
    solar, glm = HubSource(SOLAR), HubSource(GLM)
    assert (solar.parameters(), len(solar.tensors)) == (102_651_799_552, 18_963)
    assert (glm.parameters(), len(glm.tensors)) == (109_848_067_840, 18_328)
    bias = solar.ref("model.layers.0.mlp.gate.e_score_correction_bias")
    assert (bias.dtype, bias.shape, bias.file) == ("F32", (128,), "model-00002-of-00042.safetensors")
    assert solar.config["num_hidden_layers"] == 48 and glm.config["num_attention_heads"] == 96
    assert MARKER_FILE in solar.list_files() and "tokenizer.json" in solar.list_files()
    # Headers and the index only: never a whole shard.
    assert solar.provenance.bytes_transferred < 3_000_000
    assert server.stats()["bytes_served"] < 10_000_000


def test_compare_over_http_shows_the_trap_and_the_derived_control(store, hub_server, one_thread):
    from solarforensics.comparison.compare import CompareRequest, compare_models

    hub_server(store)
    independent = compare_models(CompareRequest(SOLAR, GLM, "attn-norm", permutations=0))
    deep = [r for r in independent["rows"] if r["layer_a"] >= 10]
    assert min(r["cosine"] for r in deep) > 0.95  # raw cosine high, as published
    assert abs(independent["summary"]["groups"]["attn-norm"]["pearson_mean"]) < 0.05  # centered ~0
    assert [r["layer_a"] for r in independent["rows"]] == list(range(46))
    derived = compare_models(CompareRequest(GLM, INTELLECT, "attn-norm", permutations=0))
    assert derived["summary"]["groups"]["attn-norm"]["pearson_mean"] > 0.99


def _get(url: str, start: int, end: int) -> bytes:
    response = httpx2.get(url, headers={"Range": f"bytes={start}-{end - 1}"}, timeout=30)
    assert response.status_code == 206
    return response.content


def test_a_range_deep_in_a_5_gb_shard_is_fast_and_always_the_same(store, hub_server):
    server = hub_server(store)
    shard = "model-00020-of-00042.safetensors"
    url = f"{server.url}/{SOLAR}/resolve/main/{shard}"
    began = time.perf_counter()
    first = _get(url, 4_000_000_000, 4_000_004_096)
    assert time.perf_counter() - began < 1.0
    assert first == _get(url, 4_000_000_000, 4_000_004_096)
    overlapping = _get(url, 3_999_998_000, 4_000_002_000)
    assert overlapping[2000:] == first[:2000]


def test_every_byte_range_agrees_with_its_parts(store, specs):
    values = store.values(INTELLECT)  # derived: the slowest path, parent values plus noise
    shard = specs[INTELLECT].shards[0]
    rng = random.Random(5)
    header = len(shard.header)
    cuts = [0, header - 3, header + 5] + [rng.randrange(shard.size) for _ in range(12)]
    for start in cuts:
        middle = start + rng.randrange(1, 70_000)
        end = middle + rng.randrange(1, 70_000)
        whole = read_shard(shard, values, start, end)
        assert whole == read_shard(shard, values, start, middle) + read_shard(shard, values, middle, end)
        assert len(whole) == min(end, shard.size) - start


def test_shard_headers_are_valid_safetensors(specs):
    from solarforensics.sources.safetensors_format import header_length, parse_header

    shard = specs[SOLAR].shards[1]
    n = header_length(shard.header[:8], shard.name, shard.size)
    assert n % 8 == 0 and 8 + n == len(shard.header)
    tensors, metadata = parse_header(shard.header[8:], shard.name, shard.size)
    assert metadata == {"format": "pt"}
    assert set(tensors) == {t.name for t in shard.tensors}
    first = next(iter(json.loads(shard.header[8:])))
    assert first == "__metadata__"


def test_norm_gains_follow_the_published_statistics(store, specs):
    def gains(repo: str, name: str) -> np.ndarray:
        tensor = next(t for t in specs[repo].tensors if t.name == name)
        return store.values(repo).values(tensor).astype(np.float64)

    solar = gains(SOLAR, "model.layers.10.input_layernorm.weight")
    glm = gains(GLM, "model.layers.10.input_layernorm.weight")
    # ANL layernorm_sanity.csv, layer 10: Solar 0.235737 +- 0.040957, GLM 0.496988 +- 0.046547
    assert abs(solar.mean() - 0.235737) < 1e-3 and abs(solar.std() - 0.040957) < 1e-3
    assert abs(glm.mean() - 0.496988) < 1e-3 and abs(glm.std() - 0.046547) < 1e-3
    raw = solar @ glm / np.linalg.norm(solar) / np.linalg.norm(glm)
    centered = np.corrcoef(solar, glm)[0, 1]
    assert raw > 0.97 and abs(centered) < 0.05


def test_intellect3_is_glm_plus_small_noise(store, specs):
    def values(repo: str, name: str) -> np.ndarray:
        tensor = next(t for t in specs[repo].tensors if t.name == name)
        return store.values(repo).values(tensor).astype(np.float64).ravel()

    k_glm = values(GLM, "model.layers.10.self_attn.k_proj.weight")
    k_int = values(INTELLECT, "model.layers.10.self_attn.k_proj.weight")
    k_solar = values(SOLAR, "model.layers.10.self_attn.k_proj.weight")
    assert np.corrcoef(k_glm, k_int)[0, 1] > 0.999
    assert abs(np.corrcoef(k_glm, k_solar)[0, 1]) < 0.005
    # Published (SIO figure 3-1): most layer-0 gains changed, a few percent of deep ones.
    changed_0 = np.mean(values(GLM, "model.layers.0.input_layernorm.weight")
                        != values(INTELLECT, "model.layers.0.input_layernorm.weight"))
    changed_40 = np.mean(values(GLM, "model.layers.40.input_layernorm.weight")
                         != values(INTELLECT, "model.layers.40.input_layernorm.weight"))
    assert changed_0 > 0.8 and 0.0 < changed_40 < 0.1


def test_router_bias_is_f32_and_glm_s_is_far_larger(store, specs):
    def bias(repo: str) -> np.ndarray:
        tensor = next(t for t in specs[repo].tensors if t.name == "model.layers.10.mlp.gate.e_score_correction_bias")
        assert tensor.dtype == "F32"
        return store.values(repo).values(tensor).astype(np.float64)

    ratio = np.linalg.norm(bias(GLM)) / np.linalg.norm(bias(SOLAR))
    assert 580 < ratio < 39_447  # the published range of |GLM| / |Solar| (DISPUTE.md G9)


def test_tokenizers_have_the_published_sizes_and_overlap():
    solar, glm = (json.loads(b) for b in solar_glm_tokenizers())
    vs, vg = solar["model"]["vocab"], glm["model"]["vocab"]
    assert (len(vs), len(vg)) == (196_608, 151_329)
    assert (len(solar["model"]["merges"]), len(glm["model"]["merges"])) == (192_256, 318_088)
    shared = vs.keys() & vg.keys()
    assert len(shared) == 80_339
    assert sum(1 for t in shared if vs[t] == vg[t]) == 1
    merges_s = {tuple(m) for m in solar["model"]["merges"]}
    assert len(merges_s & {tuple(m) for m in glm["model"]["merges"]}) == 76_729
    alphabet = byte_alphabet()
    assert all(vs[c] == 4096 + i and vg[c] == i for i, c in enumerate(alphabet))
    assert (vs["Ġthe"], vg["Ġthe"], vs["<|endoftext|>"], vg["ĠĠ"]) == (4360, 279, 2, 256)


def test_tokenizer_files_load_in_the_tokenizers_library():
    from tokenizers import Tokenizer

    solar, glm = solar_glm_tokenizers()
    assert Tokenizer.from_str(solar.decode()).get_vocab_size() == 196_608
    assert Tokenizer.from_str(glm.decode()).get_vocab_size() == 151_329 + 14
    assert Tokenizer.from_str(phi_tokenizer().decode()).get_vocab_size() == 32_011


def test_cards_licences_and_marker(store):
    def text(repo: str, path: str) -> str:
        file = store.get(repo).refs["main"].files[path]
        return file.read(0, file.size).decode()

    assert "license_name: upstage-solar-license" in text(SOLAR, "README.md")
    licence = store.get(SOLAR).refs["main"].files["LICENSE"]
    assert hashlib.sha256(licence.read(0, licence.size)).hexdigest() == (
        "1e7c1408add5284aecfc997637146ebc513918be025a445691362181c458ce47")  # the Upstage Solar License, byte-exact
    assert "license: mit" in text(GLM, "README.md") and "LICENSE" not in store.get(GLM).refs["main"].files
    assert text(PHI, "LICENSE").startswith("MIT License")
    assert "base_model: zai-org/GLM-4.5-Air-Base" in text(INTELLECT, "README.md")
    assert "NOT the real model" in text(INTELLECT, MARKER_FILE)


def test_the_store_is_deterministic():
    first, second = ReplicaStore().get(PHI), ReplicaStore().get(PHI)
    assert first.refs["main"].sha == second.refs["main"].sha
    shard = "model-00003-of-00017.safetensors"
    a, b = first.refs["main"].files[shard], second.refs["main"].files[shard]
    assert a.etag == b.etag and a.read(123_456_789, 123_466_789) == b.read(123_456_789, 123_466_789)


def test_replicas_are_served_beside_a_folder_of_repos(store, tiny_root, hub_server):
    server = hub_server(MultiStore([FolderStore(tiny_root), store]))
    listed = httpx2.get(f"{server.url}/api/models/{PHI}", timeout=30).json()
    assert listed["id"] == PHI and "solarforensics-replica" in listed["tags"]
    assert httpx2.get(f"{server.url}/api/models/demo/glm-tiny", timeout=30).status_code == 200
