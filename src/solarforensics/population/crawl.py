"""Fingerprinting many models: concurrently on this machine, or one Ray task per model on a cluster.

Only the driver writes the index (one transaction per finished model, so a crash keeps what finished). Network
faults are retried inside each request (SOLARFORENSICS_RETRIES); a Ray task whose worker dies is retried once
(`max_retries`); a model that still fails is reported with its one-line reason and never half-written. Workers get an explicit runtime environment (the Hub endpoint and cache settings), never the
working tree; a token reaches a local cluster through the environment it inherits, never through task arguments.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import as_completed
from dataclasses import dataclass, replace

from solarforensics.errors import ForensicsError, SpecError
from solarforensics.models import OpenOptions
from solarforensics.population.fingerprint import fingerprint_model
from solarforensics.population.index import Entry, Index
from solarforensics.population.record import Fingerprint
from solarforensics.sources.interrupt import worker_pool

RETRIES = 1
FORWARDED_ENV = ("HF_ENDPOINT", "SOLARFORENSICS_CACHE", "SOLARFORENSICS_RETRIES", "HF_HUB_DISABLE_TELEMETRY",
                 "HF_HUB_OFFLINE", "XDG_CACHE_HOME")


@dataclass
class Outcome:
    spec: str
    status: str  # new | unchanged | failed
    seconds: float
    entry: Entry | None = None
    error: str | None = None
    attempts: int = 1
    source: tuple | None = None  # (endpoint, repo, commit) of an unchanged model's existing fingerprint

    def row(self) -> dict:
        meta = self.entry.meta if self.entry else {}
        cost = meta.get("cost", {})
        return {"model": self.spec, "status": self.status, "seconds": round(self.seconds, 3),
                "attempts": self.attempts, "error": self.error,
                "bytes_read": cost.get("bytes_read") if self.status == "new" else 0,
                "requests": cost.get("requests") if self.status == "new" else 0,
                "fraction_read": cost.get("fraction_read") if self.status == "new" else 0.0,
                "stored_bytes": self.entry.size if self.entry else None,
                "commit": (meta.get("source") or {}).get("resolved_commit")}


def fingerprint_one(spec: str, options: OpenOptions | None, known: dict[tuple, int]) -> Outcome:
    """One model, as a plain function (what a Ray task runs too): never raises for a model's own failure. `known`:
    source key -> format version of the fingerprints the index already has (an unchanged commit reads no tensor)."""
    started = time.perf_counter()
    found: list[tuple] = []

    def lookup(endpoint, repo, commit):
        version = known.get((endpoint, repo, commit))
        if version is None:
            return None
        found.append((endpoint, repo, commit))
        return Fingerprint(spec, {"format_version": version})

    try:
        fp, status = fingerprint_model(spec, options, lookup)
    except ForensicsError as err:
        return Outcome(spec, "failed", time.perf_counter() - started, error=err.one_line())
    except (OSError, ValueError, RuntimeError) as err:
        return Outcome(spec, "failed", time.perf_counter() - started, error=f"{type(err).__name__}: {err}")
    if status == "unchanged":
        return Outcome(spec, status, time.perf_counter() - started, source=found[-1])
    return Outcome(spec, status, time.perf_counter() - started, entry=fp.to_entry())


def fingerprint_all(specs: list[str], index: Index, options: OpenOptions | None = None, *,
                    workers: int = 4, ray_address: str | None = None,
                    on_done: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Fingerprint every spec into the index; the outcomes in the order given."""
    if not specs:
        raise SpecError("no models to fingerprint")
    known = {(e.endpoint, e.repo, e.commit): e.version for e in index.entries()}
    run = _on_ray if ray_address else _on_threads
    outcomes = {}
    for outcome in run(list(dict.fromkeys(specs)), options, known, workers, ray_address):
        if outcome.status == "unchanged":
            existing = index.find_source(*outcome.source)
            if existing is not None and existing.spec != outcome.spec:
                index.put([replace(existing, spec=outcome.spec, meta={**existing.meta, "spec": outcome.spec})])
            outcome.entry = existing
        elif outcome.entry is not None:
            index.put([outcome.entry])
        outcomes[outcome.spec] = outcome
        if on_done:
            on_done(outcome)
    return [outcomes[s] for s in dict.fromkeys(specs)]


def _on_threads(specs, options, known, workers, _address):
    # Network faults are retried inside every request, under SOLARFORENSICS_RETRIES; a model that still fails is
    # reported, not tried again here (that would multiply the user's retry bound).
    with worker_pool(workers) as pool:
        futures = [pool.submit(fingerprint_one, spec, options, known) for spec in specs]
        for future in as_completed(futures):
            yield future.result()


def _on_ray(specs, options, known, workers, address):
    try:
        import ray
    except ImportError:
        raise SpecError("--ray needs the ray package", "pip install ray") from None
    started_here = not ray.is_initialized()
    if started_here:
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        if options and options.endpoint:
            env["HF_ENDPOINT"] = options.endpoint
        if address != "local":
            _check_reachable(address)
        # A local cluster binds to loopback: Ray's default node address is the machine's network interface.
        local = {"num_cpus": max(1, workers), "_node_ip_address": "127.0.0.1"} if address == "local" else {}
        try:
            ray.init(address=None if address == "local" else address, include_dashboard=False,
                     log_to_driver=False, configure_logging=False, runtime_env={"env_vars": env}, **local)
        except Exception as err:  # noqa: BLE001 - Ray raises many types for an address that does not answer
            raise SpecError(f"cannot join the Ray cluster at {address} ({type(err).__name__}: "
                            f"{str(err).splitlines()[0] if str(err) else 'no answer'})",
                            "check the address (host:port or ray://host:port), or use --ray alone for a local cluster"
                            ) from None
    task = ray.remote(max_retries=RETRIES, retry_exceptions=True)(_ray_task)
    wire_options = {**(options or OpenOptions()).__dict__, "token": None}
    wire_options["endpoint"] = wire_options["endpoint"] or os.environ.get("HF_ENDPOINT")  # workers may not share it
    try:
        futures = {task.remote(spec, wire_options, known): spec for spec in specs}
        pending = list(futures)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    outcome = ray.get(ref)
                except Exception as err:  # noqa: BLE001 - a task that died after its retries
                    outcome = Outcome(futures[ref], "failed", 0.0, error=f"task failed after retries: "
                                                                          f"{type(err).__name__}")
                    outcome.attempts = RETRIES + 1
                else:
                    outcome = _outcome_from_wire(outcome)
                yield outcome
    finally:
        if started_here:
            ray.shutdown()


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """One TCP connect to a cluster's address before Ray tries (it retries for minutes and logs each attempt)."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if address == "auto":
        return
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as err:
        raise SpecError(f"the Ray cluster at {address} does not answer ({type(err).__name__})",
                        "check the address (host:port or ray://host:port), or use --ray alone for a local cluster"
                        ) from None


def _ray_task(spec: str, options: dict | None, known: dict) -> dict:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    opened = OpenOptions(**options) if options else None
    outcome = fingerprint_one(spec, opened, known)
    return {"spec": outcome.spec, "status": outcome.status, "seconds": outcome.seconds, "error": outcome.error,
            "entry": _entry_to_wire(outcome.entry) if outcome.entry else None, "source": outcome.source,
            "pid": os.getpid()}


def _outcome_from_wire(data: dict) -> Outcome:
    entry = _entry_from_wire(data["entry"]) if data.get("entry") else None
    return Outcome(data["spec"], data["status"], data["seconds"], entry, data.get("error"),
                   source=tuple(data["source"]) if data.get("source") else None)


def _entry_to_wire(entry: Entry) -> dict:
    return dict(entry.__dict__)


def _entry_from_wire(data: dict) -> Entry:
    return Entry(**data)
