"""Choosing and pairing tensors of two opened models: family lookup, group selection, the pairs and the leftovers."""

from dataclasses import dataclass

from solarforensics.errors import NotFoundError, SelectionError
from solarforensics.families.family import Family, find_family
from solarforensics.families.selection import Selected, is_glob, pair_selections, select

NAMES_ONLY = Family(
    name="names-only", model_type="", aliases=(), description="no family: tensors chosen and paired by name",
    source="", architectures=(), roles={}, config_keys={},
)
from solarforensics.sources.base import TensorSource


@dataclass
class Selection:
    family: Family
    selected: list[Selected]


def select_tensors(source: TensorSource, groups: str) -> Selection:
    try:
        family = find_family(source.config, list(source.tensors))
    except NotFoundError:
        if not all(is_glob(item.strip()) for item in groups.split(",") if item.strip()):
            raise
        family = NAMES_ONLY  # globs pick tensors by name; no family is needed to pair them by name
    return Selection(family, select(family, list(source.tensors), groups, config=source.config))


def pair_models(
    source_a: TensorSource, source_b: TensorSource, groups: str, layers: str = "same"
) -> tuple[list[tuple[Selected, Selected]], list[Selected], list[Selected], list[str]]:
    """(pairs, only in A, only in B, warnings) for the groups; an error if nothing pairs."""
    sel_a, sel_b = select_tensors(source_a, groups), select_tensors(source_b, groups)
    warnings = [f"{src.name}: {sel.family.warning}" for src, sel in ((source_a, sel_a), (source_b, sel_b)) if sel.family.warning]
    pairs, only_a, only_b = pair_selections(sel_a.selected, sel_b.selected, layers)
    if not pairs:
        raise SelectionError(
            f"no tensor of {source_a.name} pairs with one of {source_b.name} for {groups!r}",
            f"{len(only_a)} selected in A, {len(only_b)} in B; try other groups or name globs",
        )
    return pairs, only_a, only_b, warnings
