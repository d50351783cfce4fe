"""What the local Hub answers, independent of HTTP plumbing: access rules, JSON documents, byte ranges."""

from __future__ import annotations

import re
import time
from typing import Iterable

from solarforensics.localhub.store import Commit, Repo, RepoFile, RepoStore

MAX_CARD_SIZE = 1 << 20
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class HttpError(Exception):
    """An error answer; `code` becomes X-Error-Code, which huggingface_hub maps to its exception classes."""

    def __init__(self, status: int, code: str | None, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def open_commit(store: RepoStore, repo_id: str, rev: str, token: str | None) -> tuple[Repo, Commit]:
    """The repo and commit, or the error the Hub gives this caller (401 when anonymous, 403/404 with a token)."""
    repo = store.get(repo_id)
    if repo is None or (repo.private and token not in repo.tokens):
        raise HttpError(404 if token else 401, "RepoNotFound", f"Repository {repo_id} not found")
    if repo.gated and token not in repo.tokens:
        raise HttpError(403 if token else 401, "GatedRepo", f"Access to model {repo_id} is restricted")
    commit = repo.resolve(rev)
    if commit is None:
        raise HttpError(404, "RevisionNotFound", f"Invalid rev id: {rev}")
    return repo, commit


def entry_not_found(path: str, commit: Commit) -> HttpError:
    # X-Repo-Commit lets hf_hub_download cache the fact that the file does not exist.
    return HttpError(404, "EntryNotFound", f"{path} does not exist at {commit.sha}", {"X-Repo-Commit": commit.sha})


def model_info(repo: Repo, commit: Commit) -> dict:
    """The `/api/models/{repo}[/revision/{rev}]` document."""
    card = card_data(commit)
    tags = [str(t) for t in (card or {}).get("tags") or [] if isinstance(t, (str, int, float))]
    tags += [fmt for fmt in ("safetensors", "gguf") if any(p.endswith(f".{fmt}") for p in commit.files)]
    info = {
        "_id": commit.sha[:24], "id": repo.id, "modelId": repo.id, "author": repo.id.split("/")[0],
        "sha": commit.sha, "lastModified": _iso_time(commit.last_modified), "private": repo.private,
        "createdAt": _iso_time(commit.last_modified),
        "gated": "manual" if repo.gated else False, "disabled": False, "downloads": 0, "likes": 0, "tags": tags,
        "library_name": (card or {}).get("library_name"),
        "siblings": [_sibling(f) for f in commit.files.values()],
    }
    if card is not None:
        info["cardData"] = card
    return info


COMMITS_PAGE = 50  # commits per page of the listing; the Hub's own page size is not documented
MAX_COMMITS_PAGE = 1000


def commit_page(repo: Repo, commit: Commit, page: int, limit: int) -> tuple[list[dict], bool]:
    """One page of `/api/models/{repo}/commits/{rev}`: the commit and its ancestors, newest first, and whether
    another page follows (the handler then sends a `Link: <...>; rel="next"` header, as the Hub does)."""
    limit = max(1, min(limit, MAX_COMMITS_PAGE))
    entries = []
    for index, found in enumerate(repo.history(commit)):
        if index >= (page + 1) * limit:
            return entries, True
        if index >= page * limit:
            entries.append({"id": found.sha, "title": found.title, "message": found.message,
                            "authors": [{"user": author, "avatar": None} for author in found.authors],
                            "date": _iso_time(found.last_modified)})
    return entries, False


def tree_entries(commit: Commit, path: str, recursive: bool) -> list[dict]:
    """The `/tree/{rev}/{path}` listing: children of `path`, or everything below it when recursive."""
    prefix = f"{path.strip('/')}/" if path.strip("/") else ""
    below = [f for p, f in commit.files.items() if p.startswith(prefix)]
    if prefix and not below:
        raise entry_not_found(path, commit)
    entries: dict[str, dict] = {}
    for file in below:
        parts = file.path[len(prefix):].split("/")
        for depth in range(1, len(parts) if recursive else min(2, len(parts))):
            folder = prefix + "/".join(parts[:depth])
            entries.setdefault(folder, _folder_entry(commit, folder))
        if recursive or len(parts) == 1:
            entries[file.path] = _file_entry(file)
    return [entries[p] for p in sorted(entries)]


def paths_info_entries(commit: Commit, paths: Iterable[str]) -> list[dict]:
    """The `/paths-info/{rev}` answer: one entry per existing file or folder; missing paths are left out."""
    entries = []
    for path in dict.fromkeys(p.strip("/") for p in paths):
        if path in commit.files:
            entries.append(_file_entry(commit.files[path]))
        elif any(p.startswith(f"{path}/") for p in commit.files):
            entries.append(_folder_entry(commit, path))
    return entries


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end_exclusive) for a single `bytes=a-b`, `a-` or `-n` range; None without a header; 416 otherwise."""
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    unsatisfiable = HttpError(416, None, f"range {header} not satisfiable for {size} bytes",
                              {"Content-Range": f"bytes */{size}"})
    if not match or match.groups() == ("", ""):
        raise unsatisfiable
    first, last = match.groups()
    if not first:
        if int(last) == 0 or size == 0:
            raise unsatisfiable
        return max(0, size - int(last)), size
    start = int(first)
    if start >= size or (last and int(last) < start):
        raise unsatisfiable
    return start, min(int(last) + 1, size) if last else size


def card_data(commit: Commit) -> dict | None:
    """The YAML front matter of README.md, as the Hub returns it in `cardData`."""
    readme = commit.files.get("README.md")
    if readme is None or readme.size > MAX_CARD_SIZE:
        return None
    text = readme.read(0, readme.size).decode("utf-8", "replace")
    end = text.find("\n---", 3)
    if not text.startswith("---") or end < 0:
        return None
    import yaml  # a dependency of huggingface_hub; only needed when a card is served

    try:
        data = yaml.safe_load(text[3:end])
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


def _iso_time(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(timestamp))


def _sibling(file: RepoFile) -> dict:
    sibling = {"rfilename": file.path, "size": file.size, "blobId": file.blob_id}
    if file.lfs:
        sibling["lfs"] = {"size": file.size, "sha256": file.etag, "pointerSize": len(file.lfs_pointer)}
    return sibling


def _file_entry(file: RepoFile) -> dict:
    entry = {"type": "file", "oid": file.blob_id, "size": file.size, "path": file.path}
    if file.lfs:
        entry["lfs"] = {"oid": file.etag, "size": file.size, "pointerSize": len(file.lfs_pointer)}
    return entry


def _folder_entry(commit: Commit, folder: str) -> dict:
    inside = Commit.from_files(f for p, f in commit.files.items() if p.startswith(f"{folder}/"))
    return {"type": "directory", "oid": inside.sha, "path": folder}
