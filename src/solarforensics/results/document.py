"""The versioned results document: build, scrub, validate, write atomically, read back."""

import hashlib
import json
import math
import os
import re
import secrets
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

from solarforensics.errors import UNSAFE_FOR_TERMINALS, ResultsError, redact

SCHEMA_VERSION = 1
KINDS = ("compare", "matrix", "inspect", "provenance", "validation", "case", "arch", "tokenizer", "license",
         "fingerprint", "scan", "lineage", "history", "code")
SCHEMA_FILE = Path(__file__).with_name(f"schema-v{SCHEMA_VERSION}.json")

# Light mirror of the JSON Schema's `required` lists, so reading needs no jsonschema at run time.
COMMON_KEYS = {
    "schema_version": int, "kind": str, "tool": dict, "created_at": str, "command": dict, "sources": list,
    "device": str, "accumulation_dtype": str, "replica": bool, "complete": bool, "warnings": list,
    "summary": dict, "timings": dict,
}
KIND_KEYS = {
    "compare": {"models": dict, "groups": list, "layers_mode": str, "rows": list, "only_in_a": list,
                "only_in_b": list, "baselines": dict, "layer_matrices": dict},
    "matrix": {"models": list, "groups": list, "matrices": dict},
    "inspect": {"parameters": int, "tensors": int, "shards": list, "dtypes": dict, "config_summary": dict,
                "bytes_transferred": int, "requests": int},
    "provenance": {"verdict": str, "p_value": (int, float, type(None)), "log10_p_value": (int, float, type(None)),
                   "tests": list, "alignment": (dict, type(None))},
    "arch": {"models": dict, "config_diff": list, "derived": dict, "parameters": dict, "active_parameters": dict,
             "compatibility": list, "comparable": dict},
    "tokenizer": {"models": dict, "vocab_size_a": int, "vocab_size_b": int, "shared_tokens": int, "same_id": int,
                  "jaccard": (int, float, type(None))},
    "license": {"verbatim": bool, "added": list, "modified": list, "removed": list, "declared": dict, "sections": list},
    "case": {"claims": list, "verdict": str, "bytes_transferred": int, "checkpoint_bytes": int},
    "fingerprint": {"models": list, "index": dict, "fingerprints": list},
    "scan": {"model": str, "candidates": list, "root": dict},
    "lineage": {"families": list, "edges": list, "roots": list},
    "history": {"repo": str, "commits": list, "timeline": list, "skipped": dict},
    "code": {"against": dict, "matches": list, "identical_count": int, "headers": list},
}
COMPARE_ROW_KEYS = (
    "group", "layer_a", "layer_b", "tensor_a", "tensor_b", "shape_a", "shape_b", "comparable", "truncated", "reason",
    "cosine", "pearson", "cos_minus_one", "spearman", "mad", "rel_l2", "max_abs_diff", "equal_fraction",
    "bytes_equal", "rows_equal", "sha256_a", "sha256_b", "p_shuffle", "log10_p_shuffle", "nonfinite_a", "nonfinite_b",
)
PROVENANCE_TEST_KEYS = ("name", "applicable", "statistic", "null", "p_value", "log10_p_value", "effect", "notes")
VERDICTS = ("derived", "independent", "inconclusive")

_SECRET_OPTIONS = ("--token", "--hf-token")
_JSON_ESCAPES = {ord(c): f"\\u{ord(c):04x}" for c in UNSAFE_FOR_TERMINALS if ord(c) >= 0x20}
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def schema() -> dict:
    """The JSON Schema (draft 2020-12) of the current version."""
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def tool_version() -> str:
    """The installed solarforensics version ('unknown' when run from an uninstalled tree)."""
    try:
        return metadata.version("solarforensics")
    except metadata.PackageNotFoundError:
        return "unknown"


def utc_now() -> str:
    """Current UTC time as ISO 8601 with a 'Z' suffix, to the second."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def scrub_argv(argv: Sequence[str]) -> list[str]:
    """Argv with token values and anything shaped like an HF token replaced by '***'."""
    scrubbed: list[str] = []
    hide_next = False
    for arg in argv:
        arg = str(arg)
        if hide_next:
            scrubbed.append("***")
            hide_next = False
            continue
        option, equals, _value = arg.partition("=")
        if option in _SECRET_OPTIONS:
            if equals:
                scrubbed.append(f"{option}=***")
            else:
                scrubbed.append(arg)
                hide_next = True
            continue
        scrubbed.append(redact(arg))
    return scrubbed


def new_document(kind: str, argv: Sequence[str], **fields: Any) -> dict:
    """A document of `kind` with the common keys filled; `fields` add or override keys."""
    if kind not in KINDS:
        raise ValueError(f"unknown results kind {kind!r}; known: {', '.join(KINDS)}")
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "tool": {"name": "solarforensics", "version": tool_version()},
        "created_at": utc_now(),
        "command": {"argv": scrub_argv(argv)},
        "sources": [],
        # "n/a" until the analysis says which device and dtype its sums ran in.
        "device": "n/a",
        "accumulation_dtype": "n/a",
        "replica": False,
        "complete": True,
        "warnings": [],
        "summary": {},
        "timings": {},
    }
    doc.update(fields)
    return doc


def to_json_value(value: Any, where: str = "document") -> Any:
    """Plain-JSON copy of `value`: NaN/inf become None, numpy scalars become Python numbers; else ResultsError."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ResultsError(f"cannot write results: key {key!r} in {where} is not a string")
            out[key] = to_json_value(item, f"{where}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [to_json_value(item, f"{where}[{i}]") for i, item in enumerate(value)]
    # numpy / torch scalars: duck-typed so results/ need not import them.
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        return to_json_value(value.item(), where)
    raise ResultsError(f"cannot write results: {where} holds a {type(value).__name__}, which is not JSON")


def dumps_document(doc: dict) -> str:
    """The document as the JSON text `write_document` writes (also for `--json`). JSON escapes C0 controls itself;
    the other characters a terminal acts on (C1 controls, DEL, bidi overrides) are written as \\u escapes too, so
    printing the JSON, or `cat`-ing the file, shows them instead of obeying them. The data is unchanged."""
    text = json.dumps(to_json_value(doc), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    return text.translate(_JSON_ESCAPES)


def protected_dirs() -> list[Path]:
    """Caches whose files are trusted without re-checking: our range cache (as sources.cache.default_cache_dir finds
    it) and huggingface_hub's home and hub cache. Results, reports and figures are never written inside them."""
    env = os.environ.get
    cache_home = Path(env("XDG_CACHE_HOME") or Path.home() / ".cache")
    dirs = [env("SOLARFORENSICS_CACHE"), env("HF_HOME") or cache_home / "huggingface", env("HF_HUB_CACHE"),
            env("HUGGINGFACE_HUB_CACHE"), cache_home / "solarforensics"]
    return [_expanded(Path(d)).resolve() for d in dirs if d]


def check_output_path(path: Path) -> Path:
    """`path`, refused with a ResultsError if writing there could overwrite what a cache trusts (symlinks followed)."""
    path = Path(path)
    if path.name in ("", ".", "..") or "\x00" in str(path):
        raise ResultsError(f"cannot write {str(path)!r}: not a file name")
    resolved = _expanded(path).resolve()
    for cache in protected_dirs():
        if resolved == cache or cache in resolved.parents:
            raise ResultsError(f"refusing to write {path} inside the cache {cache}",
                               "choose an output path outside the caches (see --out)")
    return path


def _expanded(path: Path) -> Path:
    try:
        return path.expanduser()
    except RuntimeError:  # ~user of no such user: the path as typed
        return path


def path_inside(directory: Path, name: str) -> Path:
    """`directory / name` for a generated file name (from a case id, a group, a model), refused with a ResultsError if
    the name could leave the directory: separators, `..`, absolute names, or a symlink pointing elsewhere."""
    directory = Path(directory)
    if (not name or name in (".", "..") or any(c in name for c in "/\\\x00") or Path(name).is_absolute()
            or len(name.encode("utf-8", "surrogatepass")) > 255):
        raise ResultsError(f"refusing to write a file named {name[:80]!r} into {directory}: not a plain file name")
    target = directory / name
    if target.resolve().parent != directory.resolve():
        raise ResultsError(f"refusing to write {target}: it resolves outside {directory}")
    return target


def write_bytes_atomic(data: bytes, path: Path) -> Path:
    """Write `data` to `path` via a temp file in the same folder, fsync and rename; readers never see half a file.
    Paths inside a cache are refused (check_output_path)."""
    path = check_output_path(Path(path))
    tmp_name = str(path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp"))
    # One try from the temp file's creation on: a Ctrl-C landing just after os.open must not leave it behind.
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # os.open with 0o666 honours the umask (mkstemp would make the result private, 0600).
        fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except OSError as exc:
        _remove_quietly(tmp_name)
        raise ResultsError(f"cannot write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        _remove_quietly(tmp_name)
        raise
    return path


def write_text_atomic(text: str, path: Path) -> Path:
    """Atomic UTF-8 text write (reports, Markdown, HTML)."""
    return write_bytes_atomic(text.encode("utf-8"), path)


def write_document(doc: dict, path: Path) -> Path:
    """Serialise `doc` (NaN/inf -> null) and write it atomically; an existing file survives any failure."""
    text = dumps_document(doc)  # serialise fully before touching the disk
    return write_bytes_atomic(text.encode("utf-8"), Path(path))


def read_document(path: Path) -> dict:
    """Load and check a results file; every problem is a one-line ResultsError."""
    path = Path(path)
    if not path.exists():
        raise ResultsError(f"results file {path} does not exist")
    if path.is_dir():
        raise ResultsError(f"results file {path} is a folder, not a JSON file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ResultsError(f"results file {path} is not UTF-8 text; not a solarforensics results file") from None
    except OSError as exc:
        raise ResultsError(f"cannot read results file {path}: {exc.strerror or exc}") from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultsError(
            f"results file {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    if not isinstance(doc, dict):
        raise ResultsError(f"results file {path} holds a JSON {type(doc).__name__}, not a results document object")
    version = doc.get("schema_version")
    if version is None:
        raise ResultsError(f"results file {path} has no schema_version; it was not written by solarforensics")
    if version != SCHEMA_VERSION:
        advice = (
            "upgrade solarforensics to read it" if isinstance(version, int) and version > SCHEMA_VERSION
            else "re-run the command that produced it to regenerate it"
        )
        raise ResultsError(
            f"results file {path} was written by schema version {version}; "
            f"this solarforensics reads version {SCHEMA_VERSION} — {advice}"
        )
    problems = validate_document(doc)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ResultsError(f"results file {path} is not a valid results document: {problems[0]}{more}")
    return doc


def validate_document(doc: Any) -> list[str]:
    """Cheap structural checks (required keys and their types per kind); [] means it looks right."""
    if not isinstance(doc, dict):
        return [f"document is a {type(doc).__name__}, expected an object"]
    problems = _check_keys(doc, COMMON_KEYS, "")
    if doc.get("schema_version") != SCHEMA_VERSION:
        problems.append(f"schema_version is {doc.get('schema_version')!r}, expected {SCHEMA_VERSION}")
    kind = doc.get("kind")
    if isinstance(kind, str) and kind not in KINDS:
        problems.append(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    problems += _check_keys(doc, KIND_KEYS.get(kind, {}), "")
    if kind == "compare" and isinstance(doc.get("rows"), list):
        for i, row in enumerate(doc["rows"]):
            problems += _check_row(row, COMPARE_ROW_KEYS, f"rows[{i}]")
    if kind == "provenance":
        if "verdict" in doc and doc["verdict"] not in VERDICTS:
            problems.append(f"verdict {doc['verdict']!r} is not one of {', '.join(VERDICTS)}")
        for i, test in enumerate(doc.get("tests") or []):
            problems += _check_row(test, PROVENANCE_TEST_KEYS, f"tests[{i}]")
    return problems


def _check_keys(doc: dict, expected: dict, prefix: str) -> list[str]:
    problems = []
    for key, types in expected.items():
        if key not in doc:
            problems.append(f"missing key {prefix}{key!r}")
        elif not isinstance(doc[key], types) or (types is int and isinstance(doc[key], bool)):
            problems.append(f"key {prefix}{key!r} has type {type(doc[key]).__name__}")
    return problems


def _check_row(row: Any, keys: Sequence[str], where: str) -> list[str]:
    if not isinstance(row, dict):
        return [f"{where} is a {type(row).__name__}, expected an object"]
    missing = [key for key in keys if key not in row]
    return [f"{where} is missing {', '.join(missing)}"] if missing else []


def slugify(name: str, limit: int = 80) -> str:
    """A file-name-safe form of a model spec: no '/', no '..', only [A-Za-z0-9._-]. A name too long is cut and given
    a short hash of the whole spec, so two specs differing only at the end keep different names (other lossy
    replacements are caught when writing: results_path never replaces a different run's results)."""
    text = name.strip()
    if text.startswith("hf:"):
        text = text[3:]
    text = text.strip("/\\").replace("/", "--").replace("\\", "--")
    text = _UNSAFE_NAME_CHARS.sub("-", text)
    text = re.sub(r"\.{2,}", ".", text).strip(".-")
    if len(text) <= limit:
        return text or "model"
    return f"{text[:limit - 13].rstrip('.-')}-{_short_hash(name)}"


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def default_out_path(
    kind: str, models: Sequence[str], groups: Sequence[str] = (), root: Path = Path("results")
) -> Path:
    """Default --out: compare -> results/<a>-vs-<b>-<groups>.json; others -> results/<kind>-<models>[-<groups>].json."""
    names = [slugify(model) for model in models]
    stem = "-vs-".join(names) if kind == "compare" else "-".join([kind, *names])
    if groups:
        stem += "-" + "_".join(slugify(group) for group in groups)
    if len(stem) > 200:  # cut, but never so that two runs share a name: the hash covers the whole stem
        stem = f"{stem[:187]}-{_short_hash(stem)}"
    return Path(root) / f"{stem}.json"


def results_path(out: Path | None, kind: str, models: Sequence[str], groups: Sequence[str] = ()) -> Path:
    """Where a run writes its results, checked before any work: `--out` as given, else the default name — or, when a
    file of that name holds another run's results (other models or groups), the first free `<name>-2`, `-3`, ...:
    a run never silently replaces a different run's results."""
    if out is not None:
        return check_writable(Path(out))
    base = default_out_path(kind, models, groups)
    for n in range(1, 1000):
        candidate = base if n == 1 else base.with_name(f"{base.stem}-{n}{base.suffix}")
        if not candidate.exists() or _same_run(candidate, kind, models, groups):
            return check_writable(candidate)
    raise ResultsError(f"no free results name beside {base}", "give --out")


def _same_run(path: Path, kind: str, models: Sequence[str], groups: Sequence[str]) -> bool:
    """Whether the results file at `path` came from a run of this kind on these models and groups (as far as the
    document records them); an unreadable file is never taken for ours."""
    try:
        doc = read_document(path)
    except ResultsError:
        return False
    recorded = doc.get("models")
    if isinstance(recorded, dict):
        recorded = [recorded.get("a"), recorded.get("b")]
    if isinstance(recorded, list) and [str(m) for m in recorded] != [str(m) for m in models]:
        return False
    wanted = [g.strip() for group in groups for g in str(group).split(",") if g.strip()]
    return doc.get("kind") == kind and (not wanted or doc.get("groups") == wanted)


def check_writable(path: Path) -> Path:
    """`path`, refused with a ResultsError before any work when a results file cannot be written there: inside a
    cache, a folder, or in a place where no file can be created (checked by creating and removing a probe)."""
    path = check_output_path(path)
    if path.is_dir():
        raise ResultsError(f"cannot write {path}: it is a folder", "give a file name with --out")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    probe = folder / f".{path.name[:100]}.{secrets.token_hex(6)}.probe.tmp"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as exc:
        raise ResultsError(f"cannot write {path}: {exc.strerror or exc} ({folder})",
                           "choose a writable place with --out; nothing was read yet") from None
    return path


def _remove_quietly(name: str) -> None:
    try:
        os.unlink(name)
    except OSError:
        pass
