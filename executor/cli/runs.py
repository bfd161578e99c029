"""Commands that run and steer runs: run, resume, resolve, status, runs, approve, deny, kill."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from executor import engine
from executor.catalog import resolve_ref
from executor.cli.app import AppContext, cli, json_option, pass_app
from executor.engine import approvals, killswitch
from executor.engine.plan import dry_run_plan
from executor.engine.services import Services
from executor.errors import UsageError
from executor.inputs import parse_assignments
from executor.model import Runbook, RunStatus
from executor.wiring import build_services

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

RUN_EXIT = {
    RunStatus.SUCCEEDED: 0,
    RunStatus.FAILED: 1,
    RunStatus.ROLLED_BACK: 6,
    RunStatus.CANCELLED: 7,
    RunStatus.WAITING: 8,
}
RUN_EXIT_HELP = """\b
Exit codes: 0 succeeded, 1 failed, 2 usage error, 3 refused by policy,
4 refused by the kill-switch, 5 audit/state not writable, 6 failed and
rolled back, 7 cancelled (kill-switch or runbook kill), 8 paused waiting
for an approval or an operator (continue with runbook resume RUN).
"""


def _services(app: AppContext) -> Services:
    return build_services(app.settings)


def _touched_line(item: Mapping[str, Any]) -> str:
    """One step the run acted with: where, and whether it finished or was cut off."""
    hosts = item.get("hosts") or {}
    shown = []
    for host, done in hosts.items():
        state = "cut off" if done.get("cut_off") else f"rc {done.get('rc')}"
        shown.append(f"{host} ({state})")
    where = ", ".join(shown)
    return f"{item['step']}: {item['outcome']} on {where or 'the executor (local)'}"


class Progress:
    """Live progress for a person: one line per step event, with durations.

    Everything that comes from a runbook, a command or a person (messages,
    errors, output, reasons, names) is escaped: ``[red]`` or ``[/]`` in a value
    is printed as written and can neither restyle the line nor crash the CLI.
    """

    def __init__(self, console: Console, as_json: bool) -> None:
        self.console = console
        self.as_json = as_json
        self.started: dict[str, float] = {}

    def __call__(self, event: str, data: Mapping[str, Any]) -> None:
        if self.as_json:
            return
        step = escape(str(data.get("step", "")))
        if event == "run.created":
            self.console.print(f"[bold]run {escape(data['run_id'])}[/] {escape(data['runbook'])}")
        elif event == "step.started":
            self.started[step] = time.monotonic()
            hosts = f" on {', '.join(data['hosts'])}" if data.get("hosts") else ""
            again = f" (attempt {data['attempt']})" if data.get("attempt", 1) > 1 else ""
            detail = escape(data["kind"] + hosts + again)
            self.console.print(f"  [cyan]▶[/] {step} [dim]{detail}[/]")
        elif event == "step.finished":
            took = time.monotonic() - self.started.get(step, time.monotonic())
            if data["ok"]:
                self.console.print(f"  [green]✓[/] {step} [dim]{took:.2f}s[/]")
            else:
                error = escape(str(data.get("error") or ""))
                self.console.print(f"  [red]✗[/] {step} [dim]{took:.2f}s[/] {error}")
        elif event == "step.skipped":
            self.console.print(f"  [yellow]↷[/] {step} skipped: {escape(str(data.get('reason')))}")
        elif event == "approval.requested":
            self._approval(data)
        elif event == "approval.decided":
            verb = "approved" if data.get("decision") == "approve" else "denied"
            who = escape(str(data.get("approver")))
            reason = f": {escape(str(data['reason']))}" if data.get("reason") else ""
            self.console.print(f"  [magenta]✎[/] {step} {verb} by {who}{reason}")
        elif event == "approval.expired":
            self.console.print(f"  [red]⌛[/] {step} approval expired: denied")
        elif event.startswith("rollback."):
            mark = "↺" if event == "rollback.started" else ("✓" if data.get("ok") else "✗")
            error = escape(str(data.get("error") or ""))
            self.console.print(f"  [blue]{mark}[/] rollback of {step} {error}".rstrip())
        elif event == "run.finished":
            colour = {"succeeded": "green", "cancelled": "yellow"}.get(data["status"], "red")
            reason = f": {escape(str(data['reason']))}" if data.get("reason") else ""
            self.console.print(f"[{colour}]run {escape(data['status'])}[/]{reason}")

    def _approval(self, data: Mapping[str, Any]) -> None:
        self.console.print(
            f"  [magenta]⏸[/] {escape(data['step'])} waiting for approval: "
            f"{escape(str(data['message']))}"
        )
        _print_plan_lines(self.console, data.get("plan", []), "      ")
        groups = ", ".join(data.get("approvers", []))
        quorum = data.get("quorum", 1)
        needs = f"{quorum} approvals" if quorum and quorum > 1 else "1 approval"
        self.console.print(
            f"      approve ({escape(groups)}, {needs}): "
            f"[bold]runbook approve {escape(data['run_id'])} {escape(data['step'])} --as NAME[/]"
        )


def _print_plan_lines(console: Console, plan: Any, indent: str) -> None:
    """The steps an approval gates, rendered: what the approver agrees to."""
    for item in plan or []:
        action = item.get("action") or {}
        what = (
            action.get("command")
            or action.get("playbook")
            or action.get("module")
            or action.get("url")
            or action.get("message")
            or ""
        )
        when = f" when {item['when']}" if item.get("when") else ""
        console.print(
            f"{indent}then {escape(item['step'])} [dim]{escape(item['kind'] + when)}[/] "
            f"{escape(str(what))}"
        )
        if item.get("note"):
            console.print(f"{indent}  [dim]{escape(item['note'])}[/]")


def _inputs(pairs: tuple[str, ...], inputs_file: Path | None) -> dict[str, Any]:
    given: dict[str, Any] = {}
    if inputs_file is not None:
        try:
            loaded = yaml.safe_load(inputs_file.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise UsageError(f"cannot read inputs file {inputs_file}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise UsageError(f"{inputs_file}: an inputs file is a mapping of input names to values")
        given.update(loaded)
    given.update(parse_assignments(pairs))
    return given


@cli.command()
@click.argument("runbook")
@click.option(
    "--input",
    "-i",
    "pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="An input value (repeatable).",
)
@click.option(
    "--inputs-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML mapping of inputs; --input wins over it.",
)
@click.option("--dry-run", is_flag=True, help="Print the plan; touch nothing.")
@click.option(
    "--yes",
    "-y",
    is_flag=True,
    help="No interactive prompt; approvals are awaited from `runbook approve`.",
)
@click.option("--as", "actor", help="Who starts the run (default: the configured user).")
@json_option
@pass_app
def run(
    app: AppContext,
    runbook: str,
    pairs: tuple[str, ...],
    inputs_file: Path | None,
    dry_run: bool,
    yes: bool,
    actor: str | None,
    as_json: bool,
) -> None:
    """Run a runbook: RUNBOOK is a catalog name, name@version, or a file path.

    Steps run as the graph allows; an approval pauses its branch until enough
    approvers run `runbook approve`. The kill-switch stops everything.

    \b
    Examples:
      runbook run disk-pressure --input host=web1
      runbook run disk-pressure@1.3.0 -i host=web1 --dry-run
      runbook run runbooks/drain-host.yaml -i host=web2 --yes --json
    """
    book = resolve_ref(runbook, app.settings.catalog)
    given = _inputs(pairs, inputs_file)
    services = _services(app)
    who = actor or app.settings.user
    text = _runbook_text(book)
    request = engine.RunRequest(
        runbook=book, inputs=given, actor=who, trigger="cli", dry_run=dry_run, runbook_text=text
    )
    if dry_run:
        plan = dry_run_plan(services, request)
        if as_json:
            click.echo(json.dumps(plan, indent=2, default=str))
        else:
            _print_plan(plan)
        raise SystemExit(0)
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError("no terminal to confirm on: pass --yes to run without a prompt")
        click.confirm(f"Run {book.ref} as {who}?", abort=True, err=True)
    progress = Progress(err if as_json else out, as_json)
    run_id, status = engine.start(services, request, on_progress=progress)
    if as_json:
        click.echo(json.dumps(engine.run_status(services, run_id), indent=2, default=str))
    elif status is RunStatus.WAITING:
        out.print(f"run {run_id} is paused; continue with: runbook resume {run_id}")
    raise SystemExit(RUN_EXIT.get(status, 1))


run.epilog = RUN_EXIT_HELP


def _runbook_text(book: Runbook) -> str | None:
    """The exact text the run starts with, kept so resume and approvals use the same content.

    Read as bytes and checked against the hash validation saw: a file edited
    in between (or re-encoded by newline translation) must not slip in.
    """
    path = Path(book.source)
    if not path.is_file():
        return None
    raw = path.read_bytes()
    if hashlib.sha256(raw).hexdigest() != book.sha256:
        raise UsageError(
            f"{path} changed while the run was being prepared; run the command again",
            hint="edit runbooks between runs, not during one",
        )
    return raw.decode("utf-8")


def _print_plan(plan: Mapping[str, Any]) -> None:
    out.print(
        f"[bold]dry run[/] of {escape(plan['runbook'])} (sha256 {plan['sha256'][:12]}): "
        "nothing will be touched"
    )
    for item in plan["steps"]:
        when = f" [yellow]when {escape(item['when'])}[/]" if item.get("when") else ""
        needs = f" [dim]after {escape(', '.join(item['needs']))}[/]" if item.get("needs") else ""
        out.print(f"  • {escape(item['step'])} [dim]{escape(item['kind'])}[/]{needs}{when}")
        for key, value in (item.get("action") or {}).items():
            if value not in (None, {}, []):
                out.print(f"      {escape(key)}: {escape(str(value))}")
        if item.get("hosts"):
            out.print(f"      hosts: {escape(', '.join(item['hosts']))}")
        if item.get("guard"):
            out.print(f"      guard: {escape(item['guard'])}")
        if item.get("approval"):
            out.print(f"      needs approval by {escape(item['approval'])}")
        if item.get("assert"):
            out.print(f"      assert: {escape('; '.join(item['assert']))}")
        for rollback in item.get("rollback") or []:
            out.print(f"      rollback: {escape(str(rollback))}")
        if item.get("note"):
            out.print(f"      [dim]{escape(item['note'])}[/]")


@cli.command()
@click.argument("run_id")
@click.option(
    "--input",
    "-i",
    "pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="Secret inputs again (they are never stored).",
)
@json_option
@pass_app
def resume(app: AppContext, run_id: str, pairs: tuple[str, ...], as_json: bool) -> None:
    """Continue a run that paused for approval or whose process stopped.

    Finished steps never run again; steps that were in flight when the
    process died become `unknown` and wait for `runbook resolve`.

    \b
    Example:
      runbook resume r-20261122-031502-9f3a1c
    """
    services = _services(app)
    progress = Progress(err if as_json else out, as_json)
    status = engine.resume(
        services, run_id, secret_inputs=parse_assignments(pairs), on_progress=progress
    )
    if as_json:
        click.echo(json.dumps(engine.run_status(services, run_id), indent=2, default=str))
    elif status is RunStatus.WAITING:
        _explain_waiting(services, run_id)
    raise SystemExit(RUN_EXIT.get(status, 1))


resume.epilog = RUN_EXIT_HELP


def _explain_waiting(services: Services, run_id: str) -> None:
    info = engine.run_status(services, run_id)
    for step_id, step in (info.get("state") or {}).get("steps", {}).items():
        if step.get("status") == "unknown":
            out.print(
                f"step {step_id} was in flight when the executor stopped: check what it did, "
                f"then [bold]runbook resolve {run_id} {step_id} --as-succeeded|--as-failed[/]"
            )
        elif step.get("status") == "waiting":
            out.print(
                f"step {step_id} waits for approval: [bold]runbook approve {run_id} {step_id}[/]"
            )
    for item in (info.get("state") or {}).get("saga") or []:
        if item.get("status") == "unknown":
            out.print(
                f"the rollback of step {item['step']} was in flight when the executor stopped: "
                f"[bold]runbook resolve {run_id} {item['step']} --as-succeeded|--as-failed[/]"
            )
    out.print(f"then: runbook resume {run_id}")


@cli.command()
@click.argument("run_id")
@click.argument("step_id")
@click.option("--as-succeeded", "outcome", flag_value="succeeded", help="The step did its work.")
@click.option(
    "--as-failed", "outcome", flag_value="failed", help="The step did not (on_failure applies)."
)
@click.option("--as", "actor", help="Operator identity (default: configured user).")
@pass_app
def resolve(
    app: AppContext, run_id: str, step_id: str, outcome: str | None, actor: str | None
) -> None:
    """Settle a step left `unknown` because the executor stopped while it ran.

    Check on the hosts what really happened, then say so; continue the run
    with `runbook resume RUN`.

    \b
    Example:
      runbook resolve r-20261122-031502-9f3a1c clean --as-failed
    """
    if outcome is None:
        raise UsageError("say what happened: --as-succeeded or --as-failed")
    services = _services(app)
    engine.resolve(
        services,
        run_id,
        step_id,
        succeeded=outcome == "succeeded",
        actor=actor or app.settings.user,
    )
    out.print(
        f"step {step_id} of run {run_id} resolved as {outcome}; "
        f"continue with: runbook resume {run_id}"
    )


def _decide(
    app: AppContext, run_id: str, step_id: str, actor: str | None, approve: bool, reason: str | None
) -> None:
    services = _services(app)
    row = services.store.get_run(run_id)
    book = engine.stored_runbook(row)
    identity = app.settings.identity(actor)
    approvals.decide(
        services, book, run_id, step_id, approver=identity, approve=approve, reason=reason
    )
    got = services.store.get_approvals(run_id, step_id)
    yes = sum(1 for a in got if a["decision"] == "approve")
    quorum = book.step(step_id).action.quorum  # type: ignore[union-attr]
    verb = "approved" if approve else "denied"
    out.print(
        f"{verb} {escape(step_id)} of run {escape(run_id)} as {escape(identity.name)} "
        f"({yes}/{quorum} approvals)"
    )


@cli.command()
@click.argument("run_id")
@click.argument("step_id")
@click.option("--as", "actor", help="Approver identity (default: configured user).")
@click.option("--reason", help="Why (recorded in the audit).")
@pass_app
def approve(
    app: AppContext, run_id: str, step_id: str, actor: str | None, reason: str | None
) -> None:
    """Approve a waiting approval step (you must be in one of its groups).

    The person who started the run may not approve it unless the runbook's
    policy says self_approval: true. Shows nothing new: read the plan first
    with `runbook status RUN`.

    \b
    Example:
      runbook approve r-20261122-031502-9f3a1c approve --as alice
    """
    _decide(app, run_id, step_id, actor, True, reason)


@cli.command()
@click.argument("run_id")
@click.argument("step_id")
@click.option("--as", "actor", help="Approver identity (default: configured user).")
@click.option("--reason", required=True, help="Why it is denied (recorded in the audit).")
@pass_app
def deny(app: AppContext, run_id: str, step_id: str, actor: str | None, reason: str) -> None:
    """Deny a waiting approval step; its on_failure decides what follows.

    \b
    Example:
      runbook deny r-20261122-031502-9f3a1c approve --reason "not during the sale"
    """
    _decide(app, run_id, step_id, actor, False, reason)


@cli.command()
@click.argument("run_id")
@click.option(
    "--reason", default="killed from the command line", help="Why (recorded in the audit)."
)
@click.option("--as", "actor", help="Who kills it (default: configured user).")
@pass_app
def kill(app: AppContext, run_id: str, reason: str, actor: str | None) -> None:
    """Stop one run: nothing new starts and in-flight work is cancelled.

    \b
    Example:
      runbook kill r-20261122-031502-9f3a1c --reason "wrong host"
    """
    services = _services(app)
    done = engine.kill(services, run_id, actor=actor or app.settings.user, reason=reason)
    if done["status"] == "stopping":
        out.print(f"kill requested for run {run_id}; its executor stops it within seconds")
    else:
        out.print(f"run {run_id} {done['status']}: no executor was running it")


@cli.command()
@click.argument("run_id")
@json_option
@pass_app
def status(app: AppContext, run_id: str, as_json: bool) -> None:
    """Show a run: each step with status, hosts and duration; approvals and their plans.

    \b
    Example:
      runbook status r-20261122-031502-9f3a1c
    """
    services = _services(app)
    info = engine.run_status(services, run_id)
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
        return
    _print_status(info)


def _print_status(info: Mapping[str, Any]) -> None:
    """The run for a person: header, one row per step, approvals waiting, what was touched."""
    out.print(
        f"[bold]run {escape(info['id'])}[/] {escape(info['runbook'])}@{escape(info['version'])}"
        f"  status [bold]{escape(info['status'])}[/]  by {escape(str(info['actor']))} "
        f"({escape(str(info.get('trigger')))}){' [dim]dry run[/]' if info.get('dry_run') else ''}"
    )
    if info.get("summary") and info["summary"] != info["status"]:
        out.print(f"  {escape(info['summary'])}")
    if info.get("error"):
        out.print(f"  {escape(str(info['error']))}")
    if info.get("executing"):
        out.print(f"  executing in {escape(info['executing'])}")
    table = Table(show_edge=False)
    for column in ("step", "status", "attempts", "duration", "hosts", "detail"):
        table.add_column(column)
    for step_id, step in (info.get("state") or {}).get("steps", {}).items():
        started, finished = step.get("started_at"), step.get("finished_at")
        took = f"{finished - started:.2f}s" if started and finished else ""
        hosts = ", ".join(f"{h}:{v.get('rc')}" for h, v in (step.get("hosts") or {}).items())
        detail = step.get("error") or step.get("reason") or ""
        table.add_row(
            Text(step_id),
            Text(step.get("status", "")),
            str(step.get("attempts", 0)),
            took,
            Text(hosts),
            Text(str(detail)),
        )
    out.print(table)
    for approval in info.get("approvals", []):
        out.print(
            f"  {escape(approval['step_id'])}: {escape(approval['decision'])} by "
            f"{escape(approval['approver'])} "
            f"({escape(approval.get('reason') or 'no reason given')})"
        )
    for pending in info.get("pending_approvals") or []:
        _print_pending(info["id"], pending)
    touched = info.get("touched")
    if info["status"] in ("cancelled", "failed", "waiting") and touched:
        out.print("[bold]touched:[/]")
        for item in touched:
            out.print(f"  {escape(_touched_line(item))}")


def _print_pending(run_id: str, pending: Mapping[str, Any]) -> None:
    decided = ", ".join(
        f"{d['decision']} by {d['approver']}" for d in pending.get("decisions") or []
    )
    out.print(
        f"[magenta]⏸ {escape(pending['step'])}[/] waits for approval: "
        f"{escape(str(pending['message']))}"
    )
    expires = pending.get("expires_at")
    when = time.strftime(" until %H:%M:%S UTC", time.gmtime(expires)) if expires else ""
    out.print(
        f"    approvers {escape(', '.join(pending['approvers']))}, quorum {pending['quorum']}"
        f"{when}; so far: {escape(decided or 'none')}"
    )
    out.print("    it gates:")
    _print_plan_lines(out, pending.get("plan"), "      ")
    out.print(f"    [bold]runbook approve {escape(run_id)} {escape(pending['step'])} --as NAME[/]")


@cli.command()
@click.option("--limit", default=20, show_default=True)
@click.option("--status", "status_filter", help="Only runs with this status.")
@json_option
@pass_app
def runs(app: AppContext, limit: int, status_filter: str | None, as_json: bool) -> None:
    """List recent runs, newest first.

    \b
    Example:
      runbook runs --status waiting
    """
    services = _services(app)
    rows = services.store.list_runs(limit=limit, status=status_filter)
    if as_json:
        click.echo(
            json.dumps(
                [{k: v for k, v in r.items() if k not in ("state", "runbook_text")} for r in rows],
                indent=2,
                default=str,
            )
        )
        return
    table = Table(show_edge=False)
    table.add_column("run", no_wrap=True)
    for column in ("runbook", "status", "actor", "trigger"):
        table.add_column(column)
    table.add_column("started", no_wrap=True)
    for r in rows:
        table.add_row(
            Text(r["id"]),
            Text(f"{r['runbook']}@{r['version']}"),
            Text(r["status"] + (" (dry run)" if r.get("dry_run") else "")),
            Text(r.get("actor") or ""),
            Text(r.get("trigger") or ""),
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["created"])),
        )
    out.print(table)


@cli.group(name="killswitch")
def killswitch_group() -> None:
    """Stop all automation at once (or one runbook), across processes.

    \b
    Examples:
      runbook killswitch engage --reason "incident commander says stop"
      runbook killswitch engage --runbook disk-pressure --reason "bad cleanup"
      runbook killswitch release
    """


@killswitch_group.command(name="engage")
@click.option("--runbook", help="Only this runbook (default: every runbook).")
@click.option("--reason", required=True, help="Why (recorded, shown to everyone refused).")
@click.option("--as", "actor", help="Who engages it (default: configured user).")
@pass_app
def ks_engage(app: AppContext, runbook: str | None, reason: str, actor: str | None) -> None:
    """Refuse new runs and stop running ones before their next step."""
    services = _services(app)
    killswitch.engage(services, reason=reason, actor=actor or app.settings.user, runbook=runbook)
    out.print(f"kill-switch engaged for {escape(runbook or 'every runbook')}: {escape(reason)}")


@killswitch_group.command(name="release")
@click.option("--runbook", help="Only this runbook's switch (default: the global one).")
@click.option("--as", "actor", help="Who releases it (default: configured user).")
@pass_app
def ks_release(app: AppContext, runbook: str | None, actor: str | None) -> None:
    """Allow automation again."""
    services = _services(app)
    killswitch.release(services, actor=actor or app.settings.user, runbook=runbook)
    out.print(f"kill-switch released for {escape(runbook or 'every runbook')}")


@killswitch_group.command(name="status")
@json_option
@pass_app
def ks_status(app: AppContext, as_json: bool) -> None:
    """Show which kill-switches are engaged (exit 1 if any is)."""
    services = _services(app)
    engaged = [k for k in services.store.killswitches() if k.get("engaged")]
    if as_json:
        click.echo(json.dumps({"engaged": engaged}, indent=2, default=str))
    elif not engaged:
        out.print("kill-switch released: automation allowed")
    else:
        for k in engaged:
            scope = "every runbook" if k["scope"] == "*" else k["scope"]
            out.print(
                f"[red]engaged[/] for {escape(scope)} by {escape(str(k.get('actor')))}: "
                f"{escape(str(k.get('reason')))}"
            )
    raise SystemExit(1 if engaged else 0)
