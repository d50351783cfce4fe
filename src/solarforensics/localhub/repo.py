"""What the local Hub serves, as data: files (bytes from anywhere), commits (snapshots with history) and repos."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

SHA_PATTERN = re.compile(r"[0-9a-f]{40}")
LFS_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".pth", ".pkl", ".ckpt", ".h5", ".msgpack")
LFS_MIN_SIZE = 1 << 20


@dataclass(frozen=True)
class RepoFile:
    """One file of a commit; its bytes come from `reader(start, end_exclusive)` so they may live on disk or nowhere."""

    path: str
    size: int
    etag: str  # unquoted: sha256 hex for LFS files, git blob sha1 for plain files
    lfs: bool
    reader: Callable[[int, int], bytes] | None = field(default=None, repr=False, compare=False)

    def read(self, start: int, end: int) -> bytes:
        return self.reader(start, end)

    @property
    def lfs_pointer(self) -> str:
        """The git-lfs pointer text the Hub stores in git in place of an LFS file."""
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.etag}\nsize {self.size}\n"

    @property
    def blob_id(self) -> str:
        """Git blob id, as the Hub reports it in listings (of the pointer, for LFS files)."""
        return git_blob_sha1(self.lfs_pointer.encode()) if self.lfs else self.etag


@dataclass(frozen=True)
class Commit:
    """A snapshot of a repo: its sha, files by path, and what the commit listing shows of it."""

    sha: str
    files: Mapping[str, RepoFile]  # may load on first use (git folders: a tree is listed only when asked for)
    last_modified: float = 0.0  # unix time, shown as lastModified and as the commit's date
    title: str = "snapshot"
    message: str = ""
    authors: tuple[str, ...] = ("local",)
    parents: tuple[str, ...] = ()  # shas, first parent first: the history the commit listing walks

    @classmethod
    def from_files(cls, files: Iterable[RepoFile], last_modified: float = 0.0, **meta) -> Commit:
        """A commit whose sha is a deterministic sha1 over its sorted (path, etag) pairs (and its parents, if any)."""
        ordered = sorted(files, key=lambda f: f.path)
        digest = hashlib.sha1()
        for f in ordered:
            digest.update(f"{f.path}\0{f.etag}\n".encode())
        for parent in meta.get("parents", ()):
            digest.update(f"parent {parent}\n".encode())
        return cls(digest.hexdigest(), {f.path: f for f in ordered}, last_modified, **meta)


@dataclass
class Repo:
    """A model repo: branches pointing at commits, every commit of their histories by sha, plus access settings."""

    id: str
    refs: dict[str, Commit]
    gated: bool = False
    private: bool = False
    tokens: set[str] = field(default_factory=set)
    commits: dict[str, Commit] = field(default_factory=dict)  # older commits; branch heads are added on creation

    def __post_init__(self) -> None:
        for commit in self.refs.values():
            self.commits.setdefault(commit.sha, commit)

    def resolve(self, rev: str) -> Commit | None:
        """The commit for a branch name or for the full sha of any of this repo's commits."""
        if rev in self.refs:
            return self.refs[rev]
        if SHA_PATTERN.fullmatch(rev):
            return self.commits.get(rev)
        return None

    def history(self, commit: Commit) -> Iterator[Commit]:
        """The commit and its first-parent ancestors, newest first (a parent this repo does not hold ends it)."""
        seen: set[str] = set()
        while commit is not None and commit.sha not in seen:
            seen.add(commit.sha)
            yield commit
            commit = self.commits.get(commit.parents[0]) if commit.parents else None


class RepoStore(Protocol):
    """Where the server finds repos; re-asked on every request so repos may change between requests."""

    def get(self, repo_id: str) -> Repo | None: ...

    def repo_ids(self) -> list[str]: ...


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs_path(path: str, size: int) -> bool:
    return path.lower().endswith(LFS_SUFFIXES) or size > LFS_MIN_SIZE
