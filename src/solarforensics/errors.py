"""One exception hierarchy. Every user-facing failure is a ForensicsError with a one-line message."""

import re

_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@'\"<>]+@")
_URL_QUERY = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s'\"<>?#]*)\?[^\s'\"<>#]*")
_HF_TOKEN = re.compile(r"hf_[A-Za-z0-9]{10,}")


# Same-length stand-ins, so styled terminal text keeps its spans: C0 controls but newline and tab become their
# Control Pictures glyph (ESC shows as ␛), DEL as ␡; C1 controls and the invisible characters that reorder or hide
# text (bidi overrides and isolates, zero-width marks, BOM) become U+FFFD, as do lone surrogates (undecodable bytes
# of a command line), which no terminal or file encoding can carry.
_HIDDEN = [0x061C, 0x180E, *range(0x200B, 0x2010), *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0xFEFF]
_INERT = ({c: 0x2400 + c for c in range(0x20) if chr(c) not in "\n\t"} | {0x7F: 0x2421}
          | {c: 0xFFFD for c in [*range(0x80, 0xA0), *_HIDDEN, *range(0xD800, 0xE000)]})
UNSAFE_FOR_TERMINALS = "".join(chr(c) for c in _INERT)


def inert(text: str) -> str:
    """`text` safe to print: no character of it can move the cursor, clear the screen, retitle the window or reorder
    what is shown around it (a tensor name, a config value, a licence line or repo metadata from a model)."""
    return text.translate(_INERT)


def redact(text: str) -> str:
    """`text` without what must never be shown: credentials inside URLs (`user:pass@`), URL query strings (a signed CDN
    URL carries its signature there) and anything shaped like a Hub token."""
    text = _URL_USERINFO.sub(r"\1", text)
    text = _URL_QUERY.sub(r"\1?…", text)
    return _HF_TOKEN.sub("***", text)


class ForensicsError(Exception):
    """A failure the user can act on; the CLI prints `message` (and `hint`) on one line and exits non-zero."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = self.message if not self.hint else f"{self.message} ({self.hint})"
        return " ".join(inert(redact(text)).split())


class SpecError(ForensicsError):
    """A source spec, option or argument that cannot be understood."""


class NotFoundError(ForensicsError):
    """A repo, revision, file or tensor that does not exist."""


class AccessError(ForensicsError):
    """Gated or private content without the right token."""


class UnsafeFormatError(ForensicsError):
    """A format we refuse to load (pickle)."""


class FormatError(ForensicsError):
    """A malformed or hostile file: safetensors header, GGUF, JSON, tokenizer, licence."""


class TransferError(ForensicsError):
    """The network or server misbehaved in a way retries could not fix (ignored Range, wrong bytes, changed file)."""

    exit_code = 3


class SelectionError(ForensicsError):
    """Nothing, or something impossible, was selected for comparison."""


class ResultsError(ForensicsError):
    """A results file that is unreadable, of another schema version, or cannot be written."""


class BudgetError(ForensicsError):
    """A byte budget too small for the requested work."""


class IndexFileError(ForensicsError):
    """A fingerprint index that cannot be used: corrupt, of a newer schema, or held by another writer."""
