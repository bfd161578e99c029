"""Commands about the runbook format and the catalog: validate, lint, graph, list, catalog lock."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from executor.catalog import (
    Catalog,
    Entry,
    check_file,
    looks_like_runbook,
    resolve_ref,
    runbook_files,
)
from executor.cli.app import AppContext, cli, json_option, pass_app
from executor.diagram import FORMATS, RENDERERS
from executor.errors import Issue, ValidationFailed
from executor.gameday import load_plan
from executor.gameday.schema import schema as plan_schema
from executor.lint import lint_document
from executor.loader import load_document
from executor.triggers.routes import is_routes_document, validate_routes_document

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _collect(
    paths: tuple[Path, ...], catalog_root: Path | None, plans_against: Path
) -> list[tuple[Entry | None, list[Issue]]]:
    """Validate files and directories; a directory is a catalog with cross-file checks.

    Routes files (``kind: Routes``, or named routes.yaml/.yml) are checked as routes,
    against the catalog they sit in (or ``catalog_root``). Game day plans
    (``kind: GameDay``) are checked as ``runbook gameday`` would load them, against
    the catalog ``plans_against``: they live apart from the runbooks they drill.
    """
    results: list[tuple[Entry | None, list[Issue]]] = []
    for path in paths:
        if path.is_dir():
            catalog = Catalog.load(path)
            extra = catalog.catalog_issues()
            for entry in catalog.entries:
                mine = [i for i in extra if Path(i.path) == entry.path]
                results.append((entry, [*entry.issues, *mine]))
            routes = [p for p in _routes_files(path) if not looks_like_runbook(p)]
            for routes_file in routes:
                results.append(_routes_entry(routes_file, catalog))
            plans = [p for p in _plan_files(path) if p not in routes]
            for plan_file in plans:
                results.append(_plan_entry(plan_file, plans_against))
            if not catalog.entries and not routes and not plans:
                err.print(
                    f"[yellow]warning:[/] no runbook, routes or game day plan files under {path}"
                )
        elif is_routes_document(path) and not looks_like_runbook(path):
            results.append(_routes_entry(path, _catalog_for(path, catalog_root)))
        elif is_plan_document(path):
            results.append(_plan_entry(path, plans_against))
        else:
            entry = check_file(path)
            results.append((entry, list(entry.issues)))
    return results


@cache
def _plan_kind_line() -> re.Pattern[bytes]:
    """A top-level ``kind:`` line naming the plan kind (the schema's ``kind`` const)."""
    kind = re.escape(str(plan_schema()["properties"]["kind"]["const"]).encode())
    return re.compile(rb"^kind:\s*['\"]?" + kind + rb"['\"]?\s*(#.*)?$", re.MULTILINE)


def is_plan_document(path: Path) -> bool:
    """A game day plan: ``kind: GameDay`` at the top level (cheap: the head of the file)."""
    try:
        head = path.read_bytes()[:65536]
    except OSError:
        return False
    return bool(_plan_kind_line().search(head)) and not looks_like_runbook(path)


def _plan_files(root: Path) -> list[Path]:
    return [
        p
        for p in sorted(root.rglob("*"))
        if p.suffix in (".yaml", ".yml") and p.is_file() and is_plan_document(p)
    ]


def _plan_entry(path: Path, catalog: Path) -> tuple[Entry, list[Issue]]:
    """A plan's problems: its structure, then the runbook, inputs and route it relies on."""
    try:
        plan = load_plan(path, catalog=catalog)
    except ValidationFailed as failed:
        return Entry(path=path, document=None, runbook=None), list(failed.issues)
    return Entry(path=path, document=plan.document, runbook=None), []


def _routes_files(root: Path) -> list[Path]:
    return [
        p
        for p in sorted(root.rglob("*"))
        if p.suffix in (".yaml", ".yml") and p.is_file() and is_routes_document(p)
    ]


def _catalog_for(path: Path, catalog_root: Path | None) -> Catalog | None:
    """The catalog a routes file names runbooks from: --catalog, else its own directory."""
    for root in (catalog_root, path.parent):
        if root is not None and root.is_dir() and any(runbook_files(root)):
            return Catalog.load(root)
    return None


def _routes_entry(path: Path, catalog: Catalog | None) -> tuple[Entry, list[Issue]]:
    lookup = catalog.resolve if catalog is not None else None
    try:
        document = load_document(path)
    except ValidationFailed as failed:
        return Entry(path=path, document=None, runbook=None), list(failed.issues)
    issues = validate_routes_document(document, lookup)
    return Entry(path=path, document=document, runbook=None), issues


def _print_issue(issue: Issue) -> None:
    colour = "red" if issue.severity == "error" else "yellow"
    where = f"{issue.path}:{issue.line}:{issue.column}"
    out.print(f"{where}: [{colour}]{issue.severity}[/]: {issue.message}", markup=True)


def _paths_argument(func):  # type: ignore[no-untyped-def]
    return click.argument(
        "paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path)
    )(func)


@cli.command()
@_paths_argument
@json_option
@pass_app
def validate(app: AppContext, paths: tuple[Path, ...], as_json: bool) -> None:
    """Check runbooks, routes files, game day plans or directories; report every problem.

    Each problem is printed as FILE:LINE:COL: message. A directory is checked
    as a catalog too: a name@version defined twice with different content, or
    a locked version edited without a version bump, is an error. A routes file
    (kind: Routes, or named routes.yaml or routes.yml) is checked against the catalog: the
    runbooks it names, their inputs and automation level. A game day plan
    (kind: GameDay) is checked as `runbook gameday` loads it, against --catalog:
    the runbook it starts, its inputs, approval steps and the route for its alert.

    \b
    Exit codes: 0 all valid, 1 at least one problem, 2 usage error.

    \b
    Examples:
      runbook validate runbooks/
      runbook validate runbooks/disk-pressure.yaml --json
      runbook validate gamedays/
    """
    results = _collect(paths, app.settings.catalog, app.settings.catalog)
    bad = [(e, issues) for e, issues in results if any(i.severity == "error" for i in issues)]
    if as_json:
        payload = {
            "valid": not bad,
            "files": [
                {
                    "path": str(e.path) if e else None,
                    "runbook": e.runbook.ref if e and e.runbook else None,
                    "valid": not any(i.severity == "error" for i in issues),
                    "issues": [i.as_dict() for i in issues],
                }
                for e, issues in results
            ],
        }
        click.echo(json.dumps(payload, indent=2))
    else:
        for _, issues in results:
            for issue in issues:
                if issue.severity == "error":
                    _print_issue(issue)
        problems = sum(len([i for i in issues if i.severity == "error"]) for _, issues in bad)
        if bad:
            err.print(
                f"[red]✗[/] {len(bad)} of {len(results)} file(s) invalid ({problems} problem(s))"
            )
        else:
            err.print(f"[green]✓[/] {len(results)} file(s) valid")
    raise SystemExit(1 if bad else 0)


@cli.command()
@_paths_argument
@click.option("--strict", is_flag=True, help="Exit 1 when there is any warning.")
@json_option
@pass_app
def lint(app: AppContext, paths: tuple[Path, ...], strict: bool, as_json: bool) -> None:
    """Warn about runbooks that are valid but risky.

    Warnings: a mutating step (ssh, ansible, local) with no rollback and no
    on_failure; automation: auto without max_hosts; a mutation never verified
    by a later assert or http check; an unused input; a step whose guard can
    never be true. Invalid files are reported as errors.

    \b
    Exit codes: 0 clean or warnings only, 1 errors (or warnings with --strict).

    \b
    Example:
      runbook lint --strict runbooks/
    """
    results = _collect(paths, None, app.settings.catalog)
    report = []
    errors = warnings = 0
    for entry, issues in results:
        found = list(issues)
        if entry is not None and entry.runbook is not None and entry.document is not None:
            found += lint_document(entry.document, entry.runbook)
        errors += sum(1 for i in found if i.severity == "error")
        warnings += sum(1 for i in found if i.severity == "warning")
        report.append((entry, found))
    if as_json:
        click.echo(
            json.dumps(
                {
                    "errors": errors,
                    "warnings": warnings,
                    "files": [
                        {"path": str(e.path) if e else None, "issues": [i.as_dict() for i in f]}
                        for e, f in report
                    ],
                },
                indent=2,
            )
        )
    else:
        for _, found in report:
            for issue in found:
                _print_issue(issue)
        err.print(f"{len(report)} file(s): {errors} error(s), {warnings} warning(s)")
    raise SystemExit(1 if errors or (strict and warnings) else 0)


@cli.command()
@click.argument("runbook")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="mermaid", show_default=True)
@pass_app
def graph(app: AppContext, runbook: str, fmt: str) -> None:
    """Draw a runbook's step graph, with guards, approvals and rollbacks.

    RUNBOOK is a catalog name, name@version, or a file path.

    \b
    Examples:
      runbook graph disk-pressure --format mermaid
      runbook graph runbooks/disk-pressure.yaml --format dot | dot -Tsvg > g.svg
    """
    book = resolve_ref(runbook, app.settings.catalog)
    click.echo(RENDERERS[fmt](book), nl=False)


@cli.command(name="list")
@json_option
@pass_app
def list_(app: AppContext, as_json: bool) -> None:
    """List the catalog: name, versions, owner, automation level.

    \b
    Example:
      runbook --catalog runbooks/ list
    """
    catalog = Catalog.load(app.settings.catalog)
    rows = []
    for name in catalog.names():
        newest = catalog.newest(name).runbook
        assert newest is not None
        rows.append(
            {
                "name": name,
                "versions": catalog.versions(name),
                "newest": newest.version,
                "owner": newest.metadata.owner,
                "automation": newest.policy.automation.value,
                "title": newest.metadata.title,
            }
        )
    invalid = [e for e in catalog.entries if e.runbook is None]
    if as_json:
        click.echo(
            json.dumps({"runbooks": rows, "invalid": [str(e.path) for e in invalid]}, indent=2)
        )
        return
    table = Table(title=f"catalog {catalog.root}")
    for column in ("name", "versions", "owner", "automation", "title"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["name"],
            ", ".join(row["versions"]),
            row["owner"] or "-",
            row["automation"],
            row["title"] or "",
        )
    out.print(table)
    for entry in invalid:
        err.print(
            f"[yellow]warning:[/] {entry.path} is invalid: run 'runbook validate {entry.path}'"
        )


@cli.group()
def catalog() -> None:
    """Manage the catalog of runbook versions."""


@catalog.command(name="lock")
@pass_app
def catalog_lock(app: AppContext) -> None:
    """Record the sha256 of every published name@version in catalog.lock.

    After this, editing a locked version without bumping metadata.version makes
    `runbook validate` fail.

    \b
    Example:
      runbook --catalog runbooks/ catalog lock
    """
    catalog_obj = Catalog.load(app.settings.catalog)
    added = catalog_obj.lock_all()
    total = len(catalog_obj.lock.versions)
    for ref in added:
        out.print(f"locked {ref}")
    err.print(f"{catalog_obj.lock.path}: {total} version(s) locked, {len(added)} new")
