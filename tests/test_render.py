"""Rendering results documents: terminal tables, Markdown with figures, and a self-contained HTML page."""

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from rich.console import Console

from solarforensics.errors import SpecError
from solarforensics.render import plots
from solarforensics.render.formatting import fmt_bytes, fmt_count, fmt_num, fmt_p
from solarforensics.render.html import render_html
from solarforensics.render.markdown import render_markdown
from solarforensics.render.report import render
from solarforensics.render.terminal import render_terminal

SAMPLES = Path(__file__).parent / "sample_results"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LESSON_LINE = (
    "layernorm: raw cosine 0.9683 — centered 0.01021 — shuffle null mean 0.000213 (q05 -0.02571, q95 0.02588) — "
    "within-model baseline (pearson) 0.4121 (A) / 0.3874 (B) — reference null raw 0.999902 — p 0.307"
)


def sample(name: str) -> dict:
    return json.loads((SAMPLES / f"{name}.json").read_text())


def all_samples() -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(SAMPLES.glob("*.json"))]


def terminal_text(doc: dict) -> str:
    console = Console(file=io.StringIO(), width=400, color_system=None, record=True)
    render_terminal(doc, console)
    return console.export_text()


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "—"), (True, "yes"), (1234567, "1,234,567"), (0.0, "0"), (0.9676, "0.9676"), (0.999987, "0.999987"),
     (-0.99995, "-0.99995"), (1 - 2e-16, "1 − 2.2e-16"), (0.010214, "0.01021"), (1.23456e-5, "1.235e-05"),
     (123456.7, "1.235e+05"), (float("nan"), "NaN")],
)
def test_numbers_keep_four_significant_digits_and_the_distance_from_one(value, text):
    assert fmt_num(value) == text


@pytest.mark.parametrize(
    ("p", "log10_p", "text"),
    [(0.0, -412.3, "p < 1e-300 (log10 p = -412.3)"), (None, -412.34, "p < 1e-300 (log10 p = -412.3)"),
     (0.3067, None, "0.307"), (0.000999, -3.0004, "9.99e-4"), (3.2e-250, -249.49, "3.20e-250"),
     (None, -5.0, "1.00e-5"), (0.0, None, "p < 1e-300 (underflow)"), (None, None, "—")],
)
def test_p_values_are_never_printed_as_zero(p, log10_p, text):
    assert fmt_p(p, log10_p) == text


def test_sizes_and_counts_show_exact_and_short_forms():
    assert fmt_bytes(512) == "512 B"
    assert fmt_bytes(48_211) == "48,211 (47.1 KiB)"
    assert fmt_count(102_345_678_912) == "102,345,678,912 (102.3 B)"


def test_compare_table_puts_raw_centered_and_nulls_on_one_line():
    text = terminal_text(sample("compare-layernorm"))
    assert LESSON_LINE in text
    assert "Raw cosine of all-positive vectors (norm gains) is near 1 for any pair" in text
    assert re.search(r"reference null: independent vectors, same mean/std \(10,000 draws\) +0\.999902 ± 2\.2e-06 "
                     r"+-0\.000118 ± 0\.13", text)
    assert re.search(r"control tiny-llama-c vs B \(tiny-llama-b\) +0\.9699 +-0\.0087 +n=16", text)
    # The per-layer table: layer, role, raw, centered, MAD, rel L2, equal bytes, p, and the NaN note.
    assert re.search(r"5 +post_attention_layernorm +0\.9723 +-0\.01564 +0\.08357 +0\.2353 +no +0\.747 +"
                     r"3 NaN/Inf in B", text)
    assert "model.layers.5.post_attention_layernorm.weight in B has 3 NaN/Inf elements" in text
    assert "[plot] layernorm: raw vs centered cosine per layer" in text
    assert "solarforensics compare tiny-llama-a tiny-llama-b --tensors layernorm --control tiny-llama-c --token '***'" \
        in text


def test_compare_rows_that_are_not_comparable_or_truncated_say_why():
    text = terminal_text(sample("compare-all-pairs"))
    assert re.search(r"— +embeddings +lm_head +— +— +— +— +no +— +not comparable: shapes differ \(use --truncate "
                     r"to compare the common leading block\) \[512, 64\] vs \[640, 32\]", text)
    assert "truncated: vocabularies differ; compared the first 512 rows [512, 64] vs [640, 64]" in text
    assert re.search(r"2 +attn-k +self_attn\.k_proj +0\.9336 +0\.9326 +.* 12 rows", text)
    assert "Tensors only in B (./checkpoints/llama-upscaled): 2" in text
    assert re.search(r"diagonal mean +0\.649", text)


def test_replica_and_partial_documents_carry_loud_banners():
    text = terminal_text(sample("compare-replica-partial"))
    assert "SYNTHETIC REPLICA — NOT THE REAL MODELS" in text
    assert "INCOMPLETE RESULTS" in text
    assert text.index("SYNTHETIC REPLICA") < text.index("Raw vs centered vs nulls")
    assert "SYNTHETIC REPLICA" not in terminal_text(sample("compare-layernorm"))


def test_provenance_shows_the_verdict_and_tiny_p_values_in_log10():
    text = terminal_text(sample("provenance-derived"))
    assert "Verdict: DERIVED — one model's weights were initialised from the other's" in text
    assert "combined p-value: p < 1e-300 (log10 p = -412.3)" in text
    assert re.search(r"attention CKA \(W_K\) +yes +0\.9623 +mean=0\.214, std=0\.021 +p < 1e-300 \(log10 p = -412\.3\)"
                     r" +35\.6", text)
    assert re.search(r"router matching \(Spearman\) +no +— +— +— +— +dense models: no router", text)
    assert re.search(r"layer_map +0=0, 1=1, 2=\[2, 4\], 3=\[3, 5\], 4=6, 5=7", text)


def test_matrix_and_inspect_tables():
    matrix = terminal_text(sample("matrix-layernorm"))
    assert re.search(r"tiny-llama-b +0\.0015 +1 +-0\.0219 +—", matrix)
    assert re.search(r"tiny-llama-a-sft +0\.99993 +0\.9722 +1 +0\.9747", matrix)
    inspect = terminal_text(sample("inspect-moe"))
    assert re.search(r"parameters +102,345,678,912 \(102\.3 B\)", inspect)
    assert re.search(r"BF16 +24,257 +102,345,000,000 \(102\.3 B\) +204,690,000,000 \(191 GiB\)", inspect)
    assert re.search(r"num_kv_heads +8", inspect)


def test_kinds_without_a_view_and_malformed_documents_still_render():
    generic = json.loads((Path(__file__).parent / "fixtures" / "generic-document.json").read_text())
    license_text = terminal_text(generic)  # a kind no view knows: every key still shows
    assert re.search(r"license_name +Upstage Solar License", license_text)
    assert re.search(r"4\(d\) +added +attribution notice", license_text)
    mystery = terminal_text({"kind": "mystery", "payload": {"a": [1, 2]}, "items": [{"x": 1.5}], "n": 3})
    assert re.search(r"payload\s+a +1, 2", mystery) and re.search(r"n +3", mystery)
    broken = terminal_text(dict(sample("compare-layernorm"), summary="oops", baselines=[]))
    assert "Could not lay out this document" in broken
    assert "Document 1" in terminal_text(["not", "a", "dict"])


def test_tensor_names_are_printed_literally_not_as_rich_markup():
    doc = sample("compare-layernorm")
    doc["rows"][0]["tensor_a"] = "model.layers.0.[bold]odd[/bold].weight"
    assert "[bold]odd[/bold]" in terminal_text(doc)


def test_markdown_writes_figures_beside_it_and_links_them(tmp_path):
    text = render_markdown([sample("compare-layernorm"), sample("matrix-layernorm")], tmp_path / "report-figures")
    assert text.startswith("# solarforensics report\n")
    assert "1. [compare: tiny-llama-a vs tiny-llama-b (control tiny-llama-c)](#doc-1-compare)" in text
    assert ("| layer | tensor | raw cosine | centered (Pearson) | MAD | rel L2 | equal bytes | p (shuffle) | note |"
            in text)
    assert "| ---: | --- | ---: | ---: | ---: | ---: | --- | ---: | --- |" in text
    assert "> 🔎 **Raw vs centered vs nulls — tiny-llama-a vs tiny-llama-b**" in text
    links = re.findall(r"!\[[^\]]*\]\((report-figures/[^)]+\.png)\)", text)
    assert links == ["report-figures/doc-1-compare-profile-layernorm.png",
                     "report-figures/doc-2-matrix-matrix-layernorm-pearson.png",
                     "report-figures/doc-2-matrix-matrix-layernorm-cosine.png",
                     "report-figures/doc-2-matrix-matrix-layernorm-identical_fraction.png"]
    for link in links:
        assert (tmp_path / link).read_bytes().startswith(PNG_MAGIC)
    assert "![" not in render_markdown([sample("compare-layernorm")], None)


def test_render_writes_each_format_to_a_file_or_the_console(tmp_path):
    docs = [sample("compare-all-pairs")]
    assert render(docs, "md", tmp_path / "r.md", Console()) == tmp_path / "r.md"
    assert sorted(p.name for p in (tmp_path / "r-figures").iterdir()) == [
        "doc-1-compare-layers-attn-k.png", "doc-1-compare-profile-attn-k.png"]
    assert render(docs, "html", tmp_path / "r.html", Console()) == tmp_path / "r.html"
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
    assert render(docs, "table", tmp_path / "r.txt", Console()) == tmp_path / "r.txt"
    assert "Per tensor pair" in (tmp_path / "r.txt").read_text()
    console = Console(file=io.StringIO(), width=80, color_system=None)
    assert render([sample("inspect-moe")], "md", None, console) is None
    assert "- **parameters**: 102,345,678,912 (102.3 B)" in console.file.getvalue()
    with pytest.raises(SpecError, match="unknown report format 'pdf'; use one of: table, md, html"):
        render(docs, "pdf", None, console)


def test_matrix_heatmap_writes_a_png_for_the_cli(tmp_path):
    path = plots.matrix_heatmap(sample("matrix-layernorm"), "layernorm", "pearson", tmp_path / "m" / "heat.png")
    assert path.read_bytes().startswith(PNG_MAGIC)
    assert path.parent.iterdir().__next__() == path


def test_similarity_heatmaps_use_fixed_colour_ranges_so_noise_is_not_painted_as_structure():
    assert plots.color_scale("cosine") == (-1.0, 1.0, "RdBu_r")
    assert plots.color_scale("pearson") == (-1.0, 1.0, "RdBu_r")
    assert plots.color_scale("cka") == (0.0, 1.0, "viridis")
    assert plots.color_scale("identical_fraction") == (0.0, 1.0, "viridis")
    assert plots.color_scale("mad") == (None, None, "viridis")


def test_html_is_self_contained_with_every_plot_inline():
    page = render_html(all_samples())
    assert "<script" not in page and "<link" not in page
    assert re.findall(r"""(?:src|href)\s*=\s*["'](?!data:image/png;base64,|#)""", page) == []
    assert "url(" not in page and "@import" not in page
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    # profile (layernorm, replica layernorm, attn-k), 2 layer matrices, 3 matrix metrics
    assert len(images) == 10  # 8 from the compare/matrix/provenance samples, ROC + p-value histogram of the validation one
    assert all(base64.b64decode(data).startswith(PNG_MAGIC) for data in images)
    assert LESSON_LINE in page
    assert "p &lt; 1e-300 (log10 p = -412.3)" in page


def chromium_args(user_data_dir: Path) -> list[str]:
    return ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={user_data_dir}"]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium not installed (apt-get install chromium)")
def test_html_report_renders_in_a_real_headless_browser(tmp_path):
    page = tmp_path / "report.html"
    page.write_text(render_html(all_samples()))
    dom = subprocess.run(chromium_args(tmp_path / "profile") + ["--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    for expected in (LESSON_LINE, "SYNTHETIC REPLICA — NOT THE REAL MODELS", "INCOMPLETE RESULTS",
                     "Verdict: DERIVED", "p &lt; 1e-300 (log10 p = -412.3)", "102,345,678,912 (102.3 B)",
                     "0.99993", "Upstage Solar License"):
        assert expected in dom
    assert len(re.findall(r'<img src="data:image/png;base64,', dom)) == 10
    shot = tmp_path / "report.png"
    subprocess.run(chromium_args(tmp_path / "profile") + ["--window-size=1280,3000", f"--screenshot={shot}",
                                                          page.as_uri()],
                   capture_output=True, timeout=120, check=True, cwd=tmp_path)
    assert shot.read_bytes().startswith(PNG_MAGIC) and shot.stat().st_size > 50_000
