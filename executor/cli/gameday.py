"""``runbook gameday PLAN`` (a drill against the sandbox) and ``runbook report`` (run statistics).

The drill lives in ``executor.gameday``, which may not import the sandbox (a
sibling layer); this module hands it the sandbox as a ``World``.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.markup import escape

from executor.audit import iter_records
from executor.cli.app import AppContext, cli, json_option, pass_app
from executor.errors import RunbookError, UsageError
from executor.gameday.stats import OVERALL, Distribution, RunbookStats, run_stats
from executor.gameday.world import Alerting
from executor.model import parse_duration
from executor.store import SqliteStore

if TYPE_CHECKING:
    from executor.sandbox import SandboxInfo

stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


class SandboxWorld:
    """The sandbox as the drill sees it (``executor.gameday.world.World``)."""

    def __init__(self, info: SandboxInfo) -> None:
        self.info = info

    @classmethod
    def load(cls, state_dir: Path | None = None) -> SandboxWorld:
        from executor.sandbox import load_info

        return cls(load_info(state_dir))

    def host_names(self) -> Sequence[str]:
        return [h.name for h in self.info.hosts]

    def app_url(self, host: str) -> str:
        found = self.info.host(host)
        return f"http://{found.address}:{found.app_port}"

    def inject(self, host: str, fault: str) -> list[str]:
        from executor.sandbox import inject

        return inject(self.info, host, fault)

    def alerting(self) -> Alerting:
        from executor.sandbox.alerting import ensure

        started = ensure(self.info)
        return Alerting(
            prometheus_url=started.prometheus_url,
            alertmanager_url=started.alertmanager_url,
            serve_port=started.serve_port,
            alertmanager_token_file=started.alertmanager_token_file,
        )

    def server_env(self) -> Mapping[str, str]:
        env = dict(self.info.env())
        env.pop("VAULT_ADMIN_TOKEN", None)  # the executor logs in with its AppRole only
        return env


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM stops the drill like Ctrl-C does: through its cleanup, not around it."""

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _default_out(app: AppContext, name: str) -> Path:
    stamp = datetime.now(tz=UTC).strftime("%Y%m%d-%H%M%S")
    return app.settings.home / "gamedays" / f"{name}-{stamp}"


@cli.command()
@click.argument("plan_file", metavar="PLAN.yaml", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Report directory (default HOME/gamedays/NAME-TIMESTAMP).",
)
@click.option("--timeout", help="Hard time limit of the drill, e.g. 3m (default: the plan's).")
@click.option(
    "--sandbox-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="RUNBOOK_SANDBOX_DIR",
    help="The sandbox world (env RUNBOOK_SANDBOX_DIR).",
)
@json_option
@pass_app
def gameday(
    app: AppContext,
    plan_file: Path,
    out: Path | None,
    timeout: str | None,
    sandbox_dir: Path | None,
    as_json: bool,
) -> None:
    """Run a game day against the sandbox: break a host, let the pipeline repair it, report.

    The plan names the fault, how the runbook starts (the routed alert, or
    directly), who approves after what delay, and the checks that say the
    service is healthy again. The drill starts its own `runbook serve` (or
    reuses the one the plan names), waits for the steady state, injects the
    fault, follows the alert and the run, answers approvals, and verifies
    recovery, within a hard time limit. However it ends, the run is stopped,
    the host repaired and the server stopped. The report (report.md,
    report.html, report.json) gives the timeline and the time to detect, to
    first action and to mitigate, from the audit log's timestamps.

    \b
    Exit codes: 0 the drill passed, 1 it failed (see the report's verdict)
    or the plan is invalid, 2 usage error (no such plan, bad --timeout),
    5 audit or state not writable.

    \b
    Examples:
      runbook gameday gamedays/web2-demoapp-killed.yaml
      runbook gameday gamedays/web1-disk-full.yaml --timeout 4m --out /tmp/drill
    """
    # The drill needs httpx and Jinja2: loaded here, not for every `runbook` command.
    from executor.gameday import Drill, DrillSettings, load_plan, publish

    settings = app.settings
    plan = load_plan(plan_file, catalog=settings.catalog)
    if timeout is not None:
        try:
            plan = plan.with_timeout(parse_duration(timeout))
        except ValueError as exc:
            raise UsageError(f"--timeout: {exc}") from None
    world = SandboxWorld.load(sandbox_dir)
    target = out or _default_out(app, plan.name)
    console = stderr if as_json else stdout
    began = time.monotonic()

    def say(line: str) -> None:
        console.print(f"[dim]{time.monotonic() - began:6.1f}s[/dim]  {escape(line)}")

    drill = Drill(plan, world, DrillSettings(out=target, catalog=settings.catalog), say)
    try:
        with _sigterm_interrupts():
            outcome = drill.run()
    except KeyboardInterrupt:
        if drill.audit_log is not None and drill.audit_log.exists():
            with contextlib.suppress(RunbookError):  # interrupted before the drill began
                publish(drill.audit_log, target, drill.drill)  # what happened until then
                stderr.print(f"interrupted: cleaned up; report in {escape(str(target))}")
        raise
    published = publish(outcome.audit_log, target, outcome.drill)
    report = published.report
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _print_verdict(report.to_dict(), published.markdown, published.html)
    if not report.passed:
        raise click.exceptions.Exit(1)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"


def _print_verdict(data: Mapping[str, Any], markdown: Path, html: Path) -> None:
    timings = data["timings"]
    verdict = "[green]PASSED[/green]" if data["passed"] else "[red]FAILED[/red]"
    stdout.print(f"\ngame day {escape(data['drill'])}: {verdict}")
    for label, key in (
        ("detect", "detect"),
        ("first action", "first_action"),
        ("mitigate", "mitigate"),
    ):
        stdout.print(f"  time to {label:<13} {_seconds(timings.get(key))}")
    for reason in data["reasons"]:
        stdout.print(f"  [red]-[/red] {escape(reason)}")
    stdout.print(f"  report: {escape(str(markdown))}\n          {escape(str(html))}")


# ------------------------------------------------------------------------ report


def _distribution(d: Distribution) -> str:
    if d.count == 0:
        return "-"
    return f"median {d.median:.1f}s  p90 {d.p90:.1f}s  ({d.count} run{'s' * (d.count != 1)})"


def _block(item: RunbookStats) -> list[str]:
    """One runbook (or the overall line) as a few lines that fit any terminal."""
    by_status = ", ".join(f"{k} {v}" for k, v in item.by_status.items()) or "none"
    rate = "-" if item.success_rate is None else f"{item.success_rate * 100:.0f}%"
    name = f"[bold]{escape(item.runbook)}[/bold]"
    return [
        f"{name}: {item.runs} run(s) ({by_status}), {item.refused} refused, success {rate}",
        f"  time to first action  {_distribution(item.first_action)}",
        f"  approval wait         {_distribution(item.approval_wait)}",
        f"  time to mitigation    {_distribution(item.mitigation)}",
    ]


@cli.command()
@click.option("--runbook", help="Only this runbook (a name).")
@click.option("--since", help="Only runs requested within this window, e.g. 24h or 7d.")
@json_option
@pass_app
def report(app: AppContext, runbook: str | None, since: str | None, as_json: bool) -> None:
    """Runs by status, success rate and timings, per runbook and overall.

    Reads the state store (what each run is now) and the audit log (when
    things happened): time to first action (run requested -> first ssh,
    ansible, local or http step), approval wait (requested -> granted,
    denied or expired) and time to mitigation (requested -> succeeded), as
    median and p90. Dry runs are left out; runs refused by a guard are
    counted apart.

    \b
    Examples:
      runbook report
      runbook report --runbook disk-pressure --since 7d --json
    """
    settings = app.settings
    cutoff = None
    if since is not None:
        try:
            cutoff = time.time() - parse_duration(since)
        except ValueError as exc:
            raise UsageError(f"--since: {exc}") from None
    rows: list[dict[str, Any]] = []
    if settings.state_db.exists():
        with SqliteStore(settings.state_db) as store:
            rows = store.list_runs(limit=2**62)
    stats = run_stats(rows, iter_records(settings.audit_log), since=cutoff, runbook=runbook)
    if as_json:
        body = {
            "home": str(settings.home),
            "since": None if cutoff is None else datetime.fromtimestamp(cutoff, UTC).isoformat(),
            "runbooks": [s.as_dict() for s in stats if s.runbook != OVERALL],
            "overall": stats[-1].as_dict(),
        }
        click.echo(json.dumps(body, indent=2))
        return
    if stats[-1].runs == 0 and stats[-1].refused == 0:
        stdout.print(
            f"no runs recorded in {escape(str(settings.home))}"
            + (f" in the last {escape(since)}" if since else "")
        )
        return
    for item in stats:
        for line in _block(item):
            stdout.print(line)
