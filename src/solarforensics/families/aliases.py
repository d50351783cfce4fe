"""Model aliases (`solar`, `glm`, ...): the built-in configs/models.toml merged with the user's own file."""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from solarforensics.datafiles import config_path
from solarforensics.errors import FormatError, SpecError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_FIELDS = {"repo", "revision", "description", "model_type"}


@dataclass(frozen=True)
class Alias:
    """A short name for a Hub repo, optionally pinned to a revision."""

    name: str
    repo: str
    revision: str | None
    description: str
    model_type: str | None

    @property
    def spec(self) -> str:
        return f"hf:{self.repo}@{self.revision}" if self.revision else f"hf:{self.repo}"


def user_models_path() -> Path:
    """$SOLARFORENSICS_MODELS, else $XDG_CONFIG_HOME/solarforensics/models.toml (default ~/.config/...)."""
    explicit = os.environ.get("SOLARFORENSICS_MODELS")
    if explicit:
        try:
            return Path(explicit).expanduser()
        except RuntimeError:  # ~user of no such user
            return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "solarforensics" / "models.toml"


def _read_aliases(path: Path) -> dict[str, Alias]:
    def malformed(problem: str) -> FormatError:
        return FormatError(f"model aliases file {path} is malformed: {problem}",
                           hint="each alias is a table [name] with repo = \"owner/name\" and optional "
                                "revision, description, model_type")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise malformed(f"cannot read it ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise malformed(str(exc)) from None
    aliases = {}
    for name, entry in data.items():
        if not isinstance(entry, dict) or not _NAME.match(name):
            raise malformed(f"{name!r} is not an alias table with a simple name")
        unknown = set(entry) - _FIELDS
        if unknown:
            raise malformed(f"alias {name!r} has unknown keys {sorted(unknown)}")
        if not isinstance(entry.get("repo"), str) or not _REPO.match(entry["repo"]):
            raise malformed(f"alias {name!r} needs repo = \"owner/name\"")
        for key in ("revision", "description", "model_type"):
            if key in entry and not isinstance(entry[key], str):
                raise malformed(f"alias {name!r}: {key} must be a string")
        aliases[name] = Alias(name, entry["repo"], entry.get("revision") or None,
                              entry.get("description", ""), entry.get("model_type"))
    return aliases


def load_aliases() -> dict[str, Alias]:
    """Built-in aliases with the user's file merged over them (the user's entry wins)."""
    aliases = _read_aliases(config_path("models.toml"))
    user = user_models_path()
    if user.is_file():
        aliases.update(_read_aliases(user))
    return aliases


def expand_alias(spec: str) -> str:
    """`solar` -> `hf:upstage/Solar-Open-100B[@rev]`, `solar@abc` -> `...@abc`; any other spec is returned as is."""
    name, _, revision = spec.partition("@")
    if not _NAME.match(name):  # paths, `owner/name`, `hf:...` can never be aliases
        return spec
    alias = load_aliases().get(name)
    if alias is None:
        known = {n.lower(): n for n in load_aliases()}
        close = difflib.get_close_matches(name.lower(), list(known), n=1, cutoff=0.75)
        if close:  # a bare name is never a Hub id or a path that exists: a near-miss is a typo of an alias
            raise SpecError(f"unknown model {spec!r}",
                            f"did you mean {known[close[0]]!r}? (see `solarforensics models`)")
        return spec
    revision = revision or alias.revision
    return f"hf:{alias.repo}@{revision}" if revision else f"hf:{alias.repo}"
