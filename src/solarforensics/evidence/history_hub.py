"""A Hub repo's history as huggingface_hub reads it: the commit listing (paginated, stopped at a bound), the tree of
any commit (files with their git blob ids and LFS object ids), and small text files at any commit."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

from huggingface_hub import hf_hub_url
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import get_session, hf_raise_for_status

from solarforensics.errors import FormatError, SpecError
from solarforensics.sources import hub
from solarforensics.sources.base import Provenance
from solarforensics.sources.http import with_retries
from solarforensics.sources.hub import hub_client, hub_errors
from solarforensics.sources.spec import local_path, parse_hub_spec

MAX_LISTED = 10_000  # commits listed at most; a longer history is cut here and the cut is stated
TEXT_LIMIT = 1 << 20  # text files larger than this are not read (their object ids still show every change)


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    date: str  # ISO 8601, as the Hub gives it
    title: str
    message: str
    authors: tuple[str, ...]


@dataclass(frozen=True)
class TreeFile:
    path: str
    size: int
    oid: str  # the LFS object id (sha256) for LFS files, else the git blob id: what identifies the content
    lfs: bool


class HubHistory:
    """One repo on one endpoint; every request is counted in `provenance`."""

    def __init__(self, spec: str, endpoint: str | None = None, token: str | None = None):
        from solarforensics.families.aliases import expand_alias

        parsed = parse_hub_spec(expand_alias(spec).removeprefix("hf:"))
        if parsed is None:
            raise SpecError(f"history reads a Hub repo or a folder; {spec!r} is neither (owner/name[@rev], an alias "
                            "or a folder)", hint="to read a local git folder's history, serve its parent with "
                                                 "`solarforensics hub serve ROOT` and set HF_ENDPOINT")
        self.repo, revision = parsed
        self.revision = revision or "main"
        # As for a HubSource: credentials in the endpoint become a header, the token lives only in headers.
        self.endpoint, self._headers, self._api = hub_client(endpoint, token)
        self.provenance = Provenance(spec=spec, kind="hub", repo=self.repo, endpoint=self.endpoint,
                                     requested_revision=self.revision)

    def resolve(self) -> str:
        """The commit sha of the requested revision (one model_info request)."""
        with hub_errors(self.repo, self.revision, self.endpoint):
            sha = with_retries(lambda: self._api.model_info(self.repo, revision=self.revision,
                                                            timeout=hub.TIMEOUT_S), hub.HTTP_RETRIES).sha
        self.provenance.count(requests=1)
        self.provenance.resolved_commit = sha
        return sha

    def list_commits(self, limit: int = MAX_LISTED) -> tuple[list[CommitInfo], bool]:
        """Commits newest first, following the listing's `Link: rel="next"` pages; (commits, cut short)."""
        url = f"{self.endpoint}/api/models/{self.repo}/commits/{quote(self.revision, safe='')}"
        found: list[CommitInfo] = []
        with hub_errors(self.repo, self.revision, self.endpoint):
            while url:
                response = self._get(url, self._headers)
                page = response.json()
                if not isinstance(page, list):
                    raise FormatError(f"{self.endpoint} answered the commit listing of {self.repo} with no list")
                found += [_commit(item) for item in page]
                url = response.links.get("next", {}).get("url")
                if len(found) >= limit:
                    return found[:limit], bool(url) or len(found) > limit
        if found:
            self.provenance.resolved_commit = found[0].sha
        return found, False

    def tree(self, sha: str) -> dict[str, TreeFile]:
        """Every file of a commit (recursive listing)."""
        with hub_errors(self.repo, sha, self.endpoint):
            entries = with_retries(lambda: list(self._api.list_repo_tree(self.repo, revision=sha, recursive=True)),
                                   hub.HTTP_RETRIES)
        self.provenance.count(requests=1)
        files = {}
        for entry in entries:
            if isinstance(entry, RepoFile):
                lfs = entry.lfs is not None
                files[entry.path] = TreeFile(entry.path, entry.size, entry.lfs.sha256 if lfs else entry.blob_id, lfs)
        return files

    def read_text(self, path: str, sha: str, size: int) -> tuple[str | None, str | None]:
        """(text, None), or (None, why it was not read): too large, binary, or not UTF-8."""
        if size > TEXT_LIMIT:
            return None, f"over the {TEXT_LIMIT:,}-byte limit for text"
        url = hf_hub_url(self.repo, path, revision=sha, endpoint=self.endpoint)
        with hub_errors(self.repo, sha, self.endpoint):
            response = self._get(url, {**self._headers, "Accept-Encoding": "identity"})
        return decode_text(response.content[: TEXT_LIMIT + 1])

    def _get(self, url: str, headers: dict):
        """One GET under the same retry and time bounds as every request of a Hub source."""
        def once():
            response = get_session().get(url, headers=headers, timeout=hub.TIMEOUT_S)
            self.provenance.count(nbytes=len(response.content), requests=1 + len(response.history))
            hf_raise_for_status(response)
            return response

        return with_retries(once, hub.HTTP_RETRIES)


def decode_text(data: bytes) -> tuple[str | None, str | None]:
    if len(data) > TEXT_LIMIT:
        return None, f"over the {TEXT_LIMIT:,}-byte limit for text"
    if b"\x00" in data:
        return None, "binary content (NUL bytes), not diffed"
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        return None, "not UTF-8 text, not diffed"


def _commit(item: dict) -> CommitInfo:
    try:
        authors = tuple(str(a.get("user")) for a in item.get("authors") or [] if isinstance(a, dict))
        return CommitInfo(str(item["id"]), str(item.get("date") or ""), str(item.get("title") or ""),
                          str(item.get("message") or ""), authors)
    except (KeyError, AttributeError, TypeError) as exc:
        raise FormatError(f"a commit of the listing is malformed ({type(exc).__name__}: {exc})") from None


LFS_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx")


def is_lfs_path(name: str, size: int) -> bool:
    """Where the Hub would keep a file in LFS: weights, and anything over 10 MB."""
    return name.lower().endswith(LFS_SUFFIXES) or size > 10 << 20


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


SNAPSHOT_HASH_LIMIT = 64 << 20  # larger local files are identified by size only (hashing 100 GB is not a look)
SNAPSHOT_TITLE = "working tree (a local folder has no commit history here)"


class FolderSnapshot:
    """A local folder read as a history of one commit: its files as they are now."""

    def __init__(self, folder: Path, spec: str):
        self.folder, self.repo, self.revision = folder, folder.name, "working tree"
        self.provenance = Provenance(spec=spec, kind="local", path=str(folder))

    def list_commits(self, limit: int = MAX_LISTED) -> tuple[list[CommitInfo], bool]:
        files = self._files()
        digest = hashlib.sha1("".join(f"{f.path}\0{f.oid}\n" for f in files.values()).encode()).hexdigest()
        newest = max((p.stat().st_mtime for p in self._paths()), default=0.0)
        when = datetime.fromtimestamp(newest, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        self._tree = files
        self.provenance.resolved_commit = digest
        return [CommitInfo(digest, when, SNAPSHOT_TITLE, "", ("local",))], False

    def tree(self, sha: str) -> dict[str, TreeFile]:
        return self._tree

    def read_text(self, path: str, sha: str, size: int) -> tuple[str | None, str | None]:
        if size > TEXT_LIMIT:
            return None, f"over the {TEXT_LIMIT:,}-byte limit for text"
        data = (self.folder / path).read_bytes()
        self.provenance.count(nbytes=len(data))
        return decode_text(data)

    def _paths(self) -> list[Path]:
        return sorted(p for p in self.folder.rglob("*") if p.is_file()
                      and not any(part.startswith(".") for part in p.relative_to(self.folder).parts))

    def _files(self) -> dict[str, TreeFile]:
        files = {}
        for path in self._paths():
            name, size = path.relative_to(self.folder).as_posix(), path.stat().st_size
            lfs = is_lfs_path(name, size)
            if size > SNAPSHOT_HASH_LIMIT:
                oid = f"size:{size}"
            else:
                data = path.read_bytes()
                oid = hashlib.sha256(data).hexdigest() if lfs else git_blob_sha1(data)
            files[name] = TreeFile(name, size, oid, lfs)
        return files


def history_reader(spec: str, endpoint: str | None = None, token: str | None = None):
    """A local folder as a one-commit snapshot, anything else as a Hub repo."""
    path = local_path(spec)
    if path.is_dir():
        return FolderSnapshot(path, spec)
    return HubHistory(spec, endpoint, token)
