"""The ``runbook`` command: a thin face over the library.

Commands parse arguments, call one library function and print. Errors from
the library arrive as ``RunbookError`` and leave with its exit code; nothing
below this package calls ``sys.exit``.
"""

from __future__ import annotations

import sys

import click

from executor.cli import (  # noqa: F401  (register commands)
    auditcmd,
    formats,
    gameday,
    runs,
    sandboxcmd,
    serve,
    testcmd,
)
from executor.cli.app import cli
from executor.errors import RunbookError


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the click group and map errors to exit codes."""
    try:
        code = cli.main(args=argv, prog_name="runbook", standalone_mode=False)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2 if isinstance(exc, click.UsageError) else exc.exit_code)
    except RunbookError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
