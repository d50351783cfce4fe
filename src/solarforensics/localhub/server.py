"""Local Hugging Face Hub server: serves repos to the real huggingface_hub client, with faults, stats and a fake CDN."""

from __future__ import annotations

import secrets
import threading
import time
from pathlib import Path

from solarforensics.errors import NotFoundError, SpecError
from solarforensics.localhub.faults import FaultSet, parse_fault
from solarforensics.localhub.handler import MAX_REQUEST_BODY, Origin
from solarforensics.localhub.store import Commit, FolderStore, MultiStore, Repo, RepoFile, RepoStore
from solarforensics.localhub.traffic import CHUNK, Traffic

# Requests are answered in handler.py and counted in traffic.py; the names callers know stay importable here.
__all__ = ["CHUNK", "MAX_REQUEST_BODY", "Commit", "FolderStore", "HubServer", "MultiStore", "Repo", "RepoFile",
           "RepoStore", "serve"]


class HubServer:
    """A Hub on 127.0.0.1 (and optionally a CDN origin that weight files redirect to), run in background threads."""

    def __init__(self, store_or_root: RepoStore | Path | str, *, host: str = "127.0.0.1", port: int = 0,
                 latency_ms: int = 0, bandwidth: int | None = None, cdn: bool = False):
        self.store = FolderStore(store_or_root) if isinstance(store_or_root, (str, Path)) else store_or_root
        self.host, self.port, self.cdn = host, port, cdn
        self.latency_ms, self.bandwidth = latency_ms, bandwidth
        self.faults = FaultSet()
        self.traffic = Traffic()
        # Like a real CDN's, the redirect's signature is a secret: tests check it never reaches an output.
        self.signature = "sig" + secrets.token_hex(12)
        self._origins: list[Origin] = []
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return self._origin_url(0)

    @property
    def cdn_url(self) -> str | None:
        return self._origin_url(1) if self.cdn else None

    def _origin_url(self, index: int) -> str:
        if len(self._origins) <= index:
            raise RuntimeError("the Hub server is not started")
        host, port = self._origins[index].server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubServer:
        specs = [("hub", self.port)] + ([("cdn", 0)] if self.cdn else [])
        try:
            for name, port in specs:
                self._origins.append(Origin((self.host, port), self, name))
        except OSError:
            self.stop()
            raise
        for origin in self._origins:
            thread = threading.Thread(target=origin.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for origin, thread in zip(self._origins, self._threads):
            origin.shutdown()
            thread.join()
        for origin in self._origins:
            origin.close_connections()
            origin.server_close()
        self._origins, self._threads = [], []

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def stats(self) -> dict:
        """Requests and body bytes served so far (control endpoints excluded), with a per-request log."""
        return self.traffic.stats()

    def reset_stats(self) -> None:
        self.traffic.reset()


def serve(root: Path | None, *, port: int = 0, latency_ms: int = 0, bandwidth: int | None = None, cdn: bool = False,
          faults: list[str] = (), extra_stores: tuple[RepoStore, ...] = ()) -> None:
    """Serve ROOT (and extra stores) until Ctrl-C, after printing the URL to point HF_ENDPOINT at."""
    stores: list[RepoStore] = []
    if root is not None:
        if not Path(root).is_dir():
            raise NotFoundError(f"hub root {root} is not a folder", hint="pass a folder laid out as ROOT/owner/name/")
        stores.append(FolderStore(root))
    stores.extend(extra_stores)
    rules = [parse_fault(text) for text in faults]
    server = HubServer(MultiStore(stores), port=port, latency_ms=latency_ms, bandwidth=bandwidth, cdn=cdn)
    for rule in rules:
        server.faults.add_rule(rule)
    try:
        server.start()
    except OSError as exc:
        raise SpecError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}",
                        hint="choose another --port, or 0 for any free port") from exc
    try:
        repos = len(server.store.repo_ids())
        cdn_note = f", weights via CDN {server.cdn_url}" if cdn else ""
        print(f"Hub serving {repos} repos at {server.url}{cdn_note}; use it with: export HF_ENDPOINT={server.url}",
              flush=True)
        for store in stores:
            for line in getattr(store, "notes", lambda: [])():
                print(f"  {line}", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Serve ROOT/owner/name folders as a local Hugging Face Hub.")
    parser.add_argument("root", type=Path)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--bandwidth", type=int, default=None)
    parser.add_argument("--cdn", action="store_true")
    parser.add_argument("--fault", action="append", default=[])
    args = parser.parse_args()
    serve(args.root, port=args.port, latency_ms=args.latency_ms, bandwidth=args.bandwidth, cdn=args.cdn,
          faults=args.fault)
