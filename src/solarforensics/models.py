"""Opening models for an analysis: aliases expanded, sources opened with the run's options."""

import os
from dataclasses import dataclass
from pathlib import Path

from solarforensics.errors import BudgetError, SpecError
from solarforensics.sources.base import TensorSource
from solarforensics.sources.interrupt import worker_pool
from solarforensics.sources.spec import local_path, open_source


@dataclass(frozen=True)
class OpenOptions:
    """How to reach models: endpoint, token, cache and transfer tuning. The token is never written anywhere."""

    endpoint: str | None = None
    token: str | None = None
    use_cache: bool = True
    cache_dir: Path | None = None
    max_gap: int | None = None
    workers: int | None = None


def open_model(spec: str, options: OpenOptions | None = None) -> TensorSource:
    """Open a model by alias, Hub id, folder or file."""
    from solarforensics.families.aliases import expand_alias

    options = options or OpenOptions()
    local = spec and local_path(spec).exists()  # a folder named like an alias is the folder
    return open_source(
        spec if local or not spec.strip() else expand_alias(spec),
        endpoint=options.endpoint,
        token=options.token,
        use_cache=options.use_cache,
        cache_dir=options.cache_dir,
        max_gap=options.max_gap,
        workers=options.workers,
    )


def open_models(specs: list[str], options: OpenOptions | None = None) -> list[TensorSource]:
    """Open several models at once: resolving revisions and reading headers are round trips worth overlapping."""
    with worker_pool(min(8, len(specs))) as pool:
        return list(pool.map(lambda spec: open_model(spec, options), specs))


def display_name(source: TensorSource, spec: str) -> str:
    """A short name for tables and file names: the alias or spec the user typed, else the source's name."""
    return spec or source.name


MEMORY_SHARE = 0.6  # of physical RAM, for tensors held at once: the rest goes to working copies and the system


def memory_limit() -> int | None:
    """Bytes of tensors an analysis may hold at once: $SOLARFORENSICS_MAX_MEMORY, else a share of physical RAM."""
    value = os.environ.get("SOLARFORENSICS_MAX_MEMORY")
    if value:
        try:
            return int(value)
        except ValueError:
            raise SpecError(f"SOLARFORENSICS_MAX_MEMORY={value!r} is not a number of bytes") from None
    try:
        return int(MEMORY_SHARE * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows): no guard
        return None


def check_memory(nbytes: int, hint: str) -> None:
    """Refuse, before reading anything, work that would hold more tensor bytes at once than memory_limit()."""
    limit = memory_limit()
    if limit is not None and nbytes > limit:
        origin = ("$SOLARFORENSICS_MAX_MEMORY" if os.environ.get("SOLARFORENSICS_MAX_MEMORY") else
                  f"{int(100 * MEMORY_SHARE)}% of this machine's RAM; $SOLARFORENSICS_MAX_MEMORY changes it")
        raise BudgetError(f"this would hold {nbytes:,} bytes of tensors in memory at once, over the limit of "
                          f"{limit:,} ({origin})", hint)


def source_identity(source: TensorSource) -> tuple:
    """What makes two opened sources the same bytes: Hub endpoint, repo, commit and files, or the resolved path."""
    p = source.provenance
    files = tuple(sorted({ref.file for ref in source.tensors.values()}))
    return (p.kind, p.endpoint, p.repo, p.resolved_commit, p.path, files)


def same_source_warning(a: TensorSource, b: TensorSource, name_a: str, name_b: str) -> str | None:
    """A warning when both sides of a comparison are one source: every test then finds 'a copy' by construction."""
    if source_identity(a) != source_identity(b):
        return None
    where = a.provenance.path or f"{a.provenance.repo}@{(a.provenance.resolved_commit or '')[:12]}"
    return (f"{name_a} and {name_b} are the same source ({where}): every score compares the model with itself, so "
            "identical tensors and a 'derived' verdict say nothing; compare two different models")
