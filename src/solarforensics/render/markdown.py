"""Markdown report; plots are written as PNG files into a figures folder beside the document."""

import re
from pathlib import Path

from solarforensics.render.blocks import Banner, Block, Bullets, Facts, Figure, Preformatted, Report, Table
from solarforensics.render.views import build_report
from solarforensics.results.document import slugify, write_bytes_atomic

BANNER_MARKS = {
    "danger": "⛔", "warning": "⚠️", "lesson": "🔎", "derived": "🧬", "independent": "✅", "inconclusive": "❔",
}


def render_markdown(docs: list[dict], figures_dir: Path | None) -> str:
    """One Markdown document for all `docs`; with `figures_dir` the plots are written there and linked
    as `<figures_dir name>/<file>.png` (so put the folder beside the Markdown file)."""
    parts = ["# solarforensics report", ""]
    reports = [build_report(doc, index) for index, doc in enumerate(docs, start=1)]
    if len(reports) > 1:
        parts += [f"{i}. [{md_escape(r.title)}](#{r.anchor})" for i, r in enumerate(reports, start=1)] + [""]
    for report in reports:
        parts += report_markdown(report, figures_dir)
    return "\n".join(parts).rstrip() + "\n"


def report_markdown(report: Report, figures_dir: Path | None) -> list[str]:
    lines = [f'<a id="{report.anchor}"></a>', "", f"## {md_escape(report.title)}", ""]
    for block in report.blocks:
        lines += block_markdown(block, report.anchor, figures_dir)
    return lines


def block_markdown(block: Block, anchor: str, figures_dir: Path | None) -> list[str]:
    if isinstance(block, Banner):
        mark = BANNER_MARKS.get(block.level, "")
        lines = [f"> {md_escape(line)}  " for line in block.lines]  # two spaces: a line break inside the quote
        return [f"> {mark} **{md_escape(block.title)}**", ">", *lines, ""]
    if isinstance(block, Table):
        lines = [f"### {md_escape(block.title)}", ""]
        lines.append("| " + " | ".join(cell_escape(c) for c in block.columns) + " |")
        aligns = [("---:" if i < len(block.numeric) and block.numeric[i] else "---") for i in range(len(block.columns))]
        lines.append("| " + " | ".join(aligns) + " |")
        lines += ["| " + " | ".join(cell_escape(c) for c in row) + " |" for row in block.rows]
        if block.note:
            lines += ["", f"*{md_escape(block.note)}*"]
        return lines + [""]
    if isinstance(block, Facts):
        lines = [f"### {md_escape(block.title)}", ""]
        lines += [f"- **{md_escape(label)}**: {md_escape(value)}" for label, value in block.items]
        return lines + [""]
    if isinstance(block, Bullets):
        return [f"### {md_escape(block.title)}", ""] + [f"- {md_escape(item)}" for item in block.items] + [""]
    if isinstance(block, Preformatted):
        fence = "~" * max(4, 1 + max((len(m) for m in re.findall(r"~+", block.text)), default=0))
        return [f"### {md_escape(block.title)}", "", f"{fence}diff", block.text.rstrip("\n"), fence, ""]
    if isinstance(block, Figure):
        if figures_dir is None:
            return []
        file_name = f"{slugify(anchor)}-{slugify(block.name)}.png"
        write_bytes_atomic(block.draw(), Path(figures_dir) / file_name)
        lines = [f"![{md_escape(block.title)}]({Path(figures_dir).name}/{file_name})", ""]
        return lines + ([f"*{md_escape(block.caption)}*", ""] if block.caption else [])
    return []


def md_escape(text: str) -> str:
    """Escape the characters Markdown would turn into formatting or HTML."""
    out = str(text)
    for char in ("\\", "`", "*", "_", "[", "]", "<", "|"):
        out = out.replace(char, "\\" + char)
    return out


def cell_escape(text: str) -> str:
    return md_escape(text).replace("\n", " ")
