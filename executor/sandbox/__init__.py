"""The sandbox: a production-like world on 127.0.0.1, up in seconds (DESIGN.md section 7).

Real sshd hosts that trust only an OpenBao SSH user CA, OpenBao configured
through hvac (SSH CA, AppRole, policies, KV secrets), and breakable services
on each host. ``up`` builds it in a state directory, ``down`` stops every
process by pid and removes it, ``status`` reports what runs.

    info = up(hosts=5)          # or load_info() for a world that is already up
    cert = sign_certificate(info, public_key, ["ops"], "15m", key_id="run-42")
    down()

Names are loaded on first use: ``sandbox/status`` and ``sandbox/faults`` then
start without importing hvac and httpx, which cost about a second on a busy
machine.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from executor.sandbox.access import sign_certificate
    from executor.sandbox.errors import SandboxError
    from executor.sandbox.faults import FAULTS, inject
    from executor.sandbox.lifecycle import down, status
    from executor.sandbox.state import HostInfo, SandboxInfo, load_info
    from executor.sandbox.world import up

_EXPORTS = {
    "FAULTS": "executor.sandbox.faults",
    "HostInfo": "executor.sandbox.state",
    "SandboxError": "executor.sandbox.errors",
    "SandboxInfo": "executor.sandbox.state",
    "down": "executor.sandbox.lifecycle",
    "inject": "executor.sandbox.faults",
    "load_info": "executor.sandbox.state",
    "sign_certificate": "executor.sandbox.access",
    "status": "executor.sandbox.lifecycle",
    "up": "executor.sandbox.world",
}

__all__ = [
    "FAULTS",
    "HostInfo",
    "SandboxError",
    "SandboxInfo",
    "down",
    "inject",
    "load_info",
    "sign_certificate",
    "status",
    "up",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
