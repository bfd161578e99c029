"""The wait and log actions, and the registry of runners that need no configuration."""

from __future__ import annotations

import threading
import time

import pytest

from executor.actions import default_runners
from executor.actions.log import LogRunner
from executor.actions.wait import WaitRunner
from executor.errors import ActionError
from executor.model import LocalAction, LogAction, WaitAction
from executor.ports import ActionRequest, ActionRunner, CancelToken


def wait_request(duration: float, **kwargs: object) -> ActionRequest:
    return ActionRequest(run_id="r", step_id="settle", action=WaitAction(duration), **kwargs)  # type: ignore[arg-type]


def test_wait_sleeps_its_duration() -> None:
    started = time.monotonic()
    result = WaitRunner().run(wait_request(0.2), CancelToken())
    elapsed = time.monotonic() - started
    assert result.ok and result.data == {"waited": 0.2}
    assert 0.2 <= elapsed < 0.5


def test_wait_returns_within_100ms_of_cancel() -> None:
    cancel = CancelToken()
    cancelled_at: list[float] = []

    def fire() -> None:
        cancelled_at.append(time.monotonic())
        cancel.cancel("kill-switch engaged by alice")

    timer = threading.Timer(0.2, fire)
    timer.start()
    try:
        result = WaitRunner().run(wait_request(30), cancel)
        returned = time.monotonic()
    finally:
        timer.cancel()
    assert returned - cancelled_at[0] < 0.1
    assert result.cancelled and not result.ok
    assert result.error == "cancelled during a 30s wait: kill-switch engaged by alice"


def test_wait_longer_than_the_step_timeout_times_out() -> None:
    started = time.monotonic()
    result = WaitRunner().run(wait_request(30, timeout=0.1), CancelToken())
    assert time.monotonic() - started < 0.5
    assert result.timed_out and not result.ok
    assert "timed out after 100ms" in (result.error or "")


def test_wait_dry_run_does_not_wait() -> None:
    started = time.monotonic()
    result = WaitRunner().run(wait_request(30, dry_run=True), CancelToken())
    assert time.monotonic() - started < 0.1
    assert result.ok and result.data == {"dry_run": True, "would_wait": 30}


class _RecordingClock:
    """A clock that does not sleep, for rehearsals: the runner must ask it, not time.sleep."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    def now(self) -> float:
        return 0.0

    def monotonic(self) -> float:
        return sum(self.slept)

    def sleep(self, seconds: float, cancel: CancelToken | None = None) -> bool:
        self.slept.append(seconds)
        return False


def test_wait_uses_the_given_clock() -> None:
    clock = _RecordingClock()
    started = time.monotonic()
    result = WaitRunner(clock=clock).run(wait_request(600), CancelToken())
    assert time.monotonic() - started < 0.1
    assert result.ok and clock.slept == [600]


def test_wait_rejects_another_action_kind() -> None:
    request = ActionRequest(run_id="r", step_id="s", action=LogAction("x"))
    with pytest.raises(ActionError, match="wait runner got a 'log' action"):
        WaitRunner().run(request, CancelToken())


def log_request(message: str, **kwargs: object) -> ActionRequest:
    return ActionRequest(
        run_id="r",
        step_id="note",
        action=LogAction(message),
        mask=lambda t: t.replace("hunter2", "***"),
        **kwargs,  # type: ignore[arg-type]
    )


def test_log_reports_the_masked_message() -> None:
    result = LogRunner().run(log_request("restarting web1 with password hunter2"), CancelToken())
    assert result.ok and result.stdout == "restarting web1 with password ***"
    assert result.data == {}


def test_log_succeeds_in_a_dry_run() -> None:
    result = LogRunner().run(log_request("hello", dry_run=True), CancelToken())
    assert result.ok and result.stdout == "hello" and result.data == {"dry_run": True}


def test_log_rejects_another_action_kind() -> None:
    request = ActionRequest(run_id="r", step_id="s", action=LocalAction("true"))
    with pytest.raises(ActionError, match="log runner got a 'local' action"):
        LogRunner().run(request, CancelToken())


def test_default_runners_cover_the_local_kinds() -> None:
    runners = default_runners()
    assert set(runners) == {"local", "http", "wait", "log"}
    for kind, runner in runners.items():
        assert isinstance(runner, ActionRunner) and runner.kind == kind
