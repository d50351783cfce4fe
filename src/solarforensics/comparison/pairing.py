"""Choosing and pairing tensors of two opened models: family lookup, group selection, the pairs and the leftovers."""

from dataclasses import dataclass

from solarforensics.errors import NotFoundError
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


def select_tensors(source: TensorSource, groups: str, allow_empty: bool = False) -> Selection:
    """The family of a source and its tensors selected by `groups` (see families.selection.select)."""
    try:
        family = find_family(source.config, list(source.tensors))
    except NotFoundError:
        if not all(is_glob(item.strip()) for item in groups.split(",") if item.strip()):
            raise
        family = NAMES_ONLY  # globs pick tensors by name; no family is needed to pair them by name
    return Selection(family, select(family, list(source.tensors), groups, config=source.config,
                                    allow_empty=allow_empty))


def select_many(sources: list[TensorSource], groups: str) -> list[Selection]:
    """Each model's selection; a model lacking a group the others have selects nothing of it (its tensors in the
    others are listed, not dropped). Only a selection matching nothing in any model is an error."""
    selections = [select_tensors(source, groups, allow_empty=True) for source in sources]
    if not any(sel.selected for sel in selections):
        select_tensors(sources[0], groups)  # raises the "nothing selected" error, with the groups that exist
    return selections


def one_sided_warnings(names: list[str], selections: list[Selection], groups: str) -> list[str]:
    """A line for each group that some models have and others lack."""
    out = []
    for group in dict.fromkeys(g.strip() for g in groups.split(",") if g.strip()):
        counts = [sum(1 for s in sel.selected if s.group == group) for sel in selections]
        if any(counts) and not all(counts):
            having = ", ".join(f"{name} ({n})" for name, n in zip(names, counts) if n)
            lacking = ", ".join(name for name, n in zip(names, counts) if not n)
            out.append(f"{group}: only in {having}; none in {lacking} (listed as only in one model, not compared)")
    return out


def pair_models(
    source_a: TensorSource, source_b: TensorSource, groups: str, layers: str = "same"
) -> tuple[list[tuple[Selected, Selected]], list[Selected], list[Selected], list[str]]:
    """(pairs, only in A, only in B, warnings) for the groups. Tensors that pair with nothing (a group one model
    lacks) are returned and warned about, never dropped; an error only if neither model has any selected tensor."""
    sel_a, sel_b = select_many([source_a, source_b], groups)
    warnings = [f"{src.name}: {sel.family.warning}" for src, sel in ((source_a, sel_a), (source_b, sel_b)) if sel.family.warning]
    warnings += one_sided_warnings(["A", "B"], [sel_a, sel_b], groups)
    warnings += [f"{src.name}: {line}" for src, sel in ((source_a, sel_a), (source_b, sel_b))
                 for line in sel.family.config_disagreements(src.config, src.tensors)]
    pairs, only_a, only_b = pair_selections(sel_a.selected, sel_b.selected, layers)
    return pairs, only_a, only_b, warnings
