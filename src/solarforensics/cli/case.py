"""Case commands: `case NAME` runs a whole dispute (configs/cases/NAME.toml), `case list` shows the cases, and
`reproduce RESULTS` checks a case run against the peers' published numbers (reference/targets.toml)."""

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from solarforensics.cli.app import app, err, out, print_json
from solarforensics.cli.options import BudgetBytes, Device, Endpoint, JsonOut, NoCache
from solarforensics.errors import ForensicsError

STATUS_STYLE = {"stands": "green", "does-not-stand": "red", "untestable": "yellow", "pass": "green", "fail": "red",
                "missing": "yellow"}


@app.command("case")
def case(
    name: Annotated[str, typer.Argument(help="A case (configs/cases/NAME.toml), or `list` to show them.")],
    out_dir: Annotated[Path | None, typer.Option("--out", help="Folder for every results file and the reports "
                                                               "(default results/NAME/).", show_default=False)] = None,
    controls: Annotated[str | None, typer.Option(
        "--controls", help="Replace the case's controls, in order (e.g. phi,intellect3).", show_default=False)] = None,
    budget_bytes: BudgetBytes = None,
    quick: Annotated[bool, typer.Option("--quick", help="The demo's profile: steps read fewer layers and run fewer "
                                                        "tests, or are skipped (each step's `quick` table in the case "
                                                        "file); a skipped step leaves the case complete.")] = False,
    no_report: Annotated[bool, typer.Option("--no-report", help="Write the results documents only, no "
                                                                "report.md/report.html.")] = False,
    device: Device = "auto",
    as_json: JsonOut = False,
    endpoint: Endpoint = None,
    no_cache: NoCache = False,
) -> None:
    """Run a dispute end to end: arch, tokenizer, licence, compares with nulls and controls, provenance, claims."""
    from solarforensics.case.run import CaseRequest, list_cases, run_case
    from solarforensics.cli.app import options

    if name == "list":
        return print_cases(list_cases())
    request = CaseRequest(name, out_dir, controls, budget_bytes, device, quick=quick, reports=not no_report)
    outcome = run_case(request, options(endpoint, no_cache),
                       say=lambda text: err.print(text, highlight=False, markup=False, soft_wrap=True))
    if as_json:
        print_json(outcome.doc)
    else:
        print_case_summary(outcome.doc)
        where = outcome.report_html or outcome.out_dir / "case.json"
        out.print(f"report: {where}", highlight=False, soft_wrap=True)
    if outcome.problem:
        raise ForensicsError(f"case {name} incomplete: {outcome.problem}", hint=f"partial results in {outcome.out_dir}")


@app.command()
def reproduce(
    results: Annotated[Path, typer.Argument(help="The folder `case` wrote (with case.json).")],
    allow_replica: Annotated[bool, typer.Option("--allow-replica", help="Compare a replica run anyway (it cannot "
                                                                        "reproduce real numbers).")] = False,
    as_json: JsonOut = False,
) -> None:
    """Check a case run against the numbers the public analyses measured on the real weights; exit 1 if any differ."""
    from solarforensics.case.reproduce import check_run

    report = check_run(results, allow_replica)
    if as_json:
        print_json(report)
    else:
        print_reproduction(report)
    if not report["reproduced"]:
        raise typer.Exit(1)


def print_cases(cases) -> None:
    table = Table(title="cases (configs/cases/)", show_lines=False)
    for column in ("name", "models", "controls", "steps", "question"):
        table.add_column(column)
    for c in cases:
        table.add_row(c.name, escape(", ".join(c.models.values())), escape(", ".join(c.controls.values())),
                      str(len(c.steps)), escape(c.question))
    out.print(table)


def print_case_summary(doc: dict) -> None:
    if doc.get("replica"):
        out.print("[bold red]SYNTHETIC REPLICAS[/] - these numbers show how the method behaves; they are not "
                  "findings about the real models.")
    steps = Table(title=f"{doc['case']['title']}: steps")
    for column, justify in (("step", "left"), ("status", "left"), ("bytes", "right"), ("s", "right"),
                            ("command", "left")):
        steps.add_column(column, justify=justify)
    for s in doc["steps"]:
        status = {"ok": "ok", "skipped": "[yellow]skipped[/]"}.get(s["status"], f"[red]{s['status']}[/]")
        seconds = f"{s['seconds']:.1f}" if s.get("seconds") is not None else "-"
        steps.add_row(s["id"], status, f"{s['bytes_transferred']:,}", seconds, escape(s["command"]))
    out.print(steps)
    claims = Table(title="claims (reference/claims.toml)", show_lines=True)
    for column, ratio in (("claim", 5), ("status", 2), ("measured", 5)):
        claims.add_column(column, ratio=ratio, overflow="fold")
    for c in doc["claims"]:
        style = STATUS_STYLE.get(c["status"], "")
        measured = c["measured"] or c.get("why") or "-"
        claims.add_row(f"[bold]{c['id']}[/]\n{escape(c['claim'])}", f"[{style}]{c['status']}[/]", escape(measured))
    out.print(claims)
    for line in doc["summary"]["statements"]:
        out.print(f"- {line}", highlight=False, markup=False, soft_wrap=True)


def print_reproduction(report: dict) -> None:
    if report["replica"]:
        out.print("[bold red]SYNTHETIC REPLICAS[/] - failures are expected: the published numbers come from the real "
                  "weights.")
    table = Table(title=f"reproduction of the published numbers: {report['results']}")
    for column, justify in (("target", "left"), ("at", "left"), ("expected", "right"), ("measured", "right"),
                            ("difference", "right"), ("status", "left")):
        table.add_column(column, justify=justify)
    for c in report["checks"]:
        difference = f"{c['difference']:+.2e}" if c["difference"] is not None else "-"
        style = STATUS_STYLE[c["status"]]
        table.add_row(escape(c["target"]), escape(c["at"]), escape(_short(c["expected"])),
                      escape(_short(c["measured"])), difference, f"[{style}]{c['status']}[/]")
    out.print(table)
    counts = report["counts"]
    out.print(f"{counts['pass']} pass, {counts['fail']} fail, {counts['missing']} missing", highlight=False)


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.10g}"
    text = "-" if value is None else str(value)
    return text if len(text) <= 20 else text[:17] + "..."
