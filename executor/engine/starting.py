"""Everything that must hold before a run may start, checked and audited in order.

The request is audited first (so a refused run leaves a trace), then the
kill-switch, the inputs, the concurrency limit and the cooldown. Only when all
pass is a run record created; a dry run takes no lock and sets no cooldown.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from executor import expressions
from executor.engine import killswitch
from executor.engine.services import Services
from executor.errors import PolicyRefused, RunbookError
from executor.inputs import resolve_inputs, secret_values
from executor.masking import Masker
from executor.model import Runbook, format_duration


def new_run_id(now: float) -> str:
    """Sortable and readable in a terminal: r-20261122-031502-9f3a1c."""
    return time.strftime("r-%Y%m%d-%H%M%S-", time.gmtime(now)) + secrets.token_hex(3)


@dataclass
class RunRequest:
    runbook: Runbook
    inputs: Mapping[str, Any]
    actor: str
    trigger: str = "cli"
    dry_run: bool = False
    alert: Mapping[str, Any] | None = None
    runbook_text: str | None = None


@dataclass
class PreparedRun:
    """A run that passed every start-time guard; ``inputs`` are typed and checked."""

    run_id: str
    request: RunRequest
    inputs: dict[str, Any]
    masker: Masker
    concurrency_key: str | None
    extra: dict[str, Any] = field(default_factory=dict)

    def run_context(self) -> dict[str, Any]:
        return {
            "id": self.run_id,
            "trigger": self.request.trigger,
            "actor": self.request.actor,
            "dry_run": self.request.dry_run,
        }


SECRET_DEFAULT = "*** (the runbook's default)"
"""Stored in place of a secret input the run took from the runbook's default, so a
resume can tell "use the default again" from "the person must pass it again"."""


def stored_inputs(
    book: Runbook, given: Mapping[str, Any], inputs: Mapping[str, Any], masker: Masker
) -> dict[str, Any]:
    """The inputs as the store keeps them: secrets masked, never their values."""
    stored = masker.mask_data(dict(inputs))
    for name, spec in book.inputs.items():
        if spec.secret and name not in given and name in stored:
            stored[name] = SECRET_DEFAULT
    return stored


def concurrency_key(
    runbook: Runbook,
    inputs: Mapping[str, Any],
    run: Mapping[str, Any],
    alert: Mapping[str, Any] | None,
) -> str:
    """The key runs of this runbook are serialised on: ``name:<rendered key>``, or the name."""
    if runbook.policy.concurrency is None:
        return runbook.name
    context = {"inputs": inputs, "run": run, "alert": alert or {}}
    rendered = expressions.render(runbook.policy.concurrency.key, context)
    return f"{runbook.name}:{rendered}"


def prepare(services: Services, request: RunRequest) -> PreparedRun:
    """Check and record a run request; raises the error that refused it (audited)."""
    book = request.runbook
    now = services.clock.now()
    run_id = new_run_id(now)
    masker = Masker()
    audit_base = {
        "run_id": run_id,
        "actor": request.actor,
        "runbook": book.ref,
        "sha256": book.sha256,
    }
    # Mask before the first record: secret inputs never reach the audit in clear.
    for name, spec in book.inputs.items():
        if spec.secret and request.inputs.get(name) not in (None, ""):
            masker.add(str(request.inputs[name]))
    services.audit.append(
        "run.requested",
        **audit_base,
        data={
            "trigger": request.trigger,
            "dry_run": request.dry_run,
            "inputs": masker.mask_data(dict(request.inputs)),
            "alert": masker.mask_data(dict(request.alert)) if request.alert else None,
        },
    )
    try:
        killswitch.check(services, book.name)
        inputs = resolve_inputs(book, request.inputs)
        for value in secret_values(book, inputs):
            masker.add(value)
        prepared = PreparedRun(
            run_id=run_id, request=request, inputs=inputs, masker=masker, concurrency_key=None
        )
        if not request.dry_run:
            _take_slot(services, prepared, now)
    except RunbookError as refused:
        services.audit.append(
            "run.refused",
            **audit_base,
            data={"reason": masker.mask(str(refused)), "error": type(refused).__name__},
        )
        raise
    services.store.create_run(
        {
            "id": run_id,
            "runbook": book.name,
            "version": book.version,
            "sha256": book.sha256,
            "source": book.source,
            "status": "pending",
            "actor": request.actor,
            "trigger": request.trigger,
            "inputs": stored_inputs(book, request.inputs, inputs, masker),
            "alert": masker.mask_data(dict(request.alert)) if request.alert else None,
            "dry_run": request.dry_run,
            "concurrency_key": prepared.concurrency_key,
            "created": now,
            "updated": now,
            "runbook_text": request.runbook_text,
        }
    )
    return prepared


def _take_slot(services: Services, prepared: PreparedRun, now: float) -> None:
    """Cooldown first (cheap, no lock), then the concurrency lock."""
    book = prepared.request.runbook
    key = concurrency_key(book, prepared.inputs, prepared.run_context(), prepared.request.alert)
    prepared.concurrency_key = key
    until = services.store.cooldown_until(key)
    if until is not None and until > now:
        raise PolicyRefused(
            f"{book.name} is cooling down for {key!r}: the last run was recent; "
            f"next run allowed in {format_duration(until - now)}",
            hint="wait, or run another runbook; cooldown is set by policy.cooldown",
        )
    limit = book.policy.concurrency.limit if book.policy.concurrency else 0
    if limit and not services.store.acquire_lock(key, prepared.run_id, limit):
        holders = ", ".join(services.store.holders(key))
        raise PolicyRefused(
            f"{book.name} already has {limit} run(s) active for {key!r} ({holders}); "
            f"policy.concurrency.limit is {limit}",
            hint=f"runbook status {holders.split(', ')[0]}" if holders else None,
        )
    if book.policy.cooldown:
        services.store.set_cooldown(key, now + book.policy.cooldown)
