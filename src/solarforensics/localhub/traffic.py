"""Traffic of the local Hub server: request and byte counts with a per-request log, and the simulated link speed."""

from __future__ import annotations

import threading
import time
from collections import Counter

CHUNK = 256 * 1024


class Traffic:
    """What the server's origins have answered, and the one link of `bandwidth` bytes/s that all their answers share."""

    def __init__(self):
        self._lock = threading.Lock()
        self._wire_free_at = 0.0  # bandwidth is shared by all connections, like one real link
        self.reset()

    def stats(self) -> dict:
        """Requests and body bytes served so far (control endpoints excluded), with a per-request log."""
        with self._lock:
            return {"requests": self._requests, "bytes_served": self._bytes_served,
                    "by_kind": dict(self._by_kind), "log": [dict(entry) for entry in self._log]}

    def reset(self) -> None:
        with self._lock:
            self._requests, self._bytes_served, self._by_kind, self._log = 0, 0, Counter(), []

    def record(self, entry: dict) -> None:
        with self._lock:
            self._requests += 1
            self._bytes_served += entry["bytes"]
            self._by_kind[entry["kind"]] += 1
            self._log.append(entry)

    def correct_bytes(self, entry: dict, sent: int) -> None:
        """Count `sent` body bytes for a logged answer that sent other than it planned."""
        with self._lock:
            self._bytes_served += sent - entry["bytes"]
            entry["bytes"] = sent

    def throttle(self, size: int, bandwidth: int | None) -> None:
        """Sleep until `size` more bytes have crossed the link (no wait without a bandwidth)."""
        if not bandwidth:
            return
        with self._lock:
            now = time.monotonic()
            self._wire_free_at = max(now, self._wire_free_at) + size / bandwidth
            wait = self._wire_free_at - now
        time.sleep(wait)


def chunk_size(bandwidth: int | None) -> int:
    """Bytes written per throttled step: small enough that a slow link delivers steadily."""
    return max(1024, min(CHUNK, bandwidth // 20)) if bandwidth else CHUNK
