"""Where a sandbox world keeps its files, and the names it takes on the machine.

Everything a world writes lives under its state directory, so ``down`` can
remove it in one go. The only things outside are the unix users and one
sudoers file: those are named after the state directory, so two worlds (the
developer's and a test session's) can run side by side without touching each
other's users.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_STATE_DIR = REPO_ROOT / "sandbox" / ".state"
APP_SOURCE_DIR = REPO_ROOT / "sandbox" / "app"
SUDOERS_DIR = Path("/etc/sudoers.d")
ENV_VAR = "RUNBOOK_SANDBOX_DIR"


def resolve_state_dir(state_dir: Path | str | None = None) -> Path:
    """The explicit directory, else ``$RUNBOOK_SANDBOX_DIR``, else ``sandbox/.state``."""
    if state_dir is None:
        state_dir = os.environ.get(ENV_VAR) or DEFAULT_STATE_DIR
    return Path(state_dir).expanduser().absolute()


def world_tag(state_dir: Path) -> str:
    """Empty for the default world; a short stable hash of the path otherwise."""
    if state_dir == DEFAULT_STATE_DIR.absolute():
        return ""
    return hashlib.sha256(str(state_dir).encode()).hexdigest()[:6]


@dataclass(frozen=True)
class Layout:
    """Paths of one world. Pure: computing them touches nothing."""

    root: Path

    @classmethod
    def of(cls, state_dir: Path | str | None = None) -> Layout:
        return cls(resolve_state_dir(state_dir))

    @property
    def tag(self) -> str:
        return world_tag(self.root)

    @property
    def user_prefix(self) -> str:
        """``rb-`` for the default world (``rb-web1``), ``rb<tag>-`` for others."""
        return f"rb{self.tag}-" if self.tag else "rb-"

    @property
    def sudoers_file(self) -> Path:
        name = f"runbook-sandbox-{self.tag}" if self.tag else "runbook-sandbox"
        return SUDOERS_DIR / name

    @property
    def env_json(self) -> Path:
        return self.root / "env.json"

    @property
    def env_sh(self) -> Path:
        return self.root / "env.sh"

    @property
    def plan_json(self) -> Path:
        """Written before anything starts, so ``down`` can undo a half-built world."""
        return self.root / "plan.json"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def inventory(self) -> Path:
        return self.root / "inventory.yml"

    @property
    def ssh_config(self) -> Path:
        return self.root / "ssh_config"

    @property
    def operator_dir(self) -> Path:
        """The key ``sandbox ssh`` certifies for people, and its current certificate."""
        return self.root / "operator"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def vault_dir(self) -> Path:
        return self.root / "vault"

    @property
    def ca_public_key(self) -> Path:
        return self.vault_dir / "trusted-user-ca-keys.pub"

    def host_dir(self, host: str) -> Path:
        return self.root / "hosts" / host

    def host_etc(self, host: str) -> Path:
        """Root-owned: sshd config, host key, principals."""
        return self.host_dir(host) / "etc"

    def host_sbin(self, host: str) -> Path:
        """Root-owned: the only commands the host user may run with sudo."""
        return self.host_dir(host) / "sbin"

    def host_home(self, host: str) -> Path:
        """The host user's home: this host's own filesystem area."""
        return self.host_dir(host) / "home"
