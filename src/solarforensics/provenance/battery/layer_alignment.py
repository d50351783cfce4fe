"""Layer alignment: which layer of A each layer of B came from, read off an L_A x L_B similarity matrix.

Two answers: the best one-to-one assignment (linear assignment), and a path that gives every layer of the deeper
model one partner, preferring consecutive layers, allowing repeats (duplicated layers) cheaply and jumps (depth
up-scaling that restarts a block, as SOLAR's 32 -> 48; pruned or inserted layers) at a price. The path is scored
against the matrix's own background: the cells off the path.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from solarforensics.metrics.matching import assign

REPEAT_PENALTY = 0.05  # x the matrix's spread: a duplicated layer costs little
JUMP_PENALTY = 0.25  # any other non-consecutive step costs more, so noise cannot buy a zig-zag path
WEAK_SIGMAS = 3.0  # path cells below background mean + 3 sd: layers with no clear partner (new or rewritten)


def _filled(matrix: torch.Tensor) -> np.ndarray:
    values = matrix.detach().to("cpu", torch.float64).numpy().copy()
    finite = np.isfinite(values)
    values[~finite] = values[finite].min() if finite.any() else 0.0
    return values


def best_path(matrix: torch.Tensor) -> list[tuple[int, int]]:
    """(row, column) cells of the best path: one cell per layer of the longer side (columns when equal)."""
    m = _filled(matrix)
    by_rows = m.shape[0] > m.shape[1]  # step over the deeper model's layers
    scores = m if by_rows else m.T  # [steps, states]
    steps, states = scores.shape
    spread = float(np.percentile(scores, 95) - np.percentile(scores, 50)) or 1.0
    transition = np.full((states, states), JUMP_PENALTY * spread)  # [from, to]
    transition[np.arange(states), np.arange(states)] = REPEAT_PENALTY * spread
    transition[np.arange(states - 1), np.arange(1, states)] = 0.0
    total = scores[0].copy()
    back = np.zeros((steps, states), dtype=np.int64)
    for t in range(1, steps):
        candidates = total[:, None] - transition
        back[t] = candidates.argmax(axis=0)
        total = candidates.max(axis=0) + scores[t]
    state = int(total.argmax())
    path = []
    for t in range(steps - 1, -1, -1):
        path.append((t, state) if by_rows else (state, t))
        state = int(back[t, state])
    return path[::-1]


def path_mean(matrix: torch.Tensor) -> float:
    """Mean similarity along the best path (the statistic its nulls are drawn for)."""
    m = _filled(matrix)
    return float(np.mean([m[r, c] for r, c in best_path(matrix)]))


def align_layers(matrix: torch.Tensor, layers_a: list[int], layers_b: list[int], source: str) -> dict:
    """Layer map A -> B (an int, or a list when a layer of A reappears in B), path margins, one-to-one assignment."""
    m = _filled(matrix)
    path = best_path(matrix)
    on_path = np.zeros_like(m, dtype=bool)
    for r, c in path:
        on_path[r, c] = True
    off = m[~on_path]
    background = {"mean": float(off.mean()) if off.size else None, "std": float(off.std()) if off.size else None,
                  "cells": int(off.size), "kind": "cells off the path"}
    values = np.array([m[r, c] for r, c in path])
    margins = []
    by_rows = m.shape[0] > m.shape[1]
    for r, c in path:
        line = m[r] if by_rows else m[:, c]
        others = np.delete(line, c if by_rows else r)
        margins.append(float(m[r, c] - others.mean()) if others.size else None)
    mapped: dict[int, list[int]] = {}
    for r, c in path:
        mapped.setdefault(layers_a[r], []).append(layers_b[c])
    layer_map = {str(a): bs[0] if len(bs) == 1 else bs for a, bs in sorted(mapped.items())}
    spread = background["std"] or 0.0
    weak_line = (background["mean"] or 0.0) + WEAK_SIGMAS * spread
    rows, cols = assign(torch.from_numpy(m))
    return {
        "source": source,
        "layer_map": layer_map,
        "pairs": [[layers_a[r], layers_b[c]] for r, c in path],
        "path_mean": float(values.mean()),
        "background": background,
        "margin_z": float((values.mean() - background["mean"]) / spread) if spread > 0 else None,
        "margins": margins,
        "duplicated_a": [a for a, bs in sorted(mapped.items()) if len(bs) > 1],
        "weak_pairs": [[layers_a[r], layers_b[c]] for r, c in path if m[r, c] < weak_line],
        "one_to_one": {"pairs": [[layers_a[r], layers_b[c]] for r, c in zip(rows, cols)],
                       "mean": float(m[rows, cols].mean()) if len(rows) else None},
    }


def layer_matrix_record(matrix: torch.Tensor, layers_a: list[int], layers_b: list[int], metric: str,
                        alignment: dict | None = None) -> dict:
    """An L x L matrix as the results store it (the keys `report` draws heatmaps from)."""
    m = matrix.detach().to("cpu", torch.float64)
    k = min(m.shape)
    diagonal = m.diagonal()[:k]
    off = m[~torch.eye(*m.shape, dtype=torch.bool) & torch.isfinite(m)]
    record = {
        "metric": metric,
        "layers_a": list(layers_a),
        "layers_b": list(layers_b),
        "values": [[None if math.isnan(v) else v for v in row] for row in m.tolist()],
        "diagonal_mean": float(diagonal[torch.isfinite(diagonal)].mean()) if k else None,
        "off_diagonal_mean": float(off.mean()) if off.numel() else None,
    }
    if alignment is not None:
        record.update(path_mean=alignment["path_mean"], margins=alignment["margins"],
                      background_mean=alignment["background"]["mean"])
    return record
