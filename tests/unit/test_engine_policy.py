"""Start-time policy and dry runs: inputs, concurrency, cooldown, and touching nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_engine_kit import Scripted, World, make_world, write_runbook

from executor import engine
from executor.engine.plan import dry_run_plan
from executor.errors import PolicyRefused, UsageError
from executor.model import RunStatus

KEYED = """\
inputs:
  host: {type: string, pattern: "^[a-z0-9.-]+$"}
  threshold: {type: integer, default: 90, minimum: 50, maximum: 99}
  mode: {type: string, enum: [fast, safe], default: safe}
policy:
  concurrency: {key: "{{ inputs.host }}", limit: 1}
  cooldown: 10m
steps:
  - id: approve
    approval: {message: "go?", approvers: [sre]}
  - id: act
    needs: [approve]
    local: {command: "clean {{ inputs.host }}"}
"""


@pytest.fixture
def scripted(tmp_path: Path) -> tuple[World, Scripted]:
    runner = Scripted()
    made = make_world(tmp_path, runners={"local": runner})
    yield made, runner
    made.store.close()


def test_invalid_inputs_list_every_problem_and_start_nothing(scripted, tmp_path) -> None:
    world, runner = scripted
    book, text = write_runbook(tmp_path, KEYED)
    with pytest.raises(UsageError) as caught:
        world.start(book, text, inputs={"host": "Web 1;rm", "threshold": "120", "mode": "yolo"})
    message = str(caught.value)
    assert "host: 'Web 1;rm' does not match the pattern" in message
    assert "threshold: 120 must be at most 99" in message
    assert "mode: 'yolo' must be one of fast, safe" in message
    assert world.store.list_runs() == []
    assert world.events() == ["run.requested", "run.refused"]
    assert runner.calls == []


def test_an_unknown_input_is_refused_with_a_suggestion(scripted, tmp_path) -> None:
    world, _ = scripted
    book, text = write_runbook(tmp_path, KEYED)
    with pytest.raises(UsageError, match="unknown input 'hots'; did you mean 'host'"):
        world.start(book, text, inputs={"hots": "web1"})
    with pytest.raises(UsageError, match="host: required"):
        world.start(book, text, inputs={})


def test_the_concurrency_limit_refuses_a_second_run_on_the_same_key(scripted, tmp_path) -> None:
    world, _ = scripted
    book, text = write_runbook(tmp_path, KEYED.replace("  cooldown: 10m\n", ""))
    first, status = world.start(book, text, inputs={"host": "web1"})
    assert status is RunStatus.WAITING
    with pytest.raises(
        PolicyRefused, match=f"already has 1 run\\(s\\) active for 't:web1' \\({first}\\)"
    ):
        world.start(book, text, inputs={"host": "web1"})
    _, status = world.start(book, text, inputs={"host": "web2"})  # another key is free
    assert status is RunStatus.WAITING
    refused = world.records(event="run.refused")[0]
    assert refused.data["error"] == "PolicyRefused"
    engine.kill(world.services, first, actor="bob", reason="done")  # ends: the slot frees
    assert world.start(book, text, inputs={"host": "web1"})[1] is RunStatus.WAITING


def test_the_cooldown_refuses_a_new_run_soon_after_the_last(scripted, tmp_path) -> None:
    world, _ = scripted
    book, text = write_runbook(
        tmp_path,
        KEYED.replace(
            '  - id: approve\n    approval: {message: "go?", approvers: [sre]}\n', ""
        ).replace("    needs: [approve]\n", ""),
    )
    _, status = world.start(book, text, inputs={"host": "web1"})
    assert status is RunStatus.SUCCEEDED
    with pytest.raises(PolicyRefused, match=r"cooling down for 't:web1'.*next run allowed in"):
        world.start(book, text, inputs={"host": "web1"})
    world.clock.advance(11 * 60)
    assert world.start(book, text, inputs={"host": "web1"})[1] is RunStatus.SUCCEEDED


class CountingCredentials:
    """A credential provider factory that must never be called by a dry run."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, run_id: str, ttl: float):
        self.calls += 1
        raise AssertionError("a dry run asked for a credential")


def test_a_dry_run_touches_nothing_and_is_recorded_as_one(tmp_path: Path) -> None:
    runner = Scripted()
    factory = CountingCredentials()
    world = make_world(tmp_path, runners={"local": runner}, credentials=factory)
    book, text = write_runbook(
        tmp_path,
        """\
        inputs:
          host: {type: string}
          token: {type: string, secret: true}
        policy:
          concurrency: {key: "{{ inputs.host }}", limit: 1}
          cooldown: 1h
        credentials:
          api: {vault_kv: {path: runbooks/web, key: token}}
        steps:
          - id: measure
            local: {command: "touch /tmp/would-be-created-{{ inputs.host }}"}
            outputs: {pct: "{{ result.stdout | int }}"}
          - id: gate
            needs: [measure]
            when: steps.measure.outputs.pct > 90
            approval: {message: "clean {{ inputs.host }}?", approvers: [sre], quorum: 2}
          - id: clean
            needs: [gate]
            local: {command: "clean --token {{ inputs.token }} --key {{ secrets.api }}"}
        """,
    )
    request = engine.RunRequest(
        runbook=book,
        inputs={"host": "web1", "token": "s3cr3t-value"},
        actor="alice",
        runbook_text=text,
    )
    plan = dry_run_plan(world.services, request)
    assert runner.calls == [] and factory.calls == 0
    steps = {item["step"]: item for item in plan["steps"]}
    assert steps["measure"]["action"]["command"] == "touch /tmp/would-be-created-web1"
    assert steps["gate"]["when"] == "steps.measure.outputs.pct > 90"
    assert "run time" in steps["gate"]["guard"]
    assert steps["gate"]["approval"] == "sre (quorum 2)"
    assert "s3cr3t" not in str(plan) and "note" in steps["clean"]
    row = world.store.get_run(plan["run_id"])
    assert row["dry_run"] is True and row["status"] == "succeeded"
    assert world.events(plan["run_id"]) == ["run.requested", "run.dry_run"]
    assert world.records(plan["run_id"], "run.requested")[0].data["dry_run"] is True
    # No lock and no cooldown: a real run may start right after.
    assert world.store.holders("t:web1") == [] and world.store.cooldown_until("t:web1") is None
    assert b"s3cr3t-value" not in world.raw_bytes()
