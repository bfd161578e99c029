"""``runbook test``: rehearse scenario files and report runbook coverage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from executor.cli.app import AppContext, cli, json_option, pass_app
from executor.errors import UsageError
from executor.rehearsal import Collection, SuiteResult, collect, junit_xml, run_suite

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


@cli.command(name="test")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--min-coverage",
    type=click.FloatRange(0, 100),
    default=None,
    metavar="PCT",
    help="Fail when a runbook's coverage is below PCT percent.",
)
@click.option(
    "--junit",
    "junit",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="FILE",
    help="Also write the results as JUnit XML (for CI).",
)
@click.option(
    "-k", "select", default=None, metavar="TEXT", help="Only scenarios whose title contains TEXT."
)
@json_option
@pass_app
def test(
    app: AppContext,
    paths: tuple[Path, ...],
    min_coverage: float | None,
    junit: Path | None,
    select: str | None,
    as_json: bool,
) -> int:
    """Rehearse runbooks: run their scenario files through the real engine, touching nothing.

    PATHS are scenario files, runbook files (their scenarios are found in
    the same folder or its tests/ folder) or directories (the catalog by
    default). Each scenario runs the real conductor and engine with every
    action replaced by its scripted result: no host, no Vault, no network,
    no waiting. Steps a scenario does not script succeed with empty output
    (unless it says strict: true).

    Prints one line per scenario, a diff for each one whose expectations
    were not met, the coverage of each runbook (steps, guard sides, failure
    paths, rollbacks and joins no scenario reached), then "N passed, N failed".

    \b
    Exit codes: 0 all passed (and coverage at least --min-coverage),
    1 a scenario failed, a file is invalid or coverage is too low,
    2 usage error (nothing to test, bad option).

    \b
    Examples:
      runbook test
      runbook test runbooks/ --min-coverage 100 --junit rehearsals.xml
      runbook test runbooks/disk-pressure.yaml -k escalates
    """
    roots = paths or (app.settings.catalog,)
    if not paths and not app.settings.catalog.is_dir():
        raise UsageError(
            f"nothing to test: the catalog {app.settings.catalog} does not exist",
            hint="pass scenario files or directories: runbook test runbooks/",
        )
    found = collect(list(roots))
    for path in found.ignored:
        err.print(f"[yellow]note:[/] {escape(str(path))} is neither a runbook nor a scenario file")
    nothing = not found.scenario_files and not found.runbooks and not found.broken
    if nothing and paths and all(p.is_file() for p in paths):
        out.print("nothing to test: none of the given files is a runbook or a scenario file")
        return 0  # e.g. a pre-commit hook given only playbooks
    if nothing:
        raise UsageError(
            f"no scenario files or runbooks in {', '.join(str(p) for p in roots)}",
            hint="scenario files say 'kind: Scenarios'; keep them in a tests/ folder beside "
            "the runbooks",
        )
    catalog = app.settings.catalog if app.settings.catalog.is_dir() else None
    result = run_suite(found, catalog=catalog, select=select)
    low = result.coverage.below(min_coverage) if min_coverage is not None else []
    if junit is not None:
        junit.write_text(junit_xml(result, min_coverage=min_coverage), encoding="utf-8")
    if as_json:
        out.print_json(json.dumps(_payload(result, found, min_coverage)))
    else:
        _report(result, min_coverage, selected=bool(select))
    return 1 if result.failed or low else 0


def _report(result: SuiteResult, min_coverage: float | None, *, selected: bool) -> None:
    for verdict in result.verdicts:
        title = escape(verdict.title)
        if verdict.passed:
            out.print(f"[green]PASS[/] {title}")
            continue
        out.print(f"[red]FAIL[/] {title}  [dim]({escape(verdict.outcome.scenario.where)})[/]")
        for failure in verdict.failures:
            for line in failure.splitlines():
                out.print(f"     {_diff_line(line)}")
    for path, issues in result.broken:
        out.print(f"[red]ERROR[/] {escape(str(path))}: {len(issues)} problem(s)")
        for issue in issues:
            out.print(f"     {escape(str(issue))}")
    if result.coverage.books:
        out.print("coverage (of the selected scenarios only):" if selected else "coverage:")
    for entry in result.coverage.ordered():
        colour = "green" if not entry.missing else "yellow"
        if min_coverage is not None and entry.percent + 1e-9 < min_coverage:
            colour = "red"
        out.print(f"  [{colour}]{escape(entry.summary())}[/]")
    if min_coverage is not None:
        for entry in result.coverage.below(min_coverage):
            out.print(
                f"[red]coverage of {escape(entry.runbook.ref)} is {entry.percent:.1f}%, "
                f"below --min-coverage {min_coverage:g}%[/]"
            )
    out.print(f"[dim]rehearsed {len(result.verdicts)} scenario(s) in {result.seconds:.2f}s[/]")
    colour = "red" if result.failed else "green"
    out.print(f"[{colour}]{result.passed} passed, {result.failed} failed[/]")


def _diff_line(line: str) -> str:
    text = escape(line)
    if line.startswith("+") and not line.startswith("+++"):
        return f"[green]{text}[/]"
    if line.startswith("-") and not line.startswith("---"):
        return f"[red]{text}[/]"
    return text


def _payload(result: SuiteResult, found: Collection, min_coverage: float | None) -> dict[str, Any]:
    return {
        "passed": result.passed,
        "failed": result.failed,
        "seconds": round(result.seconds, 3),
        "scenarios": [
            {
                "runbook": v.outcome.scenario.runbook.ref,
                "name": v.outcome.scenario.name,
                "where": v.outcome.scenario.where,
                "passed": v.passed,
                "status": v.outcome.status,
                "path": v.outcome.path,
                "failures": v.failures,
            }
            for v in result.verdicts
        ],
        "invalid_files": [
            {"path": str(p), "issues": [i.as_dict() for i in issues]} for p, issues in result.broken
        ],
        "coverage": {
            entry.runbook.ref: {
                "percent": round(entry.percent, 2),
                "scenarios": entry.scenarios,
                "missing": [i.describe(entry.runbook) for i in entry.missing],
                "below_threshold": min_coverage is not None and entry.percent + 1e-9 < min_coverage,
            }
            for entry in result.coverage.ordered()
        },
        "ignored": [str(p) for p in found.ignored],
    }
