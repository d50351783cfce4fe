"""Rich terminal rendering of results documents (plots are only named; they need --format md or html)."""

from rich import box
from rich.console import Console
from rich.panel import Panel
from rich.table import Table as RichTable
from rich.text import Text

from solarforensics.render.blocks import Banner, Block, Bullets, Facts, Figure, Preformatted, Report, Table
from solarforensics.render.views import build_report

BANNER_STYLES = {
    "danger": "bold white on red",
    "warning": "bold black on yellow",
    "lesson": "bold cyan",
    "derived": "bold magenta",
    "independent": "bold green",
    "inconclusive": "bold yellow",
}


def render_terminal(doc: dict, console: Console, index: int = 1) -> None:
    """Print one results document as tables; all text is literal (tensor names may contain '[...]')."""
    print_report(build_report(doc, index), console)


def print_report(report: Report, console: Console) -> None:
    console.rule(Text(report.title, style="bold"))
    for block in report.blocks:
        print_block(block, console)
    console.print()


def print_block(block: Block, console: Console) -> None:
    if isinstance(block, Banner):
        style = BANNER_STYLES.get(block.level, "bold")
        if block.level in ("danger", "warning"):
            body = Text("\n".join(block.lines), style=style)
            console.print(Panel(body, title=Text(block.title, style=style), border_style=style.split()[-1]))
        else:
            body = Text("\n".join(block.lines))
            console.print(Panel(body, title=Text(block.title, style=style), border_style=style.split()[-1],
                                title_align="left"))
    elif isinstance(block, Table):
        table = RichTable(title=Text(block.title, style="bold"), box=box.SIMPLE_HEAD, title_justify="left",
                          caption=Text(block.note) if block.note else None, caption_justify="left")
        for index, column in enumerate(block.columns):
            numeric = index < len(block.numeric) and block.numeric[index]
            table.add_column(Text(column), justify="right" if numeric else "left", overflow="fold")
        for row in block.rows:
            table.add_row(*(Text(cell) for cell in row))
        if not block.rows:
            table.add_row(*(Text("—") for _ in block.columns))
        console.print(table)
    elif isinstance(block, Facts):
        grid = RichTable.grid(padding=(0, 2))
        grid.add_column(style="dim", no_wrap=True)
        grid.add_column(overflow="fold")
        for label, value in block.items:
            grid.add_row(Text(label), Text(value))
        console.print(Text(block.title, style="bold"))
        console.print(grid)
        console.print()
    elif isinstance(block, Bullets):
        # A grid gives wrapped sentences a hanging indent under their bullet.
        grid = RichTable.grid(padding=(0, 1))
        grid.add_column(no_wrap=True)
        grid.add_column(overflow="fold")
        for item in block.items:
            grid.add_row(Text("  •"), Text(item))
        console.print(Text(block.title, style="bold"))
        console.print(grid)
        console.print()
    elif isinstance(block, Preformatted):
        console.print(Text(block.title, style="bold"))
        console.print(Text(block.text.rstrip("\n")), soft_wrap=True)
        console.print()
    elif isinstance(block, Figure):
        console.print(Text(f"[plot] {block.title} — see `report --format html` or `--format md`", style="dim"))
