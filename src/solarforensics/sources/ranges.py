"""Byte ranges: coalesce the spans of the selected tensors into few requests, fetch them concurrently, split them back."""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from solarforensics.sources.interrupt import check_cancelled, worker_pool
from solarforensics.sources.settings import setting

DEFAULT_MAX_GAP = setting("SOLARFORENSICS_MAX_GAP")  # read through gaps up to 1 MiB
DEFAULT_MAX_SPAN = setting("SOLARFORENSICS_MAX_SPAN")  # but keep each request under 64 MiB
DEFAULT_OVERREAD = setting("SOLARFORENSICS_OVERREAD")  # read at most 2% extra bytes in gaps
DEFAULT_WORKERS = setting("SOLARFORENSICS_WORKERS")


@dataclass
class Span:
    """One request: bytes [start, end) of `file`, covering the member ranges listed."""

    file: str
    start: int
    end: int
    members: list[tuple[int, int]] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        return self.end - self.start


def plan_spans(
    ranges: Iterable[tuple[str, int, int]],
    max_gap: int = DEFAULT_MAX_GAP,
    max_span: int = DEFAULT_MAX_SPAN,
    overread: float = DEFAULT_OVERREAD,
) -> list[Span]:
    """Group (file, start, end) ranges into requests.

    Touching ranges always share a request. Gaps are read through smallest first, each at most `max_gap`, until the
    bytes read in gaps reach `overread` x the bytes needed: fewer round trips for a bounded byte cost. A range larger
    than `max_span` is cut into parts fetched in parallel.
    """
    ordered = sorted(set(ranges))
    needed = sum(end - start for _, start, end in ordered)
    gaps = sorted(
        (ordered[i][1] - ordered[i - 1][2], i)
        for i in range(1, len(ordered))
        if ordered[i][0] == ordered[i - 1][0] and 0 < ordered[i][1] - ordered[i - 1][2] <= max_gap
    )
    joined, spent = set(), 0
    for gap, i in gaps:
        if spent + gap > overread * needed:
            break
        joined.add(i)
        spent += gap
    spans: list[Span] = []
    for i, (file, start, end) in enumerate(ordered):
        last = spans[-1] if spans else None
        touching = last is not None and last.file == file and start <= last.end
        if last is not None and (touching or i in joined) and max(end, last.end) - last.start <= max_span:
            last.end = max(last.end, end)
            last.members.append((start, end))
        elif end - start <= max_span:
            spans.append(Span(file, start, end, [(start, end)]))
        else:
            for part in range(start, end, max_span):  # a huge tensor becomes several parallel requests
                spans.append(Span(file, part, min(end, part + max_span), [(part, min(end, part + max_span))]))
    return spans


def fetch_spans(
    spans: list[Span], fetch: Callable[[str, int, int], bytes], deliver: Callable[[Span, memoryview], None],
    workers: int = DEFAULT_WORKERS,
) -> None:
    """Fetch every span (concurrently) and hand each one's bytes to `deliver` as soon as it arrives."""

    def one(span: Span) -> None:
        check_cancelled()
        deliver(span, memoryview(fetch(span.file, span.start, span.end)))

    if workers <= 1 or len(spans) <= 1:
        for span in spans:
            one(span)
        return
    # On an error the pool cancels what has not started: one clear error, not a pile of doomed requests.
    with worker_pool(min(workers, len(spans))) as pool:
        for future in [pool.submit(one, span) for span in spans]:
            future.result()
