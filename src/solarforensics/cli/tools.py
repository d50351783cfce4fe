"""Tools: the local Hub server and the benchmarks."""

from pathlib import Path
from typing import Annotated

import typer

from solarforensics.cli.app import app, bench_app, err, hub_app, out
from solarforensics.cli.options import Device, MaxGap, Workers
from solarforensics.errors import ForensicsError, NotFoundError
from solarforensics.localhub.faults import FAULT_HELP, FAULT_SYNTAX, PARAMETER_HELP

FAULTS = (f"Inject a fault, {FAULT_SYNTAX} (repeatable; COUNT -1 = every matching request), e.g. "
          "429:*.safetensors:2:retry_after=1. Kinds: " + "; ".join(f"{k}: {v}" for k, v in FAULT_HELP.items())
          + ". Parameters: " + "; ".join(f"{k}: {v}" for k, v in PARAMETER_HELP.items()) + ".")


@hub_app.command("serve")
def hub_serve(
    root: Annotated[Path | None, typer.Argument(help="Folder of repos laid out as ROOT/owner/name/.")] = None,
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port on 127.0.0.1 (0 = any free port).")] = 8080,
    latency_ms: Annotated[int, typer.Option("--latency-ms", min=0, max=60_000, help="Delay before every answer.")] = 0,
    bandwidth: Annotated[int | None, typer.Option("--bandwidth", min=1, help="Bytes per second per answer.")] = None,
    cdn: Annotated[bool, typer.Option("--cdn", help="Redirect weight files to a second 'CDN' origin.")] = False,
    fault: Annotated[list[str] | None, typer.Option("--fault", help=FAULTS)] = None,
    replicas: Annotated[bool, typer.Option("--replicas", help="Also serve full-scale virtual replicas of Solar, GLM, Phi, INTELLECT-3.")] = False,
) -> None:
    """Serve ROOT/owner/name folders (and/or virtual replicas) as Hub model repos on 127.0.0.1 (until Ctrl-C)."""
    from solarforensics.localhub.server import serve

    if root is not None and not root.is_dir():
        raise ForensicsError(f"{root}: not a folder")
    if root is None and not replicas:
        raise ForensicsError("nothing to serve", "give a folder ROOT and/or --replicas")
    extra = ()
    if replicas:
        from solarforensics.replicas.store import replica_store

        extra = (replica_store(),)
    serve(root, port=port, latency_ms=latency_ms, bandwidth=bandwidth, cdn=cdn, faults=fault or [], extra_stores=extra)


@bench_app.command("fetch")
def bench_fetch(
    latency_ms: Annotated[int, typer.Option("--latency-ms", min=0, max=60_000, help="Emulated latency of the local Hub.")] = 50,
    workers: Workers = None,
    max_gap: MaxGap = None,
) -> None:
    """Bytes, requests and time to read all norm gains of two sharded models: ours vs per-tensor vs whole shards."""
    from solarforensics.bench.fetch import bench_fetch as run
    from solarforensics.render.listing import print_figures

    print_figures(out, f"bench fetch (local Hub, {latency_ms} ms latency)", run(latency_ms=latency_ms, workers=workers, max_gap=max_gap))


@bench_app.command("metrics")
def bench_metrics(
    size_mb: Annotated[int, typer.Option("--size-mb", min=1, max=65_536, help="Size of each input tensor in MiB.")] = 256,
    device: Device = "auto",
) -> None:
    """GB/s of the streaming cosine/Pearson/MAD pass vs a plain numpy pass; peak memory on a tensor over the budget."""
    from solarforensics.bench.metrics import bench_memory
    from solarforensics.bench.metrics import bench_metrics as run
    from solarforensics.render.listing import print_figures

    print_figures(out, "bench metrics: throughput", run(size_bytes=size_mb << 20, device=device))
    print_figures(out, "bench metrics: memory", bench_memory(total_elements=64 << 20, chunk_elements=1 << 22))


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Where the case file and reports go.")] = Path("results/demo"),
    latency_ms: Annotated[int, typer.Option("--latency-ms", min=0, max=60_000, help="Emulated Hub latency.")] = 30,
) -> None:
    """The embedded demo, no network: a local Hub serving full-scale virtual replicas, and the Solar vs GLM case over HTTP."""
    from solarforensics.case.demo import run_demo_case
    from solarforensics.cli.case import print_case_summary

    outcome = run_demo_case(out_dir, latency_ms=latency_ms, say=lambda text: err.print(text, highlight=False, markup=False))
    print_case_summary(outcome.doc)
    out.print(f"report: {outcome.report_html}")


@bench_app.command("provenance")
def bench_provenance(
    zoo: Annotated[Path | None, typer.Option("--zoo", help="Also run every labelled pair of this zoo through both "
                                                           "paths.", show_default=False)] = None,
    latency_ms: Annotated[int, typer.Option("--latency-ms", min=0, max=60_000, help="Emulated latency of the local "
                                                                                  "Hub.")] = 30,
    no_full: Annotated[bool, typer.Option("--no-full", help="Only the lean path on the replicas (the whole-matrix "
                                                            "path takes ~10 minutes per pair).")] = False,
    replicas: Annotated[bool, typer.Option("--replicas/--no-replicas", help="Run the full-scale replica pairs.")] = True,
) -> None:
    """The whole-matrix path (--full) beside the anytime lean path on the full-scale replicas, in one run: bytes,
    bytes at the verdict, wall time, peak RSS, verdict and decisive tests of each."""
    from solarforensics.bench.provenance import bench_replicas, bench_zoo
    from solarforensics.render.listing import print_figures

    if zoo is not None and not (zoo / "manifest.json").is_file():
        raise NotFoundError(f"no zoo manifest in {zoo}", "build one first: solarforensics zoo build DIR")
    if replicas:
        print_figures(out, f"bench provenance: full-scale replicas (local Hub, {latency_ms} ms latency, no range "
                           "cache)", bench_replicas(latency_ms, old=not no_full))
    if zoo is not None:
        print_figures(out, f"bench provenance: zoo {zoo}, lean vs whole path", bench_zoo(zoo))


@bench_app.command("population")
def bench_population(
    zoo: Annotated[Path | None, typer.Option("--zoo", help="A zoo folder to crawl threads vs Ray (e.g. a forest).",
                                             show_default=False)] = None,
    latency_ms: Annotated[int, typer.Option("--latency-ms", min=0, max=60_000, help="Emulated latency of the local "
                                                                                  "Hub.")] = 50,
    read: Annotated[str | None, typer.Option("--read", help="Also fingerprint this replica for real (slow: reads "
                                                            "its planned bytes).", show_default=False)] = None,
) -> None:
    """Fingerprint read plans on the full-scale replicas, scan ranking over 1,000 fingerprints, crawl threads vs Ray."""
    from solarforensics.bench.population import bench_crawl, bench_replicas, bench_scan
    from solarforensics.render.listing import print_figures

    if zoo is not None and not zoo.is_dir():
        raise NotFoundError(f"no zoo folder {zoo}", "build one first: solarforensics zoo build DIR --forest")

    print_figures(out, "bench population: fingerprint plans on the full-scale replicas", bench_replicas(read))
    print_figures(out, "bench population: scan pre-filter over an index", bench_scan())
    if zoo is not None:
        print_figures(out, f"bench population: crawl (local Hub, {latency_ms} ms latency)", bench_crawl(zoo, latency_ms))
