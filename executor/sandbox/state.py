"""What a running world tells its users: ``env.json`` for programs, ``env.sh`` for shells.

Both files hold the AppRole secret id and the admin token, so they are written
mode 0600 and the dataclasses keep secrets out of their ``repr`` (pytest prints
fixtures when a test fails).
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from executor.sandbox.errors import SandboxError
from executor.sandbox.layout import ENV_VAR, Layout

FORMAT_VERSION = 1


@dataclass(frozen=True)
class HostInfo:
    """One sandbox host: an sshd on 127.0.0.1:port that lets ``user`` in by certificate."""

    name: str
    port: int
    user: str
    groups: tuple[str, ...]
    app_port: int
    home: str
    principals: tuple[str, ...]
    address: str = "127.0.0.1"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HostInfo:
        data = dict(data)
        data["groups"] = tuple(data["groups"])
        data["principals"] = tuple(data["principals"])
        return cls(**data)


@dataclass(frozen=True)
class SandboxInfo:
    """Everything a test, the demo or the executor's wiring needs to reach the world."""

    state_dir: Path
    vault_addr: str
    role_id: str
    secret_id: str = field(repr=False)
    admin_token: str = field(repr=False)
    inventory: Path
    known_hosts: Path
    ssh_config: Path
    hosts: tuple[HostInfo, ...]
    ca_public_key: str
    sudoers_file: Path
    host_python: str

    def host(self, name: str) -> HostInfo:
        for h in self.hosts:
            if h.name == name:
                return h
        known = ", ".join(h.name for h in self.hosts)
        raise SandboxError(f"no sandbox host named {name!r}; the hosts are: {known}")

    def group(self, group: str) -> list[HostInfo]:
        return [h for h in self.hosts if group in h.groups]

    def env(self) -> dict[str, str]:
        """Environment variables for a child process (the executor, ansible, a demo)."""
        return {
            ENV_VAR: str(self.state_dir),
            "VAULT_ADDR": self.vault_addr,
            "BAO_ADDR": self.vault_addr,
            "VAULT_ROLE_ID": self.role_id,
            "VAULT_SECRET_ID": self.secret_id,
            "VAULT_ADMIN_TOKEN": self.admin_token,
            "RUNBOOK_INVENTORY": str(self.inventory),
            "RUNBOOK_KNOWN_HOSTS": str(self.known_hosts),
        }

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["version"] = FORMAT_VERSION
        for key in ("state_dir", "inventory", "known_hosts", "ssh_config", "sudoers_file"):
            data[key] = str(data[key])
        data["hosts"] = [asdict(h) for h in self.hosts]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SandboxInfo:
        data = dict(data)
        if data.pop("version", None) != FORMAT_VERSION:
            raise SandboxError(
                "the sandbox state was written by another version of the sandbox",
                hint="take it down with `sandbox/down` and bring it up again",
            )
        for key in ("state_dir", "inventory", "known_hosts", "ssh_config", "sudoers_file"):
            data[key] = Path(data[key])
        data["hosts"] = tuple(HostInfo.from_dict(h) for h in data["hosts"])
        return cls(**data)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def save_info(layout: Layout, info: SandboxInfo) -> None:
    _write_private(layout.env_json, json.dumps(info.to_dict(), indent=2) + "\n")
    lines = [
        "# Source this file to talk to the sandbox: . sandbox/.state/env.sh",
        "# VAULT_ADMIN_TOKEN is the OpenBao root token: for tests and setup only,",
        "# never give it to the executor (it logs in with the AppRole).",
    ]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in info.env().items()]
    _write_private(layout.env_sh, "\n".join(lines) + "\n")


def load_info(state_dir: Path | str | None = None) -> SandboxInfo:
    """The running world's ``env.json``; SandboxError if there is no world there."""
    layout = Layout.of(state_dir)
    try:
        data = json.loads(layout.env_json.read_text())
    except FileNotFoundError:
        raise SandboxError(
            f"no sandbox is up in {layout.root}",
            hint="bring one up with `sandbox/up` (or set RUNBOOK_SANDBOX_DIR to its directory)",
        ) from None
    return SandboxInfo.from_dict(data)


@dataclass(frozen=True)
class Plan:
    """What ``up`` is about to create, written first so ``down`` can undo any part of it."""

    hosts: tuple[HostInfo, ...]

    def save(self, layout: Layout) -> None:
        data = {"hosts": [asdict(h) for h in self.hosts]}
        layout.plan_json.write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, layout: Layout) -> Plan | None:
        try:
            data = json.loads(layout.plan_json.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return cls(tuple(HostInfo.from_dict(h) for h in data["hosts"]))
