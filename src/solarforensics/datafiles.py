"""Where the project's data files (configs/, reference/) live: beside the source in a checkout, inside the wheel otherwise."""

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _root(name: str) -> Path:
    installed = _PACKAGE / "_data" / name  # wheel install (pyproject force-include)
    if installed.is_dir():
        return installed
    return _PACKAGE.parents[1] / name  # editable install / source checkout


def config_path(*parts: str) -> Path:
    """A path under the project's `configs/` folder."""
    return _root("configs").joinpath(*parts)


def reference_path(*parts: str) -> Path:
    """A path under the project's `reference/` folder."""
    return _root("reference").joinpath(*parts)
