"""Under load the tool stays bounded: a `matrix` over many models through the local Hub at high concurrency finishes
(no deadlock) with bounded threads, connections and memory; a compare of tensors far larger than the metrics' streaming
block keeps its working memory beyond the tensors themselves bounded. The figures are printed."""

import faulthandler
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from solarforensics.checkpoints import build_checkpoint, derive_checkpoint
from solarforensics.sources.base import TensorSource

WORKERS = 64
OPEN_AT_ONCE = 8  # analyses.models.open_models opens at most 8 models at a time
HTTPX_POOL = 100  # huggingface_hub's shared client: at most 100 connections


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """`zoo(n)`: a Hub root with repos acme/m0..m{n-1}, a tiny llama and its noisy copies (grown on demand)."""
    root = tmp_path_factory.mktemp("load-hub")
    build_checkpoint(root / "acme" / "m0", "llama", seed=0, tokenizer=False)

    def grow(n: int) -> Path:
        for i in range(1, n):
            if not (root / "acme" / f"m{i}").exists():
                derive_checkpoint(root / "acme" / "m0", root / "acme" / f"m{i}", seed=i, noise=0.01 * i)
        return root

    return grow


def server_connections(port: int) -> int:
    """Established TCP connections whose local end is `port` (the server's side), from /proc/net/tcp."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                count += 1
    return count


class Sampler(threading.Thread):
    """Samples, every few milliseconds, this process's threads (client and server side apart) and the server's
    established connections, keeping the peaks."""

    def __init__(self, port: int):
        super().__init__(daemon=True, name="load-sampler")
        self.port, self.stop = port, threading.Event()
        self.peaks = {"threads": 0, "client_threads": 0, "connections": 0}

    def run(self) -> None:
        while not self.stop.is_set():
            names = [t.name for t in threading.enumerate()]
            client = [n for n in names if "process_request_thread" not in n and n != self.name]
            for key, value in (("threads", len(names)), ("client_threads", len(client)),
                               ("connections", server_connections(self.port))):
                self.peaks[key] = max(self.peaks[key], value)
            time.sleep(0.002)


def client_threads() -> int:
    """Threads of the client side; tqdm's monitor is a once-per-process daemon that huggingface_hub's first download
    starts, not a leak."""
    return len([t for t in threading.enumerate()
                if "process_request_thread" not in t.name and t.name != "tqdm_monitor"])


def matrix_in_process(cli_args: list[str]) -> int:
    from solarforensics.cli.main import main

    faulthandler.dump_traceback_later(120, exit=True, file=sys.__stderr__)  # a deadlock ends the run with all stacks
    sys.argv = ["solarforensics", *cli_args]
    try:
        main()
        return 0
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else 0
    finally:
        faulthandler.cancel_dump_traceback_later()


def test_a_matrix_of_6_models_at_64_workers_is_bounded_and_leaks_no_threads(zoo, hub_server, tmp_path, monkeypatch,
                                                                             capsys):
    monkeypatch.setattr(TensorSource, "workers", WORKERS)
    monkeypatch.setattr(TensorSource, "max_gap", 0)  # no coalescing across gaps: one request per norm gain
    monkeypatch.setattr(sys, "argv", sys.argv)
    server = hub_server(zoo(6), latency_ms=5)
    port = int(server.url.rsplit(":", 1)[1])
    models = ",".join(f"acme/m{i}" for i in range(6))
    before = client_threads()
    sampler = Sampler(port)
    sampler.start()
    started = time.perf_counter()
    code = matrix_in_process(["matrix", "--models", models, "--tensors", "layernorm", "--device", "cpu", "--json",
                              "--out", tmp_path / "m.json"])
    seconds = time.perf_counter() - started
    sampler.stop.set()
    sampler.join()
    capsys.readouterr()
    assert code == 0
    peaks = sampler.peaks
    requests = server.stats()["requests"]
    # Opening: 8 models at once, each with a side thread for config.json and a header pool of one thread per shard.
    assert peaks["client_threads"] <= OPEN_AT_ONCE * (1 + 1 + 2) + WORKERS + 4
    assert peaks["connections"] <= HTTPX_POOL
    assert client_threads() <= before  # every pool was shut down
    with capsys.disabled():
        print(f"\n[reliability] matrix of 6 models, {WORKERS} workers: {seconds:.1f} s, {requests} requests, peak "
              f"{peaks['client_threads']} client threads ({peaks['threads']} with the server's), "
              f"{peaks['connections']} concurrent server connections")


PROBE = r"""
import atexit, re, sys
def status():
    text = open("/proc/self/status").read()
    return {k: int(re.search(rf"{k}:\s+(\d+)", text)[1]) << 10 for k in ("VmRSS", "VmHWM")}
import numpy, scipy, torch, solarforensics.cli.main as cli
base = status()
atexit.register(lambda: print(f"PROBE {base['VmRSS']} {status()['VmHWM']}", file=sys.stderr))
sys.argv = ["solarforensics", *sys.argv[1:]]
cli.HARD_EXIT = False  # leave through the interpreter's exit, so the atexit probe above runs
cli.main()
"""


def probe(args: list, env: dict | None = None, sample_port: int | None = None) -> dict:
    """Run the CLI in a fresh process: resident memory after the imports, its peak (VmHWM), and (sampled from
    outside) peak threads and server connections."""
    process = subprocess.Popen([sys.executable, "-c", PROBE, *map(str, args)], env=env or os.environ.copy(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    threads = connections = 0
    while process.poll() is None:
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
            threads = max(threads, int(re.search(r"Threads:\s+(\d+)", status)[1]))
        except (OSError, TypeError):
            pass
        if sample_port:
            connections = max(connections, server_connections(sample_port))
        time.sleep(0.005)
    err = process.stderr.read()
    found = re.search(r"PROBE (\d+) (\d+)", err)
    assert process.returncode == 0 and found, err[-2000:]
    return {"base": int(found[1]), "peak": int(found[2]), "threads": threads, "connections": connections}


def mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


@pytest.mark.slow
def test_a_matrix_of_20_models_at_64_workers_in_its_own_process(zoo, hub_server, tmp_path, capsys):
    server = hub_server(zoo(20), latency_ms=5)
    port = int(server.url.rsplit(":", 1)[1])
    env = {**os.environ, "SOLARFORENSICS_WORKERS": str(WORKERS), "SOLARFORENSICS_MAX_GAP": "0"}
    models = ",".join(f"acme/m{i}" for i in range(20))
    started = time.perf_counter()
    figures = probe(["matrix", "--models", models, "--tensors", "layernorm,attn-k", "--device", "cpu", "--json",
                     "--out", tmp_path / "m.json"], env, sample_port=port)
    seconds = time.perf_counter() - started
    growth = figures["peak"] - figures["base"]
    assert figures["threads"] <= OPEN_AT_ONCE * (1 + 1 + 2) + WORKERS + 16  # + torch's and the runtime's own
    assert figures["connections"] <= HTTPX_POOL
    assert growth < 512 << 20  # 20 tiny models: a few MB of tensors, heatmaps, and the allocators' slack
    with capsys.disabled():
        print(f"\n[reliability] matrix of 20 models, {WORKERS} workers: {seconds:.1f} s, "
              f"{server.stats()['requests']} requests, peak {figures['threads']} threads, "
              f"{figures['connections']} concurrent server connections, peak RSS {mib(figures['peak'])} "
              f"({mib(growth)} over the {mib(figures['base'])} after imports)")


def write_big_pair(folder: Path, rows: int, cols: int = 1024) -> int:
    """Two one-tensor llama checkpoints (embeddings of rows x cols float32); returns the bytes of one tensor."""
    for name, seed in (("a", 0), ("b", 1)):
        (folder / name).mkdir(parents=True, exist_ok=True)
        generator = torch.Generator().manual_seed(seed)
        save_file({"model.embed_tokens.weight": torch.randn(rows, cols, generator=generator)},
                  str(folder / name / "model.safetensors"))
        (folder / name / "config.json").write_text('{"model_type": "llama", "hidden_size": %d, "vocab_size": %d, '
                                                   '"num_hidden_layers": 1, "num_attention_heads": 8}' % (cols, rows))
    return rows * cols * 4


def compare_memory(folder: Path, permutations: int) -> dict:
    return probe(["compare", folder / "a", folder / "b", "--tensors", "embeddings", "--device", "cpu",
                  "--permutations", permutations, "--json", "--out", folder / "c.json"])


SPEARMAN_BYTES = 128  # per element ranked (metrics.similarity.pair_stats' docstring), on at most 2**22 elements
SLACK = 96 << 20  # allocator and interpreter slack


def compare_bound(tensor: int) -> int:
    """What a compare of two `tensor`-byte tensors may add to the resident memory after imports: both tensors, the
    parts in flight while they are fetched (at most as many bytes again), Spearman's ranks, slack."""
    return 4 * tensor + SPEARMAN_BYTES * min(tensor // 4, 2**22) + SLACK


def test_a_compare_of_tensors_far_larger_than_the_streaming_block_stays_bounded(tmp_path, capsys):
    tensor = write_big_pair(tmp_path, rows=512)  # 512K elements: twice the 2**18-element block of pair_stats
    figures = compare_memory(tmp_path, permutations=0)
    growth = figures["peak"] - figures["base"]
    assert growth <= compare_bound(tensor)
    with capsys.disabled():
        print(f"\n[reliability] compare of two {mib(tensor)} tensors: peak RSS {mib(figures['peak'])}, "
              f"{mib(growth)} over the imports (bound {mib(compare_bound(tensor))})")


MEASURED: dict[int, tuple[int, int]] = {}


def measured(tmp_path: Path, rows: int) -> tuple[int, int]:
    """(tensor bytes, growth over the imports) of a compare with the default 1000 permutations, measured once."""
    if rows not in MEASURED:
        folder = tmp_path / str(rows)
        tensor = write_big_pair(folder, rows)
        figures = compare_memory(folder, permutations=1000)
        MEASURED[rows] = tensor, figures["peak"] - figures["base"]
    return MEASURED[rows]


SIZES = (2048, 16384, 65536)  # 8 MiB (the shuffle null's worst case: 99+ permutations of 2M elements), 64, 256 MiB


@pytest.mark.slow
def test_compare_memory_stays_within_its_bound_at_every_size(tmp_path, capsys):
    lines = []
    for rows in SIZES:
        tensor, growth = measured(tmp_path, rows)
        assert growth <= compare_bound(tensor), rows
        lines.append(f"{mib(tensor)} tensors: +{mib(growth)} (bound {mib(compare_bound(tensor))}, "
                     f"{mib(growth - 2 * tensor)} beyond the tensors)")
    with capsys.disabled():
        print("\n[reliability] compare memory over the imports: " + "; ".join(lines))


@pytest.mark.slow
def test_compare_memory_beyond_the_tensors_does_not_grow_with_their_size(tmp_path):
    beyond = {rows: measured(tmp_path, rows)[1] - 2 * measured(tmp_path, rows)[0] for rows in SIZES[1:]}
    # Tensors are filled in place (sources.base.read_ranges): what remains is at most one 64 MiB part in flight.
    assert beyond[65536] <= beyond[16384] + (64 << 20) + SLACK
