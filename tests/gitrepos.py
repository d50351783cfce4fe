"""Small real git repositories for tests: commits with chosen dates, authors and files (git itself writes them)."""

import os
import subprocess
from pathlib import Path


def git(folder: Path, *args: str, env: dict | None = None) -> str:
    done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, check=True,
                          env={**os.environ, **(env or {})})
    return done.stdout.strip()


def init(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    git(folder, "init", "-q", "-b", "main")
    git(folder, "config", "user.email", "dev@example.com")
    git(folder, "config", "user.name", "Dev")
    git(folder, "config", "commit.gpgsign", "false")
    return folder


def commit(folder: Path, title: str, date: str, files: dict[str, str | bytes | None], author: str = "Dev",
           body: str = "") -> str:
    """Write (or delete, for None) the files, commit them at `date` (ISO 8601) as `author`; the new sha."""
    for name, content in files.items():
        path = folder / name
        if content is None:
            git(folder, "rm", "-q", name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        git(folder, "add", name)
    env = {"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date, "GIT_AUTHOR_NAME": author,
           "GIT_COMMITTER_NAME": author}
    git(folder, "commit", "-q", "--allow-empty", "-m", title + (f"\n\n{body}" if body else ""), env=env)
    return git(folder, "rev-parse", "HEAD")


def bulk_commits(folder: Path, count: int, start: int = 1_770_000_000) -> None:
    """`count` one-file commits, one minute apart, written at once with git fast-import."""
    parts = []
    try:
        tip = git(folder, "rev-parse", "-q", "--verify", "HEAD")
    except subprocess.CalledProcessError:
        tip = ""
    for i in range(count):
        message, content = f"step {i}".encode(), f"{i}\n".encode()
        parts.append(b"commit refs/heads/main\n")
        when = start + 60 * i
        parts.append(f"author Bot <bot@example.com> {when} +0000\ncommitter Bot <bot@example.com> {when} +0000\n".encode())
        parts.append(b"data %d\n%s\n" % (len(message), message))
        if i == 0 and tip:
            parts.append(f"from {tip}\n".encode())
        parts.append(b"M 100644 inline counter.txt\ndata %d\n%s\n" % (len(content), content))
    subprocess.run(["git", "-C", str(folder), "fast-import", "--quiet"], input=b"".join(parts), check=True)
    git(folder, "reset", "-q", "--hard", "main")
