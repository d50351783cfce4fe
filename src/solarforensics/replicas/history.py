"""A replica's commit history (configs/replicas/<repo>/history.toml): commits that follow the public timeline, each
with its date, title, author and message, and the files as they were. Replicas without a history file have one
commit, labelled as such."""

from __future__ import annotations

import tomllib
from datetime import datetime
from pathlib import Path

from solarforensics.errors import FormatError
from solarforensics.localhub.store import Commit, Repo, RepoFile

HISTORY_FILE = "history.toml"
UNREPLICATED = ("Synthetic replica: one commit holding the current files (this repo's real history is not "
                "replicated).")


def replica_repo(repo_id: str, folder: Path, files: list[RepoFile], last_modified: float,
                 small_file) -> Repo:
    """The repo with `files` as main; earlier commits from history.toml when the replica has one."""
    path = folder / HISTORY_FILE
    if not path.is_file():
        main = Commit.from_files(files, last_modified, title="Upload folder", message=UNREPLICATED,
                                 authors=("solarforensics-replica",))
        return Repo(repo_id, {"main": main})
    try:
        entries = tomllib.loads(path.read_text(encoding="utf-8")).get("commit", [])
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise FormatError(f"replica history {path} is malformed: {exc}") from exc
    if not entries or entries[-1].get("files"):
        raise FormatError(f"replica history {path}: the last commit is main and must hold the current files")
    state = {f.path: f for f in files}
    commits: list[Commit] = []
    for number, entry in enumerate(entries):
        if number == len(entries) - 1:
            state = {f.path: f for f in files}
        for name, source in (entry.get("files") or {}).items():
            if source:
                state[name] = small_file(name, (folder / source).read_bytes())
            else:
                state.pop(name, None)
        meta = dict(title=entry["title"], message=entry.get("message", "").strip(),
                    authors=(entry.get("author", "solarforensics-replica"),),
                    parents=(commits[-1].sha,) if commits else ())
        when = datetime.fromisoformat(entry["date"].replace("Z", "+00:00")).timestamp()
        commit = Commit.from_files(state.values(), when, **meta)
        if entry.get("sha"):
            commit = Commit(entry["sha"], commit.files, when, **meta)
        commits.append(commit)
    return Repo(repo_id, {"main": commits[-1]}, commits={c.sha: c for c in commits})
