"""The server's own settings: where it listens, its limits, its tokens and who may do what.

Kept in a file of its own (``runbook serve --server-config serve.yaml``),
beside the settings every command shares (home, catalog, identities), because
it holds bearer tokens: those are given as a file, an environment variable or
a sha256, never in clear in the config.

    listen: {host: 127.0.0.1, port: 8080}
    routes: routes.yaml              # relative to this file; default <catalog>/routes.y(a)ml
    workers: 4                       # runs executing at once
    max_queue: 10000                 # alerts accepted but not decided; past it: 503
    max_body: 1MiB
    shutdown_grace: 30s
    tokens:
      - {identity: alertmanager, groups: [alertmanager], token_file: alertmanager.token}
      - {identity: alice, token_sha256: 9f86d08...}
      - {identity: ci, token_env: RUNBOOK_CI_TOKEN, groups: [operators]}
    permissions:                     # groups allowed each kind of call; "*" = any token
      read: ["*"]
      approve: ["*"]                 # and the step's own approver groups decide
      alerts: [alertmanager]
      run: [operators]
      kill: [operators]
      killswitch: [operators, incident-commanders]

Approving a step needs ``approve`` here and, above all, membership of one of
the groups the runbook's approval step names: the engine checks those.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from executor.errors import UsageError
from executor.model import parse_duration

PERMISSIONS = ("read", "alerts", "approve", "run", "kill", "killswitch")
DEFAULT_PERMISSIONS: Mapping[str, frozenset[str]] = {
    "read": frozenset({"*"}),
    "approve": frozenset({"*"}),
    "alerts": frozenset({"alertmanager"}),
    "run": frozenset(),
    "kill": frozenset(),
    "killswitch": frozenset(),
}
MIN_TOKEN_LENGTH = 16
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?\s*$")
_UNITS = {None: 1, "B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
_UNITS.update({"KB": 1000, "MB": 1000**2, "GB": 1000**3})
_KEYS = frozenset(
    {
        "listen", "routes", "workers", "max_queue", "max_body", "batch", "shutdown_grace",
        "poll_interval", "tokens", "permissions", "max_pending_runs",
    }
)  # fmt: skip


@dataclass(frozen=True)
class TokenEntry:
    """A bearer token (kept only as its sha256) and the identity it stands for."""

    identity: str
    digest: str
    groups: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    routes: Path | None = None
    workers: int = 4
    max_queue: int = 10_000
    max_pending_runs: int = 64
    max_body: int = 1024 * 1024
    batch: int = 500
    shutdown_grace: float = 30.0
    poll_interval: float = 1.0
    tokens: tuple[TokenEntry, ...] = ()
    permissions: Mapping[str, frozenset[str]] = field(
        default_factory=lambda: dict(DEFAULT_PERMISSIONS)
    )
    source: Path | None = None


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _size(value: Any, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    found = _SIZE.match(str(value))
    if not found or int(found[1]) <= 0:
        raise UsageError(f"{where}: max_body must be a size such as 1MiB or 65536, not {value!r}")
    return int(found[1]) * _UNITS[found[2]]


def _positive_int(raw: Mapping[str, Any], key: str, default: int, where: str) -> int:
    value = raw.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UsageError(f"{where}: {key} must be a whole number of at least 1, not {value!r}")
    return value


def _duration(raw: Mapping[str, Any], key: str, default: float, where: str) -> float:
    if key not in raw:
        return default
    try:
        return parse_duration(raw[key])
    except ValueError as exc:
        raise UsageError(f"{where}: {key}: {exc}") from None


def _secret(entry: Mapping[str, Any], base: Path, where: str, env: Mapping[str, str]) -> str:
    """The sha256 of the token an entry names (file, env or digest)."""
    given = [k for k in ("token_file", "token_env", "token_sha256") if k in entry]
    if "token" in entry:
        raise UsageError(
            f"{where}: a token is never written in clear in the config",
            hint="use token_file: PATH (mode 0600), token_env: VAR or token_sha256: HEX",
        )
    if len(given) != 1:
        raise UsageError(f"{where}: give exactly one of token_file, token_env, token_sha256")
    kind = given[0]
    if kind == "token_sha256":
        digest = str(entry[kind]).lower()
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise UsageError(
                f"{where}: token_sha256 must be 64 hex digits (sha256sum of the token)"
            )
        return digest
    if kind == "token_env":
        token = env.get(str(entry[kind]), "")
        if not token:
            raise UsageError(f"{where}: the environment variable {entry[kind]} is not set")
    else:
        path = Path(str(entry[kind]))
        path = path if path.is_absolute() else base / path
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UsageError(f"{where}: cannot read token file {path}: {exc.strerror}") from None
    if len(token) < MIN_TOKEN_LENGTH:
        raise UsageError(
            f"{where}: the token is shorter than {MIN_TOKEN_LENGTH} characters",
            hint="generate one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'",
        )
    return token_digest(token)


def _tokens(raw: Any, base: Path, where: str, env: Mapping[str, str]) -> tuple[TokenEntry, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise UsageError(f"{where}: tokens is a list of {{identity, token_file|token_env|...}}")
    entries, seen = [], set()
    for index, entry in enumerate(raw):
        at = f"{where}: tokens[{index}]"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("identity"), str):
            raise UsageError(f"{at}: each token needs an identity name")
        unknown = set(entry) - {
            "identity",
            "groups",
            "token_file",
            "token_env",
            "token_sha256",
            "token",
        }
        if unknown:
            raise UsageError(f"{at}: unknown key(s) {', '.join(sorted(unknown))}")
        groups = entry.get("groups", [])
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise UsageError(f"{at}: groups must be a list of group names")
        digest = _secret(entry, base, at, env)
        if digest in seen:
            raise UsageError(f"{at}: the same token is given twice; each identity needs its own")
        seen.add(digest)
        entries.append(TokenEntry(entry["identity"], digest, frozenset(groups)))
    return tuple(entries)


def _permissions(raw: Any, where: str) -> dict[str, frozenset[str]]:
    out = dict(DEFAULT_PERMISSIONS)
    if raw is None:
        return out
    if not isinstance(raw, Mapping):
        raise UsageError(f"{where}: permissions maps {', '.join(PERMISSIONS)} to lists of groups")
    for key, groups in raw.items():
        if key not in PERMISSIONS:
            raise UsageError(
                f"{where}: unknown permission {key!r} (known: {', '.join(PERMISSIONS)})"
            )
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise UsageError(f"{where}: permissions.{key} must be a list of group names")
        out[key] = frozenset(groups)
    return out


def load_server_config(
    path: Path | None, *, env: Mapping[str, str] | None = None, **flags: Any
) -> ServerConfig:
    """Read the server config (or the defaults); ``flags`` that are not None win."""
    env = os.environ if env is None else env
    raw: Mapping[str, Any] = {}
    base = Path.cwd()
    where = "server config"
    if path is not None:
        where = str(path)
        base = path.parent
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise UsageError(f"cannot read the server config {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise UsageError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(raw, Mapping):
            raise UsageError(f"{path}: the server config is a mapping of settings")
        unknown = sorted(set(raw) - _KEYS)
        if unknown:
            raise UsageError(
                f"{path}: unknown setting(s) {', '.join(unknown)} "
                f"(known: {', '.join(sorted(_KEYS))})"
            )
    listen = raw.get("listen") or {}
    if not isinstance(listen, Mapping):
        raise UsageError(f"{where}: listen is {{host: 127.0.0.1, port: 8080}}")
    routes = raw.get("routes")
    port = listen.get("port", 8080)
    if not isinstance(port, int) or isinstance(port, bool):
        raise UsageError(f"{where}: listen.port must be a number, not {port!r}")
    config = ServerConfig(
        host=str(listen.get("host", "127.0.0.1")),
        port=port,
        routes=(base / routes) if isinstance(routes, str) else None,
        workers=_positive_int(raw, "workers", 4, where),
        max_queue=_positive_int(raw, "max_queue", 10_000, where),
        max_pending_runs=_positive_int(raw, "max_pending_runs", 64, where),
        max_body=_size(raw.get("max_body", 1024 * 1024), where),
        batch=_positive_int(raw, "batch", 500, where),
        shutdown_grace=_duration(raw, "shutdown_grace", 30.0, where),
        poll_interval=_duration(raw, "poll_interval", 1.0, where),
        tokens=_tokens(raw.get("tokens"), base, where, env),
        permissions=_permissions(raw.get("permissions"), where),
        source=path,
    )
    overrides = {k: v for k, v in flags.items() if v is not None}
    if "routes" in overrides:
        overrides["routes"] = Path(overrides["routes"])
    if overrides:
        from dataclasses import replace

        config = replace(config, **overrides)
    if not 0 < config.port < 65536:
        raise UsageError(f"{where}: port must be 1..65535, not {config.port}")
    return config
