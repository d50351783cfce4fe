"""`code`: a repo's Python files against reference implementations (transformers' modelling files of a family, a
given file, or every family), function by function and class by class, plus copyright and licence lines and
distinctive rules (such as ignoring checkpoint layers from a fixed index: multi-token-prediction layers).

Shared code says where code came from, not where weights came from: copying a modelling file is normal practice
(transformers' own families are built from each other's code) and proves nothing about the weights it loads.
"""

from __future__ import annotations

import ast
import difflib
import re
import time
from dataclasses import dataclass

from solarforensics.evidence.code_sources import CodeFile, loading_code, reference_files, repo_code
from solarforensics.models import OpenOptions

DISCLAIMER = ("Shared code says where code came from, not where weights came from: modelling code is copied and "
              "adapted routinely (transformers builds its families from one another), and any weights can be loaded "
              "by any copy.")
MIN_SIMILARITY = 0.6
HEADER_LINES = 40
_HEADER = re.compile(r"copyright|\(c\)|©|licen[cs]ed under|spdx-license-identifier|apache license|mit license|"
                     r"all rights reserved", re.IGNORECASE)
_TOKEN = re.compile(r"\w+|[^\w\s]")
# (rule, what it does, pattern; group 1, when present, is the fixed number the rule uses)
RULES = (
    ("ignores checkpoint layers from a fixed index", "drops layers (e.g. multi-token-prediction ones) at load time",
     r"_keys_to_ignore_on_load_(?:unexpected|missing)\s*=\s*\[[^\]]*?layers\\*\.(\d+)"),
    ("compares the layer index with a fixed number", "a rule that depends on one model's layer count",
     r"layer_(?:idx|id|index)\s*>=?\s*(\d{2,})"),
    ("names multi-token-prediction layers", "code aware of MTP / next-n prediction layers",
     r"(num_nextn_predict_layers|\bnextn\b|\bmtp\b)"),
)


@dataclass(frozen=True)
class Definition:
    file: str
    name: str  # Class, function, or Class.method
    kind: str
    source: str  # normalised: ast.unparse without docstrings, the family prefix replaced
    tokens: tuple[str, ...]
    docstring: str | None


def code_report(spec: str, options: OpenOptions | None = None, against: str = "all") -> dict:
    """Fields of a `code` results document."""
    started = time.perf_counter()
    repo = repo_code(spec, options)
    loading, loading_note = loading_code(repo.config, repo.listing)
    subject = repo.files + loading
    described, references = reference_files(against)
    statuses, mine = _parse_all(subject)
    reference_status, theirs = _parse_all(references)
    by_name: dict[str, list[Definition]] = {}
    for definition in theirs:
        by_name.setdefault(_generic(definition.name), []).append(definition)
    matches = [m for d in mine if (m := best_match(d, by_name, theirs if against != "all" else []))]
    matches.sort(key=lambda m: (-m["similarity"], m["file"], m["name"]))
    reference_text = "\n".join(f.text or "" for f in references)
    fields = {
        "models": [spec],
        "against": described,
        "files": [{"file": f.name, "origin": f.origin, "status": statuses[f.name][0],
                   "definitions": statuses[f.name][1]} for f in subject],
        "matches": matches,
        "identical_count": sum(1 for m in matches if m["identical"]),
        "headers": [h for f in subject if f.text for h in headers(f)],
        "rules": [r for f in subject if f.text for r in rules(f, reference_text)],
        "reference_rules": [r for f in references if f.text for r in rules(f, "")],
        "loading_code": {"model_type": (repo.config or {}).get("model_type"),
                         "auto_map": bool((repo.config or {}).get("auto_map")),
                         "files": [f.name for f in loading], "note": loading_note},
        "disclaimer": DISCLAIMER,
        "replica": "REPLICA.md" in repo.listing,
        "sources": [repo.provenance] if repo.provenance else [],
        "warnings": [f"{f.name}: {statuses[f.name][0]}" for f in subject if statuses[f.name][0] != "compared"]
        + [f"reference {name}: {status}" for name, (status, _) in reference_status.items() if status != "compared"]
        + ([loading_note] if loading_note else []),
        "timings": {"total_s": round(time.perf_counter() - started, 3)},
    }
    fields["summary"] = {"statements": statements(fields)}
    return fields


def _parse_all(files: list[CodeFile]) -> tuple[dict[str, tuple[str, int]], list[Definition]]:
    statuses, found = {}, []
    for file in files:
        if file.text is None:
            statuses[file.name] = (f"not read: {file.problem}", 0)
            continue
        try:
            definitions = definitions_of(file)
        except SyntaxError as err:
            statuses[file.name] = (f"not compared: Python syntax error at line {err.lineno} ({err.msg})", 0)
            continue
        statuses[file.name] = ("compared", len(definitions))
        found += definitions
    return statuses, found


def family_prefix(tree: ast.Module) -> str | None:
    """The CamelCase model prefix of a modelling file: 'Glm4Moe' for Glm4MoePreTrainedModel."""
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            match = re.fullmatch(r"([A-Z][A-Za-z0-9]*?)(?:PreTrainedModel|Config|ForCausalLM|Model)", node.name)
            if match and match[1]:
                return match[1]
    return None


def definitions_of(file: CodeFile) -> list[Definition]:
    tree = ast.parse(file.text, filename=file.name)
    prefix = family_prefix(tree)
    out = []

    def add(node, name: str) -> None:
        docstring = ast.get_docstring(node)
        body = _without_docstring(node)
        source = ast.unparse(body)
        if prefix:
            source = re.sub(rf"\b{prefix}(?=[A-Z_]|\b)", "MODEL", source)
        kind = "class" if isinstance(node, ast.ClassDef) else "function"
        out.append(Definition(file.name, name, kind, source, tuple(_TOKEN.findall(source)), docstring))

    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            add(node, node.name)
        elif isinstance(node, ast.ClassDef):
            add(node, node.name)
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    add(item, f"{node.name}.{item.name}")
    return out


def _without_docstring(node):
    copy = ast.parse(ast.unparse(node)).body[0]
    for item in ast.walk(copy):
        body = getattr(item, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and \
                isinstance(getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
            item.body = body[1:] or [ast.Pass()]
    return copy


def _generic(name: str) -> str:
    """A definition's name without its family prefix: SolarOpenMoE.forward and Glm4MoeMoE.forward meet as MoE.forward."""
    head, _, tail = name.partition(".")
    head = re.sub(r"^[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]+)?(?=(?:[A-Z][a-z]*)+$)", "", head) or head
    return f"{head}.{tail}" if tail else head


def best_match(mine: Definition, by_name: dict[str, list[Definition]], everything: list[Definition]) -> dict | None:
    """The most similar reference definition (same generic name first, then any of the same kind), if >= 0.6."""
    candidates = by_name.get(_generic(mine.name), [])
    if not candidates:
        size = len(mine.tokens)
        candidates = [d for d in everything if d.kind == mine.kind and 0.5 * size <= len(d.tokens) <= 2 * size]
    best, score = None, 0.0
    for other in candidates:
        if other.source == mine.source:
            best, score = other, 1.0
            break
        matcher = difflib.SequenceMatcher(None, mine.tokens, other.tokens, autojunk=False)
        if matcher.real_quick_ratio() <= score or matcher.quick_ratio() <= score:
            continue
        ratio = matcher.ratio()
        if ratio > score:
            best, score = other, ratio
    if best is None or score < MIN_SIMILARITY:
        return None
    same_doc = bool(mine.docstring) and mine.docstring == best.docstring
    return {"file": mine.file, "name": mine.name, "kind": mine.kind, "reference": best.file,
            "reference_name": best.name, "similarity": round(score, 4), "identical": best.source == mine.source,
            "same_docstring": same_doc}


def headers(file: CodeFile) -> list[dict]:
    """Copyright and licence lines among the first comment lines and the module docstring."""
    out = []
    for number, line in enumerate(file.text.splitlines()[:HEADER_LINES], 1):
        stripped = line.strip().lstrip("#").strip()
        if stripped and _HEADER.search(stripped) and (line.lstrip().startswith("#") or number <= 3):
            kind = "copyright" if re.search(r"copyright|\(c\)|©", stripped, re.IGNORECASE) else "licence"
            out.append({"file": file.name, "line": number, "text": stripped, "kind": kind})
    return out


def rules(file: CodeFile, reference_text: str) -> list[dict]:
    """Distinctive rules in this file, and whether the reference has the same rule (with the same number)."""
    out = []
    for rule, meaning, pattern in RULES:
        for match in re.finditer(pattern, file.text, re.IGNORECASE):
            value = match.group(1) if match.groups() else None
            line = file.text.count("\n", 0, match.start()) + 1
            same = [m for m in re.finditer(pattern, reference_text, re.IGNORECASE)
                    if (m.group(1) if m.groups() else None) == value or not value.isdigit()]
            out.append({"rule": rule, "meaning": meaning, "file": file.name, "line": line,
                        "text": file.text.splitlines()[line - 1].strip()[:200], "value": value,
                        "in_reference": bool(same)})
    return out


def statements(fields: dict) -> list[str]:
    against = fields["against"]
    read = [f for f in fields["files"] if f["status"] == "compared"]
    out = [f"{len(read)} Python file(s) compared with {against['kind']} {against['name']} "
           f"({len(against['files'])} reference files): {len(fields['matches'])} functions and classes have a "
           f"counterpart of >= {MIN_SIMILARITY:.0%} similarity, {fields['identical_count']} identical "
           "(after normalising formatting, comments, docstrings and the family's name prefix)."]
    loading = fields["loading_code"]
    if loading["files"]:
        out.append(f"The repo ships no modelling code and its config names no remote code: transformers' "
                   f"{loading['model_type']} files load it, so they were compared too.")
    skipped = [f for f in fields["files"] if f["status"] != "compared"]
    if skipped:
        out.append("Not compared: " + "; ".join(f"{f['file']} ({f['status']})" for f in skipped) + ".")
    names = sorted({h["text"] for h in fields["headers"] if h["kind"] == "copyright"})
    if names:
        out.append("Copyright lines: " + " | ".join(names[:8]) + ("" if len(names) <= 8 else " | …") + ".")
    for rule in fields["rules"]:
        where = "also in the reference" if rule["in_reference"] else "not in the reference"
        out.append(f"{rule['file']}:{rule['line']} {rule['rule']}: `{rule['text']}` ({where}).")
    if not fields["rules"]:
        out.append("No layer-skipping or multi-token-prediction rule was found in the compared code.")
    for rule in fields["reference_rules"]:
        if rule["value"] and rule["value"].isdigit():
            out.append(f"The reference has it: {rule['file']}:{rule['line']} {rule['rule']} ({rule['value']}): "
                       f"`{rule['text']}`.")
    out.append(DISCLAIMER)
    return out
