"""The run loop: conductor -> kill-switch -> approval -> credentials -> action -> audit.

One thread owns the conductor and the state; actions run in a bounded pool and
report back through a queue. Before any action the intent is audited (fail-closed)
and the state saved, so a crash leaves the step ``running`` in the store and a
restart turns it into ``unknown`` rather than running it twice.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from executor import conductor as cd
from executor import expressions
from executor.engine.approvals import approval_plan
from executor.engine.render import describe, render_action
from executor.engine.services import Services
from executor.engine.starting import PreparedRun
from executor.errors import AuditWriteError, ExpressionError, RunbookError
from executor.masking import Masker
from executor.model import HOST_KINDS, RESULT_KINDS, Runbook, RunStatus, Step
from executor.ports import ActionRequest, ActionResult, CancelToken, IssuedCredential

Progress = Callable[[str, Mapping[str, Any]], None]


def _noop(_event: str, _data: Mapping[str, Any]) -> None:
    return None


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()


@dataclass
class _Done:
    """A finished piece of work, posted by a worker thread to the loop thread."""

    step_id: str
    attempt: int
    result: ActionResult
    rollback_index: int | None = None
    context: dict[str, Any] = field(default_factory=dict)


class RunExecution:
    """Executes one run to its end (or until it must wait for a person)."""

    def __init__(
        self,
        services: Services,
        runbook: Runbook,
        prepared: PreparedRun,
        *,
        state: cd.ConductorState | None = None,
        on_progress: Progress = _noop,
        wait_for_people: bool = True,
    ) -> None:
        self.services = services
        self.runbook = runbook
        self.prepared = prepared
        self.run_id = prepared.run_id
        self.masker: Masker = prepared.masker
        self.conductor = cd.Conductor(runbook, state)
        self.on_progress = on_progress
        self.wait_for_people = wait_for_people
        self.tokens: dict[str, CancelToken] = {}
        self.done: queue.Queue[_Done] = queue.Queue()
        self.pool = ThreadPoolExecutor(
            max_workers=max(1, services.max_parallel_steps), thread_name_prefix=f"run-{self.run_id}"
        )
        self.in_flight: set[str] = set()
        self.timers: list[threading.Timer] = []
        self.credentials: dict[str, IssuedCredential] = {}
        self.provider = None
        self.secrets: dict[str, str] = {}
        self.fed_approvals: set[int] = set()
        self.started_at = services.clock.monotonic()
        self.kill_reason: str | None = None
        self.audit_base = {
            "run_id": self.run_id,
            "actor": prepared.request.actor,
            "runbook": runbook.ref,
            "sha256": runbook.sha256,
        }

    # ------------------------------------------------------------------ helpers

    def audit(self, event: str, *, step: str | None = None, **data: Any) -> None:
        self.services.audit.append(
            event, step=step, data=self.masker.mask_data(data), **self.audit_base
        )

    def context(self, result: Mapping[str, Any] | None = None) -> dict[str, Any]:
        ctx = self.conductor.context(
            inputs=self.prepared.inputs,
            run=self.prepared.run_context(),
            alert=self.prepared.request.alert or {},
            secrets=self.secrets,
        )
        if result is not None:
            ctx["result"] = result
        return ctx

    def save(self) -> None:
        state = self.conductor.state
        self.services.store.update_run(
            self.run_id,
            status=state.status.value if hasattr(state.status, "value") else str(state.status),
            state=json.loads(state.to_json()),
            updated=self.services.clock.now(),
        )

    def guard(self, step: Step, context: Mapping[str, Any]) -> bool:
        assert step.when is not None
        value = bool(expressions.evaluate(step.when, self.context()))
        self.audit("guard.evaluated", step=step.id, expression=step.when, value=value)
        return value

    # ------------------------------------------------------------------ the loop

    def run(self) -> RunStatus:
        try:
            if self.conductor.state.status is RunStatus.PENDING:
                self.audit(
                    "run.started",
                    inputs=self.prepared.inputs,
                    dry_run=self.prepared.request.dry_run,
                )
                self.conductor.handle(cd.RunStarted(at=self.services.clock.now()))
                self.save()
            else:
                for step_id in self.conductor.waiting_approvals():
                    self._announce_approval(step_id)
            return self._loop()
        except AuditWriteError as exc:
            self._cancel_all(f"audit log unwritable: {exc.message}")
            self._drain(grace=5.0)
            self.services.store.update_run(
                self.run_id,
                status=RunStatus.FAILED.value,
                error=str(exc),
                finished=self.services.clock.now(),
            )
            raise
        finally:
            for timer in self.timers:
                timer.cancel()
            self.pool.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> RunStatus:
        poll = self.services.poll_interval
        while True:
            self._watch_outside()
            decision = self.conductor.next(self.guard)
            self._act(decision)
            self.save()
            if decision.done:
                return self._finish(decision.run_status)
            idle = not self.in_flight and not self.timers_alive()
            if idle and decision.run_status is RunStatus.WAITING and (
                not self.wait_for_people or self._only_unknowns()
            ):
                return self._pause()
            try:
                item = self.done.get(timeout=poll)
            except queue.Empty:
                continue
            self._settle(item)
            while True:  # drain what else finished, one save for the lot
                try:
                    self._settle(self.done.get_nowait())
                except queue.Empty:
                    break

    def timers_alive(self) -> bool:
        self.timers = [t for t in self.timers if t.is_alive()]
        return bool(self.timers)

    def _only_unknowns(self) -> bool:
        return bool(self.conductor.unknown_steps())

    def _act(self, decision: Any) -> None:
        for step_id, reason in getattr(decision, "skipped", ()):
            self.audit("step.skipped", step=step_id, reason=reason)
            self.on_progress("step.skipped", {"step": step_id, "reason": reason})
        for step_id in decision.cancel:
            token = self.tokens.get(step_id)
            if token is not None:
                token.cancel(self.kill_reason or "cancelled")
        for step_id in decision.approvals:
            self._request_approval(step_id)
        for step_id, delay in decision.retry:
            self._schedule_retry(step_id, delay)
        for step in decision.start:
            self._start(step if isinstance(step, Step) else self.runbook.step(step))
        for step_id, index in decision.rollback:
            self._start_rollback(step_id, index)

    # ------------------------------------------------------------------ outside world

    def _watch_outside(self) -> None:
        """Kill-switch, `runbook kill`, approvals from other processes, expiry, run timeout."""
        if self.kill_reason is None:
            switch = self.services.store.killswitch(self.runbook.name)
            run = self.services.store.get_run(self.run_id)
            reason = None
            actor = None
            if switch:
                reason = f"kill-switch engaged by {switch.get('actor')}: {switch.get('reason')}"
                actor = switch.get("actor")
            elif run.get("kill_requested"):
                reason = f"killed by {run.get('kill_by')}: {run.get('kill_reason')}"
                actor = run.get("kill_by")
            elif self._run_timed_out():
                self.kill_reason = "run timed out"
                self.audit("run.timed_out", timeout=self.runbook.policy.timeout)
                self.conductor.handle(cd.RunTimedOut(at=self.services.clock.now()))
                self._cancel_all("run timed out")
                return
            if reason is not None:
                self.kill_reason = reason
                self.audit("run.cancelling", reason=reason, in_flight=sorted(self.in_flight))
                self.conductor.handle(
                    cd.KillRequested(
                        reason=reason, actor=actor or "?", at=self.services.clock.now()
                    )
                )
                self._cancel_all(reason)
                return
        self._feed_approvals()

    def _run_timed_out(self) -> bool:
        timeout = self.runbook.policy.timeout
        return bool(timeout) and self.services.clock.monotonic() - self.started_at > timeout

    def _cancel_all(self, reason: str) -> None:
        for token in self.tokens.values():
            token.cancel(reason)
        for timer in self.timers:
            timer.cancel()

    def _drain(self, grace: float) -> None:
        deadline = self.services.clock.monotonic() + grace
        while self.in_flight and self.services.clock.monotonic() < deadline:
            try:
                item = self.done.get(timeout=0.1)
            except queue.Empty:
                continue
            self.in_flight.discard(item.step_id)

    # ------------------------------------------------------------------ approvals

    def _request_approval(self, step_id: str) -> None:
        self._announce_approval(step_id, audit=True)

    def _announce_approval(self, step_id: str, *, audit: bool = False) -> None:
        step = self.runbook.step(step_id)
        action = render_action(step.action, self.context())  # type: ignore[arg-type]
        plan = approval_plan(self.runbook, step_id, self.context(), self.masker)
        if audit:
            self.audit(
                "approval.requested",
                step=step_id,
                message=action.message,  # type: ignore[union-attr]
                approvers=list(action.approvers),
                quorum=action.quorum,  # type: ignore[union-attr]
                plan=plan,
            )
        self.on_progress(
            "approval.requested",
            {
                "step": step_id,
                "message": self.masker.mask(action.message),
                "plan": plan,  # type: ignore[union-attr]
                "run_id": self.run_id,
                "approvers": list(action.approvers),
            },  # type: ignore[union-attr]
        )

    def _feed_approvals(self) -> None:
        now = self.services.clock.now()
        for row in self.services.store.get_approvals(self.run_id):
            if row["id"] in self.fed_approvals:
                continue
            self.fed_approvals.add(row["id"])
            state = self.conductor.state.steps.get(row["step_id"])
            if state is None or str(getattr(state, "status", "")) != "waiting":
                continue
            self.conductor.handle(
                cd.ApprovalDecision(
                    row["step_id"],
                    approver=row["approver"],
                    approve=row["decision"] == "approve",
                    reason=row.get("reason"),
                    at=row["at"],
                )
            )
            self.on_progress("approval.decided", {"step": row["step_id"], **row})
        for step in self.runbook.steps:
            if not step.is_approval:
                continue
            state = self.conductor.state.steps.get(step.id)
            if state is None or str(getattr(state, "status", "")) != "waiting":
                continue
            timeout = step.action.timeout  # type: ignore[union-attr]
            waited_since = getattr(state, "started_at", None)
            if timeout and waited_since is not None and now - waited_since > timeout:
                self.audit("approval.expired", step=step.id, timeout=timeout)
                self.conductor.handle(cd.ApprovalExpired(step.id, at=now))
                self.on_progress("approval.expired", {"step": step.id})

    # ------------------------------------------------------------------ steps

    def _schedule_retry(self, step_id: str, delay: float) -> None:
        self.audit("step.retry", step=step_id, delay=delay)

        def fire() -> None:
            self.done.put(_Done(step_id, -1, ActionResult(ok=False), context={"retry": True}))

        timer = threading.Timer(delay, fire)
        timer.daemon = True
        self.timers.append(timer)
        timer.start()

    def _start(self, step: Step) -> None:
        now = self.services.clock.now()
        attempt = self.conductor.state.steps[step.id].attempts + 1
        context = self.context()
        try:
            action = render_action(step.action, context) if step.action is not None else None
            hosts = self._hosts(step, action, context)
        except (ExpressionError, RunbookError) as exc:
            self.conductor.handle(cd.StepStarted(step.id, attempt, at=now))
            self._finished(
                step, attempt, ActionResult(ok=False, error=self.masker.mask(str(exc))), {}
            )
            return
        shown = (
            describe(action, self.masker.mask)
            if action is not None
            else {"assert": list(step.assertion.that)}
        )  # type: ignore[union-attr]
        self.audit(
            "step.intent",
            step=step.id,
            attempt=attempt,
            kind=step.kind,
            hosts=list(hosts),
            action=shown,
            dry_run=self.prepared.request.dry_run,
        )
        self.conductor.handle(cd.StepStarted(step.id, attempt, at=now))
        self.save()
        self.on_progress(
            "step.started",
            {
                "step": step.id,
                "kind": step.kind,
                "attempt": attempt,
                "hosts": list(hosts),
                "action": shown,
            },
        )
        token = CancelToken()
        self.tokens[step.id] = token
        self.in_flight.add(step.id)
        if action is None:  # bare assert: nothing to run
            self.done.put(_Done(step.id, attempt, ActionResult(ok=True)))
            return
        self.pool.submit(self._work, step, attempt, action, hosts, token)

    def _hosts(self, step: Step, action: Any, context: Mapping[str, Any]) -> list[str]:
        if step.kind not in HOST_KINDS:
            return []
        target = self.runbook.targets[action.target]
        pattern = str(expressions.render(target.hosts, context))
        if self.services.inventory is None:
            raise RunbookError(
                f"step {step.id!r} needs an inventory to resolve target {target.name!r}",
                hint="set 'inventory' in the config file or RUNBOOK_INVENTORY",
            )
        hosts = list(self.services.inventory.resolve(pattern))
        if not hosts:
            raise RunbookError(
                f"target {target.name!r} ({pattern}) matches no host in the inventory"
            )
        limit = self.runbook.policy.max_hosts
        if limit is not None and len(hosts) > limit:
            raise RunbookError(
                f"target {target.name!r} ({pattern}) resolves to {len(hosts)} hosts, more than "
                f"policy.max_hosts {limit}: refusing to touch {', '.join(hosts[:10])}"
            )
        return hosts

    def _credential(self, step: Step, action: Any) -> IssuedCredential | None:
        name = getattr(action, "credential", None)
        if not name:
            return None
        cached = self.credentials.get(name)
        renewal = getattr(getattr(cached, "material", None), "needs_renewal", None)
        if cached is not None and not (renewal and renewal(self.services.clock.now())):
            return cached
        if self.services.credentials is None:
            raise RunbookError(
                f"step {step.id!r} needs credential {name!r} but no Vault is configured",
                hint="set VAULT_ADDR and VAULT_ROLE_ID/VAULT_SECRET_ID (or VAULT_TOKEN)",
            )
        if self.provider is None:
            ttl = self.runbook.policy.timeout or 3600.0
            self.provider = self.services.credentials(self.run_id, ttl)
        remaining = (self.runbook.policy.timeout or 3600.0) - (
            self.services.clock.monotonic() - self.started_at
        )
        issued = self.provider.issue(
            self.runbook.credentials[name], run_id=self.run_id, ttl=max(remaining, 60.0)
        )
        for value in issued.secret_values:
            self.masker.add(value)
        self.credentials[name] = issued
        if issued.kind == "vault_kv":
            self.secrets[name] = issued.material
        self.audit("credential.issued", step=step.id, credential=name, **dict(issued.public))
        return issued

    def _work(
        self, step: Step, attempt: int, action: Any, hosts: list[str], token: CancelToken
    ) -> None:
        """Worker thread: credential, then the action; never raises."""
        try:
            credential = None if self.prepared.request.dry_run else self._credential(step, action)
            runner = self.services.runners.get(action.kind)
            if runner is None:
                raise RunbookError(f"no runner for {action.kind!r} actions is configured")
            request = ActionRequest(
                run_id=self.run_id,
                step_id=step.id,
                action=action,
                hosts=hosts,
                credential=credential,
                timeout=step.timeout,
                dry_run=self.prepared.request.dry_run,
                mask=self.masker.mask,
                on_event=lambda event, data: self.audit(event, step=step.id, **dict(data)),
            )
            result = runner.run(request, token)
        except Exception as exc:
            message = (
                exc.message if isinstance(exc, RunbookError) else f"{type(exc).__name__}: {exc}"
            )
            result = ActionResult(ok=False, error=self.masker.mask(message))
        self.done.put(_Done(step.id, attempt, result))

    def _settle(self, item: _Done) -> None:
        if item.context.get("retry"):
            self.timers_alive()
            step = self.runbook.step(item.step_id)
            if self.conductor.startable(step.id):
                self._start(step)
            return
        self.in_flight.discard(item.step_id)
        if item.rollback_index is not None:
            self._rollback_finished(item)
            return
        self._finished(self.runbook.step(item.step_id), item.attempt, item.result, {})

    def _finished(
        self, step: Step, attempt: int, result: ActionResult, _extra: Mapping[str, Any]
    ) -> None:
        """Evaluate outputs, assert and until in the loop thread, then tell the conductor."""
        self.in_flight.discard(step.id)
        result_ctx = result.as_context()
        ok, error, outputs = result.ok, result.error, {}
        if not ok and error is None:
            error = f"exit code {result.rc}" if result.rc is not None else "failed"
        if ok or step.kind not in RESULT_KINDS:
            try:
                ctx = self.context(result_ctx)
                outputs = {k: expressions.render(v, ctx) for k, v in step.outputs.items()}
                ctx["steps"] = {**ctx.get("steps", {})}
                if step.assertion is not None:
                    for expr in step.assertion.that:
                        if not expressions.evaluate(expr, ctx):
                            ok = False
                            error = step.assertion.message or f"assertion failed: {expr}"
                            break
                if (
                    ok
                    and step.retries
                    and step.retries.until
                    and not expressions.evaluate(step.retries.until, ctx)
                ):
                    ok, error = False, f"until condition not met: {step.retries.until}"
            except ExpressionError as exc:
                ok, error = False, str(exc)
        outputs = self.masker.mask_data(outputs)
        hosts = {
            name: {
                "rc": h.rc,
                "stdout": self.masker.mask(h.stdout),
                "stderr": self.masker.mask(h.stderr),
                "ok": h.ok,
                "error": h.error,
                "cut_off": h.cut_off,
            }
            for name, h in result.hosts.items()
        }
        self.audit(
            "step.outcome",
            step=step.id,
            attempt=attempt,
            ok=ok,
            rc=result.rc,
            error=error,
            timed_out=result.timed_out,
            cancelled=result.cancelled,
            stdout_sha256=_digest(result.stdout),
            stderr_sha256=_digest(result.stderr),
            hosts={
                n: {"rc": h["rc"], "ok": h["ok"], "error": h["error"], "cut_off": h["cut_off"]}
                for n, h in hosts.items()
            },
            outputs=outputs,
        )
        self.conductor.handle(
            cd.StepFinished(
                step.id,
                ok=ok,
                outputs=outputs,
                result={k: v for k, v in self.masker.mask_data(result_ctx).items() if k != "hosts"},
                hosts=hosts,
                error=self.masker.mask(error) if error else None,
                at=self.services.clock.now(),
                timed_out=result.timed_out,
                cancelled=result.cancelled,
            )
        )
        self.tokens.pop(step.id, None)
        self.on_progress(
            "step.finished",
            {
                "step": step.id,
                "ok": ok,
                "error": error,
                "attempt": attempt,
                "stdout": self.masker.mask(result.stdout),
            },
        )

    # ------------------------------------------------------------------ rollback saga

    def _start_rollback(self, step_id: str, index: int) -> None:
        step = self.runbook.step(step_id)
        try:
            action = render_action(step.rollback[index], self.context())
            hosts = self._hosts(step, action, self.context()) if action.kind in HOST_KINDS else []
        except (ExpressionError, RunbookError) as exc:
            self.done.put(
                _Done(step_id, 0, ActionResult(ok=False, error=str(exc)), rollback_index=index)
            )
            self.in_flight.add(step_id)
            return
        self.audit(
            "rollback.intent",
            step=step_id,
            index=index,
            action=describe(action, self.masker.mask),
            hosts=hosts,
        )
        self.on_progress("rollback.started", {"step": step_id, "index": index})
        token = CancelToken()
        self.tokens[f"{step_id}#rollback{index}"] = token
        self.in_flight.add(step_id)

        def work() -> None:
            try:
                credential = self._credential(step, action)
                runner = self.services.runners[action.kind]
                request = ActionRequest(
                    run_id=self.run_id,
                    step_id=step_id,
                    action=action,
                    hosts=hosts,
                    credential=credential,
                    timeout=step.timeout,
                    dry_run=self.prepared.request.dry_run,
                    mask=self.masker.mask,
                )
                result = runner.run(request, token)
            except Exception as exc:
                result = ActionResult(ok=False, error=self.masker.mask(str(exc)))
            self.done.put(_Done(step_id, 0, result, rollback_index=index))

        self.pool.submit(work)

    def _rollback_finished(self, item: _Done) -> None:
        result = item.result
        error = result.error or (None if result.ok else f"exit code {result.rc}")
        self.audit(
            "rollback.outcome",
            step=item.step_id,
            index=item.rollback_index,
            ok=result.ok,
            rc=result.rc,
            error=error,
            stdout_sha256=_digest(result.stdout),
        )
        self.conductor.handle(
            cd.RollbackFinished(
                item.step_id,
                item.rollback_index,
                ok=result.ok,
                error=error,
                at=self.services.clock.now(),
            )
        )
        self.on_progress(
            "rollback.finished", {"step": item.step_id, "ok": result.ok, "error": error}
        )

    # ------------------------------------------------------------------ endings

    def _pause(self) -> RunStatus:
        self.audit(
            "run.paused",
            waiting=[
                s
                for s, st in self.conductor.state.steps.items()
                if str(getattr(st, "status", "")) in ("waiting", "unknown")
            ],
        )
        self._release_credentials()
        return RunStatus.WAITING

    def _finish(self, status: RunStatus) -> RunStatus:
        self._release_credentials()
        now = self.services.clock.now()
        key = self.prepared.concurrency_key
        if key and not self.prepared.request.dry_run:
            self.services.store.release_lock(key, self.run_id)
            if self.runbook.policy.cooldown:
                self.services.store.set_cooldown(key, now + self.runbook.policy.cooldown)
        self.services.store.update_run(
            self.run_id,
            status=status.value,
            finished=now,
            error=self.kill_reason if status is RunStatus.CANCELLED else None,
        )
        self.audit("run.finished", status=status.value, touched=self.conductor.touched())
        self.on_progress("run.finished", {"status": status.value})
        return status

    def _release_credentials(self) -> None:
        if self.provider is None:
            return
        try:
            revoked = self.provider.revoke_all()
        except RunbookError as exc:
            self.audit("credential.revoke_failed", error=str(exc))
            return
        for record in revoked:
            event = (
                "credential.revoke_failed"
                if record.get("result") == "failed"
                else "credential.revoked"
            )
            self.audit(event, **dict(record))
        self.provider = None
        self.credentials.clear()
