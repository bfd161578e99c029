"""Start and stop: nothing accepted is lost, interrupted runs are resumed."""

from __future__ import annotations

from pathlib import Path

from test_server_support import alert, auth, make_runtime, running, wait_until

from executor import engine
from executor.triggers import Alert


def test_a_run_waiting_for_approval_survives_a_restart(tmp_path: Path) -> None:
    with running(tmp_path) as first:
        alert_id = first.post(alert("Gated", "web1")).json()["alert_ids"][0]
        first.settle()
        run_id = first.store.get_alert(alert_id)["decisions"][0]["run_id"]
        assert first.store.get_run(run_id)["status"] == "waiting"
    with running(tmp_path) as second:
        assert run_id in second.runtime.recovered
        second.settle()
        assert second.store.get_run(run_id)["status"] == "waiting"
        answer = second.client.post(
            f"/v1/runs/{run_id}/steps/approve/approve", headers=auth("oscar")
        )
        assert answer.status_code == 200, answer.text
        wait_until(lambda: second.store.get_run(run_id)["status"] == "succeeded")
        events = [r.event for r in second.audit.records(run_id)]
        assert "run.resumed" in events and events.count("step.intent") == 2  # look, fix


def test_alerts_accepted_but_not_decided_are_decided_after_a_restart(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path)
    store = runtime.services.store
    pending = [
        Alert(
            fingerprint=f"f{i:015d}", status="firing", labels={"alertname": "Echo", "host": f"h{i}"}
        )
        for i in range(3)
    ]
    store.add_alerts([a.row(source="alertmanager") for a in pending])  # stored, then a crash
    assert store.count_alerts(stage="queued") == 3
    with running(tmp_path) as world:
        world.settle()
        assert store.count_alerts(stage="queued") == 0
        assert len(world.runs("echo-host")) == 3


def test_a_run_recorded_but_never_executed_is_executed_at_start(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path)
    runtime.catalog.refresh()
    book = runtime.catalog.runbook("echo-host")
    handed: list[str] = []
    runtime.starter.execute = lambda _book, prepared: handed.append(prepared.run_id)
    prepared = runtime.starter.start(book, {"host": "web1"}, actor="olive", trigger="api")
    assert handed == [prepared.run_id]  # the process "died" before a worker took it
    assert runtime.services.store.get_run(prepared.run_id)["status"] == "pending"
    with running(tmp_path) as world:
        assert prepared.run_id in world.runtime.recovered
        wait_until(lambda: world.store.get_run(prepared.run_id)["status"] == "succeeded")


def test_stopping_gives_executing_runs_a_grace_and_says_which_did_not_finish(
    tmp_path: Path,
) -> None:
    with running(tmp_path, shutdown_grace=0.3) as world:
        alert_id = world.post(alert("Slow", "web1")).json()["alert_ids"][0]
        wait_until(lambda: world.store.get_alert(alert_id)["stage"] == "decided")
        run_id = world.store.get_alert(alert_id)["decisions"][0]["run_id"]
        wait_until(
            lambda: (
                (world.store.get_run(run_id).get("state") or {})
                .get("steps", {})
                .get("pause", {})
                .get("status")
                == "running"
            )
        )
        unfinished = world.runtime.stop()
        assert unfinished == [run_id]
        stopped = world.events("serve.stopped")[-1]
        assert stopped.data["unfinished"] == [run_id]
        refused = world.post(alert("Echo", "web2"))
        assert refused.status_code == 503  # no new work once stopping
        # Let the test's stray worker go: the run is cancelled, not left running.
        engine.kill(world.runtime.services, run_id, actor="test", reason="cleanup")
        wait_until(lambda: world.store.get_run(run_id)["status"] == "cancelled")
        world.runtime.stop = lambda: []  # already stopped; the app's shutdown must not repeat it
