"""What `scan` and `lineage` documents show: the root statement and ranked candidates; families, directed edges with
their evidence, card checks, and the forest drawn as trees."""

from __future__ import annotations

from typing import Any

from solarforensics.render.blocks import Banner, Block, Bullets, Figure, Table
from solarforensics.render.formatting import MISSING, fmt_num, fmt_p, fmt_value


def scan_blocks(doc: dict) -> list[Block]:
    root = doc.get("root") if isinstance(doc.get("root"), dict) else {}
    blocks: list[Block] = [Banner("derived" if root.get("model") else "independent", "Nearest indexed ancestor",
                                  [str(root.get("statement") or MISSING)])]
    statements = (doc.get("summary") or {}).get("statements") or []
    if statements:
        blocks.append(Bullets("What the scan says", [str(s) for s in statements]))
    rows = []
    for c in doc.get("candidates") or []:
        if not isinstance(c, dict):
            continue
        rows.append([str(c.get("model")), str(c.get("verdict")), str(c.get("relation") or "—"),
                     fmt_num(c.get("similarity")), fmt_p(c.get("p_value"), c.get("log10_p_value")),
                     ", ".join(c.get("decisive") or []) or "—", fmt_num(c.get("prefilter_score")),
                     ", ".join(c.get("declared_base_model") or []) or "—", str(c.get("metadata_agrees"))])
    blocks.append(Table("Candidates (pre-filter, then the lean battery)",
                        ["model", "verdict", "relation", "invariant CKA", "p (unit order)", "decisive",
                         "pre-filter", "card's base_model", "card vs weights"], rows,
                        [False, False, False, True, True, False, True, False, False]))
    return blocks


def lineage_blocks(doc: dict) -> list[Block]:
    blocks: list[Block] = []
    statements = (doc.get("summary") or {}).get("statements") or []
    if statements:
        blocks.append(Bullets("What the lineage says", [str(s) for s in statements]))
    if doc.get("direction"):
        blocks.append(Banner("lesson", "How direction is decided", [str(doc["direction"])]))
    families = [f for f in doc.get("families") or [] if isinstance(f, dict)]
    blocks.append(Table("Families", ["root", "members", "size"],
                        [[str(f.get("root")), ", ".join(map(str, f.get("members") or [])), fmt_value(f.get("size"))]
                         for f in families], [False, False, True]))
    if any((f.get("size") or 0) > 1 for f in families):
        blocks.append(Figure("The derivation forest", "lineage-forest", lambda: forest_png(doc),
                             "Each family as a tree, roots at the top; edge labels: confidence."))
    blocks.append(Table("Edges (parent -> child)", ["parent", "child", "confidence", "evidence"],
                        [[str(e.get("parent")), str(e.get("child")), fmt_num(e.get("confidence")),
                          "; ".join(map(str, e.get("evidence") or []))]
                         for e in doc.get("edges") or [] if isinstance(e, dict)], [False, False, True, False]))
    cards = [c for c in doc.get("cards") or [] if isinstance(c, dict)]
    if cards:
        blocks.append(Table("Model cards against the weights", ["model", "declared base_model", "weights' parent",
                                                                "status"],
                            [[str(c.get("model")), ", ".join(map(str, c.get("declared_base_model") or [])) or "—",
                              str(c.get("weights_parent") or "—"), str(c.get("status"))] for c in cards],
                            [False, False, False, False]))
    return blocks


def forest_png(doc: dict) -> bytes:
    """Families with relatives drawn side by side, each as a tree laid out by depth."""
    from solarforensics.render.plots import _figure, _png, _short_model

    families = [f for f in doc.get("families") or [] if isinstance(f, dict) and (f.get("size") or 0) > 1]
    children: dict[str, list[str]] = {}
    for e in doc.get("edges") or []:
        children.setdefault(str(e.get("parent")), []).append(str(e.get("child")))
    positions: dict[str, tuple[float, float]] = {}
    x_offset = 0.0
    for family in families:
        x_offset = _place(str(family.get("root")), children, 0, x_offset, positions) + 1.0
    depth = max((-y for _, y in positions.values()), default=0)
    figure, axes = _figure(min(16.0, 2.0 + 0.9 * x_offset), 1.5 + 1.1 * depth)
    for e in doc.get("edges") or []:
        a, b = positions.get(str(e.get("parent"))), positions.get(str(e.get("child")))
        if a and b:
            axes.annotate("", xy=b, xytext=a, arrowprops={"arrowstyle": "->", "color": "#555555", "lw": 0.8})
            axes.text((a[0] + b[0]) / 2, (a[1] + b[1]) / 2, _confidence(e.get("confidence")), fontsize=6,
                      color="#777777", ha="center")
    roots = {str(f.get("root")) for f in families}
    for name, (x, y) in positions.items():
        axes.text(x, y, _short_model(name), ha="center", va="center", fontsize=7,
                  bbox={"boxstyle": "round", "fc": "#fde9c9" if name in roots else "#e8eef7", "ec": "#999999"})
    axes.set_xlim(-1, max(x_offset, 1))
    axes.set_ylim(-depth - 0.7, 0.7)
    axes.axis("off")
    return _png(figure)


def _place(node: str, children: dict[str, list[str]], depth: int, x: float,
           positions: dict[str, tuple[float, float]], seen: set[str] | None = None) -> float:
    """Leaves left to right, each parent above the middle of its children; returns the next free x."""
    seen = seen if seen is not None else set()
    seen.add(node)
    kids = [c for c in children.get(node, []) if c not in seen]
    if not kids:
        positions[node] = (x, -depth)
        return x + 1.0
    start = x
    for kid in kids:
        x = _place(kid, children, depth + 1, x, positions, seen)
    positions[node] = ((start + x - 1.0) / 2, -depth)
    return x


def _confidence(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else ""
