"""The runs, kill-switch, health and metrics API: authorisation, answers, audit."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_server_support import alert, auth, running, wait_until


def test_start_a_run_read_it_with_steps_timeline_and_audit(tmp_path: Path) -> None:
    with running(tmp_path) as world:
        answer = world.client.post(
            "/v1/runs",
            json={"runbook": "echo-host", "inputs": {"host": "web4"}},
            headers=auth("olive"),
        )
        assert answer.status_code == 202, answer.text
        run_id = answer.json()["run_id"]
        assert answer.json()["runbook"] == "echo-host@1.0.0"
        wait_until(lambda: world.store.get_run(run_id)["status"] == "succeeded")
        view = world.client.get(f"/v1/runs/{run_id}", headers=auth("vera"))
        assert view.status_code == 200
        body = view.json()
        assert body["actor"] == "olive" and body["trigger"] == "api"
        assert [s["step"] for s in body["steps"]] == ["say"]
        assert body["steps"][0]["status"] == "succeeded"
        assert {"from": "pending", "to": "running"}.items() <= body["timeline"][0].items()
        assert "runbook_text" not in body
        listed = world.client.get("/v1/runs?status=succeeded", headers=auth("vera")).json()
        assert [r["id"] for r in listed] == [run_id]
        assert "state" not in listed[0]
        audit = world.client.get(f"/v1/runs/{run_id}/audit", headers=auth("vera")).json()
        events = [r["event"] for r in audit["records"]]
        assert events[0] == "run.requested" and events[-1] == "run.finished"
        assert all(r["run_id"] == run_id for r in audit["records"])
        assert audit["records"][0]["actor"] == "olive"


@pytest.mark.parametrize(
    ("method", "url", "body", "allowed", "refused"),
    [
        ("post", "/v1/runs", {"runbook": "echo-host", "inputs": {"host": "w1"}}, "olive", "oscar"),
        ("post", "/v1/killswitch/engage", {"reason": "test"}, "olive", "vera"),
        ("get", "/v1/runs", None, "vera", "alertmanager"),
        ("get", "/v1/killswitch", None, "vera", "alertmanager"),
        ("get", "/v1/alerts", None, "vera", "alertmanager"),
    ],
)
def test_every_call_is_authorised(
    tmp_path: Path, method: str, url: str, body: dict | None, allowed: str, refused: str
) -> None:
    with running(tmp_path) as world:
        call = getattr(world.client, method)
        kwargs = {"json": body} if body is not None else {}
        assert call(url, **kwargs).status_code == 401
        assert (
            call(url, headers={"Authorization": "Bearer nope-nope-nope-nope"}, **kwargs).status_code
            == 401
        )
        forbidden = call(url, headers=auth(refused), **kwargs)
        assert forbidden.status_code == 403
        assert refused in forbidden.json()["error"]
        assert world.events("api.forbidden")[-1].actor == refused
        assert call(url, headers=auth(allowed), **kwargs).status_code in (200, 202)
        if allowed != "alertmanager":
            request = world.events("api.request")[-1]
            assert request.actor == allowed and request.data["path"] == url


def test_unknown_runs_runbooks_and_inputs_are_clear_errors(tmp_path: Path) -> None:
    with running(tmp_path) as world:
        missing = world.client.get("/v1/runs/r-nope", headers=auth("vera"))
        assert missing.status_code == 404 and "r-nope" in missing.json()["error"]
        assert world.client.get("/v1/runs/r-nope/audit", headers=auth("vera")).status_code == 404
        unknown = world.client.post("/v1/runs", json={"runbook": "nope"}, headers=auth("olive"))
        assert unknown.status_code == 404
        bad = world.client.post(
            "/v1/runs",
            json={"runbook": "echo-host", "inputs": {"host": "a b"}},
            headers=auth("olive"),
        )
        assert bad.status_code == 400 and "host" in bad.json()["error"]
        assert world.client.get("/v1/alerts/99", headers=auth("vera")).status_code == 404
        assert world.runs() == []


def test_kill_a_waiting_run(tmp_path: Path) -> None:
    with running(tmp_path) as world:
        alert_id = world.post(alert("Gated", "web1")).json()["alert_ids"][0]
        world.settle()
        run_id = world.store.get_alert(alert_id)["decisions"][0]["run_id"]
        assert world.store.get_run(run_id)["status"] == "waiting"
        refused = world.client.post(
            f"/v1/runs/{run_id}/kill", json={"reason": "x"}, headers=auth("oscar")
        )
        assert refused.status_code == 403
        killed = world.client.post(
            f"/v1/runs/{run_id}/kill", json={"reason": "wrong host"}, headers=auth("olive")
        )
        assert killed.status_code == 202, killed.text
        wait_until(lambda: world.store.get_run(run_id)["status"] == "cancelled")
        records = world.audit.records(run_id)
        asked = [r for r in records if r.event == "run.kill_requested"]
        assert asked and asked[0].actor == "olive"
        again = world.client.post(
            f"/v1/runs/{run_id}/kill", json={"reason": "x"}, headers=auth("olive")
        )
        assert again.status_code == 409 and "already ended" in again.json()["error"]


def test_kill_switch_engage_read_release(tmp_path: Path) -> None:
    with running(tmp_path) as world:
        bad = world.client.post("/v1/killswitch/engage", json={}, headers=auth("olive"))
        assert bad.status_code == 422 and "reason" in bad.json()["error"]
        world.client.post("/v1/killswitch/engage", json={"reason": "freeze"}, headers=auth("olive"))
        state = world.client.get("/v1/killswitch", headers=auth("vera")).json()
        assert state["engaged"][0]["scope"] == "*" and state["engaged"][0]["actor"] == "olive"
        started = world.client.post(
            "/v1/runs",
            json={"runbook": "echo-host", "inputs": {"host": "w1"}},
            headers=auth("olive"),
        )
        assert started.status_code == 409 and "kill-switch" in started.json()["error"]
        assert world.client.post("/v1/killswitch/release", headers=auth("olive")).status_code == 200
        twice = world.client.post("/v1/killswitch/release", headers=auth("olive"))
        assert twice.status_code == 409 and "not engaged" in twice.json()["error"]
        events = [r.event for r in world.audit.records() if r.event.startswith("killswitch.")]
        assert events == ["killswitch.engaged", "killswitch.released"]


def test_health_readiness_metrics_and_openapi_need_no_token(tmp_path: Path) -> None:
    with running(tmp_path) as world:
        assert world.client.get("/healthz").json() == {"status": "ok"}
        assert world.client.get("/readyz").json() == {"status": "ready"}
        world.post(alert("Echo", "web1"))
        world.settle()
        text = world.client.get("/metrics").text
        for name in (
            'runbook_runs_started_total{runbook="echo-host",trigger="alert"} 1.0',
            'runbook_runs_finished_total{runbook="echo-host",status="succeeded"} 1.0',
            'runbook_steps_total{action="log",status="succeeded"} 1.0',
            'runbook_alerts_received_total{status="firing"} 1.0',
            'runbook_alerts_matched_total{route="echo"} 1.0',
            "runbook_time_to_first_action_seconds_count",
            "runbook_approval_wait_seconds",
            "runbook_alerts_deduplicated_total",
            "runbook_alerts_suppressed_total",
            'runbook_killswitch_engaged{scope="*"} 0.0',
        ):
            assert name in text, name
        spec = world.client.get("/openapi.json").json()
        assert "/v1/alerts/alertmanager" in spec["paths"]
        assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
        webhook = spec["paths"]["/v1/alerts/alertmanager"]["post"]
        assert (
            "alerts"
            in webhook["requestBody"]["content"]["application/json"]["schema"]["properties"]
        )


def test_approval_wait_is_measured(tmp_path: Path) -> None:
    with running(tmp_path) as world:
        alert_id = world.post(alert("Gated", "web3")).json()["alert_ids"][0]
        world.settle()
        run_id = world.store.get_alert(alert_id)["decisions"][0]["run_id"]
        world.client.post(f"/v1/runs/{run_id}/steps/approve/approve", headers=auth("oscar"))
        wait_until(lambda: world.store.get_run(run_id)["status"] == "succeeded")
        text = world.client.get("/metrics").text
        assert 'runbook_approval_wait_seconds_count{runbook="gated"} 1.0' in text
