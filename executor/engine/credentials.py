"""The credentials of one run: issued when a step first needs them, revoked at its end.

An SSH certificate is issued for the step whose action names it; a KV secret
for the step whose templates read ``secrets.<name>``, before that step is
rendered. Every issued value joins the run's masker before anything can print
it, issuance and revocation are audited (lease, serial, TTL: never the secret),
and nothing outlives the run: ``release`` revokes everything when the run ends
or pauses, ``abandon`` does its best when the audit log itself is gone.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

from executor.engine.render import secrets_read
from executor.engine.services import Services
from executor.errors import RunbookError
from executor.masking import Masker
from executor.model import Runbook, Step
from executor.ports import CredentialProvider, IssuedCredential

Audit = Callable[..., None]

DEFAULT_LIFETIME = 3600.0
"""Seconds a run's credentials may live when its policy sets no timeout."""


class RunCredentials:
    """Issued credentials and KV secrets of one run; safe to use from worker threads."""

    def __init__(
        self,
        services: Services,
        runbook: Runbook,
        run_id: str,
        masker: Masker,
        audit: Audit,
        *,
        started_at: float,
    ) -> None:
        self.services = services
        self.runbook = runbook
        self.run_id = run_id
        self.masker = masker
        self.audit = audit
        self.started_at = started_at
        self.secrets: dict[str, Any] = {}
        """``secrets.<name>`` for expressions: values of the KV credentials issued so far."""
        self.issued: dict[str, IssuedCredential] = {}
        self.provider: CredentialProvider | None = None
        self.lock = threading.Lock()
        self.reads: dict[str, frozenset[str]] = {}

    @property
    def lifetime(self) -> float:
        return self.runbook.policy.timeout or DEFAULT_LIFETIME

    def for_action(self, step: Step, action: Any) -> IssuedCredential | None:
        """The credential a host action names (``credential:``), if any."""
        name = getattr(action, "credential", None)
        return self.issue(name, step.id) if name else None

    def fetch_secrets(self, step: Step) -> bool:
        """Issue the KV secrets ``step`` reads; True if any was fetched just now."""
        names = self.reads.get(step.id)
        if names is None:
            names = self.reads[step.id] = secrets_read(step)
        fetched = False
        for name in sorted(names):
            if name not in self.secrets and name in self.runbook.credentials:
                self.issue(name, step.id)
                fetched = True
        return fetched

    def issue(self, name: str, step_id: str) -> IssuedCredential:
        """Issue ``name`` once per run (again when due for renewal); audited."""
        with self.lock:
            cached = self.issued.get(name)
            renewal = getattr(getattr(cached, "material", None), "needs_renewal", None)
            if cached is not None and not (renewal and renewal(self.services.clock.now())):
                return cached
            provider = self._provider(name, step_id)
            remaining = self.lifetime - (self.services.clock.monotonic() - self.started_at)
            issued = provider.issue(
                self.runbook.credentials[name], run_id=self.run_id, ttl=max(remaining, 60.0)
            )
            for value in issued.secret_values:
                self.masker.add(value)
            self.issued[name] = issued
            if issued.kind == "vault_kv":
                self.secrets[name] = issued.material
            self.audit("credential.issued", step=step_id, credential=name, **dict(issued.public))
            return issued

    def _provider(self, name: str, step_id: str) -> CredentialProvider:
        if self.provider is None:
            if self.services.credentials is None:
                raise RunbookError(
                    f"step {step_id!r} needs credential {name!r} but no Vault is configured",
                    hint="set VAULT_ADDR and VAULT_ROLE_ID/VAULT_SECRET_ID (or VAULT_TOKEN)",
                )
            self.provider = self.services.credentials(self.run_id, self.lifetime)
        return self.provider

    def release(self) -> None:
        """Revoke everything issued for the run (it ended or pauses); audited."""
        if self.provider is None:
            return
        try:
            revoked = self.provider.revoke_all()
        except RunbookError as exc:
            self.audit("credential.revoke_failed", error=str(exc))
            return
        for record in revoked:
            failed = record.get("result") == "failed"
            self.audit(
                "credential.revoke_failed" if failed else "credential.revoked", **dict(record)
            )
        self._forget()

    def abandon(self) -> None:
        """Revoke without auditing (the audit log is unwritable); leases expire anyway."""
        if self.provider is not None:
            with contextlib.suppress(Exception):
                self.provider.revoke_all()
        self._forget()

    def _forget(self) -> None:
        self.provider = None
        self.issued.clear()
        self.secrets.clear()
