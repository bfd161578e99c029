"""The click group, shared options and the settings every command reads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click

from executor.config import Settings, load_settings

EXIT_CODES = """\b
Exit codes:
  0  success (valid, run succeeded, chain intact)
  1  failure (invalid runbook, run failed, audit chain broken)
  2  usage error (bad argument, unknown runbook, run or step)
  3  refused by policy (concurrency, cooldown, max_hosts, approval not allowed)
  4  refused by the kill-switch
  5  audit or state store could not be written (fail-closed)
"""


@dataclass
class AppContext:
    """Lazily built settings, so ``--help`` never touches the disk."""

    home: Path | None
    catalog: Path | None
    config: Path | None
    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(
                config_file=self.config, home=self.home, catalog=self.catalog
            )
        return self._settings


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_CODES,
)
@click.option("--home", type=click.Path(path_type=Path), help="State directory (env RUNBOOK_HOME).")
@click.option(
    "--catalog",
    type=click.Path(path_type=Path),
    help="Runbook catalog directory (env RUNBOOK_CATALOG).",
)
@click.option(
    "--config",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Config file (env RUNBOOK_CONFIG).",
)
@click.version_option(package_name="runbook", prog_name="runbook")
@click.pass_context
def cli(ctx: click.Context, home: Path | None, catalog: Path | None, config: Path | None) -> None:
    """Run incident runbooks: validated, approved where required, audited and stoppable.

    \b
    Examples:
      runbook validate runbooks/
      runbook run disk-pressure --input host=web1
      runbook killswitch engage --reason "bad deploy in progress"
    """
    ctx.obj = AppContext(home=home, catalog=catalog, config=config)


pass_app = click.make_pass_decorator(AppContext)

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
