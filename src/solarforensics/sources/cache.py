"""On-disk cache of fetched tensor ranges and parsed headers, keyed by repo, commit, file, ETag and range.

Entries are written atomically (temp file + rename) and carry a SHA-256 of their bytes, so a crash, a concurrent run
or a flipped bit can cost a re-fetch but never a wrong number. There are no locks, on purpose: an entry's name is a
hash of its key and its bytes are fixed by the key, so two runs writing one entry write the same bytes, a rename
replaces a whole file, and a reader checks length and digest before trusting what it read.
"""

import hashlib
import json
import os
import secrets
from pathlib import Path

_DIGEST = 32
MAX_JSON_ENTRY = 256 << 20  # a parsed-header entry: a 100 MB safetensors header as hex, plus room


def default_cache_dir() -> Path:
    """SOLARFORENSICS_CACHE, else HF_HOME/solarforensics, else XDG_CACHE_HOME/solarforensics, else ~/.cache/..."""
    if os.environ.get("SOLARFORENSICS_CACHE"):
        return Path(os.environ["SOLARFORENSICS_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "solarforensics"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "solarforensics"


def _digest_name(key: tuple) -> str:
    return hashlib.sha256(json.dumps(key, default=str).encode()).hexdigest()


def atomic_write_bytes(path: Path, *chunks: bytes) -> None:
    """Write the chunks to `path` so that readers see the old file or the whole new one, never a part.

    No fsync: a killed process cannot tear a renamed file, and what a power cut could tear, the entry's own SHA-256
    rejects on the next read (one re-fetch), so syncing every small range would cost time and buy nothing."""
    # The temp name is known before the file exists, so a Ctrl-C landing anywhere after its creation removes it.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class RangeCache:
    """Content-checked blobs under `root/ranges` and JSON under `root/headers`."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()

    def _path(self, kind: str, key: tuple) -> Path:
        name = _digest_name(key)
        return self.root / kind / name[:2] / name

    def get(self, key: tuple, expected_len: int) -> bytearray | None:
        path = self._path("ranges", key)
        try:
            with open(path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                # The size is checked before allocating: a damaged or planted file must not cost its size in memory.
                blob = bytearray(size) if size == expected_len + _DIGEST else bytearray()
                got = handle.readinto(blob) if blob else 0
        except OSError:
            return None
        ok = got == len(blob) == expected_len + _DIGEST
        if ok:
            view = memoryview(blob)
            body, digest = view[:-_DIGEST], view[-_DIGEST:]
            ok = hashlib.sha256(body).digest() == bytes(digest)
            body.release(), digest.release(), view.release()
        if not ok:
            path.unlink(missing_ok=True)  # damaged entry: drop it and fetch again
            return None
        del blob[-_DIGEST:]
        return blob

    def put(self, key: tuple, data: bytes | bytearray) -> None:
        try:
            atomic_write_bytes(self._path("ranges", key), data, hashlib.sha256(data).digest())
        except OSError:
            pass  # a read-only or full cache costs speed, not correctness

    def get_json(self, key: tuple):
        path = self._path("headers", key)
        try:
            if path.stat().st_size > MAX_JSON_ENTRY:
                raise ValueError
            record = json.loads(path.read_text())
            payload = record["payload"]
            if record["sha256"] != hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest():
                raise ValueError
            return payload
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            return None

    def put_json(self, key: tuple, payload) -> None:
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
        try:
            atomic_write_bytes(self._path("headers", key), json.dumps({"sha256": digest, "payload": payload}).encode())
        except OSError:
            pass
