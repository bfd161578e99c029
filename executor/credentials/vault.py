"""Vault (hvac) as the ``CredentialProvider`` of one run: SSH certificates and KV secrets.

Why a provider per run: everything it obtains must die with the run. It logs
in (AppRole, or a given token), then creates a *child token* whose TTL is the
run's timeout, which cannot be renewed and which carries only the run's
policies, and does everything else with that token. If the executor dies
mid-run the child token, and every lease under it, expires on its own; when
the run ends ``revoke_all`` revokes the leases, the child token and (if this
provider made it) the login token.

SSH keys are generated in memory for each credential and signed with the
run id as the certificate's key id, so every sshd log line of the run names
it. Signed certificates have no lease: their TTL, never longer than the run's
remaining time, is their lifetime.

Nothing secret is logged or put in a message: tokens and the secret id are
scrubbed from Vault's error text, and the issued credential's ``repr`` shows
only its audit-safe ``public`` part.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import hvac
import requests
from hvac import exceptions as vault_exc

from executor.credentials.settings import VaultSettings
from executor.credentials.sshkeys import KeyPair, SshCertificate
from executor.credentials.vault_errors import credential_error, is_gone, vault_call
from executor.errors import CredentialError
from executor.model import CredentialSpec
from executor.ports import IssuedCredential

log = logging.getLogger(__name__)

Record = dict[str, Any]


@dataclass(frozen=True, repr=False)
class VaultCredential(IssuedCredential):
    """An ``IssuedCredential`` whose ``repr``/``str`` show only the audit-safe part.

    (``IssuedCredential``'s generated ``repr`` would print ``material`` and
    ``secret_values``; a credential in a traceback or a log must not.)
    """

    def __repr__(self) -> str:
        return (
            f"VaultCredential(name={self.name!r}, kind={self.kind!r}, "
            f"public={dict(self.public)!r}, expires_at={self.expires_at!r})"
        )

    __str__ = __repr__


class VaultCredentialProvider(AbstractContextManager["VaultCredentialProvider"]):
    """Issues and revokes the Vault credentials of ONE run (thread-safe).

    ``ttl`` is the run's timeout in seconds: the child token's TTL. Login and
    the child token happen at the first ``issue`` (a run that never needs a
    credential never talks to Vault). ``session`` lets tests put a stub
    transport under hvac; ``clock`` is wall time in epoch seconds.
    """

    def __init__(
        self,
        settings: VaultSettings,
        run_id: str,
        ttl: float,
        *,
        policies: Sequence[str] | None = None,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.run_id = run_id
        self.ttl = ttl
        self.policies = tuple(policies if policies is not None else settings.run_policies)
        self._session = session
        self._clock = clock
        self._lock = threading.RLock()
        self._login: hvac.Client | None = None
        self._owns_login = False
        self._child: hvac.Client | None = None
        self._token_info: Record = {}
        self._leases: list[tuple[str, str]] = []
        self._certificates: list[tuple[str, SshCertificate]] = []
        self._scrub: list[str] = list(settings.secrets)
        self._closed = False

    @classmethod
    def factory(
        cls, settings: VaultSettings, **options: Any
    ) -> Callable[[str, float], VaultCredentialProvider]:
        """``(run_id, ttl) -> provider``: what ``Services.credentials`` expects."""

        def make(run_id: str, ttl: float) -> VaultCredentialProvider:
            return cls(settings, run_id, ttl, **options)

        return make

    # ------------------------------------------------------------------ Vault plumbing

    def _client(self, token: str = "") -> hvac.Client:
        """A client bound to ``token`` only ("" never falls back to VAULT_TOKEN or
        ~/.vault-token, as hvac does for None: only what the settings say is sent)."""
        return hvac.Client(
            url=self.settings.addr,
            token=token,
            verify=self.settings.verify,
            timeout=self.settings.timeout,
            namespace=self.settings.namespace,
            session=self._session,
        )

    def _call(self, doing: str, hint: str | None = None) -> AbstractContextManager[None]:
        return vault_call(doing, self.settings.addr, self._scrub, hint)

    def _log_in(self) -> hvac.Client:
        settings = self.settings
        if settings.uses_approle:
            client = self._client()
            with self._call(
                f"logging in with AppRole (mount '{settings.approle_mount}')",
                hint="check VAULT_ROLE_ID and VAULT_SECRET_ID: the secret id may be wrong, "
                "expired, used up or bound to other addresses",
            ):
                client.auth.approle.login(
                    role_id=settings.role_id,
                    secret_id=settings.secret_id,
                    mount_point=settings.approle_mount,
                )
            self._scrub.append(client.token)
            self._owns_login = True
            return client
        return self._client(settings.token or "")

    def _run_client(self) -> hvac.Client:
        """The child token's client, logging in and creating it on first use."""
        if self._closed:
            raise CredentialError(
                f"the Vault credentials of run {self.run_id} were already revoked",
                hint="this is a bug in the caller: a provider serves one run and ends with it",
            )
        if self._child is None:
            self._login = self._login or self._log_in()
            self._child = self._create_child(self._login)
        return self._child

    def _create_child(self, login: hvac.Client) -> hvac.Client:
        """The run's own token: TTL = the run's timeout, not renewable, only the run policies."""
        seconds = max(1, math.ceil(self.ttl))
        doing, hint = self._child_texts()
        with self._call(doing, hint):
            response = login.auth.token.create(
                role_name=self.settings.token_role,
                policies=list(self.policies),
                ttl=f"{seconds}s",
                explicit_max_ttl=f"{seconds}s",
                renewable=False,
                display_name=f"run-{self.run_id}",
                meta={"run_id": self.run_id},
            )
        auth = response["auth"]
        self._scrub.append(auth["client_token"])
        child = self._client(auth["client_token"])
        self._token_info = {
            "accessor": auth.get("accessor", ""),
            "policies": list(auth.get("policies") or ()),
            "ttl": auth.get("lease_duration"),
            "renewable": bool(auth.get("renewable")),
        }
        self._check_child(child, seconds)
        return child

    def _child_texts(self) -> tuple[str, str]:
        """What creating the child token is called in messages, and what to check if refused."""
        role, policies = self.settings.token_role, ", ".join(self.policies)
        if role:
            doing = f"creating the run's child token (token role '{role}', policies {policies})"
            hint = (
                f"the executor's own policy must allow auth/token/create/{role} and the token "
                f"role must allow the policies {policies}"
            )
        else:
            doing = f"creating the run's child token (policies {policies})"
            hint = "the executor's own policy must allow auth/token/create"
        if not self._owns_login:
            hint += " (and VAULT_TOKEN must be valid and unexpired)"
        return doing, hint

    def _check_child(self, child: hvac.Client, seconds: int) -> None:
        """Refuse (and revoke) a child token wider than asked; warn if Vault shortened it."""
        info = self._token_info
        extra = sorted(set(info["policies"]) - set(self.policies) - {"default"})
        if extra or info["renewable"]:
            self._revoke_token(child, "run_token")
            what = f"extra policies {', '.join(extra)}" if extra else "a renewable token"
            raise CredentialError(
                f"Vault at {self.settings.addr} gave run {self.run_id} {what} "
                f"instead of a non-renewable token with only {', '.join(self.policies)}; "
                "it was revoked",
                hint=f"check the token role '{self.settings.token_role}' "
                "(allowed_policies, renewable)",
            )
        if (info["ttl"] or 0) < seconds:
            log.warning(
                "run %s: Vault capped the run's token at %ss (asked %ss): credentials may be "
                "refused before the run's timeout; raise the token role's max TTL",
                self.run_id,
                info["ttl"],
                seconds,
            )
        log.info(
            "run %s: Vault child token (policies %s, ttl %ss)",
            self.run_id,
            ",".join(info["policies"]),
            info["ttl"],
        )

    @property
    def token_info(self) -> Mapping[str, Any]:
        """The child token as the audit may record it: accessor, policies, ttl (no token)."""
        return dict(self._token_info)

    # ------------------------------------------------------------------ issuing

    def issue(self, spec: CredentialSpec, *, run_id: str, ttl: float) -> IssuedCredential:
        """Issue ``spec`` for the run; ``ttl`` is the run's remaining time in seconds."""
        if run_id != self.run_id:
            raise CredentialError(
                f"the Vault provider of run {self.run_id} was asked for a credential of run "
                f"{run_id}",
                hint="this is a bug in the caller: create one provider per run",
            )
        if spec.kind == "vault_ssh":
            return self._issue_ssh(spec, ttl)
        if spec.kind == "vault_kv":
            return self._issue_kv(spec)
        raise CredentialError(
            f"credential {spec.name!r} has kind {spec.kind!r}, which Vault does not issue",
            hint="use vault_ssh or vault_kv",
        )

    def _issue_ssh(self, spec: CredentialSpec, ttl: float) -> IssuedCredential:
        role = spec.role or ""
        if not role or not spec.principals:
            raise CredentialError(
                f"credential {spec.name!r} needs a Vault SSH role and at least one principal",
                hint="write e.g. vault_ssh: {role: responder, principals: [ops]}",
            )
        seconds = int(min(spec.ttl or ttl, ttl))
        if seconds < 1:
            raise CredentialError(
                f"credential {spec.name!r}: run {self.run_id} has no time left for a certificate",
                hint="raise the runbook's policy.timeout",
            )
        keys = KeyPair()  # outside the lock: key generation needs no Vault
        doing = f"signing with role '{role}' (mount '{self.settings.ssh_mount}')"
        with self._lock:
            client = self._run_client()
            with self._call(doing):
                response = client.secrets.ssh.sign_ssh_key(
                    name=role,
                    public_key=keys.public_openssh,
                    valid_principals=",".join(spec.principals),
                    ttl=f"{seconds}s",
                    cert_type="user",
                    key_id=self.run_id,
                    mount_point=self.settings.ssh_mount,
                )
            certificate = SshCertificate(keys, response["data"]["signed_key"])
            certificate.expected(spec.principals, self.run_id)
            lease_id = response.get("lease_id") or ""
            self._certificates.append((spec.name, certificate))
            if lease_id:
                self._leases.append((spec.name, lease_id))
        log.info(
            "run %s: SSH certificate serial %s for %s (role %s, principals %s, until %s)",
            self.run_id,
            certificate.serial,
            spec.name,
            role,
            ",".join(certificate.principals),
            certificate.valid_before_iso,
        )
        return VaultCredential(
            name=spec.name,
            kind="vault_ssh",
            public={
                "role": role,
                "principals": list(certificate.principals),
                "ttl": seconds,
                "serial": str(certificate.serial),
                "valid_before": certificate.valid_before_iso,
                "key_id": certificate.key_id,
                "lease_id": lease_id,
            },
            material=certificate,
            secret_values=(certificate.private_key_openssh(),),
            expires_at=float(certificate.valid_before),
        )

    def _issue_kv(self, spec: CredentialSpec) -> IssuedCredential:
        mount = self.settings.kv_mount
        path = kv_path(spec.path or "", mount)
        if not path:
            raise CredentialError(
                f"credential {spec.name!r} names no KV path",
                hint="write e.g. vault_kv: {path: runbooks/demo-app, key: api_key}",
            )
        where = f"{mount}/{path}"
        with self._lock:
            client = self._run_client()
            with self._call(f"reading secret '{where}' (KV v2)"):
                response = client.secrets.kv.v2.read_secret_version(
                    path=path, mount_point=mount, raise_on_deleted_version=True
                )
            lease_id = response.get("lease_id") or ""
            if lease_id:
                self._leases.append((spec.name, lease_id))
        data = response["data"]["data"] or {}
        version = (response["data"].get("metadata") or {}).get("version")
        if spec.key is not None and spec.key not in data:
            raise CredentialError(
                f"the secret '{where}' has no key {spec.key!r} (it has: "
                f"{', '.join(sorted(data)) or 'no keys'})",
                hint="fix 'key' in the runbook's vault_kv credential",
            )
        value = data[spec.key] if spec.key is not None else dict(data)
        duration = response.get("lease_duration") or 0
        log.info("run %s: read secret %s version %s for %s", self.run_id, where, version, spec.name)
        return VaultCredential(
            name=spec.name,
            kind="vault_kv",
            public={"path": where, "key": spec.key, "version": version, "lease_id": lease_id},
            material=value,
            secret_values=tuple(_strings(value)),
            expires_at=self._clock() + duration if lease_id and duration else None,
        )

    # ------------------------------------------------------------------ revoking

    def revoke_all(self) -> list[Record]:
        """Revoke the run's leases, its child token and our own login token.

        Returns one audit-safe record per thing handled, each with a
        ``result``: ``revoked``, ``already gone``, ``expires`` (certificates:
        they cannot be revoked and live until ``valid_before``) or ``failed``
        (with ``error``; it will still expire with the run's TTL). Never
        raises; calling it again returns ``[]``.
        """
        with self._lock:
            if self._closed:
                return []
            self._closed = True
            records: list[Record] = [
                {
                    "what": "ssh_certificate",
                    "credential": name,
                    "serial": str(cert.serial),
                    "valid_before": cert.valid_before_iso,
                    "result": "expires",
                }
                for name, cert in self._certificates
            ]
            revoker = self._login or self._child
            for name, lease_id in self._leases:
                records.append(self._revoke_lease(revoker, name, lease_id))
            if self._child is not None:
                records.append(self._revoke_token(self._child, "run_token"))
            if self._login is not None and self._owns_login:
                records.append(self._revoke_token(self._login, "login_token"))
            for client in (self._child, self._login):
                if client is not None and self._session is None:
                    client.adapter.close()  # our own connection pools; a given session is not
            self._leases.clear()
            self._certificates.clear()
            self._child = self._login = None
            return records

    def _revoke_lease(self, client: hvac.Client | None, name: str, lease_id: str) -> Record:
        record: Record = {"what": "lease", "credential": name, "lease_id": lease_id}
        if client is None:
            return {**record, "result": "failed", "error": "no Vault client to revoke with"}
        try:
            client.sys.revoke_lease(lease_id=lease_id)
        except (vault_exc.VaultError, requests.exceptions.RequestException) as exc:
            if is_gone(exc):
                return {**record, "result": "already gone"}
            error = credential_error(
                exc,
                doing=f"revoking lease {lease_id}",
                addr=self.settings.addr,
                secrets=self._scrub,
            )
            log.warning("run %s: %s", self.run_id, error.message)
            return {**record, "result": "failed", "error": error.message}
        return {**record, "result": "revoked"}

    def _revoke_token(self, client: hvac.Client, what: str) -> Record:
        record: Record = {"what": what}
        if what == "run_token" and self._token_info.get("accessor"):
            record["accessor"] = self._token_info["accessor"]
        try:
            client.auth.token.revoke_self()
        except (vault_exc.VaultError, requests.exceptions.RequestException) as exc:
            if is_gone(exc) or (isinstance(exc, vault_exc.Forbidden) and _token_dead(client)):
                return {**record, "result": "already gone"}
            error = credential_error(
                exc,
                doing=f"revoking the {what.replace('_', ' ')}",
                addr=self.settings.addr,
                secrets=self._scrub,
            )
            log.warning("run %s: %s", self.run_id, error.message)
            return {**record, "result": "failed", "error": error.message}
        return {**record, "result": "revoked"}

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.revoke_all()

    def __repr__(self) -> str:
        return (
            f"VaultCredentialProvider(addr={self.settings.addr!r}, run_id={self.run_id!r}, "
            f"policies={list(self.policies)}, closed={self._closed})"
        )


def _token_dead(client: hvac.Client) -> bool:
    """After a 403 on revoke-self: is the token simply gone (expired or revoked)?

    A token that can still look itself up is alive, so the 403 was a real
    refusal; one that cannot is gone.
    """
    try:
        client.auth.token.lookup_self()
    except vault_exc.Forbidden:
        return True
    except (vault_exc.VaultError, requests.exceptions.RequestException):
        return False
    return False


def kv_path(path: str, mount: str) -> str:
    """``runbooks/x`` from ``runbooks/x``, ``secret/runbooks/x`` or ``secret/data/runbooks/x``."""
    path = path.strip().strip("/")
    for prefix in (f"{mount}/data/", f"{mount}/"):
        if path.startswith(prefix):
            return path[len(prefix) :]
    return path


def _strings(value: Any) -> Iterator[str]:
    """Every non-empty string inside a secret's value: what the masker must hide."""
    if isinstance(value, str):
        if value:
            yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


__all__ = ["VaultCredential", "VaultCredentialProvider", "VaultSettings", "kv_path"]
