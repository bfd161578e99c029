"""An alert storm: 10,000 alerts posted concurrently to a real `runbook serve`.

Two routes with their own rate limits (3 and 4 runs per hour) under a global one
(5 per hour): exactly 5 runs start, the other 9,995 alerts are recorded as
suppressed with the limit that stopped them, and the audit holds every alert,
received and decided, in an intact chain. Requests answered 503 (backlog full)
are retried, as Alertmanager does.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import yaml
from test_serve_support import free_port, serve, token_entry, wait_for

from executor.audit import iter_records, verify
from executor.store import SqliteStore

pytestmark = pytest.mark.integration

ALERTS = 10_000
PER_REQUEST = 5
CLIENTS = 32
TOKEN = "storm-alertmanager-token-0123456789"
READER = "storm-reader-token-0123456789"

RUNBOOK = """\
apiVersion: runbook/v1
kind: Runbook
metadata: {name: storm-fix, version: 1.0.0}
inputs:
  host: {type: string, pattern: "^[a-z0-9-]+$"}
policy:
  automation: auto
  concurrency: {key: "{{ inputs.host }}", limit: 1}
steps:
  - id: note
    log: {message: "fixing {{ inputs.host }}"}
"""
ROUTES = """\
apiVersion: runbook/v1
kind: Routes
rate: {runs: 5, per: 1h}
routes:
  - name: shard-a
    match: ['alertname = Storm', 'shard = a']
    runbook: storm-fix
    inputs: {host: "{{ alert.labels.host }}"}
    rate: {runs: 3, per: 1h}
  - name: shard-b
    match: ['alertname = Storm', 'shard = b']
    runbook: storm-fix
    inputs: {host: "{{ alert.labels.host }}"}
    rate: {runs: 4, per: 1h}
"""


def one(i: int) -> dict:
    labels = {"alertname": "Storm", "host": f"h{i}", "shard": "ab"[i % 2]}
    return {
        "status": "firing",
        "labels": labels,
        "annotations": {},
        "startsAt": "2026-01-01T00:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": hashlib.sha256(f"storm{i}".encode()).hexdigest()[:16],
    }


def body(start: int) -> bytes:
    alerts = [one(i) for i in range(start, start + PER_REQUEST)]
    return json.dumps(
        {"version": "4", "status": "firing", "receiver": "rb", "groupKey": "g", "alerts": alerts}
    ).encode()


@pytest.fixture
def world(tmp_path: Path) -> Path:
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    (catalog / "storm-fix.yaml").write_text(RUNBOOK)
    (catalog / "routes.yaml").write_text(ROUTES)
    config = {
        "workers": 4,
        "max_queue": 2000,  # smaller than the storm: some requests meet a full backlog
        "tokens": [
            token_entry("alertmanager", TOKEN, ["alertmanager"]),
            token_entry("reader", READER, ["viewers"]),
        ],
        "permissions": {"read": ["viewers"], "alerts": ["alertmanager"]},
    }
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


def test_a_storm_starts_exactly_the_allowed_runs_and_loses_nothing(world: Path) -> None:
    port = free_port()
    with serve(world / "home", world / "catalog", world / "serve.yaml", port=port) as server:
        starts = list(range(0, ALERTS, PER_REQUEST))
        lock = threading.Lock()
        statuses: Counter[int] = Counter()
        failures: list[str] = []

        def client() -> None:
            with httpx.Client(base_url=server.url, timeout=60) as http:
                while True:
                    with lock:
                        if not starts:
                            return
                        start = starts.pop()
                    for _attempt in range(200):
                        answer = http.post(
                            "/v1/alerts/alertmanager",
                            content=body(start),
                            headers={
                                "Authorization": f"Bearer {TOKEN}",
                                "Content-Type": "application/json",
                            },
                        )
                        with lock:
                            statuses[answer.status_code] += 1
                        if answer.status_code == 200:
                            break
                        if answer.status_code != 503:
                            failures.append(answer.text)
                            return
                        time.sleep(float(answer.headers.get("retry-after", "1")) / 10)
                    else:
                        failures.append(f"alerts {start}+ never accepted")

        began = time.monotonic()
        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        posted = time.monotonic() - began
        assert failures == []
        assert statuses[200] == ALERTS // PER_REQUEST
        store = SqliteStore(world / "home" / "state.db")
        try:
            wait_for(
                lambda: store.count_alerts(stage="queued") == 0, 120, "every alert decided", server
            )
            decided = time.monotonic() - began
            assert store.count_alerts() == ALERTS
            runs = store.list_runs(limit=100)
            assert len(runs) == 5
            rows = store.list_alerts(limit=ALERTS + 10)
            dispositions = Counter(r["disposition"] for r in rows)
            assert dispositions == {"started": 5, "suppressed": ALERTS - 5}
            limits = Counter(
                r["decisions"][0]["detail"]["limit"]
                for r in rows
                if r["disposition"] == "suppressed"
            )
            assert set(limits) <= {"route", "global"} and limits["global"] > 0
            wait_for(
                lambda: all(r["status"] == "succeeded" for r in store.list_runs(limit=100)),
                60,
                "the five runs ending",
                server,
            )
        finally:
            store.close()
        metrics = httpx.get(server.url + "/metrics").text
    assert f'runbook_alerts_received_total{{status="firing"}} {float(ALERTS)}' in metrics
    audit = world / "home" / "audit.jsonl"
    report = verify(audit)
    assert report.ok, report.reason
    received: set[str] = set()
    decided_ids: set[int] = set()
    requested = 0
    for record in iter_records(audit):
        if record.event == "alerts.received":
            received.update(a["fingerprint"] for a in record.data["alerts"])
        elif record.event == "alerts.decided":
            decided_ids.update(a["alert_id"] for a in record.data["alerts"])
        elif record.event == "run.requested":
            requested += 1
    assert len(received) == ALERTS
    assert len(decided_ids) == ALERTS
    assert requested == 5
    print(
        f"\n{ALERTS} alerts: posted in {posted:.1f}s, all decided after {decided:.1f}s; "
        f"answers {dict(statuses)}"
    )
