"""Shared pieces for the engine's in-process tests (imported by test_engine_*.py).

The engine runs against the real ``SqliteStore`` and ``JsonlAudit`` in
``tmp_path``; actions are the real ``log`` and ``wait`` runners or a
``Scripted`` runner that answers from a list and records what it was asked,
so no test here starts a process. The kit holds no tests itself.
"""

from __future__ import annotations

import json
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from executor import engine
from executor.actions.log import LogRunner
from executor.actions.wait import WaitRunner
from executor.audit import JsonlAudit
from executor.catalog import check_file
from executor.config import Identity
from executor.engine.services import SystemClock
from executor.model import Runbook, RunStatus
from executor.ports import ActionRequest, ActionResult, CancelToken
from executor.store import SqliteStore

HEADER = """\
apiVersion: runbook/v1
kind: Runbook
metadata: {{name: {name}, version: 1.0.0}}
"""

IDENTITIES = {
    "alice": Identity("alice", frozenset({"sre"})),
    "bob": Identity("bob", frozenset({"sre"})),
    "carol": Identity("carol", frozenset({"sre", "dba"})),
    "mallory": Identity("mallory", frozenset({"marketing"})),
}


def write_runbook(directory: Path, body: str, *, name: str = "t") -> tuple[Runbook, str]:
    """Validate a runbook the way the CLI does; returns it and its exact text."""
    text = HEADER.format(name=name) + textwrap.dedent(body)
    path = directory / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    entry = check_file(path)
    errors = [str(i) for i in entry.issues if i.severity == "error"]
    assert not errors and entry.runbook is not None, errors
    return entry.runbook, text


class OffsetClock(SystemClock):
    """The real clock, moved forward on demand (approval expiry without waiting)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass
class Scripted:
    """An ``ActionRunner`` answering from ``results`` (per step, in attempt order).

    ``hook(request, token)`` runs first and may act on the world (engage the
    kill-switch, break the audit log) or wait for the token. Every request is
    recorded in ``calls`` (step ids, in order) and ``requests``.
    """

    kind: str = "local"
    results: dict[str, list[ActionResult]] = field(default_factory=dict)
    hook: Callable[[ActionRequest, CancelToken], ActionResult | None] | None = None
    calls: list[str] = field(default_factory=list)
    requests: list[ActionRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, request: ActionRequest, cancel: CancelToken) -> ActionResult:
        with self.lock:
            self.calls.append(request.step_id)
            self.requests.append(request)
        if self.hook is not None:
            answer = self.hook(request, cancel)
            if answer is not None:
                return answer
        queue = self.results.get(request.step_id)
        if queue:
            return queue.pop(0) if len(queue) > 1 else queue[0]
        command = getattr(request.action, "command", "")
        return ActionResult(ok=True, rc=0, stdout=request.mask(f"ran {command}"))


@dataclass
class World:
    """One executor's services on files in a temporary directory."""

    root: Path
    services: engine.Services
    store: SqliteStore
    audit: JsonlAudit
    clock: OffsetClock
    progress: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def on_progress(self, event: str, data: Mapping[str, Any]) -> None:
        self.progress.append((event, dict(data)))

    def start(
        self,
        book: Runbook,
        text: str | None = None,
        *,
        inputs: Mapping[str, Any] | None = None,
        actor: str = "alice",
        wait_for_people: bool = False,
        dry_run: bool = False,
    ) -> tuple[str, RunStatus]:
        request = engine.RunRequest(
            runbook=book,
            inputs=dict(inputs or {}),
            actor=actor,
            runbook_text=text,
            dry_run=dry_run,
        )
        return engine.start(
            self.services, request, on_progress=self.on_progress, wait_for_people=wait_for_people
        )

    def events(self, run_id: str | None = None) -> list[str]:
        return [r.event for r in self.audit.records(run_id)]

    def records(self, run_id: str | None = None, event: str | None = None) -> list[Any]:
        return [r for r in self.audit.records(run_id) if event is None or r.event == event]

    def state(self, run_id: str) -> dict[str, Any]:
        return self.store.get_run(run_id)["state"]

    def step_status(self, run_id: str) -> dict[str, str]:
        return {sid: rec["status"] for sid, rec in self.state(run_id)["steps"].items()}

    def raw_bytes(self) -> bytes:
        """Every byte the executor wrote: audit, head, the database and its WAL."""
        self.store.close()
        return b"".join(p.read_bytes() for p in sorted(self.root.iterdir()) if p.is_file())


def make_world(
    root: Path,
    *,
    runners: Mapping[str, Any] | None = None,
    max_parallel_steps: int = 8,
    credentials: Any = None,
) -> World:
    clock = OffsetClock()
    store = SqliteStore(root / "state.db")
    audit = JsonlAudit(root / "audit.jsonl")
    all_runners: dict[str, Any] = {"log": LogRunner(), "wait": WaitRunner()}
    all_runners.update(runners or {})
    services = engine.Services(
        store=store,
        audit=audit,
        runners=all_runners,
        clock=clock,
        identities=IDENTITIES,
        max_parallel_steps=max_parallel_steps,
        poll_interval=0.02,
        credentials=credentials,
    )
    return World(root, services, store, audit, clock)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    made = make_world(tmp_path)
    yield made
    made.store.close()


def in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run ``target`` in a thread; the dict gets ``result`` or ``error``."""
    box: dict[str, Any] = {}

    def body() -> None:
        try:
            box["result"] = target()
        except BaseException as exc:  # handed to the test
            box["error"] = exc

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, box


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"condition not met within {timeout}s")


def dumps(value: Any) -> str:
    return json.dumps(value, default=str)
