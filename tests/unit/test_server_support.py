"""A small world for the server's unit tests: a catalog, routes, tokens, an in-process app.

Imported by the ``test_server_*`` modules. Everything lives in ``tmp_path``;
runbooks only log and wait, so no host is touched. The app runs in-process
(FastAPI's TestClient), with the real store, audit log, dispatcher and pool.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from executor.config import load_settings
from executor.server import Runtime, create_app
from executor.server.config import DEFAULT_PERMISSIONS, ServerConfig, TokenEntry
from executor.wiring import build_services

RUNBOOKS = {
    "echo-host.yaml": """\
apiVersion: runbook/v1
kind: Runbook
metadata: {name: echo-host, version: 1.0.0}
inputs:
  host: {type: string, pattern: "^[a-z0-9.-]+$"}
policy:
  automation: auto
  concurrency: {key: "{{ inputs.host }}", limit: 1}
  cooldown: 1h
steps:
  - id: say
    log: {message: "hello {{ inputs.host }}"}
""",
    "storm.yaml": """\
apiVersion: runbook/v1
kind: Runbook
metadata: {name: storm, version: 1.0.0}
inputs:
  host: {type: string, pattern: "^[a-z0-9.-]+$"}
policy:
  automation: auto
steps:
  - id: say
    log: {message: "storm on {{ inputs.host }}"}
""",
    "hands-only.yaml": """\
apiVersion: runbook/v1
kind: Runbook
metadata: {name: hands-only, version: 1.0.0}
inputs:
  host: {type: string}
policy:
  automation: manual
steps:
  - id: say
    log: {message: "{{ inputs.host }}"}
""",
    "gated.yaml": """\
apiVersion: runbook/v1
kind: Runbook
metadata: {name: gated, version: 1.0.0}
inputs:
  host: {type: string, pattern: "^[a-z0-9.-]+$"}
policy:
  automation: approval
  concurrency: {key: "{{ inputs.host }}", limit: 1}
steps:
  - id: look
    log: {message: "looking at {{ inputs.host }}"}
  - id: approve
    needs: [look]
    approval: {message: "fix {{ inputs.host }}?", approvers: [oncall], quorum: 1, timeout: 1h}
  - id: fix
    needs: [approve]
    log: {message: "fixed {{ inputs.host }}"}
""",
    "no-gate.yaml": """\
apiVersion: runbook/v1
kind: Runbook
metadata: {name: no-gate, version: 1.0.0}
inputs:
  host: {type: string}
policy:
  automation: approval
steps:
  - id: say
    log: {message: "{{ inputs.host }}"}
""",
    "budgeted.yaml": """\
apiVersion: runbook/v1
kind: Runbook
metadata: {name: budgeted, version: 1.0.0}
inputs:
  host: {type: string, pattern: "^[a-z0-9]+$"}
targets:
  node: {hosts: "{{ inputs.host }}"}
policy:
  automation: auto
  budget: {hosts: 2, per: 1h}
steps:
  - id: say
    log: {message: "{{ inputs.host }}"}
""",
    "slow.yaml": """\
apiVersion: runbook/v1
kind: Runbook
metadata: {name: slow, version: 1.0.0}
inputs:
  host: {type: string}
policy:
  automation: auto
steps:
  - id: pause
    wait: {duration: 30s}
  - id: after
    needs: [pause]
    log: {message: "done {{ inputs.host }}"}
""",
}

ROUTES = """\
apiVersion: runbook/v1
kind: Routes
rate: {runs: 50, per: 1h}
routes:
  - name: echo
    match: ['alertname = Echo']
    runbook: echo-host
    inputs: {host: "{{ alert.labels.host }}"}
  - name: storm-a
    match: ['alertname = Storm', 'shard = a']
    runbook: storm
    inputs: {host: "{{ alert.labels.host }}"}
    rate: {runs: 3, per: 1h}
  - name: storm-b
    match: ['alertname = Storm', 'shard = b']
    runbook: storm
    inputs: {host: "{{ alert.labels.host }}"}
    rate: {runs: 4, per: 1h}
  - name: manual
    match: ['alertname = Manual']
    runbook: hands-only
    inputs: {host: "{{ alert.labels.host }}"}
  - name: gated
    match: ['alertname = Gated']
    runbook: gated
    inputs: {host: "{{ alert.labels.host }}"}
  - name: no-gate
    match: ['alertname = NoGate']
    runbook: no-gate
    inputs: {host: "{{ alert.labels.host }}"}
  - name: lowered
    match: ['alertname = Lowered']
    runbook: echo-host
    mode: manual
    inputs: {host: "{{ alert.labels.host }}"}
  - name: budgeted
    match: ['alertname = Budget']
    runbook: budgeted
    inputs: {host: "{{ alert.labels.host }}"}
  - name: slow
    match: ['alertname = Slow']
    runbook: slow
    inputs: {host: "{{ alert.labels.host }}"}
"""

TOKENS = {
    "alertmanager": ("am-token-aaaaaaaaaaaaaaaa", {"alertmanager"}),
    "olive": ("olive-token-bbbbbbbbbbbbbbbb", {"operators", "oncall"}),
    "oscar": ("oscar-token-cccccccccccccccc", {"oncall"}),
    "vera": ("vera-token-dddddddddddddddd", {"viewers"}),
}
PERMISSIONS = {
    **DEFAULT_PERMISSIONS,
    "read": frozenset({"operators", "oncall", "viewers"}),
    "approve": frozenset({"oncall", "operators"}),
    "run": frozenset({"operators"}),
    "kill": frozenset({"operators"}),
    "killswitch": frozenset({"operators"}),
}


def auth(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[who][0]}"}


class FakeInventory:
    """Every plain host name is a host of the inventory."""

    def resolve(self, pattern: str) -> list[str]:
        return [pattern] if pattern.isalnum() else []


def alert(
    name: str,
    host: str = "web1",
    *,
    status: str = "firing",
    fingerprint: str | None = None,
    **labels: str,
) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": name, "host": host, **labels},
        "annotations": {"summary": f"{name} on {host}"},
        "startsAt": "2026-01-01T00:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-01-01T00:05:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": fingerprint or hashlib.sha256(f"{name}/{host}".encode()).hexdigest()[:16],
    }


def payload(*alerts: Mapping[str, Any], status: str | None = None) -> dict[str, Any]:
    return {
        "version": "4",
        "status": status or alerts[0]["status"],
        "receiver": "runbook",
        "groupKey": '{}:{alertname="x"}',
        "truncatedAlerts": 0,
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager",
        "alerts": list(alerts),
    }


def write_catalog(root: Path) -> Path:
    catalog = root / "catalog"
    catalog.mkdir()
    for name, text in RUNBOOKS.items():
        (catalog / name).write_text(text)
    (catalog / "routes.yaml").write_text(ROUTES)
    return catalog


@dataclass
class World:
    runtime: Runtime
    client: TestClient

    @property
    def store(self) -> Any:
        return self.runtime.services.store

    @property
    def audit(self) -> Any:
        return self.runtime.services.audit

    def post(self, *alerts: Mapping[str, Any], who: str = "alertmanager") -> Any:
        return self.client.post("/v1/alerts/alertmanager", json=payload(*alerts), headers=auth(who))

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until every stored alert is decided and no run executes or waits for a worker."""
        wait_until(
            lambda: (
                self.store.count_alerts(stage="queued") == 0
                and self.runtime.pool.counts() == (0, 0)
            ),
            timeout,
        )

    def runs(self, runbook: str | None = None) -> list[dict[str, Any]]:
        return self.store.list_runs(limit=1000, runbook=runbook)

    def events(self, event: str) -> list[Any]:
        return [r for r in self.audit.records() if r.event == event]


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.02)


def make_config(**changes: Any) -> ServerConfig:
    tokens = tuple(
        TokenEntry(name, hashlib.sha256(token.encode()).hexdigest(), frozenset(groups))
        for name, (token, groups) in TOKENS.items()
    )
    base = ServerConfig(tokens=tokens, permissions=PERMISSIONS, poll_interval=0.1, workers=2)
    return replace(base, **changes)


def make_runtime(root: Path, **changes: Any) -> Runtime:
    catalog = root / "catalog"
    if not catalog.exists():
        write_catalog(root)
    settings = load_settings(home=root / "home", catalog=catalog, env={}, config_file=None)
    services = build_services(settings, env={})
    services.inventory = FakeInventory()
    services.poll_interval = 0.05
    return Runtime(settings, make_config(**changes), services)


@contextmanager
def running(root: Path, **changes: Any) -> Iterator[World]:
    """A started server (its threads stopped on exit, even when the test fails)."""
    runtime = make_runtime(root, **changes)
    with TestClient(create_app(runtime)) as client:
        yield World(runtime, client)
