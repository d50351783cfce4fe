"""`history`: a repo's commits as huggingface_hub reads them from our local Hub (git folders served with their git
history, the replicas with theirs), what each commit changed, text diffs, and the licence / base-model timeline."""

import json

import pytest
from gitrepos import bulk_commits, commit, git, init
from huggingface_hub import HfApi, hf_hub_download
from jsonschema import Draft202012Validator

import solarforensics.cli.evidence  # noqa: F401  (registers the commands)
from solarforensics.localhub.store import FolderStore
from solarforensics.replicas.store import replica_store
from solarforensics.results.document import read_document, schema

APACHE_HEAD = "                                 Apache License\n                           Version 2.0, January 2004\n"


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def schema_errors(doc: dict) -> list[str]:
    return [e.message for e in Draft202012Validator(schema()).iter_errors(doc)]


def card(licence: str, base: str | None = None) -> str:
    return f"---\nlicense: {licence}\n" + (f"base_model: {base}\n" if base else "") + "---\n# model\n"


@pytest.fixture
def model_repo(tmp_path):
    """acme/model: a git folder with a release, a weight swap, a licence change, a deleted file and a binary .txt."""
    folder = init(tmp_path / "hub" / "acme" / "model")
    shas = [commit(folder, "release", "2025-12-31T09:00:00Z", {
        "README.md": card("apache-2.0", "acme/base"), "LICENSE": APACHE_HEAD + "\nTerms.\n",
        "config.json": '{"layers": 2}\n', "model.safetensors": b"\x08" + b"\x00" * 15 + b"weights-v1",
        "notes.py": "print('hello')\n"}, author="Alice")]
    shas.append(commit(folder, "swap weights", "2026-01-01T14:30:00Z",
                       {"model.safetensors": b"\x08" + b"\x00" * 15 + b"weights-v2"}, author="Bob"))
    shas.append(commit(folder, "rename licence", "2026-01-16T03:00:00Z", {
        "README.md": card("other", "acme/other-base"), "LICENSE": "Acme Licence\n\nTerms.\n", "notes.py": None,
        "data.txt": b"\x00\x01binary named like text"}, body="The licence is now ours."))
    return folder, shas


def history_json(cli, *args) -> dict:
    code, stdout, stderr = cli("history", *args, "--json")
    assert code == 0, stderr
    return json.loads(stdout)


def test_the_hub_client_reads_a_git_folder_history_page_by_page(tmp_path, hub_server, model_repo):
    folder, shas = model_repo
    bulk_commits(folder, 120)
    server = hub_server(tmp_path / "hub")
    api = HfApi(endpoint=server.url, token=False)
    commits = api.list_repo_commits("acme/model")
    assert len(commits) == 123 and commits[-1].commit_id == shas[0] and commits[-1].title == "release"
    assert commits[-1].authors == ["Alice"] and commits[-1].created_at.isoformat() == "2025-12-31T09:00:00+00:00"
    assert commits[-3].message == "The licence is now ours."
    listing = [r for r in server.stats()["log"] if r["kind"] == "commits"]
    assert len(listing) == 3  # 50 + 50 + 23, following the Link headers
    old = {f.path for f in api.list_repo_tree("acme/model", revision=shas[0], recursive=True)}
    assert old == {"README.md", "LICENSE", "config.json", "model.safetensors", "notes.py"}
    path = hf_hub_download("acme/model", "LICENSE", revision=shas[0], endpoint=server.url, token=False)
    assert open(path).read().startswith(APACHE_HEAD)


def test_history_shows_each_change_the_weight_swap_and_the_licence_timeline(cli, tmp_path, hub_server, model_repo):
    _, shas = model_repo
    hub_server(tmp_path / "hub")
    out = tmp_path / "history.json"
    doc = history_json(cli, "acme/model", "--out", out)
    assert read_document(out) == doc and schema_errors(doc) == []
    assert doc["kind"] == "history" and [c["commit"] for c in doc["commits"]] == shas
    assert [c["title"] for c in doc["commits"]] == ["release", "swap weights", "rename licence"]
    assert doc["commits"][1]["authors"] == ["Bob"] and doc["commits"][1]["date"] == "2026-01-01T14:30:00.000Z"
    swap = doc["commits"][1]["changes"]
    assert [(c["path"], c["change"], c["kind"], c["lfs"]) for c in swap] == [
        ("model.safetensors", "modified", "weights", True)]
    assert swap[0]["oid_before"] != swap[0]["oid_after"] and len(swap[0]["oid_after"]) == 64  # sha256: LFS oid
    assert doc["weights_changed_after_first_upload"] == [shas[1]]
    last = {c["path"]: c["change"] for c in doc["commits"][2]["changes"]}
    assert last == {"LICENSE": "modified", "README.md": "modified", "data.txt": "added", "notes.py": "removed"}
    diffs = {d["path"]: d for d in doc["commits"][2]["diffs"]}
    assert "+Acme Licence" in diffs["LICENSE"]["diff"] and "-                                 Apache License" in \
        diffs["LICENSE"]["diff"]
    assert diffs["data.txt"]["skipped"] == "binary content (NUL bytes), not diffed" and diffs["data.txt"]["diff"] is None
    assert diffs["notes.py"]["diff"].startswith("--- notes.py@") and "+++ /dev/null" in diffs["notes.py"]["diff"]
    timeline = [(e["commit"], e["field"], e["before"], e["after"]) for e in doc["timeline"]]
    assert timeline == [
        (shas[0], "LICENSE title", None, "Apache License Version 2.0, January 2004"),
        (shas[0], "card.base_model", None, "acme/base"),
        (shas[0], "card.license", None, "apache-2.0"),
        (shas[2], "LICENSE title", "Apache License Version 2.0, January 2004", "Acme Licence"),
        (shas[2], "card.base_model", "acme/base", "acme/other-base"),
        (shas[2], "card.license", "apache-2.0", "other"),
    ]
    assert doc["summary"]["statements"][1] == (f"Weight files changed after the first commit that had them in 1 "
                                               f"commit(s): {shas[1][:8]}.")
    assert doc["skipped"] == {"commits": 0, "listing_cut": False, "reason": None} and doc["complete"] is True
    only = history_json(cli, "acme/model", "--files", "LICENSE*")
    assert [[c["path"] for c in commit["changes"]] for commit in only["commits"]] == [["LICENSE"], [], ["LICENSE"]]


def test_thousands_of_commits_are_listed_but_only_a_bounded_number_read(cli, tmp_path, hub_server, model_repo):
    folder, shas = model_repo
    bulk_commits(folder, 1200)
    server = hub_server(tmp_path / "hub")
    doc = history_json(cli, "acme/model", "--max-commits", "5")
    assert doc["listed"] == 1203 and doc["analysed"] == 5 and doc["complete"] is False
    assert doc["skipped"]["commits"] == 1198 and "--max-commits 5" in doc["skipped"]["reason"]
    assert doc["commits"][0]["analysed"] and doc["commits"][0]["commit"] == shas[0]
    assert doc["commits"][-4]["skipped_before"] == 1198
    spanning = {c["path"]: c["change"] for c in doc["commits"][-4]["changes"]}  # the release -> 1,198 commits later
    assert spanning == {"LICENSE": "modified", "README.md": "modified", "counter.txt": "added", "data.txt": "added",
                        "model.safetensors": "modified", "notes.py": "removed"}
    kinds = [r["kind"] for r in server.stats()["log"]]
    assert kinds.count("commits") == 25 and kinds.count("tree") == 5  # 1,203 commits in pages of 50
    assert any(s.startswith("Skipped: the trees of 1,198 commits") for s in doc["summary"]["statements"])


def test_a_detached_or_empty_git_history_is_served_and_said(tmp_path, hub_server):
    root = tmp_path / "hub"
    folder = init(root / "acme" / "detached")
    first = commit(folder, "one", "2025-01-01T00:00:00Z", {"a.txt": "1\n"})
    commit(folder, "two", "2025-01-02T00:00:00Z", {"a.txt": "2\n"})
    git(folder, "checkout", "-q", "--detach", first)
    git(folder, "branch", "-q", "-m", "main", "work")  # no branch called main any more
    empty = init(root / "acme" / "empty")
    (empty / "a.txt").write_text("working tree\n")
    store = FolderStore(root)
    assert store.notes() == [f"acme/detached: git history served; HEAD is detached at {first[:12]}: main is that "
                             "commit and its history",
                             "acme/empty: git history served; git repository without commits: the working tree is "
                             "served as one snapshot"]
    server = hub_server(root)
    api = HfApi(endpoint=server.url, token=False)
    assert [c.commit_id for c in api.list_repo_commits("acme/detached")] == [first]
    assert len(api.list_repo_commits("acme/detached", revision="work")) == 2
    assert [c.title for c in api.list_repo_commits("acme/empty")] == ["snapshot"]


def test_a_gated_or_missing_history_ends_in_one_line(cli, tmp_path, hub_server, model_repo):
    folder, _ = model_repo
    (folder / ".hub.json").write_text('{"gated": true, "tokens": ["hf_goodtoken12345"]}')
    hub_server(tmp_path / "hub")
    code, stdout, stderr = cli("history", "acme/model")
    assert code == 2 and stdout == "" and stderr == (
        "solarforensics: error: acme/model is gated and this token has no access (or no token was given) (request "
        "access on the model page, then set HF_TOKEN or run `hf auth login`)\n")
    code, _, stderr = cli("history", "acme/nope")
    assert code == 2 and stderr.startswith("solarforensics: error: repo acme/nope not found") and stderr.count("\n") == 1
    code, _, stderr = cli("history", "not a repo")
    assert code == 2 and "history reads a Hub repo or a folder" in stderr and stderr.count("\n") == 1
    assert not list(tmp_path.glob("results/*"))  # nothing half-written


def test_a_local_folder_is_one_snapshot(cli, model_repo):
    folder, _ = model_repo
    doc = history_json(cli, folder)
    assert len(doc["commits"]) == 1 and doc["commits"][0]["title"].startswith("working tree")
    assert {c["path"] for c in doc["commits"][0]["changes"]} == {"LICENSE", "README.md", "config.json", "data.txt",
                                                                 "model.safetensors"}
    assert doc["sources"][0]["kind"] == "local"


def test_the_solar_replica_history_follows_the_public_timeline(cli, hub_server):
    hub_server(replica_store())
    doc = history_json(cli, "solar")
    assert doc["replica"] is True and schema_errors(doc) == []
    commits = doc["commits"]
    assert [(c["date"][:10], c["title"]) for c in commits] == [
        ("2025-12-31", "Upload Solar-Open-100B"), ("2026-01-01", "Update license headers"),
        ("2026-01-16", "Rename license to Upstage Solar License")]
    assert commits[1]["commit"] == "ff17f06fd5fca37ad584042872a1affb3a8f0b7c"
    assert all(c["message"].startswith("SYNTHETIC replica commit") for c in commits)
    header = {d["path"]: d["diff"] for d in commits[1]["diffs"]}
    assert "+# Copyright 2025 The GLM4 & ZhipuAI.\n" in header["solar_open_tool_parser.py"]
    names = [(e["date"][:10], e["field"], e["after"]) for e in doc["timeline"] if e["before"] is not None]
    assert names == [("2026-01-16", "LICENSE title", "Upstage Solar License"),
                     ("2026-01-16", "card.license_name", "upstage-solar-license")]
    assert doc["weights_changed_after_first_upload"] == []
    glm = history_json(cli, "glm")
    assert len(glm["commits"]) == 1 and "real history is not replicated" in glm["commits"][0]["message"]


def test_the_terminal_shows_a_timeline_and_the_diffs(cli, tmp_path, hub_server, model_repo):
    hub_server(tmp_path / "hub")
    code, stdout, _ = cli("history", "acme/model")
    assert code == 0
    assert "Timeline: licence names and declared base models" in stdout and "Acme Licence" in stdout
    assert "Weight files changed after the first commit" in stdout and "+Acme Licence" in stdout
    assert "results:" in stdout and list(tmp_path.glob("results/history-*.json"))


def test_the_markdown_and_html_reports_show_the_diffs_as_text(cli, tmp_path, hub_server, model_repo):
    from solarforensics.render.html import render_html
    from solarforensics.render.markdown import render_markdown

    hub_server(tmp_path / "hub")
    doc = history_json(cli, "acme/model")
    markdown = render_markdown([doc], None)
    assert "~~~~diff\n--- LICENSE@" in markdown and "+Acme Licence" in markdown
    html = render_html([doc])
    assert "<pre>--- LICENSE@" in html and "Timeline: licence names and declared base models" in html


def test_git_lfs_pointers_are_served_as_lfs_files_with_their_objects(tmp_path, hub_server):
    import hashlib

    folder = init(tmp_path / "hub" / "acme" / "lfs")
    weights = b"\x08" + b"\x00" * 15 + b"real weight bytes"
    oid = hashlib.sha256(weights).hexdigest()
    store = folder / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4]
    store.mkdir(parents=True)
    (store / oid).write_bytes(weights)
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(weights)}\n"
    sha = commit(folder, "weights", "2025-01-01T00:00:00Z", {"model.safetensors": pointer})
    server = hub_server(tmp_path / "hub")
    api = HfApi(endpoint=server.url, token=False)
    entry = next(iter(api.list_repo_tree("acme/lfs", revision=sha)))
    assert (entry.path, entry.size, entry.lfs.sha256) == ("model.safetensors", len(weights), oid)
    path = hf_hub_download("acme/lfs", "model.safetensors", revision=sha, endpoint=server.url, token=False)
    assert open(path, "rb").read() == weights
