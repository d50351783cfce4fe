"""The local Hub server speaks the Hub protocol to the real huggingface_hub client, on 127.0.0.1 only."""

import hashlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.errors import (
    GatedRepoError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import build_hf_headers, http_backoff
from raw_http import raw_request
from safetensors.numpy import save_file

from solarforensics.errors import NotFoundError, SpecError
from solarforensics.localhub.server import HubServer, serve
from solarforensics.localhub.store import Commit, FolderStore, MultiStore, Repo, RepoFile

BLOB = bytes(range(256)) * 4  # weights.bin: 1024 bytes whose every offset is recognisable
SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
GOOD_TOKEN, WRONG_TOKEN = "hf_good_token_for_tests", "hf_wrong_token_for_tests"


def write_sharded(folder: Path, tensors_per_shard=((("a", (4, 4)),), (("b", (8,)),))) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng, weight_map, tensors = np.random.default_rng(0), {}, {}
    for shard, names in zip(SHARDS, tensors_per_shard):
        part = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in names}
        save_file(part, str(folder / shard))
        weight_map.update(dict.fromkeys(part, shard))
        tensors.update(part)
    index = {"metadata": {"total_size": sum(t.nbytes for t in tensors.values())}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return tensors


@pytest.fixture
def hub_root(tmp_path) -> Path:
    """acme/tiny (sharded, card, sub folder, branches), acme/gated and acme/private, under one root."""
    root = tmp_path / "hub"
    tiny = root / "acme" / "tiny"
    write_sharded(tiny)
    (tiny / "config.json").write_text('{"model_type": "llama"}')
    (tiny / "README.md").write_text("---\nlicense: apache-2.0\ntags: [forensics]\n---\n# Tiny\n")
    (tiny / "weights.bin").write_bytes(BLOB)
    (tiny / "sub" / "deep").mkdir(parents=True)
    (tiny / "sub" / "notes.txt").write_text("notes")
    (tiny / "sub" / "deep" / "x.txt").write_text("x")
    (tiny / ".gitattributes").write_text("*.bin filter=lfs\n")
    (tiny / ".branches" / "dev").mkdir(parents=True)
    (tiny / ".branches" / "dev" / "config.json").write_text('{"model_type": "dev"}')
    (tiny / ".branches" / "refs%2Fpr%2F1").mkdir(parents=True)
    (tiny / ".branches" / "refs%2Fpr%2F1" / "config.json").write_text('{"model_type": "pr"}')
    for name, settings in (("gated", {"gated": True}), ("private", {"private": True})):
        write_sharded(root / "acme" / name)
        (root / "acme" / name / ".hub.json").write_text(json.dumps({**settings, "tokens": [GOOD_TOKEN]}))
    return root


def expected_sha(folder: Path) -> str:
    """The documented commit sha: sha1 over sorted (path, etag), etag = sha256 for LFS files, git blob sha1 else."""
    digest = hashlib.sha1()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not any(
            part.startswith(".") for part in p.relative_to(folder).parts)):
        data, rel = path.read_bytes(), path.relative_to(folder).as_posix()
        lfs = rel.endswith((".safetensors", ".bin")) or len(data) > 1 << 20
        etag = hashlib.sha256(data).hexdigest() if lfs else git_sha1(data)
        digest.update(f"{rel}\0{etag}\n".encode())
    return digest.hexdigest()


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def test_model_info_reports_commit_sha_siblings_and_card(hub_server, hub_root):
    server = hub_server(hub_root)
    info = HfApi(endpoint=server.url).model_info("acme/tiny")
    assert info.id == "acme/tiny"
    assert info.sha == expected_sha(hub_root / "acme" / "tiny")
    assert [s.rfilename for s in info.siblings] == [
        "README.md", "config.json", *SHARDS, "model.safetensors.index.json",
        "sub/deep/x.txt", "sub/notes.txt", "weights.bin",
    ]
    weights = next(s for s in info.siblings if s.rfilename == "weights.bin")
    assert (weights.size, weights.lfs.size, weights.lfs.sha256) == (1024, 1024, hashlib.sha256(BLOB).hexdigest())
    assert next(s for s in info.siblings if s.rfilename == "config.json").lfs is None
    assert (info.card_data.license, info.tags, info.gated, info.private) == (
        "apache-2.0", ["forensics", "safetensors"], False, False)


def test_tree_lists_children_or_everything_recursively(hub_server, hub_root):
    api = HfApi(endpoint=hub_server(hub_root).url)
    top = {e.path: type(e).__name__ for e in api.list_repo_tree("acme/tiny")}
    assert top == {"README.md": "RepoFile", "config.json": "RepoFile", SHARDS[0]: "RepoFile",
                   SHARDS[1]: "RepoFile", "model.safetensors.index.json": "RepoFile", "weights.bin": "RepoFile",
                   "sub": "RepoFolder"}
    assert [e.path for e in api.list_repo_tree("acme/tiny", "sub", recursive=True)] == [
        "sub/deep", "sub/deep/x.txt", "sub/notes.txt"]
    assert [e.path for e in api.list_repo_tree("acme/tiny", "sub")] == ["sub/deep", "sub/notes.txt"]
    with pytest.raises(RemoteEntryNotFoundError):
        list(api.list_repo_tree("acme/tiny", "nope"))


def test_paths_info_returns_existing_paths_only(hub_server, hub_root):
    api = HfApi(endpoint=hub_server(hub_root).url)
    entries = api.get_paths_info("acme/tiny", ["sub", "weights.bin", "missing.txt", "config.json"])
    assert [(type(e).__name__, e.path) for e in entries] == [
        ("RepoFolder", "sub"), ("RepoFile", "weights.bin"), ("RepoFile", "config.json")]
    assert entries[1].lfs.sha256 == hashlib.sha256(BLOB).hexdigest()
    assert entries[2].blob_id == git_sha1(b'{"model_type": "llama"}')


def test_download_by_sha_is_served_from_cache_the_second_time(hub_server, hub_root):
    server = hub_server(hub_root)
    sha = HfApi(endpoint=server.url).model_info("acme/tiny").sha
    first = hf_hub_download("acme/tiny", "weights.bin", revision=sha, endpoint=server.url)
    assert Path(first).read_bytes() == BLOB
    server.reset_stats()
    second = hf_hub_download("acme/tiny", "weights.bin", revision=sha, endpoint=server.url)
    assert (second, server.stats()["requests"]) == (first, 0)


def test_fixture_points_hf_endpoint_and_default_client_at_the_server(hub_server, hub_root):
    server = hub_server(hub_root)
    assert os.environ["HF_ENDPOINT"] == server.url
    assert Path(hf_hub_download("acme/tiny", "config.json")).read_text() == '{"model_type": "llama"}'
    assert [e["path"] for e in server.stats()["log"]][-1] == "/acme/tiny/resolve/main/config.json"


def test_file_exists_answers_true_and_false(hub_server, hub_root):
    api = HfApi(endpoint=hub_server(hub_root).url)
    assert api.file_exists("acme/tiny", "weights.bin") is True
    assert api.file_exists("acme/tiny", "model.safetensors") is False


def test_get_safetensors_metadata_reads_sharded_headers_in_ranges(hub_server, tmp_path):
    # 1,500 tensors make shard 2's header larger than the client's first 100,001-byte read.
    many = tuple((f"layers.{i}.norm.weight", (2,)) for i in range(1500))
    write_sharded(tmp_path / "hub" / "acme" / "big", ((("embed", (3, 5)),), many))
    server = hub_server(tmp_path / "hub")
    metadata = HfApi(endpoint=server.url).get_safetensors_metadata("acme/big")
    assert (metadata.sharded, metadata.parameter_count) == (True, {"F32": 15 + 3000})
    assert metadata.weight_map["layers.7.norm.weight"] == SHARDS[1]
    header_length = int.from_bytes((tmp_path / "hub" / "acme" / "big" / SHARDS[1]).read_bytes()[:8], "little")
    ranges = [e["range"] for e in server.stats()["log"] if e["path"].endswith(SHARDS[1])]
    assert header_length > 100_000 - 8
    assert ranges == ["bytes=0-100000", f"bytes=8-{header_length + 7}"]


def test_revisions_by_branch_sha_and_quoted_ref(hub_server, hub_root):
    server = hub_server(hub_root)
    api = HfApi(endpoint=server.url)
    main, dev = api.model_info("acme/tiny"), api.model_info("acme/tiny", revision="dev")
    assert dev.sha != main.sha and [s.rfilename for s in dev.siblings] == ["config.json"]
    assert api.model_info("acme/tiny", revision=dev.sha).sha == dev.sha
    pr_config = hf_hub_download("acme/tiny", "config.json", revision="refs/pr/1", endpoint=server.url)
    assert Path(pr_config).read_text() == '{"model_type": "pr"}'
    assert "/acme/tiny/resolve/refs%2Fpr%2F1/config.json" in [e["path"] for e in server.stats()["log"]]
    assert [e.path for e in api.list_repo_tree("acme/tiny", revision="refs/pr/1")] == ["config.json"]


def test_missing_repo_revision_and_file_raise_the_client_errors(hub_server, hub_root):
    server = hub_server(hub_root)
    api = HfApi(endpoint=server.url)
    with pytest.raises(RepositoryNotFoundError) as anonymous:
        api.model_info("acme/nope")
    with pytest.raises(RepositoryNotFoundError) as with_token:
        api.model_info("acme/nope", token=WRONG_TOKEN)
    assert (anonymous.value.response.status_code, with_token.value.response.status_code) == (401, 404)
    assert not isinstance(anonymous.value, GatedRepoError)
    with pytest.raises(RevisionNotFoundError):
        api.model_info("acme/tiny", revision="f" * 40)
    with pytest.raises(RemoteEntryNotFoundError):
        get_hf_file_metadata(hf_hub_url("acme/tiny", "nope.safetensors", endpoint=server.url))
    status, headers, _ = raw_request(server.url, "GET", "/acme/tiny/resolve/main/nope.safetensors")
    assert (status, headers["X-Error-Code"], headers["X-Repo-Commit"]) == (
        404, "EntryNotFound", expected_sha(hub_root / "acme" / "tiny"))
    assert raw_request(server.url, "GET", "/api/agent-harnesses")[0] == 404


@pytest.mark.parametrize(("repo", "anonymous_error", "anonymous_status", "wrong_token_status"), [
    ("acme/gated", GatedRepoError, 401, 403),
    ("acme/private", RepositoryNotFoundError, 401, 404),
])
def test_gated_and_private_repos_need_the_right_token(
        hub_server, hub_root, repo, anonymous_error, anonymous_status, wrong_token_status):
    api = HfApi(endpoint=hub_server(hub_root).url)
    with pytest.raises(anonymous_error) as anonymous:
        api.model_info(repo)
    with pytest.raises(anonymous_error) as wrong:
        api.model_info(repo, token=WRONG_TOKEN)
    assert (anonymous.value.response.status_code, wrong.value.response.status_code) == (
        anonymous_status, wrong_token_status)
    assert api.model_info(repo, token=GOOD_TOKEN).id == repo
    assert api.file_exists(repo, SHARDS[0], token=GOOD_TOKEN) is True


def test_resolve_headers_for_lfs_and_plain_files(hub_server, hub_root):
    server = hub_server(hub_root)
    sha = expected_sha(hub_root / "acme" / "tiny")
    status, headers, body = raw_request(server.url, "HEAD", "/acme/tiny/resolve/main/weights.bin")
    sha256 = hashlib.sha256(BLOB).hexdigest()
    assert (status, body, headers["Content-Length"], headers["Accept-Ranges"]) == (200, b"", "1024", "bytes")
    assert (headers["X-Repo-Commit"], headers["ETag"], headers["X-Linked-Etag"], headers["X-Linked-Size"]) == (
        sha, f'"{sha256}"', f'"{sha256}"', "1024")
    status, headers, body = raw_request(server.url, "GET", "/acme/tiny/resolve/main/config.json")
    assert (status, body, headers["ETag"], headers["X-Linked-Etag"]) == (
        200, b'{"model_type": "llama"}', f'"{git_sha1(body)}"', None)
    metadata = get_hf_file_metadata(hf_hub_url("acme/tiny", "weights.bin", endpoint=server.url))
    assert (metadata.commit_hash, metadata.etag, metadata.size) == (sha, sha256, 1024)


@pytest.mark.parametrize(("range_header", "start", "end"), [
    ("bytes=0-7", 0, 8), ("bytes=100-355", 100, 356), ("bytes=1000-", 1000, 1024),
    ("bytes=-24", 1000, 1024), ("bytes=1020-5000", 1020, 1024), ("bytes=-5000", 0, 1024),
])
def test_ranges_answer_206_with_exact_content_range(hub_server, hub_root, range_header, start, end):
    server = hub_server(hub_root)
    status, headers, body = raw_request(server.url, "GET", "/acme/tiny/resolve/main/weights.bin", {"Range": range_header})
    assert (status, headers["Content-Range"], int(headers["Content-Length"]), body) == (
        206, f"bytes {start}-{end - 1}/1024", end - start, BLOB[start:end])


@pytest.mark.parametrize("range_header", ["bytes=1024-", "bytes=5000-6000", "bytes=-0", "bytes=9-2",
                                          "bytes=0-1,4-5", "items=0-1", "bytes=-"])
def test_unsatisfiable_ranges_answer_416(hub_server, hub_root, range_header):
    server = hub_server(hub_root)
    status, headers, _ = raw_request(server.url, "GET", "/acme/tiny/resolve/main/weights.bin", {"Range": range_header})
    assert (status, headers["Content-Range"]) == (416, "bytes */1024")


def test_one_keep_alive_connection_serves_many_requests(hub_server, hub_root):
    server = hub_server(hub_root)
    connection = http.client.HTTPConnection("127.0.0.1", urlsplit(server.url).port, timeout=10)
    bodies = []
    for path in ("/api/models/acme/tiny", "/acme/tiny/resolve/main/nope", "/acme/tiny/resolve/main/weights.bin"):
        connection.request("GET", path, headers={"Range": "bytes=0-3"})
        response = connection.getresponse()
        bodies.append((response.status, len(response.read()) == int(response.headers["Content-Length"])))
    connection.close()
    assert bodies == [(200, True), (404, True), (206, True)]


def test_cdn_mode_redirects_weights_and_the_token_stays_on_the_hub(hub_server, hub_root):
    server = hub_server(hub_root, cdn=True)
    url = hf_hub_url("acme/gated", SHARDS[0], endpoint=server.url)
    data = (hub_root / "acme" / "gated" / SHARDS[0]).read_bytes()
    response = http_backoff("GET", url, headers={**build_hf_headers(token=GOOD_TOKEN), "Range": "bytes=8-15"},
                            timeout=10)
    assert (response.status_code, response.content, response.headers["Content-Range"]) == (
        206, data[8:16], f"bytes 8-15/{len(data)}")
    hub_entry, cdn_entry = sorted(server.stats()["log"], key=lambda e: e["origin"] == "cdn")
    assert (hub_entry["origin"], hub_entry["status"], hub_entry["auth"]) == ("hub", 302, True)
    assert (cdn_entry["origin"], cdn_entry["status"], cdn_entry["auth"], cdn_entry["range"]) == (
        "cdn", 206, False, "bytes=8-15")
    metadata = get_hf_file_metadata(url, token=GOOD_TOKEN)
    assert metadata.location.startswith(f"{server.cdn_url}/cdn/acme/gated/")
    assert (metadata.size, metadata.etag) == (len(data), hashlib.sha256(data).hexdigest())
    status, headers, _ = raw_request(server.url, "GET", "/acme/gated/resolve/main/model.safetensors.index.json",
                             {"Authorization": f"Bearer {GOOD_TOKEN}"})
    assert (status, headers["Location"]) == (200, None)  # small files are served by the Hub itself
    local = hf_hub_download("acme/gated", SHARDS[1], token=GOOD_TOKEN, endpoint=server.url)
    assert Path(local).read_bytes() == (hub_root / "acme" / "gated" / SHARDS[1]).read_bytes()
    log = server.stats()["log"]
    assert {e["auth"] for e in log if e["origin"] == "cdn"} == {False}
    assert {e["auth"] for e in log if e["origin"] == "hub"} == {True}


def test_folder_changes_between_requests_give_a_new_commit(hub_server, hub_root):
    server = hub_server(hub_root)
    api = HfApi(endpoint=server.url)
    before = api.model_info("acme/tiny")
    (hub_root / "acme" / "tiny" / "config.json").write_text('{"model_type": "mistral"}')
    (hub_root / "acme" / "tiny" / "big.txt").write_bytes(b"x" * ((1 << 20) + 1))
    after = api.model_info("acme/tiny")
    assert after.sha == expected_sha(hub_root / "acme" / "tiny") != before.sha
    assert next(s for s in after.siblings if s.rfilename == "big.txt").lfs is not None
    with pytest.raises(RevisionNotFoundError):  # the folder holds only its latest state
        api.model_info("acme/tiny", revision=before.sha)


def test_virtual_repos_generate_bytes_without_disk(hub_server, hub_root):
    size = 10**11  # 100 GB, never materialised

    def pattern(start: int, end: int) -> bytes:
        return bytes(i % 251 for i in range(start, end))

    class VirtualStore:
        def get(self, repo_id):
            if repo_id != "virtual/huge":
                return None
            shard = RepoFile("model-00001-of-00001.safetensors", size, "ab" * 32, True, pattern)
            return Repo(repo_id, {"main": Commit.from_files([shard])})

        def repo_ids(self):
            return ["virtual/huge"]

    server = hub_server(MultiStore([VirtualStore(), FolderStore(hub_root)]))
    url = "/virtual/huge/resolve/main/model-00001-of-00001.safetensors"
    status, headers, body = raw_request(server.url, "GET", url, {"Range": f"bytes={size - 10}-"})
    assert (status, headers["Content-Range"], body) == (206, f"bytes {size - 10}-{size - 1}/{size}",
                                                       pattern(size - 10, size))
    assert server.store.repo_ids() == ["acme/gated", "acme/private", "acme/tiny", "virtual/huge"]
    assert HfApi(endpoint=server.url).model_info("acme/tiny").id == "acme/tiny"


def test_stats_count_requests_and_body_bytes(hub_server, hub_root):
    server = hub_server(hub_root)
    _, _, info_body = raw_request(server.url, "GET", "/api/models/acme/tiny")
    raw_request(server.url, "GET", "/acme/tiny/resolve/main/weights.bin", {"Range": "bytes=0-7"})
    raw_request(server.url, "HEAD", "/acme/tiny/resolve/main/weights.bin")
    stats = server.stats()
    assert (stats["requests"], stats["bytes_served"]) == (3, len(info_body) + 8)
    assert stats["by_kind"] == {"model_info": 1, "range": 1, "head": 1}
    assert [(e["method"], e["status"], e["bytes"], e["auth"]) for e in stats["log"]] == [
        ("GET", 200, len(info_body), False), ("GET", 206, 8, False), ("HEAD", 200, 0, False)]
    assert json.loads(raw_request(server.url, "GET", "/_stats")[2])["requests"] == 3  # control calls are not counted
    raw_request(server.url, "POST", "/_stats/reset")
    assert server.stats() == {"requests": 0, "bytes_served": 0, "by_kind": {}, "log": []}


def test_latency_and_bandwidth_slow_every_answer(hub_server, hub_root):
    server = hub_server(hub_root, latency_ms=200, bandwidth=2048)
    started = time.monotonic()
    status, _, body = raw_request(server.url, "GET", "/acme/tiny/resolve/main/weights.bin")
    assert (status, body) == (200, BLOB)
    assert time.monotonic() - started >= 0.2 + 0.4  # 200 ms latency + 1024 bytes at 2048 bytes/s


def test_serve_runs_until_interrupted(hub_root):
    process = subprocess.Popen(
        [sys.executable, "-m", "solarforensics.localhub.server", str(hub_root), "--port", "0", "--cdn",
         "--fault", "503:weights.bin:1"],
        stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        url = line.split("export HF_ENDPOINT=")[1].strip()
        assert line.startswith("Hub serving 3 repos at http://127.0.0.1:")
        assert raw_request(url, "GET", "/acme/tiny/resolve/main/weights.bin")[0] == 503
        assert raw_request(url, "GET", "/acme/tiny/resolve/main/weights.bin")[0] == 302
    finally:
        process.send_signal(signal.SIGINT)  # as Ctrl-C
        assert process.wait(timeout=10) == 0


def test_serve_refuses_a_missing_root_and_a_bad_fault(tmp_path):
    with pytest.raises(NotFoundError, match="is not a folder"):
        serve(tmp_path / "nope", port=0, latency_ms=0, bandwidth=None, cdn=False, faults=[])
    with pytest.raises(SpecError, match="unknown fault kind 'teapot'"):
        serve(tmp_path, port=0, latency_ms=0, bandwidth=None, cdn=False, faults=["teapot"])


def test_server_works_as_a_context_manager(hub_root):
    with HubServer(hub_root) as server:
        assert raw_request(server.url, "GET", "/api/models/acme/tiny")[0] == 200
    with pytest.raises(RuntimeError):
        server.url
