"""What a drill needs from the world it breaks: hosts, faults, alerting, an environment.

The sandbox (``executor.sandbox``) is a sibling layer of this package, so the
drill does not import it: the command line hands it an object with this
shape (``executor.cli.gameday.SandboxWorld``), and tests may hand it another
world that behaves the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Alerting:
    """Where Prometheus and Alertmanager answer, and where Alertmanager posts its webhook."""

    prometheus_url: str
    alertmanager_url: str
    serve_port: int
    alertmanager_token_file: Path


class World(Protocol):
    """A world with hosts that can be broken on purpose and repaired."""

    def host_names(self) -> Sequence[str]:
        """Every host a fault or a check may name."""
        ...

    def app_url(self, host: str) -> str:
        """Base URL of the host's demoapp, e.g. ``http://127.0.0.1:40123``."""
        ...

    def inject(self, host: str, fault: str) -> list[str]:
        """Apply a fault (``repair-all`` restores the host); one line saying what was done."""
        ...

    def alerting(self) -> Alerting:
        """Prometheus and Alertmanager of this world, started if they are not running."""
        ...

    def server_env(self) -> Mapping[str, str]:
        """Environment for a `runbook serve` acting on this world (Vault, inventory...)."""
        ...
