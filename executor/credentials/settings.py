"""Where Vault is and how the executor proves who it is, read from the environment.

The variable names are Vault's own (``VAULT_ADDR``, ``VAULT_TOKEN``,
``VAULT_CACERT``, ``VAULT_NAMESPACE``) plus AppRole's ``VAULT_ROLE_ID`` and
``VAULT_SECRET_ID``, so an operator configures the executor as they would
configure the ``vault`` CLI. When both AppRole and a token are set, AppRole
wins: it is the executor's own identity, while a stray ``VAULT_TOKEN`` is
usually a person's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from executor.errors import CredentialError

DEFAULT_RUN_POLICIES = ("runbook-run",)
DEFAULT_TOKEN_ROLE = "runbook-run"
_MISSING = "set VAULT_ADDR and either VAULT_TOKEN or VAULT_ROLE_ID/VAULT_SECRET_ID"


@dataclass(frozen=True)
class VaultSettings:
    """How to reach Vault and log in; secrets stay out of ``repr``.

    ``token_role`` is the token role through which per-run child tokens are
    created (``auth/token/create/<role>``); ``None`` uses ``auth/token/create``.
    ``run_policies`` are the only policies a run's child token gets.
    """

    addr: str
    token: str | None = field(default=None, repr=False)
    role_id: str | None = field(default=None, repr=False)
    secret_id: str | None = field(default=None, repr=False)
    cacert: str | None = None
    namespace: str | None = None
    approle_mount: str = "approle"
    ssh_mount: str = "ssh"
    kv_mount: str = "secret"
    token_role: str | None = DEFAULT_TOKEN_ROLE
    run_policies: tuple[str, ...] = DEFAULT_RUN_POLICIES
    timeout: float = 10.0

    @property
    def uses_approle(self) -> bool:
        return bool(self.role_id and self.secret_id)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values no message may contain (see ``vault_errors.scrub``)."""
        return tuple(s for s in (self.token, self.secret_id) if s)

    @property
    def verify(self) -> bool | str:
        """What requests verifies TLS against: the given CA file, or the system's."""
        return self.cacert or True

    def with_overrides(self, **changes: Any) -> VaultSettings:
        return replace(self, **changes)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> VaultSettings:
        """Settings from ``env`` (default ``os.environ``); ``CredentialError`` if incomplete.

        Besides Vault's variables: ``RUNBOOK_VAULT_TOKEN_ROLE`` (empty for
        none) and ``RUNBOOK_VAULT_RUN_POLICIES`` (comma-separated).
        """
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        addr = get("VAULT_ADDR")
        token, role_id, secret_id = get("VAULT_TOKEN"), get("VAULT_ROLE_ID"), get("VAULT_SECRET_ID")
        if not addr:
            raise CredentialError(f"VAULT_ADDR is not set: {_MISSING}", hint=_MISSING)
        if not addr.startswith(("http://", "https://")):
            raise CredentialError(
                f"VAULT_ADDR={addr!r} is not an http:// or https:// URL",
                hint="write it as Vault expects, e.g. https://vault.example:8200",
            )
        if bool(role_id) != bool(secret_id):
            names = ("VAULT_ROLE_ID", "VAULT_SECRET_ID")
            present, absent = names if role_id else names[::-1]
            raise CredentialError(
                f"{present} is set but {absent} is not: AppRole login needs both", hint=_MISSING
            )
        if not token and not role_id:
            raise CredentialError(f"no Vault credentials for {addr}: {_MISSING}", hint=_MISSING)
        cacert = get("VAULT_CACERT")
        if cacert and not os.path.isfile(cacert):
            raise CredentialError(
                f"VAULT_CACERT={cacert} does not exist or is not a file",
                hint="point it at the PEM file of the CA that signed Vault's certificate",
            )
        role = env.get("RUNBOOK_VAULT_TOKEN_ROLE")
        policies = get("RUNBOOK_VAULT_RUN_POLICIES")
        return cls(
            addr=addr.rstrip("/"),
            token=token,
            role_id=role_id,
            secret_id=secret_id,
            cacert=cacert,
            namespace=get("VAULT_NAMESPACE"),
            token_role=DEFAULT_TOKEN_ROLE if role is None else (role.strip() or None),
            run_policies=(
                tuple(p.strip() for p in policies.split(",") if p.strip())
                if policies
                else DEFAULT_RUN_POLICIES
            ),
        )
