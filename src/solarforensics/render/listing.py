"""Plain listings for the terminal: aliases, families, groups, benchmark figures."""

import json

from rich.console import Console
from rich.table import Table


def print_table(console: Console, title: str, columns: list[str], rows: list[list], caption: str | None = None) -> None:
    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("—" if cell is None else str(cell) for cell in row))
    console.print(table)


def print_figures(console: Console, title: str, figures: dict) -> None:
    """A two-column table of a benchmark's figures; nested dicts are flattened with dotted keys."""
    flat: list[list] = []

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            flat.append([prefix, f"{value:.4g}" if isinstance(value, float) else value])

    walk("", figures)
    print_table(console, title, ["figure", "value"], flat)


def print_json(console: Console, value) -> None:
    console.print_json(json.dumps(value))
