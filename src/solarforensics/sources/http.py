"""Every network call of a Hub source goes through `with_retries`: the same bounds for the metadata request, the HEAD
that fetches a size, small files and ranged reads alike — at most SOLARFORENSICS_RETRIES retries of 429, 5xx and
connection errors, each read bounded by SOLARFORENSICS_TIMEOUT, backoff 1, 2, 4, 8, 8 s, a Retry-After waited out
(+1 s) when it is at most MAX_RETRY_AFTER_S, and every wait ended by Ctrl-C."""

from collections.abc import Callable
from typing import TypeVar

import httpx2
from huggingface_hub import errors as hf_errors

from solarforensics.sources.interrupt import check_cancelled, pause

RETRY_STATUS = (429, 500, 502, 503, 504)
MAX_RETRY_AFTER_S = 120.0  # a server asking for a longer pause ends the run now, saying so, instead of hanging it
T = TypeVar("T")


class RateLimited(Exception):
    """A 429 whose Retry-After is longer than MAX_RETRY_AFTER_S (or the last retry's): the caller says so."""

    def __init__(self, retry_after: float | None):
        super().__init__(f"Retry-After {retry_after}")
        self.retry_after = retry_after


def retry_after(response) -> float | None:
    """Seconds a 429/503 answer asks to wait (Retry-After as seconds), None if it does not say."""
    value = (response.headers.get("retry-after") or "").strip() if response is not None else ""
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def with_retries(call: Callable[[], T], retries: int) -> T:
    """`call()`, again after a retryable failure, at most `retries` more times; the last failure is raised."""
    wait = 1.0
    for attempt in range(retries + 1):
        check_cancelled()
        try:
            return call()
        except hf_errors.HfHubHTTPError as err:
            response = getattr(err, "response", None)
            status = getattr(response, "status_code", None)
            if status not in RETRY_STATUS or attempt == retries:
                raise
            asked = retry_after(response) if status in (429, 503) else None
            if asked is not None and asked > MAX_RETRY_AFTER_S:
                raise RateLimited(asked) from None
            pause(asked + 1 if asked is not None else wait)
        except httpx2.TransportError:
            if attempt == retries:
                raise
            pause(wait)
        wait = min(8.0, wait * 2)
    raise AssertionError("unreachable")  # the loop returns or raises
