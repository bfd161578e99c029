"""The one place that names concrete adapters.

Everything else is written against ``executor.ports``; this module decides that
state is SQLite, audit is a JSON Lines file, commands run through the local,
SSH and Ansible runners and credentials come from Vault.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from executor.actions import default_runners
from executor.audit import JsonlAudit
from executor.config import Settings
from executor.engine.services import Services
from executor.errors import StoreError
from executor.store import SqliteStore


def ensure_home(home: Path) -> Path:
    """The state directory, created private (0700): it holds runs and the audit log."""
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise StoreError(
            f"cannot create the state directory {home}: {exc.strerror}",
            hint="set RUNBOOK_HOME or --home to a writable directory",
        ) from exc
    return home


def build_services(settings: Settings, *, env: Mapping[str, str] | None = None) -> Services:
    """Real adapters for one executor process.

    SSH, Ansible and Vault libraries are imported here, not at module level:
    they cost about a second, which `runbook validate` in a pre-commit hook
    and `runbook --help` should not pay.
    """
    from executor.actions.ansible import AnsibleRunner
    from executor.actions.inventory import AnsibleInventory
    from executor.actions.local import LocalRunner
    from executor.actions.process import GroupLimits
    from executor.actions.ssh import SshRunner
    from executor.credentials import VaultCredentialProvider, VaultSettings

    env = os.environ if env is None else env
    ensure_home(settings.home)
    store = SqliteStore(settings.state_db)
    audit = JsonlAudit(settings.audit_log)
    runners = dict(default_runners())
    runners["local"] = LocalRunner(limits=GroupLimits(grace=settings.kill_grace))
    credentials = None
    if env.get("VAULT_ADDR"):
        credentials = VaultCredentialProvider.factory(VaultSettings.from_env(env))
    inventory = AnsibleInventory(settings.inventory) if settings.inventory else None
    if inventory is not None and settings.known_hosts is not None:
        runners["ssh"] = SshRunner(
            inventory=inventory,
            known_hosts=settings.known_hosts,
            forks=settings.forks,
            kill_grace=settings.kill_grace,
        )
        runners["ansible"] = AnsibleRunner(
            inventory_path=settings.inventory,
            known_hosts=settings.known_hosts,
            playbook_dir=settings.catalog,
            forks=settings.forks,
            kill_grace=settings.kill_grace,
            inventory=inventory,
        )
    return Services(
        store=store,
        audit=audit,
        runners=runners,
        credentials=credentials,
        inventory=inventory,
        identities=settings.identities,
        max_parallel_steps=settings.max_parallel_steps,
    )
