"""Every guardrail of alert-started runs, through the server, with the reason audited."""

from __future__ import annotations

import threading
from pathlib import Path

from test_server_support import alert, auth, running, wait_until


def decisions(world, alert_id: int) -> list[dict]:
    return world.store.get_alert(alert_id)["decisions"]


def post_one(world, *args, **kwargs) -> int:
    answer = world.post(alert(*args, **kwargs))
    assert answer.status_code == 200, answer.text
    world.settle()
    return answer.json()["alert_ids"][0]


def audited_decision(world, alert_id: int) -> dict:
    for record in reversed(world.events("alerts.decided")):
        for item in record.data["alerts"]:
            if item["alert_id"] == alert_id:
                return item["decisions"][0]
    raise AssertionError(f"alert {alert_id} has no audited decision")


def test_an_auto_runbook_starts_and_succeeds_with_the_alert_in_its_audit(tmp_path: Path) -> None:
    with running(tmp_path) as world:
        alert_id = post_one(world, "Echo", "web1")
        (decision,) = decisions(world, alert_id)
        assert decision["disposition"] == "started"
        run = world.store.get_run(decision["run_id"])
        assert run["status"] == "succeeded"
        assert run["trigger"] == "alert" and run["actor"] == "alertmanager"
        assert run["inputs"] == {"host": "web1"}
        requested = [r for r in world.audit.records(run["id"]) if r.event == "run.requested"]
        assert (
            requested[0].data["alert"]["fingerprint"]
            == world.store.get_alert(alert_id)["fingerprint"]
        )
        assert requested[0].data["alert"]["route"] == "echo"
        assert audited_decision(world, alert_id)["run_id"] == run["id"]


def test_the_same_fingerprint_does_not_start_a_second_run(tmp_path: Path) -> None:
    with running(tmp_path) as world:
        first = post_one(world, "Echo", "web1")
        again = post_one(world, "Echo", "web1")  # Alertmanager re-sends a firing alert
        assert decisions(world, first)[0]["disposition"] == "started"
        (second,) = decisions(world, again)
        assert second["disposition"] == "deduplicated"
        assert "cooldown" in second["reason"]  # the first run ended; echo-host cools down 1h
        assert len(world.runs("echo-host")) == 1
        assert audited_decision(world, again)["disposition"] == "deduplicated"


def test_the_same_concurrency_key_does_not_start_a_second_run(tmp_path: Path) -> None:
    with running(tmp_path) as world:
        post_one(world, "Echo", "web1")
        # Another alert (another fingerprint) for the same host: same key, cooling down.
        other = post_one(world, "Echo", "web1", fingerprint="0123456789abcdef")
        (decision,) = decisions(world, other)
        assert decision["disposition"] == "deduplicated"
        assert "echo-host:web1" in decision["reason"]
        assert post_one(world, "Echo", "web2") and len(world.runs("echo-host")) == 2


def test_an_active_run_deduplicates_while_it_waits(tmp_path: Path) -> None:
    with running(tmp_path) as world:
        first = post_one(world, "Gated", "web1")
        run_id = decisions(world, first)[0]["run_id"]
        assert world.store.get_run(run_id)["status"] == "waiting"
        again = post_one(world, "Gated", "web1")
        (decision,) = decisions(world, again)
        assert decision["disposition"] == "deduplicated"
        assert run_id in decision["reason"] and "active" in decision["reason"]


def test_a_manual_runbook_is_only_suggested(tmp_path: Path) -> None:
    with running(tmp_path) as world:
        alert_id = post_one(world, "Manual", "web1")
        (decision,) = decisions(world, alert_id)
        assert decision["disposition"] == "suggested"
        assert "policy.automation: manual" in decision["reason"]
        assert world.runs() == []


def test_a_route_may_lower_the_automation_level(tmp_path: Path) -> None:
    with running(tmp_path) as world:
        alert_id = post_one(world, "Lowered", "web1")
        (decision,) = decisions(world, alert_id)
        assert decision["disposition"] == "suggested"
        assert "lowers it to manual" in decision["reason"]
        assert world.runs() == []


def test_approval_mode_without_an_approval_step_is_only_suggested(tmp_path: Path) -> None:
    with running(tmp_path) as world:
        (decision,) = decisions(world, post_one(world, "NoGate", "web1"))
        assert decision["disposition"] == "suggested"
        assert "no approval step" in decision["reason"]


def test_an_approval_runbook_starts_waits_and_continues_when_approved(tmp_path: Path) -> None:
    with running(tmp_path) as world:
        (decision,) = decisions(world, post_one(world, "Gated", "web1"))
        run_id = decision["run_id"]
        run = world.store.get_run(run_id)
        assert run["status"] == "waiting"
        assert run["state"]["steps"]["look"]["status"] == "succeeded"
        assert run["state"]["steps"]["fix"]["status"] == "pending"
        assert world.runtime.pool.counts() == (0, 0)  # a waiting run holds no worker
        answer = world.client.post(
            f"/v1/runs/{run_id}/steps/approve/approve",
            json={"reason": "looks right"},
            headers=auth("oscar"),
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["approvals"] == 1 and answer.json()["quorum"] == 1
        wait_until(lambda: world.store.get_run(run_id)["status"] == "succeeded")
        granted = [r for r in world.audit.records(run_id) if r.event == "approval.granted"]
        assert granted[0].actor == "oscar"


def test_a_denied_approval_fails_the_run(tmp_path: Path) -> None:
    with running(tmp_path) as world:
        run_id = decisions(world, post_one(world, "Gated", "web1"))[0]["run_id"]
        denied = world.client.post(
            f"/v1/runs/{run_id}/steps/approve/deny",
            json={"reason": "not now"},
            headers=auth("oscar"),
        )
        assert denied.status_code == 200, denied.text
        wait_until(lambda: world.store.get_run(run_id)["status"] == "failed")
        assert world.store.get_run(run_id)["state"]["steps"]["fix"]["status"] == "skipped"


def test_an_approval_recorded_by_another_process_is_picked_up(tmp_path: Path) -> None:
    """The CLI writes the decision straight to the store; the watcher resumes the run."""
    from executor.config import Identity
    from executor.engine import approvals, stored_runbook

    with running(tmp_path) as world:
        run_id = decisions(world, post_one(world, "Gated", "web1"))[0]["run_id"]
        services = world.runtime.services
        book = stored_runbook(world.store.get_run(run_id))
        approvals.decide(
            services,
            book,
            run_id,
            "approve",
            approver=Identity("cli-user", frozenset({"oncall"})),
            approve=True,
        )
        wait_until(lambda: world.store.get_run(run_id)["status"] == "succeeded")


def test_only_approver_groups_may_approve(tmp_path: Path) -> None:
    with running(tmp_path) as world:
        run_id = decisions(world, post_one(world, "Gated", "web1"))[0]["run_id"]
        url = f"/v1/runs/{run_id}/steps/approve/approve"
        assert world.client.post(url, headers=auth("vera")).status_code == 403  # no permission
        assert world.client.post(url, headers=auth("alertmanager")).status_code == 403
        assert world.client.post(url).status_code == 401
        assert world.store.get_run(run_id)["status"] == "waiting"
        assert world.store.get_approvals(run_id) == []


def test_a_resolved_alert_starts_nothing_and_names_pending_approvals(tmp_path: Path) -> None:
    with running(tmp_path) as world:
        run_id = decisions(world, post_one(world, "Gated", "web1"))[0]["run_id"]
        resolved = post_one(world, "Gated", "web1", status="resolved")
        (decision,) = decisions(world, resolved)
        assert decision["disposition"] == "resolved"
        assert run_id in decision["reason"] and "approve" in decision["reason"]
        assert decision["detail"]["pending_approvals"][0]["steps"] == ["approve"]
        note = [r for r in world.audit.records(run_id) if r.event == "alert.resolved"]
        assert note and note[0].data["waiting_steps"] == ["approve"]
        view = world.client.get(f"/v1/runs/{run_id}", headers=auth("vera")).json()
        assert view["alert"]["resolved"] is True
        assert len(world.runs("gated")) == 1
        # A resolved alert with nothing pending starts nothing either.
        (quiet,) = decisions(world, post_one(world, "Echo", "web5", status="resolved"))
        assert quiet["disposition"] == "resolved" and world.runs("echo-host") == []


def test_the_kill_switch_refuses_everything_and_is_audited(tmp_path: Path) -> None:
    with running(tmp_path) as world:
        engaged = world.client.post(
            "/v1/killswitch/engage", json={"reason": "game day"}, headers=auth("olive")
        )
        assert engaged.status_code == 200, engaged.text
        for name in ("Echo", "Gated", "Storm"):
            alert_id = post_one(world, name, "web7", shard="a")
            (decision,) = decisions(world, alert_id)
            assert decision["disposition"] == "refused"
            assert "kill-switch" in decision["reason"] and "game day" in decision["reason"]
        assert world.runs() == []
        metrics = world.client.get("/metrics").text
        assert 'runbook_killswitch_engaged{scope="*"} 1.0' in metrics
        released = world.client.post("/v1/killswitch/release", headers=auth("olive"))
        assert released.status_code == 200
        assert decisions(world, post_one(world, "Echo", "web7"))[0]["disposition"] == "started"


def test_a_per_runbook_kill_switch_refuses_only_that_runbook(tmp_path: Path) -> None:
    with running(tmp_path) as world:
        world.client.post(
            "/v1/killswitch/engage",
            json={"reason": "bad echo", "runbook": "echo-host"},
            headers=auth("olive"),
        )
        assert decisions(world, post_one(world, "Echo", "web1"))[0]["disposition"] == "refused"
        started = decisions(world, post_one(world, "Storm", "web1", shard="a"))[0]
        assert started["disposition"] == "started"


def test_the_budget_counts_hosts_across_runs_whatever_started_them(tmp_path: Path) -> None:
    with running(tmp_path) as world:
        # A person starts one through the API: it counts against the same budget.
        answer = world.client.post(
            "/v1/runs",
            json={"runbook": "budgeted", "inputs": {"host": "alpha"}},
            headers=auth("olive"),
        )
        assert answer.status_code == 202, answer.text
        assert decisions(world, post_one(world, "Budget", "beta"))[0]["disposition"] == "started"
        # The same host again is no new blast radius.
        assert decisions(world, post_one(world, "Budget", "alpha"))[0]["disposition"] == "started"
        (refused,) = decisions(world, post_one(world, "Budget", "gamma"))
        assert refused["disposition"] == "refused"
        assert "budget of budgeted exceeded" in refused["reason"]
        assert "alpha, beta" in refused["reason"] and "gamma" in refused["reason"]
        # Past the budget a person is refused too, and that is audited.
        again = world.client.post(
            "/v1/runs",
            json={"runbook": "budgeted", "inputs": {"host": "delta"}},
            headers=auth("olive"),
        )
        assert again.status_code == 409
        assert "budget" in again.json()["error"]
        refusals = world.events("run.refused")
        assert refusals[-1].actor == "olive" and "budget" in refusals[-1].data["reason"]


def test_alert_labels_that_are_not_valid_inputs_are_refused(tmp_path: Path) -> None:
    with running(tmp_path) as world:
        (decision,) = decisions(world, post_one(world, "Echo", "web1; rm -rf /"))
        assert decision["disposition"] == "refused"
        assert "do not make valid inputs" in decision["reason"]
        assert world.runs() == []


def test_rate_limits_per_route_and_global_suppress_the_rest(tmp_path: Path) -> None:
    with running(tmp_path) as world:
        # storm-a allows 3 runs, storm-b 4; the global limit is 50: routes bind first.
        ids = []
        for shard in ("a", "b"):
            for i in range(8):
                answer = world.post(alert("Storm", f"h{shard}{i}", shard=shard))
                ids += answer.json()["alert_ids"]
        world.settle()
        kinds = [decisions(world, i)[0]["disposition"] for i in ids]
        assert kinds[:8].count("started") == 3 and kinds[8:].count("started") == 4
        assert kinds.count("suppressed") == 9
        suppressed = [
            decisions(world, i)[0]
            for i in ids
            if decisions(world, i)[0]["disposition"] == "suppressed"
        ]
        assert all("rate limit of route storm-" in d["reason"] for d in suppressed)
        assert len(world.runs("storm")) == 7


def test_the_global_rate_limit_binds_all_routes_together(tmp_path: Path) -> None:
    from executor.triggers import parse_routes

    with running(tmp_path) as world:
        table = world.runtime.routes.table()
        tight = parse_routes(
            (tmp_path / "catalog" / "routes.yaml").read_text().replace("runs: 50", "runs: 5"),
            lookup=world.runtime.catalog.runbook,
        )
        world.runtime.routes._table = tight  # the same routes, a global limit of 5
        world.runtime.routes.path = None
        ids = []
        for shard in ("a", "b"):
            for i in range(4):
                ids += world.post(alert("Storm", f"g{shard}{i}", shard=shard)).json()["alert_ids"]
        world.settle()
        chosen = [decisions(world, i)[0] for i in ids]
        assert [d["disposition"] for d in chosen].count("started") == 5
        global_limited = [d for d in chosen if d.get("detail", {}).get("limit") == "global"]
        assert global_limited and "all routes together" in global_limited[0]["reason"]
        assert table.rate is not None and table.rate.runs == 50


def test_concurrent_posts_start_exactly_the_allowed_runs(tmp_path: Path) -> None:
    with running(tmp_path) as world:
        errors: list[str] = []

        def post(shard: str, i: int) -> None:
            answer = world.post(alert("Storm", f"c{shard}{i}", shard=shard))
            if answer.status_code != 200:
                errors.append(answer.text)

        threads = [
            threading.Thread(target=post, args=(shard, i)) for shard in "ab" for i in range(20)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        world.settle()
        assert len(world.runs("storm")) == 7
        assert world.store.count_alerts() == 40
        decided = [a for r in world.events("alerts.decided") for a in r.data["alerts"]]
        assert len(decided) == 40
