"""Bearer tokens to identities, and identities to what they may do.

A token is looked up by its sha256 (the config never holds it in clear). Its
identity's groups are the ones the shared settings give that name plus the
ones its token entry adds. A permission is a set of groups ("*" for any
valid token). No token or an unknown one is 401; a known identity without
the permission is 403, audited, so refused attempts leave a trace.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from executor.config import Identity
from executor.server.config import ServerConfig, token_digest


@dataclass(frozen=True)
class Principal:
    """Who is calling: the identity behind the bearer token."""

    name: str
    groups: frozenset[str]

    @property
    def identity(self) -> Identity:
        return Identity(name=self.name, groups=self.groups)


class Unauthenticated(Exception):
    """No usable bearer token: answered 401 with ``WWW-Authenticate: Bearer``."""


class Forbidden(Exception):
    """A valid token whose identity lacks the permission: answered 403."""

    def __init__(self, principal: Principal, permission: str, allowed: frozenset[str]) -> None:
        groups = ", ".join(sorted(allowed)) or "nobody (set permissions in the server config)"
        super().__init__(
            f"{principal.name} may not {permission}: it needs one of the groups {groups} "
            f"(its groups: {', '.join(sorted(principal.groups)) or 'none'})"
        )
        self.principal = principal
        self.permission = permission


class TokenBook:
    """The server's tokens and permissions."""

    def __init__(self, config: ServerConfig, identities: Mapping[str, Identity]) -> None:
        self._by_digest: dict[str, Principal] = {}
        for entry in config.tokens:
            known = identities.get(entry.identity)
            groups = (known.groups if known else frozenset()) | entry.groups
            self._by_digest[entry.digest] = Principal(entry.identity, frozenset(groups))
        self.permissions = dict(config.permissions)

    def __len__(self) -> int:
        return len(self._by_digest)

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal of an ``Authorization: Bearer ...`` header; Unauthenticated if none."""
        if not authorization:
            raise Unauthenticated("no bearer token: send 'Authorization: Bearer TOKEN'")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("the Authorization header must be 'Bearer TOKEN'")
        digest = token_digest(token)
        for known, principal in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                return principal
        raise Unauthenticated("the bearer token is not known to this server")

    def authorize(self, principal: Principal, permission: str) -> None:
        allowed = self.permissions.get(permission, frozenset())
        if "*" in allowed or principal.groups & allowed:
            return
        raise Forbidden(principal, permission, allowed)
