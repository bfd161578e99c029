"""The kill-switch and ``runbook kill``: stop automation at once, across processes.

Both live in the shared store, so a CLI in another terminal (or the HTTP API)
engages them and every running engine sees it at its next poll, cancels
in-flight work and starts nothing more. Everything is audited.
"""

from __future__ import annotations

from typing import Any

from executor.engine.services import Services
from executor.errors import KillSwitchEngaged, UsageError

GLOBAL = "*"


def engage(
    services: Services, *, reason: str, actor: str, runbook: str | None = None
) -> dict[str, Any]:
    """Engage globally, or for one runbook name; the reason is mandatory and audited."""
    if not reason.strip():
        raise UsageError("say why the kill-switch is engaged: --reason TEXT")
    scope = runbook or GLOBAL
    services.audit.append(
        "killswitch.engaged", actor=actor, data={"scope": scope, "reason": reason}
    )
    services.store.engage_killswitch(scope, reason=reason, actor=actor, at=services.clock.now())
    return {"scope": scope, "reason": reason, "actor": actor}


def release(services: Services, *, actor: str, runbook: str | None = None) -> dict[str, Any]:
    scope = runbook or GLOBAL
    engaged = [
        k for k in services.store.killswitches() if k.get("scope") == scope and k.get("engaged")
    ]
    if not engaged:
        raise UsageError(
            f"the kill-switch for {'every runbook' if scope == GLOBAL else scope} is not engaged",
            hint="runbook killswitch status",
        )
    services.audit.append("killswitch.released", actor=actor, data={"scope": scope})
    services.store.release_killswitch(scope, actor=actor, at=services.clock.now())
    return {"scope": scope, "actor": actor}


def check(services: Services, runbook: str) -> None:
    """Raise ``KillSwitchEngaged`` if a switch applies to ``runbook``."""
    switch = services.store.killswitch(runbook)
    if switch:
        where = "globally" if switch.get("scope") == GLOBAL else f"for {runbook}"
        raise KillSwitchEngaged(
            f"the kill-switch is engaged {where} by {switch.get('actor')}: {switch.get('reason')}",
            hint="runbook killswitch status; release it with 'runbook killswitch release' "
            "when automation is safe again",
        )


def kill_run(services: Services, run_id: str, *, actor: str, reason: str) -> dict[str, Any]:
    """Ask the process running ``run_id`` to stop it (it polls the store)."""
    run = services.store.get_run(run_id)
    if run["status"] in ("succeeded", "failed", "cancelled", "rolled_back"):
        raise UsageError(f"run {run_id} already ended ({run['status']}); nothing to kill")
    services.audit.append(
        "run.kill_requested",
        run_id=run_id,
        actor=actor,
        runbook=f"{run['runbook']}@{run['version']}",
        data={"reason": reason},
    )
    services.store.request_kill(run_id, actor=actor, reason=reason)
    return {"run_id": run_id, "actor": actor, "reason": reason}
