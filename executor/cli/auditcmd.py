"""`runbook audit show|verify`: read the tamper-evident trail."""

from __future__ import annotations

import json
import time
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from executor.audit import iter_records, verify
from executor.cli.app import AppContext, cli, json_option, pass_app

out = Console(highlight=False, soft_wrap=True)

_SHOWN = (
    "attempt",
    "kind",
    "command",
    "message",
    "method",
    "url",
    "playbook",
    "module",
    "hosts",
    "host",
    "task",
    "changed",
    "ok",
    "rc",
    "error",
    "reason",
    "status",
    "approver",
    "approvers",
    "quorum",
    "decision",
    "as",
    "value",
    "expression",
    "delay",
    "index",
    "scope",
    "credential",
    "what",
    "result",
    "serial",
    "principals",
    "ttl",
    "waiting",
    "in_flight",
)
"""The fields a timeline line shows, in this order; ``--json`` has everything."""


def _detail(data: dict[str, Any]) -> str:
    """``key=value`` for the fields worth reading, from the record and its action."""
    merged = {**(data.get("action") or {}), **data}
    if merged.get("dry_run"):
        merged["kind"] = f"{merged.get('kind') or ''} (dry run)".strip()
    if isinstance(merged.get("plan"), list):
        merged["gates"] = ", ".join(str(item.get("step")) for item in merged["plan"])
    if isinstance(merged.get("touched"), list):
        merged["touched"] = "; ".join(
            f"{t.get('step')} {t.get('outcome')}" for t in merged["touched"]
        )
    shown = [
        (key, merged[key])
        for key in (*_SHOWN, "gates", "touched")
        if merged.get(key) not in (None, [], {}, "")
    ]
    return "  ".join(f"{key}={value}" for key, value in shown)


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
        detail = _detail(dict(record.data or {}))
        who = f" {record.actor}" if record.actor else ""
        step = f" [{record.step}]" if record.step else ""
        run = f" {record.run_id}" if record.run_id and run_id is None else ""
        out.print(
            f"{record.seq:>6} {record.ts} {escape(record.event)}{escape(step)}{escape(who)}"
            f"{escape(run)}  [dim]{escape(detail)}[/]"
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
