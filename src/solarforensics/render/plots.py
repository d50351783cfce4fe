"""PNG plots drawn with matplotlib's Agg canvas (no pyplot, no global state, no display needed)."""

import io
import math
import re
from pathlib import Path
from typing import Any

from solarforensics.render.formatting import fmt_num
from solarforensics.results.document import write_bytes_atomic

RAW_COLOR = "#d95f02"
CENTERED_COLOR = "#1b63a5"
NULL_COLOR = "#8c8c8c"
MISSING_COLOR = "#c8c8c8"
MARKERS = ("o", "s", "^", "D", "v", "P")
_LAYER_PREFIX = re.compile(r"^.*?\b(?:layers|layer|h|blocks|blk|block)\.\d+\.")


def group_baselines(doc: dict, group: str) -> dict:
    """The backgrounds computed for one group (`baselines.by_group`), or the document's single set when it has no
    per-group ones (documents written before they existed)."""
    baselines = doc.get("baselines") if isinstance(doc.get("baselines"), dict) else {}
    by_group = baselines.get("by_group")
    if isinstance(by_group, dict):
        own = by_group.get(group)
        return own if isinstance(own, dict) else {}
    return baselines


def has_layer_profile(doc: dict, group: str) -> bool:
    """True when the group has at least two layers with both cosines to draw."""
    return len({layer for layer, _, _, _ in _profile_points(doc, group)}) >= 2


def has_layer_matrix(doc: dict, group: str) -> bool:
    matrix = (doc.get("layer_matrices") or {}).get(group)
    return isinstance(matrix, dict) and bool(matrix.get("values")) and bool(matrix["values"][0])


def layer_profile_png(doc: dict, group: str) -> bytes:
    """Per-layer raw cosine and centered cosine of one group, over the shuffle-null band and the baselines."""
    from matplotlib.ticker import MaxNLocator

    figure, axes = _figure(8.0, 5.0)
    series: dict[str, list[tuple[int, float, float]]] = {}
    for layer, role, cosine, pearson in _profile_points(doc, group):
        series.setdefault(role, []).append((layer, cosine, pearson))
    baselines = group_baselines(doc, group)
    shuffle = baselines.get("shuffle") or {}
    if _numbers(shuffle.get("null_q05"), shuffle.get("null_q95")):
        axes.axhspan(shuffle["null_q05"], shuffle["null_q95"], color=NULL_COLOR, alpha=0.3, lw=0,
                     label=f"shuffle null q05–q95 ({shuffle.get('statistic', 'statistic')})")
    reference = baselines.get("reference_null") or {}
    if _numbers(reference.get("cosine_mean")):
        axes.axhline(reference["cosine_mean"], color=RAW_COLOR, lw=1, ls=":",
                     label="reference null: raw cosine of independent same-mean vectors")
    within = baselines.get("within_model") or {}
    for side, style in (("a", "--"), ("b", "-.")):
        base = within.get(side) or {}
        if _numbers(base.get("mean")):
            axes.axhline(base["mean"], color=NULL_COLOR, lw=1, ls=style,
                         label=f"within-model baseline {side.upper()} ({base.get('metric', '')})")
    for index, (role, points) in enumerate(sorted(series.items())):
        points.sort()
        layers = [p[0] for p in points]
        marker = MARKERS[index % len(MARKERS)]
        suffix = f" · {role}" if len(series) > 1 else ""
        # Raw drawn wide and centered dashed on top, so both stay visible when they coincide (real copies).
        axes.plot(layers, [p[1] for p in points], color=RAW_COLOR, marker=marker, ms=6, lw=2.6, zorder=2,
                  label=f"raw cosine{suffix}")
        axes.plot(layers, [p[2] for p in points], color=CENTERED_COLOR, marker=marker, ms=3.5, lw=1.3, ls="--",
                  zorder=3, label=f"centered (Pearson){suffix}")
    values = [v for points in series.values() for p in points for v in p[1:]]
    axes.set_ylim(min(-0.1, min(values) - 0.05), max(1.05, max(values) + 0.05))
    axes.axhline(0, color="black", lw=0.6)
    name_a, name_b = _pair_names(doc)
    axes.set_title(f"{group}: {name_a} vs {name_b}", fontsize=11)
    axes.set_xlabel("layer (A)")
    axes.set_ylabel("similarity")
    axes.grid(True, alpha=0.3)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.legend(*axes.get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    return _png(figure)


def layer_matrix_png(doc: dict, group: str) -> bytes:
    """Heatmap of one group's L_A x L_B layer matrix."""
    matrix = doc["layer_matrices"][group]
    values = _grid(matrix["values"])
    layers_a = list(matrix.get("layers_a") or range(len(values)))
    layers_b = list(matrix.get("layers_b") or range(len(values[0])))
    size = min(9.0, 3.5 + 0.12 * max(len(layers_a), len(layers_b)))
    figure, axes = _figure(size + 1.2, size)
    low, high, cmap = color_scale(str(matrix.get("metric", "")))
    image = axes.imshow(values, cmap=_colormap(cmap), vmin=low, vmax=high, aspect="auto", interpolation="nearest")
    figure.colorbar(image, ax=axes, label=str(matrix.get("metric", "")))
    _layer_ticks(axes.set_yticks, axes.set_yticklabels, layers_a)
    _layer_ticks(axes.set_xticks, axes.set_xticklabels, layers_b)
    name_a, name_b = _pair_names(doc)
    axes.set_ylabel(f"layer of A ({name_a})")
    axes.set_xlabel(f"layer of B ({name_b})")
    axes.set_title(f"{group}: {matrix.get('metric', '')} — diagonal {_short(matrix.get('diagonal_mean'))}, "
                   f"off-diagonal {_short(matrix.get('off_diagonal_mean'))}", fontsize=10)
    return _png(figure)


def matrix_png(doc: dict, group: str, metric: str) -> bytes:
    """Heatmap of a `matrix` document's N x N matrix for one group and metric, cells annotated when few."""
    models = [str(m) for m in doc.get("models") or []]
    values = _grid(doc["matrices"][group][metric])
    size = min(10.0, 2.8 + 0.55 * len(models))
    figure, axes = _figure(size + 1.4, size)
    low, high, cmap = color_scale(metric)
    bounded = low == -1
    image = axes.imshow(values, cmap=_colormap(cmap), interpolation="nearest", vmin=low, vmax=high)
    figure.colorbar(image, ax=axes, label=metric, shrink=0.8)
    labels = [_short_model(m) for m in models]
    axes.set_xticks(range(len(models)), labels, rotation=30, ha="right", fontsize=8)
    axes.set_yticks(range(len(models)), labels, fontsize=8)
    if len(models) <= 12:
        for i, row in enumerate(values):
            for j, value in enumerate(row):
                if math.isnan(value):
                    axes.text(j, i, "n/a", ha="center", va="center", fontsize=8, color="black")
                    continue
                level = float(image.norm(value))
                # RdBu_r is dark at both ends, viridis at the low end: pick the readable text colour.
                dark = abs(level - 0.5) > 0.3 if bounded else level < 0.6
                axes.text(j, i, _short(value), ha="center", va="center", fontsize=8,
                          color="white" if dark else "black")
    axes.set_title(f"{group}: {metric}", fontsize=11)
    return _png(figure)


def matrix_heatmap(doc: dict, group: str, metric: str, path: Path) -> Path:
    """Write the heatmap of a `matrix` document as a PNG at `path` (atomically); returns the path."""
    return write_bytes_atomic(matrix_png(doc, group, metric), Path(path))


def color_scale(metric: str) -> tuple[float | None, float | None, str]:
    """Fixed colour ranges for similarity metrics: an autoscaled 0.960-0.970 raw-cosine matrix would paint noise
    as structure (the trap of the original dispute). Unknown metrics are autoscaled."""
    name = metric.lower()
    if "cka" in name or "fraction" in name:
        return 0.0, 1.0, "viridis"
    if any(word in name for word in ("cos", "pearson", "spearman", "corr")):
        return -1.0, 1.0, "RdBu_r"
    return None, None, "viridis"


def role_name(tensor: str) -> str:
    """'model.layers.7.input_layernorm.weight' -> 'input_layernorm'."""
    short = _LAYER_PREFIX.sub("", tensor)
    return short[: -len(".weight")] if short.endswith(".weight") else short


def _pair_names(doc: dict) -> tuple[str, str]:
    """Names of A and B: from `models` (compare) or the first two sources (provenance)."""
    models = doc.get("models")
    if isinstance(models, dict) and models.get("a") and models.get("b"):
        return str(models["a"]), str(models["b"])
    specs = [str(s.get("spec")) for s in doc.get("sources") or [] if isinstance(s, dict) and s.get("spec")]
    return (specs[0], specs[1]) if len(specs) >= 2 else ("A", "B")


def _profile_points(doc: dict, group: str) -> list[tuple[int, str, float, float]]:
    points = []
    for row in doc.get("rows") or []:
        if not isinstance(row, dict) or row.get("group") != group or not row.get("comparable"):
            continue
        if isinstance(row.get("layer_a"), int) and _numbers(row.get("cosine"), row.get("pearson")):
            points.append((row["layer_a"], role_name(str(row.get("tensor_a", ""))), row["cosine"], row["pearson"]))
    return points


def _figure(width: float, height: float) -> tuple[Any, Any]:
    # Imported here: terminal rendering and `import solarforensics` must not pay for matplotlib.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _colormap(name: str) -> Any:
    """A colormap whose missing cells are grey, so 'not computed' never looks like a value."""
    import matplotlib

    return matplotlib.colormaps[name].with_extremes(bad=MISSING_COLOR)


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _grid(values: list) -> list[list[float]]:
    """Matrix rows with None as NaN, which imshow leaves blank."""
    return [[float(v) if isinstance(v, (int, float)) else math.nan for v in row] for row in values]


def _layer_ticks(set_ticks: Any, set_labels: Any, layers: list) -> None:
    step = max(1, math.ceil(len(layers) / 16))
    positions = list(range(0, len(layers), step))
    set_ticks(positions)
    set_labels([str(layers[p]) for p in positions], fontsize=8)


def _numbers(*values: Any) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def _short(value: Any) -> str:
    return fmt_num(float(value), 3) if _numbers(value) else "—"


def _short_model(name: str) -> str:
    """Last path component of a model spec, cut to 24 characters."""
    tail = name.rstrip("/").split("/")[-1].split(":")[-1]
    return tail if len(tail) <= 24 else tail[:23] + "…"
