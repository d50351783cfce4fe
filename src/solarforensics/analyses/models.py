"""Opening models for an analysis: aliases expanded, sources opened with the run's options."""

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
    return open_source(
        expand_alias(spec) if spec and spec.strip() else spec,
        endpoint=options.endpoint,
        token=options.token,
        use_cache=options.use_cache,
        cache_dir=options.cache_dir,
        max_gap=options.max_gap,
        workers=options.workers,
    )


def display_name(source: TensorSource, spec: str) -> str:
    """A short name for tables and file names: the alias or spec the user typed, else the source's name."""
    return spec or source.name
