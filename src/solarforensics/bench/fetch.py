"""`bench fetch`: the cost of reading every norm gain of two sharded models from a Hub with emulated latency, for our
reader, for one request per tensor (the peers' method), and for downloading whole shards (the original analyses')."""

import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from huggingface_hub import HfApi
from safetensors import safe_open

from solarforensics.checkpoints import build_checkpoint
from solarforensics.families.family import find_family
from solarforensics.families.selection import select
from solarforensics.localhub.server import HubServer
from solarforensics.sources.cache import RangeCache
from solarforensics.sources.hub import HubSource

# Big enough that norm gains sit between megabytes of expert weights in several shards, as in real checkpoints.
BENCH_MODELS = {
    "bench/glm-like": ("glm4_moe", 1),
    "bench/solar-like": ("solar_open", 2),
}
BENCH_SIZE = {"hidden_size": 512, "num_layers": 16, "num_experts": 16, "moe_intermediate": 256, "vocab_size": 8192}


def _build(root: Path) -> None:
    for repo, (family, seed) in BENCH_MODELS.items():
        if not (root / repo / "model.safetensors.index.json").exists():
            build_checkpoint(root / repo, family, seed=seed, num_shards=8, overrides=BENCH_SIZE, tokenizer=False)


def _norm_names(source: HubSource) -> list[str]:
    family = find_family(source.config, list(source.tensors))
    return [s.name for s in select(family, list(source.tensors), "layernorm", config=source.config)]


def _measure(server: HubServer, run) -> dict:
    server.reset_stats()
    started = time.perf_counter()
    extra = run() or {}
    wall = time.perf_counter() - started
    stats = server.stats()
    tensor_gets = [e for e in stats["log"] if e["path"].endswith(".safetensors") and e["method"] == "GET"]
    return {
        "bytes": stats["bytes_served"], "requests": stats["requests"], "wall_s": wall,
        "tensor_file_requests": len(tensor_gets), "tensor_file_bytes": sum(e["bytes"] for e in tensor_gets), **extra,
    }  # fmt: skip


def bench_fetch(latency_ms: int = 50, workers: int | None = None, max_gap: int | None = None, root: Path | None = None) -> dict:
    root = Path(root or Path(tempfile.gettempdir()) / "solarforensics-bench-hub")
    _build(root)
    with HubServer(root, latency_ms=latency_ms) as server:
        endpoint = server.url
        needed = {}

        def ours(cache: RangeCache | None = None, parallel: bool = True, **tuning):
            def one(repo: str) -> int:  # as `compare` does: both models opened and read at the same time
                source = HubSource(repo, endpoint=endpoint, cache=cache, token=False, **tuning)
                names = _norm_names(source)
                source.read_tensors(names)
                headers = sum(8 + _header_len(source, f) for f in {source.ref(n).file for n in names})
                needed[repo] = source.planned_bytes(names) + headers
                return len(names)

            with ThreadPoolExecutor(max_workers=len(BENCH_MODELS) if parallel else 1) as pool:
                return {"tensors": sum(pool.map(one, BENCH_MODELS))}

        def whole_shards():
            api = HfApi(endpoint=endpoint, token=False)
            with tempfile.TemporaryDirectory() as cache_dir:
                for repo in BENCH_MODELS:
                    source = HubSource(repo, endpoint=endpoint, token=False)
                    names = _norm_names(source)
                    for shard in sorted({source.ref(n).file for n in names}):
                        path = api.hf_hub_download(repo, shard, revision=source.commit, cache_dir=cache_dir)
                        with safe_open(path, "pt") as handle:
                            for name in names:
                                if source.ref(name).file == shard:
                                    handle.get_tensor(name)

        tuning = {k: v for k, v in {"workers": workers, "max_gap": max_gap}.items() if v is not None}
        results = {"ours": _measure(server, lambda: ours(**tuning))}
        results["per_tensor"] = _measure(server, lambda: ours(parallel=False, max_gap=-1, workers=1))
        results["whole_shards"] = _measure(server, whole_shards)
        with tempfile.TemporaryDirectory() as cache_dir:
            cache = RangeCache(Path(cache_dir))
            ours(cache=cache)
            results["ours_cached_rerun"] = _measure(server, lambda: ours(cache=cache))
    selected = sum(needed.values())
    mine, per, shards = results["ours"], results["per_tensor"], results["whole_shards"]
    return {
        "latency_ms": latency_ms,
        "selected_bytes_incl_headers": selected,
        **{f"{k}.{m}": v[m] for k, v in results.items() for m in ("bytes", "tensor_file_bytes", "requests", "wall_s")},
        "ours_cached_rerun.tensor_file_requests": results["ours_cached_rerun"]["tensor_file_requests"],
        "ratio.safetensors_bytes_ours_vs_needed": mine["tensor_file_bytes"] / selected,
        "ratio.requests_per_tensor_vs_ours": per["requests"] / mine["requests"],
        "ratio.speed_ours_vs_per_tensor": per["wall_s"] / mine["wall_s"],
        "ratio.bytes_whole_shards_vs_ours": shards["bytes"] / mine["bytes"],
        "ratio.speed_ours_vs_whole_shards": shards["wall_s"] / mine["wall_s"],
    }


def _header_len(source: HubSource, shard: str) -> int:
    return min(r.start for r in source.tensors.values() if r.file == shard) - 8
