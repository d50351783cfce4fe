"""A hostile or broken network never changes a number: every fault of the local Hub, end to end through the CLI, ends
in exactly the numbers of a clean run, or in one clear error line and a non-zero exit, with bounded retries and time.

The default tests run `main()` in this process (the retry count and timeout, which the CLI reads from
SOLARFORENSICS_RETRIES / SOLARFORENSICS_TIMEOUT at import, are set on the module); the slow test runs the installed
console script in a subprocess with those environment variables.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from solarforensics.sources import hub as hub_module

NUMBERS = ("rows", "baselines", "layer_matrices", "only_in_a", "only_in_b")
RETRIES = 1  # huggingface_hub's backoff waits 1 s before the retry
TIMEOUT_S = 0.3
# Norm gains, k and v: 9 tensor pairs in several coalesced ranges per shard; --json skips the terminal tables.
COMPARE = ("compare", "acme/a", "acme/b", "--tensors", "final-norm,attn-k,attn-v", "--permutations", "99",
           "--device", "cpu", "--json")


@dataclass
class Run:
    code: int
    out: str
    err: str
    seconds: float

    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("solarforensics: error:")]


@pytest.fixture
def cli(capsys, monkeypatch):
    """`cli(*args)` runs the CLI's `main()` here, as the console script would, and returns code, stdout, stderr."""
    from solarforensics.cli.main import main

    monkeypatch.setattr(hub_module, "HTTP_RETRIES", RETRIES)
    monkeypatch.setattr(hub_module, "TIMEOUT_S", TIMEOUT_S)

    def run(*args: str) -> Run:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["solarforensics", *map(str, args)])
        started = time.perf_counter()
        try:
            main()
            code = 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        seconds = time.perf_counter() - started
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err, seconds)

    return run


def numbers(path: Path) -> dict:
    doc = json.loads(Path(path).read_text())
    return {key: doc[key] for key in NUMBERS}


_CLEAN: dict[str, dict] = {}


def clean_numbers(cli, tmp_path) -> dict:
    """The numbers of a clean run through the Hub (run once per module: the checkpoints never change)."""
    if "numbers" not in _CLEAN:
        out = tmp_path / "clean.json"
        run = cli(*COMPARE, "--out", out, "--no-cache")
        assert run.code == 0, run.err
        _CLEAN["numbers"] = numbers(out)
    return _CLEAN["numbers"]


def data_requests(server, origin: str | None = None) -> list[dict]:
    return [e for e in server.stats()["log"]
            if e["path"].split("?")[0].endswith(".safetensors") and e["method"] == "GET"
            and origin in (None, e["origin"])]


def assert_one_clear_line(run: Run, *needles: str) -> None:
    assert run.code != 0
    assert len(run.error_lines()) == 1, run.err
    assert run.err.rstrip().splitlines()[-1] == run.error_lines()[0]
    assert "Traceback" not in run.err
    for needle in needles:
        assert needle in run.error_lines()[0]


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob(".*.tmp")]


# -- transient faults: the clean numbers ----------------------------------------------------------------------------

TRANSIENT = {
    "429 with Retry-After": ("429", {"retry_after": 0}, False),
    "500": ("500", {}, False),
    "502": ("502", {}, False),
    "503": ("503", {}, False),
    "connection dropped mid-body": ("drop", {}, False),
    "truncated body": ("truncate", {}, False),
    "wrong Content-Range": ("wrong-range", {"shift": 3}, False),
    "slow server (read timeout)": ("slow", {"delay_s": 1.0}, False),
    "CDN redirect, clean": (None, {}, True),
    "CDN redirect, 503 on the CDN": ("503", {"origin": "cdn"}, True),
    "CDN redirect, drop on the CDN": ("drop", {"origin": "cdn"}, True),
}


# 500, 502 and a 503 on the CDN take the same code path as 503 (and a 1 s backoff each): the slow run covers them.
SAME_AS_503 = {"500", "502", "CDN redirect, 503 on the CDN"}


def params(faults: dict) -> list:
    return [pytest.param(name, id=name, marks=[pytest.mark.slow] if name in SAME_AS_503 else []) for name in faults]


@pytest.mark.parametrize("fault", params(TRANSIENT))
def test_a_transient_fault_gives_exactly_the_clean_numbers(fault, cli, hub_server, derived_pair_root, tmp_path):
    kind, params, cdn = TRANSIENT[fault]
    server = hub_server(derived_pair_root, cdn=cdn)
    expected = clean_numbers(cli, tmp_path)
    server.reset_stats()
    if kind:
        server.faults.add(kind, "*.safetensors", 1, **params)
    run = cli(*COMPARE, "--out", tmp_path / "faulted.json", "--no-cache")
    assert run.code == 0, run.err
    assert numbers(tmp_path / "faulted.json") == expected
    faulted = [e for e in data_requests(server) if e["fault"]]
    assert len(faulted) == (1 if kind else 0)
    if cdn:
        assert all(e["status"] == 302 for e in data_requests(server, "hub"))
        assert len(data_requests(server, "cdn")) == len(data_requests(server, "hub"))
    assert run.seconds < 10


# -- persistent faults: one clear line, bounded requests and time ---------------------------------------------------

PERSISTENT = {
    "429 with Retry-After": ("429", {"retry_after": 0}, "rate limited by"),
    "500": ("500", {}, "answered HTTP 500"),
    "502": ("502", {}, "answered HTTP 502"),
    "503": ("503", {}, "answered HTTP 503"),
    "connection dropped mid-body": ("drop", {}, "could not be read intact"),
    "truncated body": ("truncate", {}, "could not be read intact"),
    "wrong Content-Range": ("wrong-range", {}, "does not match the requested bytes"),
    "Range ignored": ("ignore-range", {}, "ignored the Range header"),
    "ETag changing mid-run": ("change", {"after": 2, "repo": "acme/a"}, "changed during the run"),
}


@pytest.mark.parametrize("fault", params(PERSISTENT))
def test_a_persistent_fault_stops_with_one_clear_line(fault, cli, hub_server, derived_pair_root, tmp_path):
    kind, params, message = PERSISTENT[fault]
    server = hub_server(derived_pair_root)
    server.faults.add(kind, "*.safetensors", -1, **params)
    out = tmp_path / "results" / "faulted.json"
    run = cli(*COMPARE, "--out", out, "--no-cache")
    assert_one_clear_line(run, message)
    assert run.code == 3  # TransferError
    assert not out.exists() and no_temp_files(tmp_path)
    # Per range: 1 + RETRIES answers for HTTP errors, hub.BODY_ATTEMPTS for broken bodies; ranges in flight are
    # few (2 models x 2 shards at the header stage), so the total stays small.
    attempts = max(1 + RETRIES, hub_module.BODY_ATTEMPTS)
    assert len([e for e in data_requests(server) if e["fault"]]) <= 4 * attempts
    assert run.seconds < 10


def test_a_server_ignoring_range_is_left_before_the_body_is_downloaded(cli, hub_server, tmp_path):
    folder = tmp_path / "hub" / "acme" / "big"
    folder.mkdir(parents=True)
    save_file({"w": torch.zeros(16 << 20, dtype=torch.float32)}, str(folder / "model.safetensors"))  # 64 MiB
    server = hub_server(tmp_path / "hub")
    server.faults.add("ignore-range", "*.safetensors", -1)
    run = cli("inspect", "acme/big", "--no-cache")
    assert_one_clear_line(run, "ignored the Range header", "stopped without downloading it")
    # The server logs the planned bytes first and corrects them when the client has hung up.
    deadline = time.monotonic() + 5
    while data_requests(server)[0]["bytes"] >= 64 << 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    (request,) = data_requests(server)
    assert request["status"] == 200 and request["bytes"] < 4 << 20  # what the socket buffers took, of 64 MiB


def test_a_file_replaced_before_the_run_changes_the_etag_and_stops_a_cached_run(cli, hub_server, derived_pair_root, tmp_path):
    server = hub_server(derived_pair_root)
    first = cli(*COMPARE, "--out", tmp_path / "first.json")  # caches headers (with their ETags) and ranges
    assert first.code == 0, first.err
    server.faults.add("change", "*.safetensors", -1, repo="acme/b")
    run = cli(*COMPARE, "--tensors", "attn-q", "--out", tmp_path / "second.json")  # cached headers, new ranges
    assert_one_clear_line(run, "acme/b/model-0000", "changed during the run")


def test_a_slow_server_is_retried_after_the_read_timeout(cli, hub_server, derived_pair_root, tmp_path):
    server = hub_server(derived_pair_root)
    server.faults.add("slow", "model-00001-of-00002.safetensors", 1, delay_s=1.0, repo="acme/a")
    out = tmp_path / "slow.json"
    run = cli(*COMPARE, "--out", out, "--no-cache")
    assert run.code == 0, run.err
    # The server logs the slow answer when its delay is over; by then the client has timed out and asked again.
    (slow,) = [e for e in data_requests(server) if e["fault"] == "slow"]
    same_range = [e for e in data_requests(server) if (e["path"], e["range"]) == (slow["path"], slow["range"])]
    assert sorted(map(str, (e["fault"] for e in same_range))) == ["None", "slow"]  # timed out, asked again once
    assert numbers(out) == clean_numbers(cli, tmp_path)


def test_a_persistent_read_timeout_is_retried_only_as_often_as_configured(cli, hub_server, derived_pair_root, monkeypatch):
    monkeypatch.setattr(hub_module, "HTTP_RETRIES", 0)
    server = hub_server(derived_pair_root)
    server.faults.add("slow", "model-00001-of-00002.safetensors", -1, delay_s=1.0, repo="acme/a")
    run = cli("inspect", "acme/a", "--no-cache")
    assert_one_clear_line(run, "ReadTimeout")
    time.sleep(1.2)  # the server logs a slow answer when its delay is over
    assert len([e for e in data_requests(server) if e["fault"] == "slow"]) == 1


# -- resumed runs ---------------------------------------------------------------------------------------------------


def test_a_resumed_run_reuses_the_cache_and_gives_identical_numbers(cli, hub_server, derived_pair_root, tmp_path, monkeypatch):
    monkeypatch.setattr(hub_module, "HTTP_RETRIES", 0)
    server = hub_server(derived_pair_root)
    server.faults.add("503", "*.safetensors", -1, repo="acme/b", after=2)  # b's headers pass, its tensors fail
    out = tmp_path / "run.json"
    failed = cli(*COMPARE, "--out", out)
    assert_one_clear_line(failed, "answered HTTP 503")
    server.faults.clear()
    server.reset_stats()
    resumed = cli(*COMPARE, "--out", out)
    assert resumed.code == 0, resumed.err
    assert {e["path"].split("/")[2] for e in data_requests(server)} == {"b"}
    server.reset_stats()
    assert cli(*COMPARE, "--out", tmp_path / "again.json").code == 0
    assert data_requests(server) == []  # everything from the cache now
    assert numbers(out) == numbers(tmp_path / "again.json") == clean_numbers(cli, tmp_path)


def test_ranges_fetched_before_a_failure_are_kept_for_the_next_run(cli, hub_server, derived_pair_root, tmp_path, monkeypatch):
    monkeypatch.setattr(hub_module, "HTTP_RETRIES", 0)
    server = hub_server(derived_pair_root)
    server.faults.add("503", "model-00002-of-00002.safetensors", -1, repo="acme/a", after=1)
    assert_one_clear_line(cli(*COMPARE, "--out", tmp_path / "run.json", "--workers", "1"), "answered HTTP 503")
    fetched = {(e["path"], e["range"]) for e in data_requests(server) if e["status"] == 206 and "/a/" in e["path"]}
    server.faults.clear()
    server.reset_stats()
    assert cli(*COMPARE, "--out", tmp_path / "run.json").code == 0
    again = {(e["path"], e["range"]) for e in data_requests(server) if "/a/" in e["path"]}
    assert not (fetched & again)


# -- the real console script, with the environment variables ----------------------------------------------------------


def console_script() -> list[str]:
    script = shutil.which("solarforensics", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-c", "from solarforensics.cli.main import main; main()"]


def run_script(*args, env: dict, timeout: float = 120) -> Run:
    started = time.perf_counter()
    done = subprocess.run([*console_script(), *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=timeout)
    return Run(done.returncode, done.stdout, done.stderr, time.perf_counter() - started)


@pytest.mark.slow
def test_every_fault_through_the_console_script(hub_server, derived_pair_root, tmp_path):
    server = hub_server(derived_pair_root, cdn=True)
    env = {**os.environ, "SOLARFORENSICS_RETRIES": str(RETRIES), "SOLARFORENSICS_TIMEOUT": "0.5"}
    clean = run_script(*COMPARE, "--out", tmp_path / "clean.json", "--no-cache", env=env)
    assert clean.code == 0, clean.err
    expected = numbers(tmp_path / "clean.json")
    outcomes = []
    for name, (kind, params, _) in TRANSIENT.items():
        server.faults.clear()
        if kind:
            server.faults.add(kind, "*.safetensors", 1, **{**params, "delay_s": 1.5})
        run = run_script(*COMPARE, "--out", tmp_path / "t.json", "--no-cache", env=env)
        assert run.code == 0, (name, run.err)
        assert numbers(tmp_path / "t.json") == expected, name
        outcomes.append(f"{name}: clean numbers in {run.seconds:.1f} s")
    plain = hub_server(derived_pair_root)  # without the CDN: a fault's `after` counts data requests, not redirect hops
    env["HF_ENDPOINT"] = plain.url
    for name, (kind, params, message) in PERSISTENT.items():
        plain.faults.clear()
        plain.faults.add(kind, "*.safetensors", -1, **params)
        out = tmp_path / "p.json"
        run = run_script(*COMPARE, "--out", out, "--no-cache", env=env)
        assert_one_clear_line(run, message)
        assert not out.exists() and run.seconds < 30, name
        outcomes.append(f"{name}: exit {run.code} in {run.seconds:.1f} s")
    plain.faults.clear()
    plain.faults.add("slow", "*.safetensors", -1, delay_s=3.0)
    run = run_script("inspect", "acme/a", "--no-cache", env={**env, "SOLARFORENSICS_RETRIES": "0"})
    assert_one_clear_line(run, "ReadTimeout")
    outcomes.append(f"persistent slow server: exit {run.code} in {run.seconds:.1f} s")
    print("\n".join(outcomes))
