"""Fault injection for the local Hub server: rules that make chosen file requests fail in chosen ways."""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from solarforensics.errors import SpecError
from solarforensics.localhub.store import RepoFile

STATUS_FAULTS = ("429", "500", "502", "503")
BODY_FAULTS = ("drop", "truncate", "ignore-range", "wrong-range", "oversize")
FAULT_KINDS = (*STATUS_FAULTS, *BODY_FAULTS, "change", "slow")
FAULT_SYNTAX = "KIND[:PATTERN[:COUNT[:KEY=VALUE,...]]]"
FAULT_HELP = {  # what `hub serve --help` says of each kind and parameter
    "429": "rate limited, with Retry-After", "500": "server error", "502": "bad gateway", "503": "unavailable",
    "drop": "connection reset halfway through the body", "truncate": "body ends halfway, connection closed",
    "ignore-range": "answers 200 with the whole file", "wrong-range": "serves bytes shifted from those asked",
    "oversize": "sends (and announces) more bytes than asked or listed", "change": "the file's bytes and ETag change",
    "slow": "waits before answering",
}
PARAMETER_HELP = {
    "after": "matching requests served cleanly first (change: before the file changes)",
    "retry_after": "429: seconds in Retry-After (default 1)", "delay_s": "slow: seconds of delay (default 3)",
    "shift": "wrong-range: bytes the range moves (default 1)", "extra": "oversize: extra bytes (default 1 MiB)",
    "methods": "GET, HEAD or GET+HEAD (default GET)", "origin": "hub or cdn (default both)",
    "repo": "glob on the repo id (default *)",
}
_INVERT = bytes(255 - i for i in range(256))


@dataclass
class FaultRule:
    """One fault: `kind` hits `count` data requests (-1: all) for files matching `pattern`, after `after` clean ones."""

    kind: str
    pattern: str = "*"  # fnmatch glob on the file path inside the repo
    count: int = 1
    after: int = 0  # matching requests served cleanly before the fault starts ("change": before the file changes)
    retry_after: int = 1  # 429: seconds in Retry-After
    delay_s: float = 3.0  # slow: seconds to wait before answering
    shift: int = 1  # wrong-range: bytes the served range is moved by
    extra: int = 1 << 20  # oversize: bytes sent (and announced in Content-Length) beyond what was asked
    methods: tuple[str, ...] = ("GET",)
    origin: str | None = None  # "hub" or "cdn" to hit one origin only
    repo: str = "*"  # fnmatch glob on the repo id
    remaining: int = field(init=False)
    seen: int = field(default=0, init=False)

    def __post_init__(self):
        self.kind = str(self.kind)
        if self.kind not in FAULT_KINDS:
            raise SpecError(f"unknown fault kind {self.kind!r}", hint=f"use one of {', '.join(FAULT_KINDS)}")
        if isinstance(self.methods, str):
            self.methods = tuple(self.methods.split("+"))
        self.methods = tuple(m.upper() for m in self.methods)
        self.remaining = self.count

    def applies(self, origin: str, method: str, repo_id: str, path: str) -> bool:
        return (
            method in self.methods
            and self.origin in (None, origin)
            and fnmatchcase(repo_id, self.repo)
            and fnmatchcase(path, self.pattern)
        )

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class FaultSet:
    """The rules a server applies, in the order they were added; safe to change while the server runs."""

    def __init__(self):
        self._rules: list[FaultRule] = []
        self._lock = threading.Lock()

    def add(self, kind: str, pattern: str = "*", count: int = 1, **params) -> FaultRule:
        return self.add_rule(FaultRule(str(kind), pattern, count, **params))

    def add_rule(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    @property
    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def decide(
        self, origin: str, method: str, repo_id: str, path: str, carries_body: bool
    ) -> tuple[FaultRule | None, bool]:
        """For one data request: the fault to apply (its count is used up) and whether the file is changed."""
        with self._lock:
            changed = any(self._change_active(r, repo_id, path) for r in self._rules)
            picked = None
            for rule in self._rules:
                if not rule.applies(origin, method, repo_id, path):
                    continue
                # A body fault cannot apply to a redirect; it waits for the response that carries the bytes.
                if rule.kind in BODY_FAULTS and not carries_body:
                    continue
                if rule.seen < rule.after:
                    rule.seen += 1
                    continue
                if picked is None and rule.kind != "change" and rule.remaining != 0:
                    if rule.remaining > 0:  # -1 never runs out
                        rule.remaining -= 1
                    picked = rule
            return picked, changed

    @staticmethod
    def _change_active(rule: FaultRule, repo_id: str, path: str) -> bool:
        return (
            rule.kind == "change"
            and rule.seen >= rule.after
            and fnmatchcase(repo_id, rule.repo)
            and fnmatchcase(path, rule.pattern)
        )


def changed_file(file: RepoFile) -> RepoFile:
    """The file as a "change" fault serves it: every byte inverted and a different etag of the same kind."""
    digest = hashlib.sha256 if file.lfs else hashlib.sha1
    etag = digest(f"changed:{file.etag}".encode()).hexdigest()
    return RepoFile(file.path, file.size, etag, file.lfs, lambda start, end: file.read(start, end).translate(_INVERT))


def parse_fault(text: str) -> FaultRule:
    """A rule from `KIND[:PATTERN[:COUNT[:KEY=VALUE,...]]]`, e.g. `429:*.safetensors:2:retry_after=0`."""
    kind, _, rest = text.partition(":")
    pattern, _, rest = rest.partition(":")
    count_text, _, params_text = rest.partition(":")
    known = [f.name for f in dataclasses.fields(FaultRule) if f.init and f.name not in ("kind", "pattern", "count")]
    params: dict[str, object] = {}
    try:
        count = int(count_text or 1)
    except ValueError:
        raise _bad_fault(text, f"count {count_text!r} is not a whole number") from None
    for item in filter(None, params_text.split(",")):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or key not in known:
            raise _bad_fault(text, f"{item!r} is not KEY=VALUE with KEY one of {', '.join(known)}")
        params[key] = _parse_value(value)
    return FaultRule(kind, pattern or "*", count, **params)


def _bad_fault(text: str, problem: str) -> SpecError:
    hint = f"write {FAULT_SYNTAX}, KIND one of {', '.join(FAULT_KINDS)}"
    return SpecError(f"bad fault {text!r}: {problem}", hint=hint)


def _parse_value(text: str) -> object:
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def shifted(span: tuple[int, int], shift: int, size: int) -> tuple[int, int]:
    """The span moved by `shift` bytes, forward if it fits in the file, else backward (a wrong-range answer)."""
    start, end = span
    if end + shift <= size:
        return start + shift, end + shift
    return max(0, start - shift), max(0, start - shift) + (end - start)
