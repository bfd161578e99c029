"""The run loop: conductor -> kill-switch -> approval -> credentials -> action -> audit.

One thread owns the conductor and the state; actions run in a bounded pool and
report back through a queue. Three orderings make a run safe to stop at any
instant:

* every change to the conductor's state is audited before it is applied, so
  the state never claims more than the audit log can prove;
* before an action starts, its intent is audited (fail-closed) and the state
  that says it is running is saved, so a crash leaves it ``running`` in the
  store and a restart turns it into ``unknown`` rather than running it twice;
* only as many steps are marked running as there are free slots, so a crash
  or a kill never leaves queued steps that look as if they had started.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from executor import conductor as cd
from executor import expressions
from executor.engine.context import expression_context
from executor.engine.credentials import RunCredentials
from executor.engine.ownership import Ownership
from executor.engine.render import describe, render_action
from executor.engine.saga import RollbackSaga
from executor.engine.services import Services
from executor.engine.snapshot import Snapshots
from executor.engine.starting import PreparedRun
from executor.engine.waiting import ApprovalDesk
from executor.engine.work import Done, Launch, Progress, digest, noop
from executor.errors import AuditWriteError, ExpressionError, RunbookError
from executor.masking import Masker
from executor.model import (
    HOST_KINDS,
    RESULT_KINDS,
    Runbook,
    RunStatus,
    Step,
    StepStatus,
)
from executor.ports import ActionRequest, ActionResult, CancelToken

DRAIN_GRACE = 5.0
"""Seconds to wait for cancelled actions to report after an unrecoverable error."""


class RunExecution(ApprovalDesk, RollbackSaga):
    """Executes one run to its end (or until it must wait for a person)."""

    def __init__(
        self,
        services: Services,
        runbook: Runbook,
        prepared: PreparedRun,
        *,
        state: cd.ConductorState | None = None,
        on_progress: Progress = noop,
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
        self.ownership = Ownership(services, self.run_id)
        self.slots = max(1, services.max_parallel_steps)
        self.tokens: dict[str, CancelToken] = {}
        self.done: queue.Queue[Done] = queue.Queue()
        self.pool = ThreadPoolExecutor(max_workers=self.slots, thread_name_prefix=self.run_id)
        self.in_flight: set[str] = set()
        self.timers: list[threading.Timer] = []
        self.due_retries: list[str] = []
        self.waiting: set[str] = set()
        self.fed_approvals: set[int] = set()
        self.started_at = services.clock.monotonic()
        self.run_checked_at: float | None = None
        self.saved_at: tuple[int, int, int] | None = None
        self.snapshots = Snapshots()
        self.kill_reason: str | None = None
        self.audit_base = {
            "run_id": self.run_id,
            "actor": prepared.request.actor,
            "runbook": runbook.ref,
            "sha256": runbook.sha256,
        }
        self.credentials = RunCredentials(
            services, runbook, self.run_id, self.masker, self.audit, started_at=self.started_at
        )

    # ------------------------------------------------------------------ helpers

    def audit(self, event: str, *, step: str | None = None, **data: Any) -> None:
        """Record ``event`` durably, secrets masked; raises ``AuditWriteError`` if it cannot."""
        self.services.audit.append(
            event, step=step, data=self.masker.mask_data(data), **self.audit_base
        )

    def context(self, result: Mapping[str, Any] | None = None) -> dict[str, Any]:
        ctx = expression_context(
            self.conductor.state,
            inputs=self.prepared.inputs,
            run=self.prepared.run_context(),
            alert=self.prepared.request.alert,
            secrets=self.credentials.secrets,
        )
        if result is not None:
            ctx["result"] = result
        return ctx

    def save(self, **fields: Any) -> None:
        """Store the conductor state (and any run columns given) in one write.

        Only what changed since the last save is written (see ``Snapshots``).
        """
        self.snapshots.save(
            self.services.store,
            self.run_id,
            self.conductor,
            **{
                "status": self.conductor.state.status.value,
                "updated": self.services.clock.now(),
                **fields,
            },
        )
        self.saved_at = self._version()

    def save_if_changed(self) -> None:
        """Save unless nothing happened since the last save (one write per step, not three)."""
        if self.saved_at != self._version():
            self.save()

    def _version(self) -> tuple[int, int, int]:
        """Moves whenever an event is handled or a status changes (both append to history)."""
        state = self.conductor.state
        return id(state), state.seq, len(state.history)

    def guard(self, step: Step, _context: Mapping[str, Any]) -> bool:
        """Evaluate ``when`` (audited); an error message is masked before the state keeps it."""
        assert step.when is not None
        try:
            self._fetch_secrets(step)
            value = bool(expressions.evaluate(step.when, self.context()))
        except RunbookError as exc:
            message = self.masker.mask(str(exc))
            self.audit("guard.failed", step=step.id, expression=step.when, error=message)
            raise ExpressionError(message) from None
        self.audit("guard.evaluated", step=step.id, expression=step.when, value=value)
        return value

    # ------------------------------------------------------------------ the loop

    def run(self) -> RunStatus:
        """Execute until the run ends or must wait for people; at most one executor per run."""
        self.ownership.claim()
        try:
            return self._run()
        except AuditWriteError as exc:
            self._stop_unaudited(exc)
            raise
        except BaseException:
            # A bug, the store failing, Ctrl-C: nothing may go on running unobserved. The
            # state saved so far stands; steps in flight become unknown on resume.
            self._cancel_all("the executor stopped")
            raise
        finally:
            for timer in self.timers:
                timer.cancel()
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.ownership.release()

    def _run(self) -> RunStatus:
        if self.conductor.state.status is RunStatus.PENDING:
            self.audit(
                "run.started", inputs=self.prepared.inputs, dry_run=self.prepared.request.dry_run
            )
            self.conductor.handle(cd.RunStarted(at=self.services.clock.now()))
            self.save()
        else:
            self.waiting.update(self.conductor.waiting_approvals())
            for step_id in sorted(self.waiting):
                self._announce(step_id, self._approval_facts(step_id))
        return self._loop()

    def _loop(self) -> RunStatus:
        while True:
            self._watch_outside()
            decision = self.conductor.next(self.guard)
            self._act(decision)
            self.save_if_changed()
            if decision.done:
                return self._finish(decision.run_status)
            if self._idle():
                if decision.run_status is RunStatus.WAITING and (
                    not self.wait_for_people or self._needs_an_operator()
                ):
                    return self._pause()
                if decision.run_status is RunStatus.RUNNING and not _moves(decision):
                    raise RunbookError(
                        f"run {self.run_id} cannot make progress: nothing is running, "
                        "startable or waiting for a person",
                        hint="this is an executor bug; report it with `runbook status --json` "
                        f"output, then stop the run with 'runbook kill {self.run_id}'",
                    )
            self._collect(self.services.poll_interval)

    def _needs_an_operator(self) -> bool:
        """Work was in flight at a crash: only `runbook resolve` can move the run now."""
        state = self.conductor.state
        unknown_rollback = any(i.status == cd.SagaStatus.UNKNOWN for i in state.saga or ())
        return bool(self.conductor.unknown_steps()) or unknown_rollback

    def _idle(self) -> bool:
        self.timers = [t for t in self.timers if t.is_alive()]
        return not self.in_flight and not self.timers and not self.due_retries

    def _collect(self, timeout: float) -> None:
        """Wait up to ``timeout`` for finished work, then take everything that finished."""
        try:
            item = self.done.get(timeout=timeout)
        except queue.Empty:
            return
        self._settle(item)
        while True:
            try:
                self._settle(self.done.get_nowait())
            except queue.Empty:
                return

    def _act(self, decision: cd.Decision) -> None:
        for step_id, reason in decision.skipped:
            self.audit("step.skipped", step=step_id, reason=reason)
            self.on_progress("step.skipped", {"step": step_id, "reason": reason})
        for step_id in decision.cancel:
            token = self.tokens.get(step_id)
            if token is not None:
                token.cancel(self.kill_reason or "cancelled")
        if decision.approvals:
            self._request_approvals(decision.approvals)
        for step_id, delay in decision.retry:
            self._schedule_retry(step_id, delay)
        self._launch(decision.start)
        for step_id, index in decision.rollback:
            self._start_rollback(step_id, index)

    # ------------------------------------------------------------------ outside world

    def _watch_outside(self) -> None:
        """Kill-switch (every turn), `runbook kill` and run timeout, approvals and expiry."""
        if self.conductor.state.status.terminal:
            return
        if self.kill_reason is None:
            stop = self._stop_request()
            if stop is not None:
                reason, actor = stop
                self.kill_reason = reason
                self.audit("run.cancelling", reason=reason, in_flight=sorted(self.in_flight))
                self.conductor.handle(
                    cd.KillRequested(reason=reason, actor=actor, at=self.services.clock.now())
                )
                self._cancel_all(reason)
            elif self._run_timed_out():
                self.kill_reason = "run timed out"
                self.audit("run.timed_out", timeout=self.runbook.policy.timeout)
                self.conductor.handle(cd.RunTimedOut(at=self.services.clock.now()))
                self._cancel_all("run timed out")
        if self.waiting:
            self._feed_approvals()

    def _stop_request(self) -> tuple[str, str] | None:
        """The kill-switch is read before every step, the run's kill request (``runbook
        kill``) at most once per poll interval."""
        switch = self.services.store.killswitch(self.runbook.name)
        if switch:
            actor = str(switch.get("actor") or "?")
            return f"kill-switch engaged by {actor}: {switch.get('reason')}", actor
        now = self.services.clock.monotonic()
        if self.run_checked_at is not None and now - self.run_checked_at < (
            self.services.poll_interval
        ):
            return None
        self.run_checked_at = now
        run = _kill_request(self.services.store, self.run_id)
        if run.get("kill_requested"):
            actor = str(run.get("kill_by") or "?")
            return f"killed by {actor}: {run.get('kill_reason')}", actor
        return None

    def _run_timed_out(self) -> bool:
        timeout = self.runbook.policy.timeout
        return bool(timeout) and self.services.clock.monotonic() - self.started_at > timeout

    def _cancel_all(self, reason: str) -> None:
        for token in list(self.tokens.values()):
            token.cancel(reason)
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()
        self.due_retries.clear()

    # ------------------------------------------------------------------ steps

    def _schedule_retry(self, step_id: str, delay: float) -> None:
        self.audit("step.retry", step=step_id, delay=delay)

        def fire() -> None:
            self.done.put(Done(step_id, -1, ActionResult(ok=False), context={"retry": True}))

        timer = threading.Timer(delay, fire)
        timer.daemon = True
        self.timers.append(timer)
        timer.start()

    def _launch(self, offered: Sequence[str]) -> None:
        """Start due retries first, then offered steps, as far as free slots allow."""
        free = self.slots - len(self.in_flight)
        chosen: list[str] = []
        while self.due_retries and len(chosen) < free:
            step_id = self.due_retries.pop(0)
            if self.conductor.startable(step_id) and step_id not in chosen:
                chosen.append(step_id)
        for step_id in offered:
            if len(chosen) >= free:
                break
            if step_id not in chosen and step_id not in self.in_flight:
                chosen.append(step_id)
        if chosen:
            self._start_steps([self.runbook.step(s) for s in chosen])

    def _start(self, step: Step) -> None:
        """Start one step now (a rehearsal starts retries this way)."""
        self._start_steps([step])

    def _start_steps(self, steps: Sequence[Step]) -> None:
        """Render, audit every intent, mark all running, save once, then hand them out."""
        context = self.context()
        launches: list[Launch] = []
        for step in steps:
            attempt = self.conductor.state.steps[step.id].attempts + 1
            try:
                if self._fetch_secrets(step):
                    context = self.context()  # now with the secrets just fetched
                action = render_action(step.action, context) if step.action is not None else None
                hosts = self._hosts(step, action, context)
            except (ExpressionError, RunbookError) as exc:
                self._fail_unstarted(step, attempt, self.masker.mask(str(exc)))
                continue
            shown = (
                describe(action, self.masker.mask)
                if action is not None
                else {"assert": list(step.assertion.that)}  # type: ignore[union-attr]
            )
            self.audit(
                "step.intent",
                step=step.id,
                attempt=attempt,
                kind=step.kind,
                hosts=hosts,
                action=shown,
                dry_run=self.prepared.request.dry_run,
            )
            launches.append(Launch(step, attempt, action, hosts, shown))
        if not launches:
            return
        now = self.services.clock.now()
        for launch in launches:
            self.conductor.handle(cd.StepStarted(launch.step.id, launch.attempt, at=now))
        self.save()
        for launch in launches:
            self._hand_out(launch)

    def _hand_out(self, launch: Launch) -> None:
        step = launch.step
        self.on_progress(
            "step.started",
            {
                "step": step.id,
                "kind": step.kind,
                "attempt": launch.attempt,
                "hosts": launch.hosts,
                "action": launch.shown,
            },
        )
        token = CancelToken()
        self.tokens[step.id] = token
        self.in_flight.add(step.id)
        if launch.action is None:  # bare assert: nothing to run
            self.done.put(Done(step.id, launch.attempt, ActionResult(ok=True)))
            return
        self.pool.submit(self._work, step, launch.attempt, launch.action, launch.hosts, token)

    def _fail_unstarted(self, step: Step, attempt: int, error: str) -> None:
        """A step whose action cannot even be rendered fails without acting."""
        self.audit("step.outcome", step=step.id, attempt=attempt, ok=False, error=error)
        now = self.services.clock.now()
        self.conductor.handle(cd.StepStarted(step.id, attempt, at=now))
        self.conductor.handle(cd.StepFinished(step.id, ok=False, error=error, at=now))
        self.on_progress(
            "step.finished", {"step": step.id, "ok": False, "error": error, "attempt": attempt}
        )

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

    def _fetch_secrets(self, step: Step) -> bool:
        """Issue the KV secrets the step reads before it is rendered (not in a dry run)."""
        if self.prepared.request.dry_run:
            return False
        return self.credentials.fetch_secrets(step)

    def _work(
        self, step: Step, attempt: int, action: Any, hosts: list[str], token: CancelToken
    ) -> None:
        """Worker thread: credential, then the action; never raises."""
        self.done.put(Done(step.id, attempt, self._act_on(step, action, hosts, token)))

    def _act_on(
        self,
        step: Step,
        action: Any,
        hosts: list[str],
        token: CancelToken,
        *,
        audit_events: bool = True,
    ) -> ActionResult:
        if token.cancelled:  # stopped between being handed out and a worker taking it
            return ActionResult(
                ok=False, cancelled=True, error=f"cancelled before it started: {token.reason}"
            )
        try:
            dry_run = self.prepared.request.dry_run
            credential = None if dry_run else self.credentials.for_action(step, action)
            runner = self.services.runners.get(action.kind)
            if runner is None:
                raise RunbookError(f"no runner for {action.kind!r} actions is configured")
            on_event = None
            if audit_events:

                def on_event(event: str, data: Mapping[str, Any]) -> None:
                    self.audit(event, step=step.id, **dict(data))

            request = ActionRequest(
                run_id=self.run_id,
                step_id=step.id,
                action=action,
                hosts=hosts,
                credential=credential,
                timeout=step.timeout,
                dry_run=dry_run,
                mask=self.masker.mask,
                on_event=on_event,
            )
            return runner.run(request, token)
        except Exception as exc:
            message = (
                exc.message if isinstance(exc, RunbookError) else f"{type(exc).__name__}: {exc}"
            )
            return ActionResult(ok=False, error=self.masker.mask(message))

    def _settle(self, item: Done) -> None:
        if item.context.get("retry"):
            if item.step_id not in self.due_retries:
                self.due_retries.append(item.step_id)
            return
        if item.rollback_index is not None:
            self.in_flight.discard(item.step_id)
            self._rollback_finished(item)
            return
        self._finished(self.runbook.step(item.step_id), item.attempt, item.result)

    def _evaluate(
        self, step: Step, result: ActionResult
    ) -> tuple[bool, str | None, dict[str, Any]]:
        """Outputs, then ``assert``, then ``until``, against the action's result."""
        ok, error = result.ok, result.error
        if not ok and error is None:
            error = f"exit code {result.rc}" if result.rc is not None else "failed"
        outputs: dict[str, Any] = {}
        if not ok and step.kind in RESULT_KINDS:
            return ok, error, outputs
        try:
            ctx = self.context(result.as_context())
            outputs = {k: expressions.render(v, ctx) for k, v in step.outputs.items()}
            if step.assertion is not None:
                for expr in step.assertion.that:
                    if not expressions.evaluate(expr, ctx):
                        message = step.assertion.message
                        if message is not None:
                            with contextlib.suppress(ExpressionError):
                                message = str(expressions.render(message, ctx))
                        return False, message or f"assertion failed: {expr}", outputs
            until = step.retries.until if step.retries else None
            if ok and until and not expressions.evaluate(until, ctx):
                return False, f"until condition not met: {until}", outputs
        except ExpressionError as exc:
            return False, str(exc), outputs
        return ok, error, outputs

    def _finished(self, step: Step, attempt: int, result: ActionResult) -> None:
        """Evaluate outputs, assert and until in the loop thread, audit, tell the conductor."""
        self.in_flight.discard(step.id)
        ok, error, outputs = self._evaluate(step, result)
        error = self.masker.mask(error) if error else None
        outputs = self.masker.mask_data(outputs)
        hosts = {
            name: {
                "rc": h.rc,
                "stdout": self.masker.mask(h.stdout),
                "stderr": self.masker.mask(h.stderr),
                "ok": h.ok,
                "error": self.masker.mask(h.error) if h.error else None,
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
            stdout_sha256=digest(result.stdout),
            stderr_sha256=digest(result.stderr),
            hosts={
                n: {"rc": h["rc"], "ok": h["ok"], "error": h["error"], "cut_off": h["cut_off"]}
                for n, h in hosts.items()
            },
            outputs=outputs,
        )
        result_ctx = self.masker.mask_data(result.as_context())
        self.conductor.handle(
            cd.StepFinished(
                step.id,
                ok=ok,
                outputs=outputs,
                result={k: v for k, v in result_ctx.items() if k != "hosts"},
                hosts=hosts,
                error=error,
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

    # ------------------------------------------------------------------ endings

    def _pause(self) -> RunStatus:
        waiting = [
            s
            for s, st in self.conductor.state.steps.items()
            if st.status in (StepStatus.WAITING, StepStatus.UNKNOWN)
        ]
        self.audit("run.paused", waiting=waiting)
        self.credentials.release()
        return RunStatus.WAITING

    def _finish(self, status: RunStatus) -> RunStatus:
        self.credentials.release()
        state = self.conductor.state
        error = None
        if status is not RunStatus.SUCCEEDED:
            error = state.reason or self.kill_reason
        self.audit(
            "run.finished", status=status.value, reason=error, touched=self.conductor.touched()
        )
        now = self.services.clock.now()
        key = self.prepared.concurrency_key
        if key and not self.prepared.request.dry_run:
            self.services.store.release_lock(key, self.run_id)
            if self.runbook.policy.cooldown:
                self.services.store.set_cooldown(key, now + self.runbook.policy.cooldown)
        self.save(finished=now, error=error)
        self.on_progress("run.finished", {"status": status.value, "reason": error})
        return status

    def _stop_unaudited(self, exc: AuditWriteError) -> None:
        """The audit log cannot be written: stop acting, keep the run resumable.

        Everything applied to the state was audited first, so the state is
        saved as it stands; work in flight is cut off and becomes ``unknown``
        on resume (its outcome could not be recorded).
        """
        self._cancel_all(f"audit log unwritable: {exc.message}")
        self._drain(DRAIN_GRACE)
        self.credentials.abandon()
        self.save(
            status=RunStatus.WAITING.value,
            error=f"stopped: {exc.message}; fix the audit log, then: runbook resume {self.run_id}",
        )

    def _drain(self, grace: float) -> None:
        deadline = self.services.clock.monotonic() + grace
        while self.in_flight and self.services.clock.monotonic() < deadline:
            try:
                item = self.done.get(timeout=0.1)
            except queue.Empty:
                continue
            self.in_flight.discard(item.step_id)


def _kill_request(store: Any, run_id: str) -> Mapping[str, Any]:
    """The run's kill columns, without reading its state where the store allows it."""
    fields = getattr(store, "run_fields", None)
    if fields is None:
        return store.get_run(run_id)  # type: ignore[no-any-return]
    return fields(run_id, "kill_requested", "kill_by", "kill_reason")  # type: ignore[no-any-return]


def _moves(decision: cd.Decision) -> bool:
    """Whether a decision handed out or changed anything."""
    return bool(
        decision.start
        or decision.retry
        or decision.rollback
        or decision.cancel
        or decision.approvals
        or decision.changes
    )
