"""``runbook serve``: receive alerts, execute runs, answer the HTTP API until SIGTERM.

The CLI and the server are sibling layers that do not import each other, so
this command checks its options and then replaces the process with
``python -m executor.server`` (same pid: signals and exit codes go straight
to the server).
"""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path

import click

from executor.cli.app import AppContext, cli, pass_app


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def server_argv(app: AppContext, options: dict[str, object]) -> list[str]:
    """The command line of the server process for these options."""
    argv = [sys.executable, "-m", "executor.server"]
    shared = {"home": app.home, "catalog": app.catalog, "config": app.config}
    for name, value in {**shared, **options}.items():
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv


@cli.command()
@click.option("--host", help="Address to listen on (default 127.0.0.1, or listen.host).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default 8080, or listen.port).")
@click.option(
    "--server-config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="RUNBOOK_SERVER_CONFIG",
    help="Server config: tokens, permissions, limits (env RUNBOOK_SERVER_CONFIG).",
)
@click.option(
    "--routes",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Routes file (default: routes in the server config, else CATALOG/routes.yaml or .yml).",
)
@click.option("--workers", type=click.IntRange(1, 256), help="Runs executing at once.")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
@pass_app
def serve(
    app: AppContext,
    host: str | None,
    port: int | None,
    server_config: Path | None,
    routes: Path | None,
    workers: int | None,
    log_level: str,
) -> None:
    """Run the executor as a service: Alertmanager webhook, HTTP API, worker pool.

    Alerts posted to /v1/alerts/alertmanager are stored before the answer,
    routed (routes.yaml) and remediated within the guardrails: automation
    level, deduplication, cooldown, rate limits, host budget, kill-switch.
    Runs execute in a bounded pool through the same engine as `runbook run`;
    interrupted runs resume at start. SIGTERM stops taking work, lets
    executing runs finish for shutdown_grace, and exits; nothing is lost.
    The API is described at /openapi.json.

    \b
    Exit codes: 0 stopped cleanly, 2 usage error, 5 state or audit unusable.

    \b
    Examples:
      runbook serve --server-config serve.yaml
      runbook --catalog runbooks serve --port 9099 --routes runbooks/routes.yaml
    """
    if host is not None and not _loopback(host):
        click.echo(
            f"warning: listening on {host}: bearer tokens travel in clear; "
            "put TLS in front of this server",
            err=True,
        )
    argv = server_argv(
        app,
        {
            "host": host,
            "port": port,
            "server_config": server_config,
            "routes": routes,
            "workers": workers,
            "log_level": log_level,
        },
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)
