"""Typed settings, layered: defaults < config file < environment < command-line flags.

One place decides where state, audit and the catalog live, who the user is and
which groups they belong to, so the CLI and the server cannot disagree.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from executor.errors import UsageError

ENV_PREFIX = "RUNBOOK_"


@dataclass(frozen=True)
class Identity:
    """A person or service: the groups decide what it may approve, run or kill."""

    name: str
    groups: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Settings:
    home: Path = Path(".runbook")
    catalog: Path = Path("runbooks")
    user: str = ""
    identities: Mapping[str, Identity] = field(default_factory=dict)
    inventory: Path | None = None
    known_hosts: Path | None = None
    forks: int = 10
    max_parallel_steps: int = 8
    kill_grace: float = 2.0
    config_file: Path | None = None

    @property
    def state_db(self) -> Path:
        return self.home / "state.db"

    @property
    def audit_log(self) -> Path:
        return self.home / "audit.jsonl"

    def identity(self, name: str | None = None) -> Identity:
        """The named identity (or the current user); unknown names have no groups."""
        who = name or self.user
        return self.identities.get(who, Identity(name=who))


_SIMPLE = {
    "home": Path,
    "catalog": Path,
    "user": str,
    "inventory": Path,
    "known_hosts": Path,
    "forks": int,
    "max_parallel_steps": int,
    "kill_grace": float,
}


def _coerce(key: str, value: Any, origin: str) -> Any:
    kind = _SIMPLE[key]
    try:
        return kind(value)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{origin}: {key} must be a {kind.__name__}, got {value!r}") from exc


def _identities(raw: Any, origin: str) -> dict[str, Identity]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise UsageError(f"{origin}: 'identities' must map a name to {{groups: [...]}}")
    out = {}
    for name, spec in raw.items():
        groups = (spec or {}).get("groups", []) if isinstance(spec, Mapping) else None
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise UsageError(f"{origin}: identities.{name}.groups must be a list of group names")
        out[str(name)] = Identity(name=str(name), groups=frozenset(groups))
    return out


def load_settings(
    *, config_file: Path | None = None, env: Mapping[str, str] | None = None, **flags: Any
) -> Settings:
    """Build settings from the layers; ``flags`` with a None value are ignored."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    path = config_file or (
        Path(env[ENV_PREFIX + "CONFIG"]) if env.get(ENV_PREFIX + "CONFIG") else None
    )
    home = Path(flags.get("home") or env.get(ENV_PREFIX + "HOME") or ".runbook")
    if path is None and (home / "config.yaml").exists():
        path = home / "config.yaml"
    if path is not None:
        values.update(_read_file(path))
        values["config_file"] = path
    for key in _SIMPLE:
        if env.get(ENV_PREFIX + key.upper()):
            values[key] = _coerce(key, env[ENV_PREFIX + key.upper()], f"${ENV_PREFIX}{key.upper()}")
    for key, value in flags.items():
        if value is not None:
            values[key] = _coerce(key, value, f"--{key.replace('_', '-')}")
    values.setdefault("user", env.get("USER") or _login_name())
    known = {f.name for f in fields(Settings)}
    return replace(Settings(), **{k: v for k, v in values.items() if k in known})


def _read_file(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, Mapping):
        raise UsageError(f"{path}: a config file is a mapping of settings")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "identities":
            out["identities"] = _identities(value, str(path))
        elif key in _SIMPLE:
            out[key] = _coerce(key, value, str(path))
        else:
            allowed = ", ".join(sorted([*_SIMPLE, "identities"]))
            raise UsageError(f"{path}: unknown setting {key!r} (known: {allowed})")
    if "home" in out and not out["home"].is_absolute():
        out["home"] = path.parent / out["home"]
    return out


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
