"""Every way a Vault call fails, turned into one ``CredentialError`` in one place.

hvac already maps HTTP statuses to exception classes (``VaultError.from_status``);
this module maps those classes, and the transport errors below them, to a
message for the person on call: what was being done, at which Vault, Vault's
own words, and what to do about it. Known secrets (tokens, the secret id) are
scrubbed from whatever Vault or the transport said, so a message can be logged
and audited as is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import requests
from hvac import exceptions as vault_exc

from executor.errors import CredentialError

# class -> (message template, hint); the first class the error is an instance of wins.
_BY_CLASS: tuple[tuple[type[vault_exc.VaultError], str, str], ...] = (
    (
        vault_exc.Forbidden,
        "Vault denied {doing} at {addr}: {why}",
        "the executor's Vault policy does not allow this (or its token expired): check the "
        "name in the runbook, then ask the Vault admins to grant it to the run's policy",
    ),
    (
        vault_exc.Unauthorized,
        "Vault refused the executor's credentials while {doing} at {addr}: {why}",
        "check VAULT_ROLE_ID/VAULT_SECRET_ID (or VAULT_TOKEN): they may be wrong or expired",
    ),
    (
        vault_exc.InvalidPath,
        "Vault found nothing for {doing} at {addr}: {why}",
        "check that the role, secret path and mount named in the runbook exist in Vault",
    ),
    (
        vault_exc.InvalidRequest,
        "Vault rejected {doing} at {addr}: {why}",
        "check the role or path name and its parameters (principals, TTL) against the Vault "
        "role's limits",
    ),
    (
        vault_exc.RateLimitExceeded,
        "Vault rate-limited {doing} at {addr}: {why}",
        "wait a moment and retry; if it persists, ask the Vault admins to raise the quota",
    ),
    (
        vault_exc.VaultDown,
        "Vault at {addr} is sealed or unavailable, so {doing} failed: {why}",
        "ask a Vault operator to unseal it (`vault operator unseal`) or to check its health",
    ),
    (
        vault_exc.VaultNotInitialized,
        "Vault at {addr} is not initialised, so {doing} failed: {why}",
        "ask a Vault operator to initialise it, or point VAULT_ADDR at the right server",
    ),
    (
        vault_exc.VaultError,
        "Vault failed {doing} at {addr}: {why}",
        "retry; if it persists, look at the Vault server's log",
    ),
)

_STATUS_WORDS = {
    vault_exc.InvalidPath: "no such path",
    vault_exc.VaultDown: "service unavailable",
    vault_exc.Forbidden: "permission denied",
}


def vault_words(exc: vault_exc.VaultError) -> str:
    """Vault's own error text on one line: ``1 error occurred: permission denied``."""
    errors = exc.errors if isinstance(exc.errors, list) else [exc.errors] if exc.errors else []
    parts = [_one_line(str(e)) for e in errors if e]
    if parts:
        return "; ".join(parts)
    for cls, words in _STATUS_WORDS.items():
        if isinstance(exc, cls):
            return words
    return f"{type(exc).__name__} without details"


def _one_line(text: str) -> str:
    text = re.sub(r"\n\s*\*\s*", " ", text)
    return " ".join(text.split())


def transport_words(exc: requests.exceptions.RequestException) -> str:
    """A short reason for a failed connection: ``connection refused``, ``timed out``."""
    text = str(exc)
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS handshake or certificate verification failed"
    if isinstance(exc, requests.exceptions.Timeout):
        return "timed out"
    errno = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if errno:
        return errno.group(1).strip().lower()
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "host name not found"
    return type(exc).__name__


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Replace every known secret in ``text`` by ``***`` (tokens, the secret id...)."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


_REQUEST_ERRORS = (
    vault_exc.Forbidden,
    vault_exc.Unauthorized,
    vault_exc.InvalidPath,
    vault_exc.InvalidRequest,
)


def credential_error(
    exc: BaseException,
    *,
    doing: str,
    addr: str,
    secrets: Iterable[str] = (),
    hint: str | None = None,
) -> CredentialError:
    """The ``CredentialError`` for ``exc`` raised while ``doing`` (e.g. "signing with role 'x'").

    ``hint`` replaces the generic advice for errors in the request itself
    (400, 401, 403, 404), where the caller knows better what to check.
    """
    secrets = tuple(secrets)
    if isinstance(exc, requests.exceptions.RequestException):
        reason = transport_words(exc)
        hint = (
            "set VAULT_CACERT to the CA that signed Vault's certificate"
            if isinstance(exc, requests.exceptions.SSLError)
            else "check VAULT_ADDR and that Vault is running and reachable from here"
        )
        message = f"Vault at {addr} is unreachable, so {doing} failed: {reason}"
        return CredentialError(scrub(message, secrets), hint=hint)
    if isinstance(exc, vault_exc.VaultError):
        for cls, template, default_hint in _BY_CLASS:
            if isinstance(exc, cls):
                message = template.format(doing=doing, addr=addr, why=vault_words(exc))
                if hint is None or not isinstance(exc, _REQUEST_ERRORS):
                    hint = default_hint
                return CredentialError(scrub(message, secrets), hint=hint)
    message = f"talking to Vault at {addr} failed while {doing}: {type(exc).__name__}"
    return CredentialError(scrub(message, secrets))


@contextmanager
def vault_call(
    doing: str, addr: str, secrets: Iterable[str] = (), hint: str | None = None
) -> Iterator[None]:
    """Run a Vault call; any hvac or transport error leaves as a ``CredentialError``.

    The original exception is dropped (``from None``): its traceback and
    attributes may carry request details, and the message already says all
    a person needs.
    """
    try:
        yield
    except (vault_exc.VaultError, requests.exceptions.RequestException) as exc:
        raise credential_error(exc, doing=doing, addr=addr, secrets=secrets, hint=hint) from None


def is_gone(exc: BaseException) -> bool:
    """Does this error say the lease or token no longer exists (expired, revoked)?"""
    if isinstance(exc, vault_exc.InvalidPath):
        return True
    if isinstance(exc, vault_exc.InvalidRequest | vault_exc.Forbidden):
        words = vault_words(exc).lower()
        return any(
            marker in words
            for marker in ("invalid lease", "lease not found", "invalid token", "bad token")
        )
    return False
