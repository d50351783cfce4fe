"""What every source offers: config, tensor refs, tensor reads, small files, and a record of what it read."""

import bisect
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch

from solarforensics.errors import FormatError, NotFoundError, redact
from solarforensics.sources.cache import RangeCache
from solarforensics.sources.ranges import (
    DEFAULT_MAX_GAP,
    DEFAULT_MAX_SPAN,
    DEFAULT_WORKERS,
    Span,
    fetch_spans,
    plan_spans,
)
from solarforensics.sources.safetensors_format import TensorRef, tensor_from_bytes

MAX_TEXT_FILE_BYTES = 64 << 20  # config/tokenizer/licence files: tokenizer.json of big vocabularies is ~20 MB


@dataclass
class FileRecord:
    name: str
    size: int
    etag: str | None = None


@dataclass
class Provenance:
    """What a source read: identity (spec, repo, commit) and cost (bytes, requests, ranges, cache hits)."""

    spec: str
    kind: str
    repo: str | None = None
    path: str | None = None
    endpoint: str | None = None
    requested_revision: str | None = None
    resolved_commit: str | None = None
    files: dict[str, FileRecord] = field(default_factory=dict)
    bytes_transferred: int = 0
    requests: int = 0
    ranges: int = 0
    cache_hits: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, nbytes: int = 0, requests: int = 0, ranges: int = 0, cache_hits: int = 0) -> None:
        with self._lock:
            self.bytes_transferred += nbytes
            self.requests += requests
            self.ranges += ranges
            self.cache_hits += cache_hits

    def as_dict(self) -> dict:
        return {
            "spec": self.spec,
            "kind": self.kind,
            "repo": self.repo,
            "path": self.path,
            "endpoint": redact(self.endpoint) if self.endpoint else None,
            "requested_revision": self.requested_revision,
            "resolved_commit": self.resolved_commit,
            "files": [vars(f).copy() for f in sorted(self.files.values(), key=lambda f: f.name)],
            "bytes_transferred": self.bytes_transferred,
            "requests": self.requests,
            "ranges": self.ranges,
            "cache_hits": self.cache_hits,
        }


class TensorSource:
    """Base of every source. Subclasses fill `tensors`, `config`, `provenance` and implement `_fetch` and `_read_small`."""

    name: str
    spec: str
    config: dict | None
    tensors: dict[str, TensorRef]
    provenance: Provenance
    cache: RangeCache | None = None
    cache_namespace: tuple = ()
    max_gap: int = DEFAULT_MAX_GAP
    max_span: int = DEFAULT_MAX_SPAN
    workers: int = DEFAULT_WORKERS

    def _fetch(self, file: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of one weight file, checked to be exactly those."""
        raise NotImplementedError

    def _read_small(self, filename: str, max_bytes: int) -> bytes | None:
        """A whole small file of the repo/folder, or None if it does not exist."""
        raise NotImplementedError

    def list_files(self) -> list[str]:
        raise NotImplementedError

    # -- shared behaviour ------------------------------------------------------------------------------------------

    def ref(self, name: str) -> TensorRef:
        try:
            return self.tensors[name]
        except KeyError:
            raise NotFoundError(f"{self.name}: no tensor named {name!r}") from None

    def planned_bytes(self, names: Iterable[str]) -> int:
        return sum(self.ref(n).nbytes for n in set(names))

    def read_bytes(self, names: Iterable[str], progress: Callable[[int], None] | None = None) -> dict[str, bytearray]:
        """Raw bytes of the named tensors: cached ranges first, the rest in coalesced concurrent requests.

        A tensor is cached the moment its last byte arrives, so an interrupted run keeps everything it had finished.
        """
        refs = [self.ref(n) for n in dict.fromkeys(names)]
        out: dict[str, bytearray] = {}
        missing = []
        for ref in refs:
            cached = self._cache_get(ref)
            if cached is not None:
                out[ref.name] = cached
                self.provenance.count(cache_hits=1)
                if progress:
                    progress(ref.nbytes)
            else:
                missing.append(ref)
        by_range = {(r.file, r.start, r.end): r for r in missing}
        fetched = self.read_ranges(by_range, progress, on_complete=lambda key, data: self._cache_put(by_range[key], data))
        out.update({ref.name: fetched.get((ref.file, ref.start, ref.end), bytearray()) for ref in missing})
        return out

    def read_ranges(
        self,
        ranges: Iterable[tuple[str, int, int]],
        progress: Callable[[int], None] | None = None,
        on_complete: Callable[[tuple[str, int, int], bytearray], None] | None = None,
    ) -> dict[tuple[str, int, int], bytearray]:
        """Bytes [start, end) of weight files, coalesced and fetched concurrently, each range filled in place in a buffer
        allocated once (a huge tensor fetched in parts is never held twice)."""
        wanted = sorted({r for r in ranges if r[2] > r[1]})
        out = {key: bytearray(key[2] - key[1]) for key in wanted}
        by_file: dict[str, list[tuple[str, int, int]]] = {}
        for key in wanted:
            by_file.setdefault(key[0], []).append(key)
        starts = {file: [key[1] for key in keys] for file, keys in by_file.items()}
        remaining = {key: key[2] - key[1] for key in wanted}
        lock = threading.Lock()

        def deliver(span: Span, data: memoryview) -> None:
            keys = by_file[span.file]
            first = max(bisect.bisect_right(starts[span.file], span.start) - 1, 0)
            for key in keys[first:]:
                _, start, end = key
                if start >= span.end:
                    break
                lo, hi = max(start, span.start), min(end, span.end)
                if lo >= hi:
                    continue
                out[key][lo - start : hi - start] = data[lo - span.start : hi - span.start]
                with lock:
                    remaining[key] -= hi - lo
                    done = remaining[key] == 0
                if done and on_complete:
                    on_complete(key, out[key])
            if progress:
                progress(span.nbytes)

        fetch_spans(plan_spans(wanted, self.max_gap, self.max_span), self._fetch, deliver, self.workers)
        return out

    def read_tensors(self, names: Iterable[str], progress: Callable[[int], None] | None = None) -> dict[str, torch.Tensor]:
        """The named tensors, read in one batch of coalesced requests."""
        raw = self.read_bytes(names, progress)
        return {name: tensor_from_bytes(buf, self.tensors[name]) for name, buf in raw.items()}

    def read_rows(self, name: str, row_indices: Iterable[int]) -> torch.Tensor:
        """Rows (first dimension) of one tensor, in the order asked; only those rows' bytes are read (not cached)."""
        ref = self.ref(name)
        rows = [int(r) for r in row_indices]
        if not ref.shape or any(not 0 <= r < ref.shape[0] for r in rows):
            raise NotFoundError(f"{self.name}: tensor {name!r} of shape {list(ref.shape)} has no rows {rows[:5]}…")
        width = ref.nbytes // ref.shape[0] if ref.shape[0] else 0
        spans = {r: (ref.file, ref.start + r * width, ref.start + (r + 1) * width) for r in set(rows)} if width else {}
        fetched = self.read_ranges(spans.values())
        buf = b"".join(bytes(fetched[spans[r]]) for r in rows) if width else b""
        shape = (len(rows), *ref.shape[1:])
        return tensor_from_bytes(buf, TensorRef(name, ref.file, ref.dtype, shape, 0, len(buf)))

    def read_row_blocks(self, blocks: dict[str, list[int]], progress: Callable[[int], None] | None = None
                        ) -> dict[str, torch.Tensor]:
        """For each named tensor, the rows listed (in that order), all tensors in one batch of coalesced requests:
        consecutive rows are one range, so a leading block of rows costs one request. Not cached."""
        spans: dict[str, list[tuple[int, tuple[str, int, int]]]] = {}
        for name, rows in blocks.items():
            ref = self.ref(name)
            if not ref.shape or any(not 0 <= r < ref.shape[0] for r in rows):
                raise NotFoundError(f"{self.name}: tensor {name!r} of shape {list(ref.shape)} has no rows "
                                    f"{list(rows)[:5]}…")
            width = ref.nbytes // ref.shape[0]
            runs, start = [], None
            for i, row in enumerate(rows):
                if start is None:
                    start = row
                if i + 1 == len(rows) or rows[i + 1] != row + 1:
                    runs.append((start, (ref.file, ref.start + start * width, ref.start + (row + 1) * width)))
                    start = None
            spans[name] = runs
        fetched = self.read_ranges([key for runs in spans.values() for _, key in runs], progress)
        out = {}
        for name, runs in spans.items():
            ref = self.ref(name)
            buf = b"".join(bytes(fetched[key]) for _, key in runs)
            shape = (len(blocks[name]), *ref.shape[1:])
            out[name] = tensor_from_bytes(buf, TensorRef(name, ref.file, ref.dtype, shape, 0, len(buf)))
        return out

    def iter_tensors(
        self, names: Iterable[str], batch_bytes: int = 256 << 20, progress: Callable[[int], None] | None = None
    ) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield tensors in batches of about `batch_bytes`, so memory stays bounded whatever the selection."""
        batch: list[str] = []
        size = 0
        for name in dict.fromkeys(names):
            batch.append(name)
            size += self.ref(name).nbytes
            if size >= batch_bytes:
                yield from self.read_tensors(batch, progress).items()
                batch, size = [], 0
        if batch:
            yield from self.read_tensors(batch, progress).items()

    def read_text(self, filename: str, max_bytes: int = MAX_TEXT_FILE_BYTES) -> str | None:
        """A small text file (config, tokenizer, licence) or None if absent; bounded and strictly decoded."""
        data = self._read_small(filename, max_bytes)
        if data is None:
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"{self.name}: {filename} is not UTF-8 text") from None

    def read_json(self, filename: str, max_bytes: int = MAX_TEXT_FILE_BYTES):
        text = self.read_text(filename, max_bytes)
        if text is None:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise FormatError(f"{self.name}: {filename} is not valid JSON ({err.msg} at line {err.lineno})") from None
        except (ValueError, RecursionError):  # absurd numbers, absurd nesting
            raise FormatError(f"{self.name}: {filename} is not valid JSON (nesting or numbers beyond limits)") from None

    def parameters(self) -> int:
        return sum(ref.numel for ref in self.tensors.values())

    def _cache_key(self, ref: TensorRef) -> tuple:
        record = self.provenance.files.get(ref.file)
        return (*self.cache_namespace, ref.file, record.etag if record else None, ref.start, ref.end)

    def _cache_get(self, ref: TensorRef) -> bytearray | None:
        if self.cache is None or not ref.nbytes:
            return None
        return self.cache.get(self._cache_key(ref), ref.nbytes)

    def _cache_put(self, ref: TensorRef, data: bytearray) -> None:
        if self.cache is not None and ref.nbytes:
            self.cache.put(self._cache_key(ref), data)
