"""A model folder that is a git repository, served with its git history: each commit's files as git holds them (git-lfs
pointers resolved from .git/lfs/objects), its date, author, title and parents, and branches as refs.

`main` is the branch named main when there is one, else whatever HEAD points at (a detached HEAD included). A
repository without any commit is served as a plain folder by the caller; `notes()` says which case applies.
"""

from __future__ import annotations

import hashlib
import subprocess
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from functools import partial
from pathlib import Path

from solarforensics.localhub.repo import Commit, Repo, RepoFile, is_lfs_path

GIT_TIMEOUT_S = 60
LFS_POINTER_MAX = 1024  # git-lfs pointers are ~130 bytes; anything larger is a real file
_FIELD, _RECORD = "\x1f", "\x1e"
_LOG_FORMAT = f"%H{_FIELD}%P{_FIELD}%an{_FIELD}%ct{_FIELD}%s{_FIELD}%b{_RECORD}"
_BLOB_CACHE_BYTES = 256 << 20


class GitError(Exception):
    """git failed or is missing; the message is one line."""


def is_git_folder(folder: Path) -> bool:
    return (folder / ".git").exists()


def git(folder: Path, *args: str, data: bool = False) -> bytes | str:
    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, timeout=GIT_TIMEOUT_S,
                              check=False)
    except FileNotFoundError:
        raise GitError("git is not installed") from None
    except subprocess.TimeoutExpired:
        raise GitError(f"git {args[0]} took over {GIT_TIMEOUT_S} s") from None
    if done.returncode != 0:
        raise GitError(done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:][0] if done.stderr
                       else f"git {args[0]} failed")
    return done.stdout if data else done.stdout.decode("utf-8", "replace")


class GitHistory:
    """Reads one git folder; the commit graph is re-read only when .git's refs change."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._signature: tuple | None = None
        self._state: tuple[dict[str, Commit], dict[str, Commit], str] | None = None
        self._lock = threading.Lock()
        self._blobs: OrderedDict[str, bytes] = OrderedDict()
        self._blob_bytes = 0
        self._sha256: dict[str, str] = {}

    # -- refs and commits ------------------------------------------------------------------------------------------

    def state(self) -> tuple[dict[str, Commit], dict[str, Commit], str]:
        """(refs, every commit by sha, a note on how main was chosen); refs is empty for a repo with no commit."""
        signature = self._refs_signature()
        with self._lock:
            if self._state is None or signature != self._signature:
                self._state, self._signature = self._read(), signature
            return self._state

    def _refs_signature(self) -> tuple:
        dot_git = self.folder / ".git"
        stamps = []
        for path in (dot_git / "HEAD", dot_git / "packed-refs", dot_git / "refs" / "heads", dot_git / "shallow"):
            try:
                stat = path.stat()
                stamps.append((stat.st_mtime_ns, stat.st_size))
            except OSError:
                stamps.append(None)
        heads = dot_git / "refs" / "heads"
        if heads.is_dir():
            stamps += sorted((p.name, p.stat().st_mtime_ns) for p in heads.rglob("*") if p.is_file())
        return tuple(map(str, stamps))

    def _read(self) -> tuple[dict[str, Commit], dict[str, Commit], str]:
        head = self._rev_parse("HEAD")
        branches = {}
        for line in git(self.folder, "for-each-ref", "--format=%(refname:short) %(objectname)", "refs/heads").splitlines():
            name, _, sha = line.rpartition(" ")
            if name and sha:
                branches[name] = sha
        if head is None and not branches:
            return {}, {}, "git repository without commits: the working tree is served as one snapshot"
        tips = sorted(set(branches.values()) | ({head} if head else set()))
        commits = self._log(tips)
        branch = git(self.folder, "symbolic-ref", "-q", "--short", "HEAD").strip() if self._attached() else None
        if "main" in branches:
            main, note = branches["main"], "main is the branch main"
        elif head:
            main = head
            note = (f"main is the checked-out branch {branch}" if branch else
                    f"HEAD is detached at {head[:12]}: main is that commit and its history")
        else:
            first = sorted(branches)[0]
            main, note = branches[first], f"HEAD points at no commit: main is branch {first}"
        refs = {name: commits[sha] for name, sha in branches.items() if sha in commits}
        refs["main"] = commits[main]
        return refs, commits, note

    def _attached(self) -> bool:
        try:
            git(self.folder, "symbolic-ref", "-q", "HEAD")
            return True
        except GitError:
            return False

    def _rev_parse(self, rev: str) -> str | None:
        try:
            return git(self.folder, "rev-parse", "-q", "--verify", f"{rev}^{{commit}}").strip() or None
        except GitError:
            return None

    def _log(self, tips: list[str]) -> dict[str, Commit]:
        text = git(self.folder, "log", "-z", f"--format={_LOG_FORMAT}", *tips, "--")
        commits = {}
        for record in text.split(_RECORD):
            record = record.strip("\x00\n")
            if not record:
                continue
            sha, parents, author, when, title, body = (record.split(_FIELD) + [""] * 6)[:6]
            commits[sha] = Commit(sha, _LazyTree(self, sha), float(when or 0), title, body.strip(), (author,),
                                  tuple(parents.split()))
        return commits

    # -- trees and blobs -------------------------------------------------------------------------------------------

    def tree(self, sha: str) -> dict[str, RepoFile]:
        files = {}
        listing = git(self.folder, "ls-tree", "-r", "-l", "-z", sha)
        for entry in listing.split("\x00"):
            if not entry:
                continue
            meta, _, path = entry.partition("\t")
            mode, kind, blob, size = meta.split()
            if kind != "blob" or mode == "120000" or any(part.startswith(".") for part in path.split("/")):
                continue  # submodules, symlinks and dot-files (.gitattributes) are not served, as for plain folders
            files[path] = self._file(path, blob, int(size))
        return files

    def _file(self, path: str, blob: str, size: int) -> RepoFile:
        if size <= LFS_POINTER_MAX:
            pointer = _lfs_pointer(self.read_blob(blob))
            if pointer:
                oid, real_size = pointer
                return RepoFile(path, real_size, oid, True, partial(self._read_lfs, oid))
        lfs = is_lfs_path(path, size)
        etag = self._sha256_of(blob) if lfs else blob
        return RepoFile(path, size, etag, lfs, partial(self._read_blob_range, blob))

    def _sha256_of(self, blob: str) -> str:
        if blob not in self._sha256:
            self._sha256[blob] = hashlib.sha256(self.read_blob(blob)).hexdigest()
        return self._sha256[blob]

    def read_blob(self, blob: str) -> bytes:
        with self._lock:
            if blob in self._blobs:
                self._blobs.move_to_end(blob)
                return self._blobs[blob]
        data = git(self.folder, "cat-file", "blob", blob, data=True)
        with self._lock:
            self._blobs[blob] = data
            self._blob_bytes += len(data)
            while self._blob_bytes > _BLOB_CACHE_BYTES and len(self._blobs) > 1:
                self._blob_bytes -= len(self._blobs.popitem(last=False)[1])
        return data

    def _read_blob_range(self, blob: str, start: int, end: int) -> bytes:
        return self.read_blob(blob)[start:end]

    def _read_lfs(self, oid: str, start: int, end: int) -> bytes:
        path = self.folder / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
        if not path.is_file():
            raise FileNotFoundError(f"git-lfs object {oid[:12]} is not in {self.folder.name}/.git/lfs (run git lfs pull)")
        with open(path, "rb") as handle:
            handle.seek(start)
            return handle.read(end - start)


class _LazyTree(Mapping):
    """A commit's files, listed from git the first time they are needed (a listing of thousands of commits reads
    no tree)."""

    def __init__(self, history: GitHistory, sha: str):
        self._history, self._sha, self._files = history, sha, None

    def _load(self) -> dict[str, RepoFile]:
        if self._files is None:
            self._files = self._history.tree(self._sha)
        return self._files

    def __getitem__(self, path: str) -> RepoFile:
        return self._load()[path]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


def _lfs_pointer(data: bytes) -> tuple[str, int] | None:
    if not data.startswith(b"version https://git-lfs.github.com/spec/"):
        return None
    fields = dict(line.split(" ", 1) for line in data.decode("ascii", "replace").splitlines() if " " in line)
    oid, size = fields.get("oid", ""), fields.get("size", "")
    if not (oid.startswith("sha256:") and size.isdigit()):
        return None
    return oid.removeprefix("sha256:"), int(size)


def git_repo(history: GitHistory, repo_id: str, **settings) -> Repo | None:
    """The Repo of a git folder, or None when it has no commit (the caller then serves the working tree)."""
    refs, commits, _ = history.state()
    if not refs:
        return None
    return Repo(repo_id, dict(refs), commits=dict(commits), **settings)
