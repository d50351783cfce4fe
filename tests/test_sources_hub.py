"""Tensors read through the local Hub equal, byte for byte, what safetensors reads from the same files; every
misbehaviour of the server ends in the right numbers after retries or in one clear error."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from solarforensics.errors import AccessError, FormatError, NotFoundError, TransferError, UnsafeFormatError
from solarforensics.sources.cache import RangeCache
from solarforensics.sources.hub import HubSource
from solarforensics.sources.spec import open_source

TOKEN = "hf_TestTokenDoNotLeak1234567890"


def write_sharded(folder, tensors_per_shard, config=None):
    """A sharded checkpoint: one safetensors file per dict, plus the index and config."""
    folder.mkdir(parents=True, exist_ok=True)
    weight_map, total = {}, 0
    n = len(tensors_per_shard)
    for i, tensors in enumerate(tensors_per_shard, 1):
        shard = f"model-{i:05d}-of-{n:05d}.safetensors"
        save_file(tensors, str(folder / shard))
        for name, t in tensors.items():
            weight_map[name] = shard
            total += t.numel() * t.element_size()
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps(config or {"model_type": "llama", "hidden_size": 16}))
    return folder


def every_dtype(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "bf16": torch.randn(33, 16, generator=g).to(torch.bfloat16),
        "f16": torch.randn(5, 7, generator=g).to(torch.float16),
        "f32": torch.randn(64, generator=g),
        "f64": torch.randn(3, 3, generator=g, dtype=torch.float64),
        "f8e4m3": torch.randn(40, generator=g).to(torch.float8_e4m3fn),
        "f8e5m2": torch.randn(40, generator=g).to(torch.float8_e5m2),
        "i8": torch.randint(-100, 100, (9,), generator=g, dtype=torch.int8),
        "i16": torch.randint(-100, 100, (9,), generator=g, dtype=torch.int16),
        "i32": torch.randint(-100, 100, (9,), generator=g, dtype=torch.int32),
        "i64": torch.randint(-100, 100, (9,), generator=g, dtype=torch.int64),
        "u8": torch.randint(0, 255, (9,), generator=g, dtype=torch.uint8),
        "bool": torch.rand(11, generator=g) > 0.5,
    }


@pytest.fixture
def repo_root(tmp_path):
    root = tmp_path / "hub"
    tensors = every_dtype()
    names = sorted(tensors)
    write_sharded(root / "acme" / "tiny", [{k: tensors[k] for k in names[:6]}, {k: tensors[k] for k in names[6:]}])
    return root


def safe_open_all(folder):
    out = {}
    for shard in sorted(folder.glob("*.safetensors")):
        with safe_open(str(shard), "pt") as f:
            out.update({k: f.get_tensor(k) for k in f.keys()})
    return out


def same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.contiguous().view(torch.uint8).equal(b.contiguous().view(torch.uint8))


def data_gets(server, suffix=".safetensors"):
    return [e for e in server.stats()["log"] if e["method"] == "GET" and e["path"].endswith(suffix)]


def test_hub_reads_equal_safetensors_byte_for_byte(repo_root, hub_server):
    server = hub_server(repo_root)
    source = open_source("acme/tiny", use_cache=False)
    got = source.read_tensors(list(source.tensors))
    expected = safe_open_all(repo_root / "acme" / "tiny")
    assert sorted(got) == sorted(expected)
    for name, tensor in expected.items():
        assert same_bytes(got[name], tensor), name
    assert source.commit == server.store.get("acme/tiny").resolve("main").sha
    assert source.config == {"model_type": "llama", "hidden_size": 16}


def test_every_url_uses_the_resolved_commit(repo_root, hub_server):
    server = hub_server(repo_root)
    source = open_source("hf:acme/tiny@main", use_cache=False)
    source.read_tensors(["bf16", "i64"])
    resolves = [e["path"] for e in server.stats()["log"] if "/resolve/" in e["path"]]
    assert resolves and all(f"/resolve/{source.commit}/" in path for path in resolves)
    assert source.provenance.requested_revision == "main"
    assert source.provenance.resolved_commit == source.commit


def test_a_branch_reads_its_own_bytes(repo_root, hub_server):
    branch = repo_root / "acme" / "tiny" / ".branches" / "v1"
    write_sharded(branch, [{"bf16": torch.ones(33, 16, dtype=torch.bfloat16)}])
    hub_server(repo_root)
    main = open_source("acme/tiny", use_cache=False)
    v1 = open_source("acme/tiny@v1", use_cache=False)
    assert main.commit != v1.commit
    assert v1.read_tensors(["bf16"])["bf16"].float().eq(1).all()
    assert not main.read_tensors(["bf16"])["bf16"].float().eq(1).all()
    pinned = open_source(f"acme/tiny@{v1.commit}", use_cache=False)
    assert pinned.commit == v1.commit


def test_neighbouring_tensors_share_one_request(repo_root, hub_server):
    server = hub_server(repo_root)
    source = open_source("acme/tiny", use_cache=False)
    shard = source.ref("bf16").file
    same_shard = [n for n, r in source.tensors.items() if r.file == shard]
    server.reset_stats()
    source.read_tensors(same_shard)
    assert len(data_gets(server)) == 1


def test_a_large_header_takes_a_second_request(tmp_path, hub_server):
    many = {f"layer.{i}.a_rather_long_tensor_name_to_make_the_header_big.weight": torch.zeros(1) for i in range(2000)}
    write_sharded(tmp_path / "hub" / "acme" / "wide", [many])
    (tmp_path / "hub" / "acme" / "wide" / "model.safetensors.index.json").unlink()  # no index: the probe must guess
    server = hub_server(tmp_path / "hub")
    source = open_source("acme/wide", use_cache=False)
    assert len(source.tensors) == 2000
    assert len(data_gets(server)) == 2


def test_second_identical_run_makes_no_tensor_requests(repo_root, hub_server, tmp_path):
    server = hub_server(repo_root)
    first = open_source("acme/tiny").read_tensors(["bf16", "f32", "i64"])
    server.reset_stats()
    again = open_source("acme/tiny")
    second = again.read_tensors(["bf16", "f32", "i64"])
    assert data_gets(server) == []
    assert again.provenance.cache_hits >= 3 and again.provenance.bytes_transferred == 0
    assert all(same_bytes(first[k], second[k]) for k in first)
    open_source("acme/tiny", use_cache=False).read_tensors(["bf16"])
    assert len(data_gets(server)) >= 2  # --no-cache reads headers and tensors again


def test_a_damaged_cache_entry_is_fetched_again(repo_root, hub_server, tmp_path):
    hub_server(repo_root)
    open_source("acme/tiny").read_tensors(["f32"])
    for entry in (tmp_path / "sfcache" / "ranges").rglob("*"):
        if entry.is_file():
            data = bytearray(entry.read_bytes())
            data[0] ^= 0xFF
            entry.write_bytes(bytes(data))
    expected = safe_open_all(repo_root / "acme" / "tiny")["f32"]
    assert same_bytes(open_source("acme/tiny").read_tensors(["f32"])["f32"], expected)


@pytest.mark.parametrize(
    "kind, params",
    [("429", {"retry_after": 0}), ("500", {}), ("503", {}), ("drop", {}), ("truncate", {}), ("wrong-range", {})],
)
def test_transient_faults_give_the_clean_numbers(repo_root, hub_server, kind, params, monkeypatch):
    monkeypatch.setattr("solarforensics.sources.hub.HTTP_RETRIES", 2)
    server = hub_server(repo_root)
    source = open_source("acme/tiny", use_cache=False)
    server.faults.add(kind, "*.safetensors", 1, **params)
    got = source.read_tensors(list(source.tensors))
    expected = safe_open_all(repo_root / "acme" / "tiny")
    assert all(same_bytes(got[k], expected[k]) for k in expected)


def test_persistent_wrong_ranges_stop_with_one_clear_error(repo_root, hub_server):
    server = hub_server(repo_root)
    source = open_source("acme/tiny", use_cache=False)
    server.faults.add("wrong-range", "*.safetensors", -1)
    with pytest.raises(TransferError, match="could not be read intact"):
        source.read_tensors(["bf16"])


def test_a_server_ignoring_range_is_not_downloaded_from(repo_root, hub_server):
    server = hub_server(repo_root)
    source = open_source("acme/tiny", use_cache=False)
    server.faults.add("ignore-range", "*.safetensors", -1)
    server.reset_stats()
    with pytest.raises(TransferError, match="ignored the Range header"):
        source.read_tensors(["bf16"])


def test_a_file_changed_mid_run_stops_the_run(repo_root, hub_server):
    server = hub_server(repo_root)
    source = open_source("acme/tiny", use_cache=False)
    server.faults.add("change", "*.safetensors", -1)
    with pytest.raises(TransferError, match="changed during the run"):
        source.read_tensors(list(source.tensors))


def test_cdn_redirects_keep_the_token_on_the_hub(repo_root, hub_server, monkeypatch):
    (repo_root / "acme" / "tiny" / ".hub.json").write_text(json.dumps({"gated": True, "tokens": [TOKEN]}))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    server = hub_server(repo_root, cdn=True)
    source = open_source("acme/tiny", use_cache=False)
    got = source.read_tensors(list(source.tensors))
    expected = safe_open_all(repo_root / "acme" / "tiny")
    assert all(same_bytes(got[k], expected[k]) for k in expected)
    log = server.stats()["log"]
    assert any(e["origin"] == "cdn" for e in log)
    assert all(not e["auth"] for e in log if e["origin"] == "cdn")
    assert any(e["auth"] for e in log if e["origin"] == "hub")


def test_gated_repo_needs_the_right_token(repo_root, hub_server, monkeypatch):
    (repo_root / "acme" / "tiny" / ".hub.json").write_text(json.dumps({"gated": True, "tokens": [TOKEN]}))
    hub_server(repo_root)
    with pytest.raises(AccessError, match="gated") as anonymous:
        open_source("acme/tiny")
    monkeypatch.setenv("HF_TOKEN", "hf_WrongTokenWrongTokenWrong")
    with pytest.raises(AccessError) as wrong:
        open_source("acme/tiny")
    for error in (anonymous.value, wrong.value):
        assert "hf_" not in error.one_line() and "\n" not in error.one_line()
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert len(open_source("acme/tiny").tensors) == 12


def test_missing_repo_revision_and_shard_are_named(repo_root, hub_server):
    hub_server(repo_root)
    with pytest.raises(NotFoundError, match="repo acme/nope not found"):
        open_source("acme/nope")
    with pytest.raises(NotFoundError, match="revision 'v9' not found"):
        open_source("acme/tiny@v9")
    index = repo_root / "acme" / "tiny" / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"]["ghost"] = "model-00009-of-00009.safetensors"
    index.write_text(json.dumps(data))
    with pytest.raises(NotFoundError, match="model-00009-of-00009.safetensors"):
        open_source("acme/tiny", use_cache=False)


def test_pickle_only_repo_is_refused(tmp_path, hub_server):
    folder = tmp_path / "hub" / "acme" / "old"
    folder.mkdir(parents=True)
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    hub_server(tmp_path / "hub")
    with pytest.raises(UnsafeFormatError, match="never unpickles"):
        open_source("acme/old")


def test_a_malformed_remote_header_is_one_clear_error(tmp_path, hub_server):
    folder = tmp_path / "hub" / "acme" / "bad"
    folder.mkdir(parents=True)
    header = b'{"x": {"dtype": "BF16", "shape": [4], "data_offsets": [0, 9]}}'
    (folder / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(9))
    hub_server(tmp_path / "hub")
    with pytest.raises(FormatError, match="do not match shape"):
        open_source("acme/bad")


def test_unreachable_endpoint_is_one_clear_error(monkeypatch):
    monkeypatch.setattr("solarforensics.sources.hub.HTTP_RETRIES", 0)
    with pytest.raises(TransferError, match="cannot reach http://127.0.0.1:9"):
        HubSource("acme/tiny", endpoint="http://127.0.0.1:9", cache=RangeCache())
