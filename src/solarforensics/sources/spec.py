"""Source specs: `hf:owner/name[@rev]`, `owner/name[@rev]`, `[hf:]owner/name[@rev]/path/file.gguf`, a local folder,
or a single .safetensors or .gguf file."""

import re
from pathlib import Path

from solarforensics.errors import NotFoundError, SpecError
from solarforensics.sources.base import TensorSource
from solarforensics.sources.cache import RangeCache
from solarforensics.sources.layout import PICKLE_SUFFIXES, GGUFOnlyError, refuse_pickle

_HUB_SPEC = re.compile(r"^(?:hf:)?([A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*)(?:@([^\s@]+))?$")
_HUB_GGUF_SPEC = re.compile(
    r"^(?:hf:)?([A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*)(?:@([^\s@/]+))?/([^\s@]+\.gguf)$"
)
_FILE_SUFFIXES = (".safetensors", ".gguf", *PICKLE_SUFFIXES)


def local_path(spec: str) -> Path:
    """The spec as a local path, `~` expanded when it names a home (`~nobody/x` with no such user stays as typed)."""
    try:
        return Path(spec).expanduser()
    except RuntimeError:
        return Path(spec)


def parse_hub_spec(spec: str) -> tuple[str, str | None] | None:
    """(repo, revision) for a Hub spec, None if the spec is not one."""
    match = _HUB_SPEC.match(spec.strip())
    return (match[1], match[2]) if match else None


def open_source(
    spec: str,
    *,
    endpoint: str | None = None,
    token: str | None = None,
    use_cache: bool = True,
    cache_dir: Path | None = None,
    max_gap: int | None = None,
    workers: int | None = None,
) -> TensorSource:
    """Open whatever the spec names. Local paths win over Hub ids; `hf:` forces the Hub."""
    from solarforensics.sources.gguf import GGUFSource, HubGGUFSource
    from solarforensics.sources.hub import HubSource
    from solarforensics.sources.local import LocalSource

    if not spec or not spec.strip():
        raise SpecError("empty model spec", "give a Hub id (owner/name[@rev]), an alias, a folder or a .safetensors file")
    path = local_path(spec)
    if not spec.startswith("hf:") and path.exists():
        if path.is_file() and path.name.endswith(".gguf"):
            return GGUFSource(path, spec=spec, max_gap=max_gap, workers=workers)
        try:
            return LocalSource(path, spec=spec, max_gap=max_gap, workers=workers)
        except GGUFOnlyError as only:  # a folder holding one .gguf file is that file
            if len(only.gguf_files) != 1:
                raise
            return GGUFSource(path / only.gguf_files[0], spec=spec, max_gap=max_gap, workers=workers)
    cache = RangeCache(cache_dir) if use_cache else None
    transfer = dict(spec=spec, endpoint=endpoint, token=token, cache=cache, max_gap=max_gap, workers=workers)
    gguf = _HUB_GGUF_SPEC.match(spec.strip())
    if gguf:
        return HubGGUFSource(gguf[1], gguf[3], gguf[2], **transfer)
    if spec.endswith(PICKLE_SUFFIXES):
        refuse_pickle(spec)
    hub = None if spec.endswith(_FILE_SUFFIXES) or spec.startswith(("/", ".", "~")) else parse_hub_spec(spec)
    if hub is None:
        if spec.endswith(_FILE_SUFFIXES) or "/" in spec or spec.startswith((".", "~")):
            raise NotFoundError(f"{spec}: no such file or folder")
        raise SpecError(
            f"cannot understand model spec {spec!r}",
            "give a Hub id (owner/name[@rev]), an alias (see `solarforensics models`), a folder or a .safetensors file",
        )
    repo, revision = hub
    try:
        return HubSource(repo, revision, **transfer)
    except GGUFOnlyError as only:  # a repo holding one .gguf file is that file
        if len(only.gguf_files) != 1:
            raise
        return HubGGUFSource(repo, only.gguf_files[0], revision, **transfer)
