"""`runbook audit show|verify`: read the tamper-evident trail."""

from __future__ import annotations

import json
import time

import click
from rich.console import Console
from rich.markup import escape

from executor.audit import iter_records, verify
from executor.cli.app import AppContext, cli, json_option, pass_app

out = Console(highlight=False, soft_wrap=True)

_SHOWN = (
    "command",
    "hosts",
    "ok",
    "rc",
    "error",
    "reason",
    "status",
    "approver",
    "value",
    "expression",
    "scope",
    "credential",
    "serial",
    "principals",
    "ttl",
    "plan_steps",
)


@cli.group()
def audit() -> None:
    """Read and check the audit log (hash-chained JSON Lines)."""


@audit.command()
@click.argument("run_id", required=False)
@json_option
@pass_app
def show(app: AppContext, run_id: str | None, as_json: bool) -> None:
    """Print the audit timeline, for one run or for everything.

    \b
    Examples:
      runbook audit show r-20261122-031502-9f3a1c
      runbook audit show --json | jq .
    """
    path = app.settings.audit_log
    if not path.exists():
        out.print(f"no audit log at {path} yet")
        return
    for record in iter_records(path, run_id=run_id):
        if as_json:
            click.echo(json.dumps(record.__dict__, default=str))
            continue
        data = record.data or {}
        action = data.get("action") or {}
        details = {
            k: v for k, v in {**action, **data}.items() if k in _SHOWN and v not in (None, [], {})
        }
        detail = "  ".join(f"{k}={v}" for k, v in details.items())
        who = f" {record.actor}" if record.actor else ""
        step = f" [{record.step}]" if record.step else ""
        out.print(
            f"{record.seq:>6} {record.ts} {record.event}{escape(step)}{escape(who)}"
            f"  [dim]{escape(detail)}[/]"
        )


@audit.command(name="verify")
@json_option
@pass_app
def verify_cmd(app: AppContext, as_json: bool) -> None:
    """Check the hash chain: exit 0 intact, 1 with the first broken record named.

    Finds edited, deleted, reordered and truncated records.

    \b
    Example:
      runbook audit verify
    """
    started = time.monotonic()
    report = verify(app.settings.audit_log)
    if as_json:
        click.echo(json.dumps(report.__dict__, default=str))
    elif report.ok:
        out.print(
            f"[green]audit intact[/]: {report.count} records, chain verified "
            f"in {time.monotonic() - started:.2f}s ({app.settings.audit_log})"
        )
    else:
        out.print(f"[red]audit broken[/]: {report}")
    raise SystemExit(0 if report.ok else 1)
