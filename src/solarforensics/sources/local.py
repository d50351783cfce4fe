"""Tensors from a local folder or a single .safetensors file, read with positioned reads (no whole-file loads)."""

import os
from pathlib import Path

from solarforensics.errors import FormatError, NotFoundError
from solarforensics.sources.base import FileRecord, Provenance, TensorSource
from solarforensics.sources.layout import PICKLE_SUFFIXES, check_index, merge_headers, refuse_pickle, weight_files
from solarforensics.sources.safetensors_format import header_length, parse_header


def read_file_range(path: Path, start: int, end: int) -> bytearray:
    """Bytes [start, end) of a local file with one positioned read; a short file is a FormatError."""
    buf = bytearray(end - start)
    with open(path, "rb") as handle:
        got = os.preadv(handle.fileno(), [buf], start) if end > start else 0
    if got != end - start:
        raise FormatError(f"{path.name}: file is shorter than its header says (wanted bytes {start}-{end})")
    return buf


def model_boundary(folder: Path) -> Path:
    """Where a model folder's files may live: the folder itself (resolved), or, for a snapshot in huggingface_hub's
    cache (models--owner--name/snapshots/<sha>/, whose files link to ../../blobs/), the repo's cache folder."""
    resolved = folder.resolve()
    return resolved.parent.parent if resolved.parent.name == "snapshots" else resolved


class LocalSource(TensorSource):
    """A checkpoint folder (sharded or not) or one .safetensors file."""

    def __init__(self, path: Path, spec: str | None = None, max_gap: int | None = None, workers: int | None = None):
        path = Path(path)
        self.spec = spec or str(path)
        self.name = path.name if path.name else str(path)
        if not path.exists():
            raise NotFoundError(f"{path}: no such file or folder")
        if path.is_file():
            if path.name.endswith(PICKLE_SUFFIXES):
                refuse_pickle(str(path))
            if not path.name.endswith(".safetensors"):
                raise FormatError(f"{path}: not a .safetensors file or a checkpoint folder")
            self.root, shards, weight_map = path.parent, [path.name], None
            self.boundary = path.resolve()  # the file the user named, wherever it links to, and nothing else
        else:
            self.root = path
            self.boundary = model_boundary(path)
            files = self.list_files()
            shards, weight_map = weight_files(files, self.read_json, str(path))
        if max_gap is not None:
            self.max_gap = max_gap
        if workers is not None:
            self.workers = workers
        self.provenance = Provenance(spec=self.spec, kind="local", path=str(path.resolve()))
        self.cache = None  # local reads are as fast as a cache
        headers = {}
        for shard in shards:
            size = (self.root / shard).stat().st_size
            self.provenance.files[shard] = FileRecord(shard, size)
            headers[shard] = self._read_header(shard, size)
        self.tensors = merge_headers(headers, str(path))
        check_index(weight_map, self.tensors, str(path))
        self.config = self.read_json("config.json") if path.is_dir() else None

    def _read_header(self, shard: str, size: int):
        prefix = self._fetch(shard, 0, min(8, size))
        n = header_length(prefix, shard, size)
        tensors, _ = parse_header(bytes(self._fetch(shard, 8, 8 + n)), shard, size)
        return tensors

    def list_files(self) -> list[str]:
        """The folder's own files (never its subfolders'), leaving out hidden ones and links leading out of it."""
        return sorted(p.name for p in self.root.iterdir() if not p.name.startswith(".") and self._inside(p.name))

    def _inside(self, file: str) -> Path | None:
        """`root / file` if it is a file that resolves inside the model's boundary, else None: a LICENSE, config or
        shard that links to /etc/passwd or another user's files is never read."""
        path = self.root / file
        try:
            resolved = path.resolve(strict=True)
        except (OSError, RuntimeError):  # missing, a broken link, a link loop
            return None
        if resolved != self.boundary and self.boundary not in resolved.parents:
            return None
        return path if resolved.is_file() else None

    def _fetch(self, file: str, start: int, end: int) -> bytearray:
        path = self._inside(file)
        if path is None:
            raise FormatError(f"{self.root / file}: not a file inside the model folder (a link out of it is never "
                              "followed)")
        buf = read_file_range(path, start, end)
        self.provenance.count(nbytes=len(buf), requests=1, ranges=1)
        return buf

    def _read_small(self, filename: str, max_bytes: int) -> bytes | None:
        path = self._inside(filename)
        if path is None:
            return None
        if path.stat().st_size > max_bytes:
            raise FormatError(f"{path}: {path.stat().st_size:,} bytes, over the {max_bytes:,}-byte limit for {filename}")
        return path.read_bytes()
