"""The format-neutral pieces a report is made of; terminal, Markdown and HTML each lay them out."""

from dataclasses import dataclass, field
from typing import Callable, Union


@dataclass(frozen=True)
class Banner:
    """A boxed message that must not be missed. level: danger, warning, lesson, derived, independent, inconclusive."""

    level: str
    title: str
    lines: list[str]


@dataclass(frozen=True)
class Facts:
    """Label/value pairs."""

    title: str
    items: list[tuple[str, str]]


@dataclass(frozen=True)
class Table:
    """A table of already formatted cells; `numeric[i]` right-aligns column i."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    numeric: list[bool] = field(default_factory=list)
    note: str | None = None


@dataclass(frozen=True)
class Bullets:
    """Sentences shown as a list."""

    title: str
    items: list[str]


@dataclass(frozen=True)
class Figure:
    """A plot drawn on demand (terminal output never pays for matplotlib)."""

    title: str
    name: str
    draw: Callable[[], bytes]
    caption: str = ""


@dataclass(frozen=True)
class Preformatted:
    """Text whose lines and spacing matter (a diff), shown as is."""

    title: str
    text: str


Block = Union[Banner, Facts, Table, Bullets, Figure, Preformatted]


@dataclass(frozen=True)
class Report:
    """Everything shown for one results document."""

    title: str
    anchor: str
    blocks: list[Block]
