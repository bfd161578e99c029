"""What the engine needs from the world, gathered in one object.

``executor.wiring`` fills it with real adapters (SQLite, the JSON Lines audit,
Fabric, ansible-runner, Vault); a rehearsal fills it with scripted ones. The
engine itself never names an adapter.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from executor.config import Identity
from executor.ports import ActionRunner, AuditSink, CancelToken, CredentialProvider, StateStore


class SystemClock:
    """The real clock: wall time for records, monotonic for durations."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float, cancel: CancelToken | None = None) -> bool:
        if cancel is not None:
            return cancel.wait(seconds)
        threading.Event().wait(seconds)
        return False


class Inventory(Protocol):
    """Resolves a target's host pattern (``web:&eu:!web3``) to host names."""

    def resolve(self, pattern: str) -> Sequence[str]: ...


class Clock(Protocol):
    def now(self) -> float: ...
    def monotonic(self) -> float: ...
    def sleep(self, seconds: float, cancel: CancelToken | None = None) -> bool: ...


ProgressCallback = Callable[[str, Mapping[str, Any]], None]


@dataclass
class Services:
    """The adapters for one executor process; shared by every run it executes."""

    store: StateStore
    audit: AuditSink
    runners: Mapping[str, ActionRunner]
    clock: Clock = field(default_factory=SystemClock)
    credentials: Callable[[str, float], CredentialProvider] | None = None
    """Factory: (run_id, ttl seconds) -> a provider whose credentials live only for that run."""
    inventory: Inventory | None = None
    identities: Mapping[str, Identity] = field(default_factory=dict)
    max_parallel_steps: int = 8
    poll_interval: float = 0.2
    """How often a running engine looks for approvals, kills and the kill-switch."""

    def identity(self, name: str) -> Identity:
        return self.identities.get(name, Identity(name=name))
