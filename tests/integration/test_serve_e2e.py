"""The whole chain, for real: a sandbox service breaks, Prometheus fires, Alertmanager
posts to `runbook serve`, the routed runbook repairs it unattended, the alert resolves,
and the audit holds every link with the alert's fingerprint.

Two shipped runbooks at once: ``restart-crashlooping-service`` for a killed demoapp
(DemoappDown) and ``clear-stuck-queue`` for a worker that died holding its lock
(DemoappQueueStuck).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from test_serve_support import REPO, serve, wait_for

from executor.audit import iter_records, verify
from executor.sandbox import SandboxInfo, inject
from executor.sandbox.alerting import ensure
from executor.sandbox.services import service_pid

pytestmark = pytest.mark.integration

CASES = {
    # alertname: (host, fault, runbook)
    "DemoappDown": ("web3", "kill", "restart-crashlooping-service"),
    "DemoappQueueStuck": ("db1", "stick-queue", "clear-stuck-queue"),
}


def alerts(server: Any, token: str) -> list[dict[str, Any]]:
    return server.call("GET", "/v1/alerts?limit=200", token).json()


def first(rows: list[dict[str, Any]], **wanted: Any) -> dict[str, Any] | None:
    for row in reversed(rows):  # oldest first
        if all(row.get(k) == v or row["labels"].get(k) == v for k, v in wanted.items()):
            return row
    return None


def test_alerts_from_prometheus_are_remediated_unattended(
    sandbox: SandboxInfo, tmp_path: Path
) -> None:
    alerting = ensure(sandbox)  # Prometheus and Alertmanager join the session's world
    operator = alerting.token("operator")
    env = sandbox.env()
    with serve(
        tmp_path / "home",
        REPO / "runbooks",
        alerting.serve_config,
        port=alerting.serve_port,
        env=env,
    ) as server:
        try:
            for host, fault, _ in CASES.values():
                inject(sandbox, host, fault)
            runs: dict[str, dict[str, Any]] = {}
            for name, (host, _, runbook) in CASES.items():
                started = wait_for(
                    lambda n=name, h=host: first(
                        alerts(server, operator), alertname=n, host=h, disposition="started"
                    ),
                    60,
                    f"{name} on {host} starting a run",
                    server,
                )
                (decision,) = started["decisions"]
                assert decision["runbook"].startswith(runbook + "@")
                runs[name] = {"alert": started, "run_id": decision["run_id"]}
            for name, item in runs.items():
                run = wait_for(
                    lambda r=item["run_id"]: (
                        lambda view: view if view["status"] not in ("pending", "running") else None
                    )(server.call("GET", f"/v1/runs/{r}", operator).json()),
                    120,
                    f"the {name} run ending",
                    server,
                )
                assert run["status"] == "succeeded", (run.get("summary"), run["steps"])
                assert run["trigger"] == "alert" and run["actor"] == "alertmanager"
                item["run"] = run
            # Repaired for real, as the hosts see it.
            assert service_pid(sandbox.host("web3"), "demoapp") is not None
            assert service_pid(sandbox.host("db1"), "worker") is not None
            for name, (host, _, _) in CASES.items():
                fingerprint = runs[name]["alert"]["fingerprint"]
                resolved = wait_for(
                    lambda fp=fingerprint: first(
                        alerts(server, operator), fingerprint=fp, status="resolved"
                    ),
                    60,
                    f"{name} on {host} resolving",
                    server,
                )
                assert resolved["disposition"] == "resolved"
                runs[name]["resolved"] = resolved
                view = server.call("GET", f"/v1/runs/{runs[name]['run_id']}", operator).json()
                assert view["alert"]["fingerprint"] == fingerprint
                assert view["alert"]["resolved"] is True
        finally:
            for host, _, _ in CASES.values():
                inject(sandbox, host, "repair-all")
        metrics = httpx.get(server.url + "/metrics").text
    audit_log = tmp_path / "home" / "audit.jsonl"
    assert verify(audit_log).ok
    records = list(iter_records(audit_log))
    for item in runs.values():
        assert_chain(records, item["alert"]["fingerprint"], item["run_id"])
    assert (
        'runbook_runs_finished_total{runbook="restart-crashlooping-service",status="succeeded"}'
        in metrics
    )
    assert "runbook_time_to_first_action_seconds_count" in metrics


def assert_chain(records: list[Any], fingerprint: str, run_id: str) -> None:
    """received (firing) -> decided (started, run id) -> run.requested (fingerprint) ->
    remote commands -> run.finished (succeeded) -> received (resolved) -> decided (resolved)."""

    def index(predicate: Any, after: int = -1) -> int:
        for i, record in enumerate(records):
            if i > after and predicate(record):
                return i
        raise AssertionError(f"no audit record after #{after} for {fingerprint} / {run_id}")

    def has_alert(record: Any, status: str) -> bool:
        return any(
            a["fingerprint"] == fingerprint and a["status"] == status
            for a in record.data.get("alerts", [])
        )

    def decided(record: Any, disposition: str) -> bool:
        return any(
            a["fingerprint"] == fingerprint
            and any(d["disposition"] == disposition for d in a["decisions"])
            for a in record.data.get("alerts", [])
        )

    received = index(lambda r: r.event == "alerts.received" and has_alert(r, "firing"))
    requested = index(
        lambda r: (
            r.event == "run.requested"
            and r.run_id == run_id
            and r.data["alert"]["fingerprint"] == fingerprint
        ),
        received,
    )
    routed = index(lambda r: r.event == "alerts.decided" and decided(r, "started"), received)
    assert routed > requested  # the decision is recorded once the run exists
    command = index(lambda r: r.event == "ssh.host.started" and r.run_id == run_id, requested)
    finished = index(lambda r: r.event == "run.finished" and r.run_id == run_id, command)
    assert records[finished].data["status"] == "succeeded"
    resolved = index(lambda r: r.event == "alerts.received" and has_alert(r, "resolved"), requested)
    index(lambda r: r.event == "alerts.decided" and decided(r, "resolved"), resolved)
