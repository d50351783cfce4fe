"""Where the Python files of a `code` comparison come from: a Hub repo (pinned to one commit), a local folder, and the
reference implementations installed with the `transformers` package (found on disk, never imported or fetched)."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from solarforensics.errors import NotFoundError, SpecError
from solarforensics.evidence.history_hub import TEXT_LIMIT, HubHistory, decode_text
from solarforensics.sources.spec import local_path

REFERENCE_PREFIXES = ("modeling_", "configuration_", "tokenization_")


@dataclass(frozen=True)
class CodeFile:
    name: str  # as shown: the repo path, or transformers/models/<family>/<file>
    origin: str  # "repo", "transformers", "file"
    text: str | None
    problem: str | None = None  # why the text is missing (binary, too large, not UTF-8)


@dataclass
class RepoCode:
    files: list[CodeFile]
    config: dict | None
    provenance: dict | None  # the Hub reader's record, None for a folder
    listing: list[str]


def repo_code(spec: str, options) -> RepoCode:
    """Every .py file of the repo (and config.json, to know which code loads it)."""
    from solarforensics.families.aliases import expand_alias

    path = local_path(spec)
    if path.is_dir():
        names = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        files = [_disk_file(path / n, n, "repo") for n in names if n.endswith(".py")]
        config = _json(path / "config.json")
        return RepoCode(files, config, None, names)
    if path.suffix == ".py" and path.is_file():
        return RepoCode([_disk_file(path, path.name, "repo")], None, None, [path.name])
    reader = HubHistory(expand_alias(spec), options.endpoint if options else None, options.token if options else None)
    sha = reader.resolve()
    tree = reader.tree(sha)
    files = []
    for name in sorted(tree):
        if name.endswith(".py"):
            text, problem = reader.read_text(name, sha, tree[name].size)
            files.append(CodeFile(name, "repo", text, problem))
    config = None
    if "config.json" in tree:
        text, _ = reader.read_text("config.json", sha, tree["config.json"].size)
        config = _loads(text)
    return RepoCode(files, config, reader.provenance.as_dict(), sorted(tree))


def transformers_folder() -> tuple[Path, str]:
    spec = importlib.util.find_spec("transformers")
    if spec is None or not spec.submodule_search_locations:
        raise NotFoundError("the transformers package is not installed: its modelling files are the references",
                            hint="pip install transformers, or pass --against PATH")
    return Path(list(spec.submodule_search_locations)[0]) / "models", metadata.version("transformers")


def families() -> list[str]:
    folder, _ = transformers_folder()
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("_"))


def family_files(family: str) -> list[CodeFile]:
    """transformers' modelling, configuration and tokenizer files of one model family (its folder name or
    model_type, e.g. glm4_moe)."""
    folder, _ = transformers_folder()
    name = family.strip().lower().replace("-", "_")
    if not (folder / name).is_dir():
        near = [f for f in families() if name[:4] in f][:8]
        raise SpecError(f"transformers has no model family {family!r}",
                        hint=f"similar: {', '.join(near)}" if near else "see transformers/models/ for the names")
    found = sorted(p for p in (folder / name).glob("*.py") if p.name.startswith(REFERENCE_PREFIXES))
    return [_disk_file(p, f"transformers/models/{name}/{p.name}", "transformers") for p in found]


def reference_files(against: str) -> tuple[dict, list[CodeFile]]:
    """(what was compared, its files): `all` (every transformers modelling file), a family, or a path."""
    path = local_path(against)
    if path.exists():
        if path.is_file() and path.suffix != ".py":
            raise SpecError(f"--against {against} is not a Python file", hint="give a .py file, a folder, a "
                                                                             "transformers family or all")
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*.py") if p.is_file())
        if not files:
            raise NotFoundError(f"{against} holds no .py file to compare with")
        code = [_disk_file(p, p.name if path.is_file() else p.relative_to(path).as_posix(), "file") for p in files]
        return {"kind": "path", "name": str(path), "files": [c.name for c in code]}, code
    _, version = transformers_folder()
    if against == "all":
        code = [c for family in families() for c in family_files(family) if "/modeling_" in c.name]
        return {"kind": "all", "name": f"transformers {version}", "files": [c.name for c in code],
                "transformers_version": version}, code
    code = family_files(against)
    return {"kind": "family", "name": against, "files": [c.name for c in code], "transformers_version": version}, code


def loading_code(config: dict | None, listing: list[str]) -> tuple[list[CodeFile], str | None]:
    """The transformers files that load this repo when it ships no modelling code of its own and its config names
    no remote code (`auto_map`): that is the code `from_pretrained` runs for it."""
    if not config or config.get("auto_map") or any(n.rsplit("/", 1)[-1].startswith("modeling_") for n in listing):
        return [], None
    model_type = str(config.get("model_type") or "")
    try:
        files = [f for f in family_files(model_type) if "/modeling_" in f.name or "/configuration_" in f.name]
    except (SpecError, NotFoundError):
        return [], f"config.json names model_type {model_type!r}, which this transformers does not ship"
    return files, None


def _disk_file(path: Path, name: str, origin: str) -> CodeFile:
    if path.stat().st_size > TEXT_LIMIT:
        return CodeFile(name, origin, None, f"over the {TEXT_LIMIT:,}-byte limit for text")
    text, problem = decode_text(path.read_bytes())
    return CodeFile(name, origin, text, problem)


def _json(path: Path) -> dict | None:
    return _loads(path.read_text(encoding="utf-8", errors="replace")) if path.is_file() else None


def _loads(text: str | None) -> dict | None:
    try:
        value = json.loads(text or "")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
