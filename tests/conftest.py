"""Shared test set-up: every test gets its own HF/XDG homes and cache, and can start local Hub servers."""

import os
import signal
import tempfile

# huggingface_hub reads these when it is imported (HUB-PROTOCOL.md pitfall 5), so they are set before any import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does: idle OpenMP threads sleep instead of spinning
os.environ.update(
    HF_HUB_DISABLE_TELEMETRY="1",
    HF_HUB_DISABLE_PROGRESS_BARS="1",
    HF_HUB_DISABLE_XET="1",
    HF_HUB_DISABLE_IMPLICIT_TOKEN="1",
    HF_HOME=tempfile.mkdtemp(prefix="solarforensics-hf-home-"),
    # A dead local port as the import-time default: a test that forgets its server fails fast, offline.
    HF_ENDPOINT="http://127.0.0.1:9",
)
for _name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
    os.environ.pop(_name, None)

import pytest  # noqa: E402

from solarforensics.localhub.server import HubServer  # noqa: E402


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """No test sees the user's token, Hub caches or our cache, nor another test's."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg_cache"))
    monkeypatch.setenv("SOLARFORENSICS_CACHE", str(tmp_path / "sfcache"))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    _point_hf_cache_at(monkeypatch, tmp_path / "hf_home")
    # main() leaves the process without waiting for a worker stuck after Ctrl-C; here the process is pytest's.
    monkeypatch.setattr("solarforensics.cli.main.HARD_EXIT", False, raising=False)
    # Every test starts with Python's own Ctrl-C handler: children inherit an ignored SIGINT (and then cannot be
    # interrupted), so one in-process run that left SIG_IGN behind would break the Ctrl-C tests that follow it.
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def hub_server(monkeypatch):
    """`start(root_or_store, **kwargs)` starts a HubServer and points HF_ENDPOINT at it; all stop at teardown."""
    servers: list[HubServer] = []

    def start(root, **kwargs) -> HubServer:
        server = HubServer(root, **kwargs).start()
        servers.append(server)
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        _point_hf_endpoint_at(monkeypatch, server.url)
        return server

    yield start
    for server in servers:
        server.stop()


def _point_hf_endpoint_at(monkeypatch, url: str) -> None:
    # huggingface_hub froze HF_ENDPOINT at import; patch its constants so in-process calls without `endpoint=`
    # behave as a fresh process started with HF_ENDPOINT=url would.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")


def _point_hf_cache_at(monkeypatch, hf_home) -> None:
    # Same reason: huggingface_hub computed its cache and token paths from HF_HOME at import time.
    from huggingface_hub import constants

    hub_cache = str(hf_home / "hub")
    for name, value in {
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": hub_cache,
        "HUGGINGFACE_HUB_CACHE": hub_cache,
        "HF_ASSETS_CACHE": str(hf_home / "assets"),
        "HF_XET_CACHE": str(hf_home / "xet"),
        "HF_TOKEN_PATH": str(hf_home / "token"),
        "HF_STORED_TOKENS_PATH": str(hf_home / "stored_tokens"),
    }.items():
        monkeypatch.setattr(constants, name, value)


@pytest.fixture
def cli(capsys, monkeypatch):
    """`cli(*args) -> (exit code, stdout, stderr)`: the real entry point, errors and all, in this process."""
    from solarforensics.cli.main import main

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr("sys.argv", ["solarforensics", *map(str, args)])
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    """Tiny GLM-style, derived ('fine-tuned'), Solar-style and Phi-style checkpoints under demo/, built once."""
    from solarforensics.checkpoints import build_checkpoint, derive_checkpoint

    root = tmp_path_factory.mktemp("hub")
    glm = build_checkpoint(root / "demo" / "glm-tiny", "glm4_moe", seed=1)
    derive_checkpoint(glm, root / "demo" / "glm-tiny-sft", seed=7, noise=1e-3)
    build_checkpoint(root / "demo" / "solar-tiny", "solar_open", seed=2)
    build_checkpoint(root / "demo" / "phi-tiny", "phimoe", seed=3)
    return root


@pytest.fixture
def tiny_hub(tiny_root, hub_server):
    """A local Hub serving the tiny checkpoints (read-only: tests must not modify them)."""
    return hub_server(tiny_root)


@pytest.fixture(scope="session")
def derived_pair_root(tmp_path_factory):
    """Two tiny llama checkpoints, acme/a and acme/b derived from a, as a Hub root (read-only: do not modify)."""
    from solarforensics.checkpoints import build_checkpoint, derive_checkpoint

    root = tmp_path_factory.mktemp("derived-pair-hub")
    build_checkpoint(root / "acme" / "a", "llama", seed=0, tokenizer=False)
    derive_checkpoint(root / "acme" / "a", root / "acme" / "b", seed=1)
    return root
