"""Opening models for an analysis: aliases expanded, sources opened with the run's options."""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from solarforensics.sources.base import TensorSource
from solarforensics.sources.spec import open_source


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
    local = spec and Path(spec).expanduser().exists()  # a folder named like an alias is the folder
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
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(specs)))) as pool:
        return list(pool.map(lambda spec: open_model(spec, options), specs))


def display_name(source: TensorSource, spec: str) -> str:
    """A short name for tables and file names: the alias or spec the user typed, else the source's name."""
    return spec or source.name
