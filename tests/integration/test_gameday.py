"""Game days against the real sandbox, through `runbook gameday`.

A drill kills demoapp on web2: Prometheus detects it, Alertmanager posts to the
`runbook serve` the drill started, the routed runbook restarts the service,
and the report's timings are the differences of the audit log's timestamps.
A second drill, on a `runbook serve` that already runs, runs out of time
waiting for an approval nobody gives: it is stopped at its deadline, and its
cleanup still kills the run and repairs the host, and leaves the server it
did not start running.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_serve_support import serve

from executor.audit import iter_records, verify
from executor.cli import main
from executor.gameday.auditfacts import ACTION_KINDS, parse_ts
from executor.sandbox import SandboxInfo
from executor.sandbox.alerting import AlertingInfo, ensure
from executor.sandbox.services import service_pid

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def serve_pids(audit_log: Path) -> list[int]:
    return [r.data["pid"] for r in iter_records(audit_log) if r.event == "serve.started"]


@pytest.fixture
def alerting(sandbox: SandboxInfo, tmp_path: Path) -> Iterator[AlertingInfo]:
    """Prometheus and Alertmanager up; afterwards no `runbook serve` of a drill may be left."""
    info = ensure(sandbox)
    yield info
    leftovers = []
    for audit_log in tmp_path.rglob("audit.jsonl"):
        for pid in serve_pids(audit_log):
            if (
                Path(f"/proc/{pid}").exists()
                and b"executor" in Path(f"/proc/{pid}/cmdline").read_bytes()
            ):
                os.kill(pid, signal.SIGKILL)  # the drill's cleanup failed: do not leak it
                leftovers.append(pid)
    assert not leftovers, f"the drill left `runbook serve` running: {leftovers}"
    assert not listening(info.serve_port)


def gameday(
    capsys: pytest.CaptureFixture[str], sandbox: SandboxInfo, plan: Path, out: Path, *extra: str
) -> tuple[int, dict[str, Any]]:
    argv = [
        "--home",
        str(out.parent / "cli-home"),
        "--catalog",
        str(REPO / "runbooks"),
        "gameday",
        str(plan),
        "--sandbox-dir",
        str(sandbox.state_dir),
        "--out",
        str(out),
        "--json",
        *extra,
    ]
    with pytest.raises(SystemExit) as done:
        main(argv)
    captured = capsys.readouterr()
    try:
        return int(done.value.code or 0), json.loads(captured.out)
    except ValueError:
        raise AssertionError(f"no JSON report:\n{captured.out}\n{captured.err}") from None


def test_a_killed_service_is_detected_and_remediated_and_timed_from_the_audit(
    sandbox: SandboxInfo,
    alerting: AlertingInfo,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "drill"
    code, report = gameday(
        capsys, sandbox, REPO / "gamedays" / "web2-demoapp-killed.yaml", out, "--timeout", "90s"
    )
    assert code == 0 and report["passed"], report["reasons"]
    audit_log = out / "home" / "audit.jsonl"
    assert verify(audit_log).ok
    records = list(iter_records(audit_log))

    # The timings are differences of audit timestamps, computed here independently.
    def ts(predicate: Any) -> float:
        return parse_ts(next(r for r in records if predicate(r)).ts)

    run_id = report["run"]["id"]
    injected = ts(lambda r: r.event == "gameday.fault_injected")
    detected = ts(
        lambda r: (
            r.event == "alerts.received"
            and any(
                a["status"] == "firing"
                and a["labels"].get("alertname") == "DemoappDown"
                and a["labels"].get("host") == "web2"
                for a in r.data["alerts"]
            )
        )
    )
    first_action = ts(
        lambda r: r.run_id == run_id and r.event == "step.intent" and r.data["kind"] in ACTION_KINDS
    )
    mitigated = ts(lambda r: r.event == "gameday.recovered")
    finished = ts(lambda r: r.run_id == run_id and r.event == "run.finished")
    expected = {
        "detect": detected - injected,
        "first_action": first_action - injected,
        "mitigate": mitigated - injected,
        "run_finished": finished - injected,
    }
    for name, seconds in expected.items():
        assert report["timings"][name] == pytest.approx(seconds, abs=1e-5), name
    assert 0 < expected["detect"] <= expected["first_action"] <= expected["mitigate"]
    markdown = (out / "report.md").read_text()
    for label, name in (
        ("Time to detect", "detect"),
        ("Time to first action", "first_action"),
        ("Time to mitigate", "mitigate"),
    ):
        shown = re.search(rf"\| {label} \| ([0-9.]+) s \|", markdown)
        assert shown and float(shown[1]) == pytest.approx(expected[name], abs=0.0005), label

    # The real pipeline did it: the alert started the run, unattended, and it succeeded.
    requested = next(r for r in records if r.run_id == run_id and r.event == "run.requested")
    assert requested.actor == "alertmanager" and requested.data["trigger"] == "alert"
    assert requested.runbook.startswith("restart-crashlooping-service@")
    assert report["run"]["status"] == "succeeded"
    assert all(c["final"] for c in report["checks"]) and len(report["checks"]) == 3
    # Prometheus and Alertmanager were asked, and their answers are on the timeline.
    sources = {e["source"] for e in report["timeline"]}
    assert {"audit", "prometheus", "alertmanager"} <= sources
    page = (out / "report.html").read_text()
    assert "<svg" in page and "PASSED" in page

    # Cleanup: the host is as it was, the drill's server is gone.
    web2 = sandbox.host("web2")
    assert service_pid(web2, "demoapp") is not None
    assert httpx.get(f"http://127.0.0.1:{web2.app_port}/health", timeout=5).status_code == 200
    assert not listening(alerting.serve_port)

    # `runbook report` reads the same store and audit log.
    with pytest.raises(SystemExit) as done:
        main(["--home", str(out / "home"), "report", "--json"])
    stats = json.loads(capsys.readouterr().out)
    assert done.value.code == 0
    (restart,) = stats["runbooks"]
    assert restart["runbook"] == "restart-crashlooping-service"
    assert restart["by_status"] == {"succeeded": 1} and restart["success_rate"] == 1.0
    took = first_action - parse_ts(requested.ts)
    assert restart["time_to_first_action"]["median"] == pytest.approx(took, abs=1e-5)


DEADLINE_PLAN = """\
apiVersion: runbook/v1
kind: GameDay
metadata: {{name: nobody-approves}}
fault: {{host: web1, inject: fill-disk}}
start: {{via: direct, runbook: disk-pressure, inputs: {{host: web1}}}}
checks:
  - name: health
    http: {{host: web1, path: /health, contains: ok}}
timeout: 8s
server: {{url: "{url}", home: "{home}", token_env: GAMEDAY_TEST_TOKEN}}
"""


def test_a_drill_that_runs_out_of_time_still_cleans_up_and_spares_a_reused_server(
    sandbox: SandboxInfo,
    alerting: AlertingInfo,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GAMEDAY_TEST_TOKEN", alerting.token("operator"))
    home = tmp_path / "serve-home"
    with serve(
        home,
        REPO / "runbooks",
        alerting.serve_config,
        port=alerting.serve_port,
        env=sandbox.env(),
    ) as server:
        plan = tmp_path / "plan.yaml"
        plan.write_text(DEADLINE_PLAN.format(url=server.url, home=home))
        out = tmp_path / "drill"
        code, report = gameday(capsys, sandbox, plan, out)
        assert server.proc.poll() is None  # not the drill's to stop
    assert code == 1 and not report["passed"]
    assert report["ended"] == "deadline"
    reasons = "\n".join(report["reasons"])
    assert "hard time limit of 8.000 s" in reasons
    assert f"run {report['run']['id']} ended cancelled, expected succeeded" in reasons
    events = [e["event"] for e in report["timeline"]]
    assert "approval.requested" in events  # it stopped where it waited
    assert events.index("gameday.deadline") < events.index("gameday.run_killed")
    assert events.index("gameday.run_killed") < events.index("gameday.cleanup")
    requested = next(e for e in report["timeline"] if e["event"] == "run.requested")
    assert "trigger api" in requested["summary"]
    # Repaired: the data disk is no longer full, demoapp answers ok again.
    web1 = sandbox.host("web1")
    health = httpx.get(f"http://127.0.0.1:{web1.app_port}/health", timeout=5)
    assert health.status_code == 200 and "ok" in health.text
    assert report["audit"]["path"] == str(home / "audit.jsonl")
    assert verify(home / "audit.jsonl").ok
