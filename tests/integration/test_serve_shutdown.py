"""SIGTERM: the server stops taking work, lets executing runs finish within its grace,
exits, and the next server resumes what was cut off (in-flight steps become unknown)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from test_serve_support import free_port, serve, token_entry, wait_for

from executor.audit import iter_records

pytestmark = pytest.mark.integration

OPERATOR = "shutdown-operator-token-0123456789"

RUNBOOK = """\
apiVersion: runbook/v1
kind: Runbook
metadata: {{name: {name}, version: 1.0.0}}
inputs:
  host: {{type: string}}
policy:
  automation: auto
steps:
  - id: pause
    wait: {{duration: {seconds}s}}
  - id: after
    needs: [pause]
    log: {{message: "done"}}
"""


def world(tmp_path: Path, grace: str) -> Path:
    catalog = tmp_path / "catalog"
    catalog.mkdir(exist_ok=True)
    (catalog / "slow.yaml").write_text(RUNBOOK.format(name="slow", seconds=60))
    (catalog / "brief.yaml").write_text(RUNBOOK.format(name="brief", seconds=2))
    config = {
        "shutdown_grace": grace,
        "tokens": [token_entry("olive", OPERATOR, ["operators"])],
        "permissions": {p: ["operators"] for p in ("read", "run", "kill", "approve")},
    }
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(config))
    return catalog


def start_run(server, runbook: str) -> str:
    answer = server.call(
        "POST", "/v1/runs", OPERATOR, json={"runbook": runbook, "inputs": {"host": "h"}}
    )
    assert answer.status_code == 202, answer.text
    run_id = answer.json()["run_id"]
    wait_for(lambda: step(server, run_id, "pause") == "running", 30, f"{runbook} pausing", server)
    return run_id


def step(server, run_id: str, step_id: str) -> str | None:
    view = server.call("GET", f"/v1/runs/{run_id}", OPERATOR).json()
    return next((s["status"] for s in view.get("steps", []) if s["step"] == step_id), None)


def test_a_run_that_ends_within_the_grace_finishes_before_the_exit(tmp_path: Path) -> None:
    catalog = world(tmp_path, "20s")
    port = free_port()
    with serve(tmp_path / "home", catalog, tmp_path / "serve.yaml", port=port) as server:
        run_id = start_run(server, "brief")
        assert server.stop() == 0
    records = list(iter_records(tmp_path / "home" / "audit.jsonl"))
    finished = [r for r in records if r.event == "run.finished" and r.run_id == run_id]
    assert finished and finished[0].data["status"] == "succeeded"
    stopped = [r for r in records if r.event == "serve.stopped"]
    assert stopped[-1].data["unfinished"] == []


def test_a_run_cut_off_by_the_exit_is_resumed_by_the_next_server(tmp_path: Path) -> None:
    catalog = world(tmp_path, "1s")
    port = free_port()
    home = tmp_path / "home"
    with serve(home, catalog, tmp_path / "serve.yaml", port=port) as server:
        run_id = start_run(server, "slow")
        began = time.monotonic()
        assert server.stop() == 0
        took = time.monotonic() - began
    assert took < 20, f"SIGTERM took {took:.1f}s with a 1s grace"
    stopped = [r for r in iter_records(home / "audit.jsonl") if r.event == "serve.stopped"]
    assert stopped[-1].data["unfinished"] == [run_id]
    with serve(home, catalog, tmp_path / "serve.yaml", port=port) as server:
        wait_for(lambda: step(server, run_id, "pause") == "unknown", 30, "the step unknown", server)
        view = server.call("GET", f"/v1/runs/{run_id}", OPERATOR).json()
        assert view["status"] == "waiting"
        assert step(server, run_id, "after") == "pending"  # never run twice, never skipped over
    events = [r.event for r in iter_records(home / "audit.jsonl", run_id=run_id)]
    assert "run.recovered" in events and events.count("step.intent") == 1


def test_the_port_is_refused_once_the_server_has_exited(tmp_path: Path) -> None:
    import httpx

    catalog = world(tmp_path, "1s")
    port = free_port()
    with serve(tmp_path / "home", catalog, tmp_path / "serve.yaml", port=port) as server:
        assert server.stop() == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(server.url + "/healthz", timeout=2)
