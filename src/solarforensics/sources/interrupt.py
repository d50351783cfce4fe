"""Stopping on Ctrl-C within about a second: one process-wide event that the CLI sets when SIGINT arrives, checked by
every worker thread between requests, between body chunks and while waiting out a retry, and thread pools that stop
waiting for their workers once it is set (their in-flight requests end at the next check or are abandoned)."""

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

CANCEL = threading.Event()


def check_cancelled() -> None:
    """Raise KeyboardInterrupt in a worker once the run has been interrupted, so it stops at a safe point (nothing
    half written: cache entries and results are written whole or not at all)."""
    if CANCEL.is_set():
        raise KeyboardInterrupt


def pause(seconds: float) -> None:
    """Sleep `seconds` (a retry's backoff, a Retry-After), ending early with KeyboardInterrupt on interrupt."""
    if CANCEL.wait(max(0.0, seconds)):
        raise KeyboardInterrupt


@contextmanager
def worker_pool(workers: int) -> Iterator[ThreadPoolExecutor]:
    """A thread pool that, leaving on an error, cancels what has not started and waits for what runs (so tensors
    already fetched are cached and no doomed request piles up) — except after an interrupt, when it waits for
    nothing: a worker blocked on a slow server must not hold the run for its whole timeout."""
    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        yield pool
    except BaseException as error:
        interrupted = CANCEL.is_set() or isinstance(error, KeyboardInterrupt)
        pool.shutdown(wait=not interrupted, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
