"""Throughput and memory benchmarks of the streaming pair statistics (for `solarforensics bench metrics`)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import torch

from solarforensics.metrics.device import DeviceLike, describe_device, dtype_name, resolve_device
from solarforensics.metrics.similarity import CPU_BLOCK_ELEMENTS, pair_stats

# Interpreter, allocator arenas and torch's lazily created state: growth allowed beyond the stated buffers.
_MEMORY_SLACK_BYTES = 64 << 20
# Bytes per element Spearman holds at its peak (measured ~100): values, ranks, sort order, tie groups, temporaries.
_SPEARMAN_BYTES_PER_ELEMENT = 128


def _best_seconds(run, repeat: int, sync) -> float:
    run()  # warm-up: first-touch page faults, lazy kernels
    sync()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def bench_metrics(size_bytes: int = 256 << 20, device: DeviceLike = "cpu", repeat: int = 3) -> dict:
    """GB/s of pair_stats (Spearman off) on two float32 tensors of `size_bytes` each, both counted, vs numpy on the
    same data; on CUDA also vs a device-to-device copy of the same size (read + write), the practical bandwidth."""
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    n = max(1, size_bytes // 4)
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(n, generator=generator)
    b = torch.randn(n, generator=generator).mul_(0.8).add_(a, alpha=0.6)
    an, bn = a.numpy(), b.numpy()
    processed = 2 * n * 4

    def numpy_pass():
        return np.dot(an, bn), np.dot(an, an), np.dot(bn, bn), np.abs(an - bn).mean()

    numpy_seconds = _best_seconds(numpy_pass, repeat, lambda: None)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    da, db = a.to(dev), b.to(dev)
    ours_seconds = _best_seconds(lambda: pair_stats(da, db, device=dev, spearman_max=0), repeat, sync)
    result = {
        "device": describe_device(dev),
        "size_bytes": n * 4,
        "bytes_processed": processed,
        "repeat": repeat,
        "accumulation_dtype": dtype_name(torch.float64),
        "pair_stats_seconds": ours_seconds,
        "pair_stats_gb_per_s": processed / ours_seconds / 1e9,
        "numpy_seconds": numpy_seconds,
        "numpy_gb_per_s": processed / numpy_seconds / 1e9,
        "ratio_vs_numpy": numpy_seconds / ours_seconds,
    }
    if dev.type == "cuda":
        target = torch.empty_like(da)
        copy_seconds = _best_seconds(lambda: target.copy_(da), repeat, sync)
        copy_rate = 2 * n * 4 / copy_seconds / 1e9
        result["device_copy_gb_per_s"] = copy_rate
        result["fraction_of_device_bandwidth"] = result["pair_stats_gb_per_s"] / copy_rate
    return result


_MEMORY_PROBE = """
import json, sys, torch
from solarforensics.metrics.similarity import pair_stats

def high_water_bytes():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")

n, chunk, spearman_max = (int(v) for v in sys.argv[1:4])
pair_stats(torch.ones(8), torch.ones(8), spearman_max=8)  # load lazily initialised torch state first
generator = torch.Generator().manual_seed(0)
a = torch.randn(n, generator=generator)
b = torch.randn(n, generator=generator)
before = high_water_bytes()
stats = pair_stats(a, b, chunk_elements=chunk, spearman_max=spearman_max)
print(json.dumps({"before": before, "after": high_water_bytes(), "chunks": stats.chunks}))
"""


def bench_memory(total_elements: int, chunk_elements: int, spearman_max: int = 0) -> dict:
    """Peak-RSS growth (VmHWM, Linux) of pair_stats on two float32 CPU tensors of `total_elements`, in a fresh process.
    Bound: 24 B x min(chunk, 2**18) + 128 B x min(total, spearman_max) + 64 MiB slack, whatever total_elements."""
    if not sys.platform.startswith("linux"):
        return {"supported": False, "reason": "peak RSS is read from /proc/self/status (Linux only)"}
    command = [sys.executable, "-c", _MEMORY_PROBE, str(total_elements), str(chunk_elements), str(spearman_max)]
    probe = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    block = min(chunk_elements, CPU_BLOCK_ELEMENTS)
    bound = 3 * block * 8 + _SPEARMAN_BYTES_PER_ELEMENT * min(total_elements, spearman_max) + _MEMORY_SLACK_BYTES
    growth = probe["after"] - probe["before"]
    return {
        "supported": True,
        "total_elements": total_elements,
        "input_bytes": 2 * total_elements * 4,
        "chunk_elements": chunk_elements,
        "chunks": probe["chunks"],
        "peak_rss_before_bytes": probe["before"],
        "peak_rss_after_bytes": probe["after"],
        "growth_bytes": growth,
        "bound_bytes": bound,
        "within_bound": growth <= bound,
    }
