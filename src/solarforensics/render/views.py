"""Turn any results document into a Report: banners, the kind's own blocks, then how the run was made."""

import dataclasses
import re
import shlex
from typing import Any

from solarforensics.errors import inert
from solarforensics.render import plots
from solarforensics.render.blocks import Banner, Block, Bullets, Facts, Figure, Report, Table
from solarforensics.render.case_view import case_blocks
from solarforensics.render.compare_view import compare_blocks
from solarforensics.render.evidence_view import arch_blocks, license_blocks, tokenizer_blocks
from solarforensics.render.formatting import MISSING, fmt_bytes, fmt_count, fmt_int, fmt_num, fmt_seconds, fmt_value
from solarforensics.render.generic_view import generic_blocks
from solarforensics.render.population_view import lineage_blocks, scan_blocks
from solarforensics.render.provenance_view import provenance_blocks
from solarforensics.render.repo_view import code_blocks, history_blocks
from solarforensics.render.validation_view import validation_blocks

MATRIX_METRICS = ("pearson", "cosine", "identical_fraction", "n_tensors")


def build_report(doc: Any, index: int = 1) -> Report:
    """The blocks for one document, every string made inert (model-derived text reaches every renderer through
    here); never raises on odd content (unknown kinds get a generic view)."""
    report = _laid_out(doc, index)
    return Report(inert(report.title), report.anchor, [_inert_block(block) for block in report.blocks])


def _inert_block(block: Block) -> Block:
    def clean(value):
        if isinstance(value, str):
            return inert(value)
        if isinstance(value, (list, tuple)):
            return type(value)(clean(item) for item in value)
        return value

    return dataclasses.replace(block, **{f.name: clean(getattr(block, f.name)) for f in dataclasses.fields(block)})


def _laid_out(doc: Any, index: int) -> Report:
    if not isinstance(doc, dict):
        return Report(f"Document {index}", f"doc-{index}", [Facts("Content", [("value", fmt_value(doc, 400))])])
    kind = str(doc.get("kind", "unknown"))
    kind_builders = {"compare": compare_blocks, "matrix": matrix_blocks, "inspect": inspect_blocks,
                     "provenance": provenance_blocks, "arch": arch_blocks, "tokenizer": tokenizer_blocks,
                     "license": license_blocks, "case": case_blocks, "validation": validation_blocks,
                     "history": history_blocks, "code": code_blocks, "scan": scan_blocks,
                     "lineage": lineage_blocks}
    builder = kind_builders.get(kind, generic_blocks)
    try:
        body = builder(doc)
    except Exception as exc:  # a malformed document still renders: fall back to the raw keys
        body = [Banner("warning", "Could not lay out this document",
                       [f"{type(exc).__name__}: {exc}; showing its keys instead."]), *generic_blocks(doc)]
    blocks = status_banners(doc) + body + run_blocks(doc)
    return Report(document_title(doc), f"doc-{index}-{_anchor(kind)}", blocks)


def document_title(doc: dict) -> str:
    kind = str(doc.get("kind", "results"))
    case = doc.get("case")
    if kind == "case" and isinstance(case, dict) and case.get("name"):
        return f"case {case['name']}: {case.get('title') or case.get('question')}"
    models = doc.get("models")
    if isinstance(models, dict) and models.get("a") is not None:
        title = f"{kind}: {models.get('a')} vs {models.get('b')}"
        return title + (f" (control {models['control']})" if models.get("control") else "")
    if isinstance(models, list) and models:
        return f"{kind}: {', '.join(str(m) for m in models)}"
    specs = [str(s.get("spec")) for s in doc.get("sources") or [] if isinstance(s, dict) and s.get("spec")]
    return f"{kind}: {' vs '.join(specs)}" if specs else kind


def status_banners(doc: dict) -> list[Block]:
    """Loud warnings for replica and partial documents, then the run's own warnings."""
    blocks: list[Block] = []
    if doc.get("replica"):
        blocks.append(Banner("danger", "SYNTHETIC REPLICA — NOT THE REAL MODELS", [
            "These numbers were computed on generated stand-ins that mimic the models' shapes and statistics.",
            "They show how the method behaves; they say nothing about the real checkpoints.",
        ]))
    if doc.get("complete") is False:
        blocks.append(Banner("warning", "INCOMPLETE RESULTS", [
            "The run stopped on an error; what is shown was gathered before it. See the warnings.",
        ]))
    warnings = [str(w) for w in doc.get("warnings") or []]
    if warnings:
        blocks.append(Bullets("Warnings", warnings))
    return blocks


def run_blocks(doc: dict) -> list[Block]:
    """Where the bytes came from, what it cost, and how the run was invoked."""
    blocks: list[Block] = []
    sources = [s for s in doc.get("sources") or [] if isinstance(s, dict)]
    if sources:
        rows = []
        for source in sources:
            where = source.get("repo") or source.get("path") or MISSING
            commit = source.get("resolved_commit")
            revision = source.get("requested_revision")
            pinned = (commit[:12] if isinstance(commit, str) else MISSING) + (f" ({revision})" if revision else "")
            files = source.get("files") or []
            rows.append([str(source.get("spec")), str(source.get("kind")), str(where), pinned, fmt_int(len(files)),
                         fmt_bytes(source.get("bytes_transferred")), fmt_int(source.get("requests")),
                         fmt_int(source.get("ranges")), fmt_int(source.get("cache_hits"))])
        blocks.append(Table("Sources", ["spec", "kind", "repo / path", "commit", "files", "bytes transferred",
                                        "requests", "ranges", "cache hits"],
                            rows, [False, False, False, False, True, True, True, True, True]))
    tool = doc.get("tool") or {}
    argv = (doc.get("command") or {}).get("argv")
    items = [
        ("tool", f"{tool.get('name', 'solarforensics')} {tool.get('version', '?')}"),
        ("created", str(doc.get("created_at", MISSING))),
        ("device", f"{doc.get('device', MISSING)}, accumulation {doc.get('accumulation_dtype', MISSING)}"),
        ("command", shlex.join(str(a) for a in argv) if isinstance(argv, list) else MISSING),
        ("schema version", str(doc.get("schema_version", MISSING))),
    ]
    timings = doc.get("timings") or {}
    if isinstance(timings, dict) and timings:
        items.append(("timings", ", ".join(f"{key} {fmt_seconds(value)}" for key, value in timings.items())))
    blocks.append(Facts("Run", items))
    return blocks


def matrix_blocks(doc: dict) -> list[Block]:
    """One table and one heatmap per group and metric."""
    models = [str(m) for m in doc.get("models") or []]
    blocks: list[Block] = []
    statements = (doc.get("summary") or {}).get("statements") or []
    if statements:
        blocks.append(Bullets("What the numbers say", [str(s) for s in statements]))
    for group, metrics in (doc.get("matrices") or {}).items():
        for metric in MATRIX_METRICS:
            values = metrics.get(metric) if isinstance(metrics, dict) else None
            if not isinstance(values, list):
                continue
            rows = [[models[i] if i < len(models) else str(i)] + [fmt_num(v) for v in row]
                    for i, row in enumerate(values)]
            blocks.append(Table(f"{group}: {metric}", ["model"] + models, rows, [False] + [True] * len(models)))
            if metric != "n_tensors" and values and values[0]:
                blocks.append(Figure(f"{group}: {metric}", f"matrix-{group}-{metric}",
                                     lambda group=group, metric=metric: plots.matrix_png(doc, group, metric)))
    return blocks


def inspect_blocks(doc: dict) -> list[Block]:
    """Size, architecture facts, shards and dtypes of one model."""
    blocks: list[Block] = [Facts("Model", [
        ("parameters", fmt_count(doc.get("parameters"))),
        ("tensors", fmt_int(doc.get("tensors"))),
        ("bytes transferred", fmt_bytes(doc.get("bytes_transferred"))),
        ("requests", fmt_int(doc.get("requests"))),
    ])]
    config = doc.get("config_summary") or {}
    if config:
        blocks.append(Facts("Config", [(str(key), fmt_num(value)) for key, value in config.items()]))
    dtypes = doc.get("dtypes") or {}
    if dtypes:
        rows = [[str(dtype), fmt_int(info.get("tensors")), fmt_count(info.get("parameters")),
                 fmt_bytes(info.get("bytes"))] for dtype, info in dtypes.items() if isinstance(info, dict)]
        blocks.append(Table("Dtypes", ["dtype", "tensors", "parameters", "bytes"], rows, [False, True, True, True]))
    shards = [s for s in doc.get("shards") or [] if isinstance(s, dict)]
    if shards:
        rows = [[str(s.get("name")), fmt_bytes(s.get("size")), fmt_int(s.get("tensors"))] for s in shards]
        blocks.append(Table("Shards", ["file", "size", "tensors"], rows, [False, True, True]))
    return blocks


def _anchor(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "doc"
