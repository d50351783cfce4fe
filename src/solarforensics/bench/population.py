"""`bench population`: what fingerprints cost and how fast a scan ranks an index.

- replicas: the fingerprint's read plan for the full-scale Solar and GLM replicas (bytes, share of the checkpoint,
  stored size), and optionally a real fingerprint of one of them over the local Hub;
- scan: 1,000 synthetic fingerprints of Solar's depth in an index, one query ranked against all (pre-filter time);
- crawl: fingerprinting a zoo's models through a local Hub with latency, threads vs a local Ray cluster, one run.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import torch

from solarforensics.localhub.server import HubServer
from solarforensics.models import OpenOptions, open_model
from solarforensics.population.index import Index
from solarforensics.population.record import Fingerprint
from solarforensics.population.scan import rank_prefilters
from solarforensics.provenance import sketch
from solarforensics.provenance.weights import ModelWeights

REPLICAS = ("upstage/Solar-Open-100B", "zai-org/GLM-4.5-Air")


def stored_size(layers: int, hidden: int, probes: int = 94 + sketch.HASHED_PROBES,
                readers: int = len(sketch.READERS)) -> int:
    """Bytes a fingerprint stores, from its shape alone: Gram triangles, units, signatures, gains, pre-filter."""
    grams = layers * readers * probes * (probes + 1) // 2 * 2
    units = layers * 2 * sketch.UNITS * probes * 2
    per_dim = layers * (readers + 2) * hidden * 2
    return grams + units + per_dim + probes * probes * 4 + layers * readers * sketch.PREFILTER_DIM * 2


def bench_replicas(read: str | None = None) -> dict:
    """The plan for each replica; `read`: also fingerprint that replica for real (bytes, requests, seconds)."""
    from solarforensics.evidence.tokenizer import read_vocabulary
    from solarforensics.population.fingerprint import fingerprint_model
    from solarforensics.replicas.store import replica_store

    figures: dict = {}
    with HubServer(replica_store()) as server:
        options = OpenOptions(endpoint=server.url, use_cache=False)
        for repo in REPLICAS:
            source = open_model(repo, options)
            weights = ModelWeights.of("model", source)
            probes = sketch.select_probes(read_vocabulary(source))
            plan = sketch.row_plan(weights)
            planned = sketch.planned_bytes(weights, plan, len(probes))
            requests = _planned_requests(source, weights, plan, probes)
            checkpoint = sum(f.size or 0 for f in source.provenance.files.values())
            figures[repo] = {"planned_bytes": planned, "checkpoint_bytes": checkpoint,
                             "planned_percent": round(100 * planned / checkpoint, 4),
                             "stored_bytes_formula": stored_size(len(weights.layers), weights.hidden or 0,
                                                                 len(probes)),
                             "probes": len(probes), "layers": len(weights.layers),
                             "range_requests_planned": requests,
                             "weight_files": len({r.file for r in source.tensors.values()})}
            if read == repo:
                server.reset_stats()
                started = time.perf_counter()
                fp, _ = fingerprint_model(repo, options)
                stats = server.stats()
                figures[repo].update(read_bytes=fp.meta["cost"]["bytes_read"], requests=stats["requests"],
                                     # every file request is a GET or HEAD on /resolve, which the Hub rate-limits
                                     resolves=sum(n for k, n in stats["by_kind"].items() if k in ("head", "range", "get")),
                                     api_calls=sum(n for k, n in stats["by_kind"].items()
                                                   if k in ("model_info", "tree", "paths_info", "commits")),
                                     seconds=round(time.perf_counter() - started, 1),
                                     stored_bytes=len(fp.to_entry().data) + len(fp.to_entry().prefilter))
    return figures


def _planned_requests(source, weights, plan: dict, probes: list) -> int:
    """Range requests the read plan makes after coalescing (shard headers not counted: one or two per shard)."""
    from solarforensics.sources.ranges import plan_spans

    ranges = []
    for name, rows in plan.items():
        ref = source.ref(name)
        width = ref.nbytes // ref.shape[0]
        ranges.append((ref.file, ref.start + rows[0] * width, ref.start + (rows[-1] + 1) * width))
    embed = source.ref(weights.stored_name("embed", None))
    width = embed.nbytes // embed.shape[0]
    ranges += [(embed.file, embed.start + p[2] * width, embed.start + (p[2] + 1) * width) for p in probes]
    return len(plan_spans(sorted(set(ranges)), source.max_gap, source.max_span))


def synthetic(spec: str, layers: int, seed: int) -> Fingerprint:
    """A fingerprint with only pre-filter vectors and metadata, as a stand-in of Solar's depth for timing."""
    generator = torch.Generator().manual_seed(seed)
    arrays = {}
    for reader in sketch.READERS[:4]:
        v = torch.randn(layers, sketch.PREFILTER_DIM, generator=generator)
        arrays[f"prefilter.{reader}"] = (v / v.norm(dim=1, keepdim=True)).to(torch.float16)
    meta = {"source": {"repo": f"synthetic/{spec}", "resolved_commit": f"{seed:040d}"},
            "arch": {"hidden_size": 4096, "num_layers": layers}}
    return Fingerprint(spec, meta, arrays)


def bench_scan(models: int = 1000, layers: int = 48) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "index.sqlite"
        with Index(path) as index:
            index.put([synthetic(f"m{i}", layers, i).to_entry() for i in range(models)])
        query = synthetic("query", layers, 10**6)
        mine = {k: v for k, v in query.arrays.items() if k.startswith("prefilter.")}
        started = time.perf_counter()
        with Index(path) as index:
            rows = index.prefilters()
        loaded = time.perf_counter()
        from safetensors.torch import load as load_arrays

        scores = sorted(s or -1.0 for s in rank_prefilters(mine, [load_arrays(blob) for _, _, blob in rows]))
        done = time.perf_counter()
        size = path.stat().st_size
    return {"indexed_fingerprints": models, "layers": layers, "load_prefilters_s": round(loaded - started, 3),
            "rank_all_s": round(done - loaded, 3), "scan_prefilter_total_s": round(done - started, 3),
            "index_bytes_per_model_prefilter_only": size // models, "best_unrelated_score": round(scores[-1], 3)}


def bench_crawl(zoo: Path, latency_ms: int = 50, limit: int = 100) -> dict:
    """The same models fingerprinted twice through a local Hub: 4 threads, then a local Ray cluster (2 CPUs)."""
    from solarforensics.population.crawl import fingerprint_all

    names = sorted(p.name for p in zoo.iterdir() if (p / "config.json").is_file())[:limit]
    figures = {"models": len(names), "latency_ms": latency_ms}
    with tempfile.TemporaryDirectory() as root:
        (Path(root) / "zoo").symlink_to(zoo.resolve(), target_is_directory=True)
        with HubServer(root, latency_ms=latency_ms) as server:
            specs = [f"zoo/{n}" for n in names]
            for runner, address in (("threads", None), ("ray", "local")):
                with tempfile.TemporaryDirectory() as cache, Index(Path(cache) / "i.sqlite") as index:
                    options = OpenOptions(endpoint=server.url, use_cache=False)
                    started = time.perf_counter()
                    outcomes = fingerprint_all(specs, index, options, workers=4 if runner == "threads" else 2,
                                               ray_address=address)
                    figures[f"{runner}_s"] = round(time.perf_counter() - started, 1)
                    figures[f"{runner}_failed"] = sum(o.status == "failed" for o in outcomes)
    figures["threads_over_ray"] = round(figures["threads_s"] / figures["ray_s"], 2) if figures["ray_s"] else math.nan
    return figures
