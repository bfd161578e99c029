"""The engine's own overhead per step, with the real audit log (fsync) and state store.

    .venv/bin/python bench/bench_engine.py [--steps 1000] [--repeat 3] [--dir /path] [--profile]

Two graphs of ``log`` steps run through ``executor.engine.start`` with
``JsonlAudit`` (fsync on every record, head file included) and ``SqliteStore``
(WAL, ``synchronous=FULL``) in a temporary directory: a chain (each step needs
the one before) and a wide graph (no edges: every step is ready at once, the
engine bounds how many run together). The same steps are then called in a
plain loop (``LogRunner.run`` directly); the difference per step is what the
engine costs: conductor, rendering, the durable intent and outcome records and
the state saved before each step starts. The median of ``--repeat`` runs is
reported, with where the time went: ``audit`` (appends, each fsynced before it
returns; the head file is replaced after the fsync), ``store`` (state saves,
each one durable SQLite transaction writing only the step records and history
entries that changed, and the kill-switch and kill-request reads), ``conductor``
(its ``handle`` and ``next``, undone through a journal of what they changed
when an event is refused) and ``engine_itself`` (the rest: rendering, masking,
the loop). The target is under 5 ms of overhead per step.

Durability is part of the figure on purpose: an engine that skipped the fsync
before an action would be faster and wrong. ``--dir`` puts the files on the
disk you care about (tmpfs hides the sync cost).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from executor import engine
from executor.actions.log import LogRunner
from executor.audit import JsonlAudit
from executor.engine.runner import RunExecution
from executor.engine.starting import prepare
from executor.model import LogAction, Runbook
from executor.ports import ActionRequest, CancelToken
from executor.store import SqliteStore

TARGET_MS = 5.0


def runbook(steps: int, *, chain: bool) -> Runbook:
    """``steps`` log steps; in a chain each needs the one before, else none needs any."""
    items: list[dict[str, Any]] = []
    for i in range(steps):
        item: dict[str, Any] = {"id": f"s{i}", "log": {"message": f"step {i} of {{{{ run.id }}}}"}}
        if chain and i:
            item["needs"] = [f"s{i - 1}"]
        items.append(item)
    data = {
        "apiVersion": "runbook/v1",
        "kind": "Runbook",
        "metadata": {"name": "bench-chain" if chain else "bench-wide", "version": "1.0.0"},
        "steps": items,
    }
    return Runbook.from_mapping(data, source="<bench>", sha256="0" * 64)


class Timed:
    """Delegates to ``target`` and adds the wall time of every call to ``spent[label]``."""

    def __init__(self, target: Any, label: str, spent: dict[str, float]) -> None:
        self._target, self._label, self._spent = target, label, spent

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not callable(value):
            return value

        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return value(*args, **kwargs)
            finally:
                self._spent[self._label] += time.perf_counter() - began

        return timed


def engine_seconds(
    book: Runbook, directory: Path, profile: cProfile.Profile | None
) -> tuple[float, dict[str, float]]:
    """Wall time of one run of ``book`` through the engine, and where it went."""
    spent: dict[str, float] = {"audit": 0.0, "store": 0.0, "conductor": 0.0}
    store = SqliteStore(directory / "state.db")
    services = engine.Services(
        store=Timed(store, "store", spent),  # type: ignore[arg-type]
        audit=Timed(JsonlAudit(directory / "audit.jsonl"), "audit", spent),  # type: ignore[arg-type]
        runners={"log": LogRunner()},
    )
    request = engine.RunRequest(runbook=book, inputs={}, actor="bench")
    began = time.perf_counter()
    if profile is not None:
        profile.enable()
    prepared = prepare(services, request)
    execution = RunExecution(services, book, prepared)
    execution.conductor = Timed(execution.conductor, "conductor", spent)  # type: ignore[assignment]
    status = execution.run()
    if profile is not None:
        profile.disable()
    took = time.perf_counter() - began
    store.close()
    if status.value != "succeeded":
        raise SystemExit(f"the benchmark run ended {status.value}, not succeeded")
    return took, spent


def loop_seconds(book: Runbook) -> float:
    """The same log actions called one after another, nothing else."""
    runner, token = LogRunner(), CancelToken()
    requests = [
        ActionRequest(
            run_id="bench",
            step_id=step.id,
            action=LogAction(message=step.action.message),  # type: ignore[union-attr]
        )
        for step in book.steps
    ]
    began = time.perf_counter()
    for request in requests:
        runner.run(request, token)
    return time.perf_counter() - began


def measure(steps: int, repeat: int, scratch: Path, profile: bool) -> dict[str, Any]:
    figures: dict[str, Any] = {"steps": steps, "repeat": repeat, "target_ms_per_step": TARGET_MS}
    profiler = cProfile.Profile() if profile else None
    for shape in ("chain", "wide"):
        book = runbook(steps, chain=shape == "chain")
        engine_runs, plain_runs, parts = [], [], []
        for attempt in range(repeat):
            directory = scratch / f"{shape}-{attempt}"
            directory.mkdir()
            took, spent = engine_seconds(book, directory, profiler)
            engine_runs.append(took)
            parts.append(spent)
            plain_runs.append(loop_seconds(book))
        middle = engine_runs.index(statistics.median_low(engine_runs))
        per_step = engine_runs[middle] / steps * 1000
        plain = statistics.median(plain_runs) / steps * 1000
        breakdown = {k: round(v / steps * 1000, 3) for k, v in parts[middle].items()}
        breakdown["engine_itself"] = round(per_step - sum(breakdown.values()), 3)
        figures[shape] = {
            "engine_ms_per_step": round(per_step, 3),
            "plain_loop_ms_per_step": round(plain, 4),
            "overhead_ms_per_step": round(per_step - plain, 3),
            "within_target": per_step - plain < TARGET_MS,
            "of_which_ms_per_step": breakdown,
        }
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where the files go")
    parser.add_argument("--profile", action="store_true", help="print a cProfile summary")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-engine-", dir=args.dir) as scratch:
        figures = measure(args.steps, args.repeat, Path(scratch), args.profile)
    print(json.dumps(figures, indent=2))
    missed = [s for s in ("chain", "wide") if not figures[s]["within_target"]]
    if missed:
        raise SystemExit(f"engine overhead above {TARGET_MS} ms per step for: {', '.join(missed)}")


if __name__ == "__main__":
    main()
