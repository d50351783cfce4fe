"""The one entry the CLI calls: render documents as a table, Markdown or HTML, to the console or a file."""

import io
from pathlib import Path

from rich.console import Console

from solarforensics.errors import SpecError
from solarforensics.render.html import render_html
from solarforensics.render.markdown import render_markdown
from solarforensics.render.terminal import render_terminal
from solarforensics.results.document import write_text_atomic

FORMATS = ("table", "md", "html")


def render(docs: list[dict], fmt: str, out: Path | None, console: Console) -> Path | None:
    """Render `docs` in `fmt`; with `out` write it atomically (Markdown also writes `<out stem>-figures/*.png`)
    and return the path, else print to `console`."""
    if fmt not in FORMATS:
        raise SpecError(f"unknown report format {fmt!r}; use one of: {', '.join(FORMATS)}")
    if fmt == "table":
        if out is None:
            for index, doc in enumerate(docs, start=1):
                render_terminal(doc, console, index)
            return None
        buffer = io.StringIO()
        plain = Console(file=buffer, width=140, color_system=None, force_terminal=False, emoji=False)
        for index, doc in enumerate(docs, start=1):
            render_terminal(doc, plain, index)
        return write_text_atomic(buffer.getvalue(), Path(out))
    if fmt == "md":
        figures_dir = Path(out).parent / f"{Path(out).stem}-figures" if out is not None else None
        text = render_markdown(docs, figures_dir)
    else:
        text = render_html(docs)
    if out is None:
        # Raw text: Rich must not interpret '[...]' as markup or wrap long lines.
        console.out(text, highlight=False, end="")
        return None
    return write_text_atomic(text, Path(out))
