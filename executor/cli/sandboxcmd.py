"""`runbook sandbox up|down|status|fault`: the sandbox's own command line, under `runbook`.

The work is done by ``python -m executor.sandbox`` (which `sandbox/up` and
`sandbox/down` also call); this only forwards, so both spell the same thing.
"""

from __future__ import annotations

import click

from executor.cli.app import cli

PASS = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}


def _forward(*args: str) -> None:
    from executor.sandbox.__main__ import main

    raise SystemExit(main(list(args)))


@cli.group()
def sandbox() -> None:
    """A production-like world on 127.0.0.1: sshd hosts, OpenBao, Prometheus, Alertmanager.

    \b
    Exit codes of status: 0 up, 1 partial, 3 down.

    \b
    Examples:
      runbook sandbox up --hosts 5
      runbook sandbox fault web1 fill-disk
      runbook sandbox status --json
      runbook sandbox down
    """


@sandbox.command(context_settings=PASS)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def up(args: tuple[str, ...]) -> None:
    """Bring the world up (idempotent). Options: --hosts N, --no-alerting, --help."""
    _forward("up", *args)


@sandbox.command(context_settings=PASS)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def down(args: tuple[str, ...]) -> None:
    """Stop every process of the world by pid and remove its state."""
    _forward("down", *args)


@sandbox.command(context_settings=PASS)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def status(args: tuple[str, ...]) -> None:
    """What runs; exit 0 up, 1 partial, 3 down. Options: --json."""
    _forward("status", *args)


@sandbox.command(context_settings=PASS)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def fault(args: tuple[str, ...]) -> None:
    """Break a host on purpose, or repair it: HOST kill|fill-disk|corrupt-config|..."""
    _forward("fault", *args)
