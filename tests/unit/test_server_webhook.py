"""The Alertmanager webhook: authentication, validation, size, backpressure, durability."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_server_support import alert, auth, payload, running

from executor.server.intake import Overloaded


def test_an_accepted_alert_is_stored_and_audited_before_the_answer(tmp_path: Path) -> None:
    with running(tmp_path) as world:
        answer = world.post(alert("Unrouted", "web9"))
        assert answer.status_code == 200
        ids = answer.json()["alert_ids"]
        assert answer.json()["accepted"] == 1 and len(ids) == 1
        # Durable before the answer: the row and the audit record exist now.
        stored = world.store.get_alert(ids[0])
        assert stored["labels"]["host"] == "web9" and stored["source"] == "alertmanager"
        received = world.events("alerts.received")
        assert received[-1].actor == "alertmanager"
        assert received[-1].data["alerts"][0]["fingerprint"] == stored["fingerprint"]
        world.settle()
        decided = world.store.get_alert(ids[0])
        assert decided["disposition"] == "unmatched"
        assert "no route" in decided["decisions"][0]["reason"]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer not-a-token-of-this-server"}, 401),
        ({"Authorization": "Basic YWxpY2U6c2VjcmV0"}, 401),
        (auth("vera"), 403),  # a real identity, but not allowed to post alerts
        (auth("olive"), 403),  # operators may do much, not pose as Alertmanager
    ],
)
def test_the_webhook_needs_the_alertmanager_token(
    tmp_path: Path, headers: dict[str, str], status: int
) -> None:
    with running(tmp_path) as world:
        answer = world.client.post(
            "/v1/alerts/alertmanager", json=payload(alert("Echo")), headers=headers
        )
        assert answer.status_code == status
        assert answer.json()["error"]
        if status == 401:
            assert answer.headers["www-authenticate"] == "Bearer"
        assert world.store.count_alerts() == 0
        refused = world.events("api.forbidden")
        assert len(refused) == (1 if status == 403 else 0)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{not json", "not JSON"),
        (b"[]", "is not of type 'object'"),
        (json.dumps({"version": "4", "status": "firing"}).encode(), "'alerts' is a required"),
        (
            json.dumps(payload(alert("Echo")) | {"version": "3"}).encode(),
            "version",
        ),
        (
            json.dumps(payload({**alert("Echo"), "status": "burning"})).encode(),
            "alerts[0].status",
        ),
        (
            json.dumps(payload({**alert("Echo"), "labels": {}})).encode(),
            "alerts[0].labels",
        ),
        (
            json.dumps(payload({**alert("Echo"), "labels": {"bad-name": "x"}})).encode(),
            "alerts[0].labels",
        ),
        (
            json.dumps(payload({**alert("Echo"), "labels": {"host": 7}})).encode(),
            "alerts[0].labels.host",
        ),
    ],
)
def test_a_malformed_body_is_refused_with_the_reason_and_changes_nothing(
    tmp_path: Path, body: bytes, words: str
) -> None:
    with running(tmp_path) as world:
        answer = world.client.post(
            "/v1/alerts/alertmanager",
            content=body,
            headers={**auth("alertmanager"), "Content-Type": "application/json"},
        )
        assert answer.status_code == 400
        assert words in answer.json()["error"]
        assert world.store.count_alerts() == 0
        assert world.events("alerts.received") == []


def test_unknown_fields_from_newer_alertmanagers_are_accepted(tmp_path: Path) -> None:
    with running(tmp_path) as world:
        body = payload({**alert("Unrouted"), "silencedBy": [], "inhibitedBy": []})
        body["somethingNew"] = {"x": 1}
        answer = world.client.post(
            "/v1/alerts/alertmanager", json=body, headers=auth("alertmanager")
        )
        assert answer.status_code == 200


def test_an_oversized_body_is_refused_with_413_before_it_is_read(tmp_path: Path) -> None:
    with running(tmp_path, max_body=2048) as world:
        big = payload(*[alert("Unrouted", f"web{i}") for i in range(40)])
        answer = world.client.post(
            "/v1/alerts/alertmanager", json=big, headers=auth("alertmanager")
        )
        assert answer.status_code == 413
        assert "2048" in answer.json()["error"]

        def chunks():  # no Content-Length: the limit holds while reading
            data = json.dumps(big).encode()
            for start in range(0, len(data), 500):
                yield data[start : start + 500]

        answer = world.client.post(
            "/v1/alerts/alertmanager",
            content=chunks(),
            headers={**auth("alertmanager"), "Content-Type": "application/json"},
        )
        assert answer.status_code == 413
        assert world.store.count_alerts() == 0


def test_a_full_backlog_answers_503_so_alertmanager_retries(tmp_path: Path) -> None:
    with running(tmp_path, max_queue=3) as world:
        world.runtime.intake.decided(-10)  # pretend ten alerts still wait to be decided
        answer = world.post(alert("Unrouted", "web1"))
        assert answer.status_code == 503
        assert answer.headers["retry-after"]
        assert "max_queue 3" in answer.json()["error"]
        assert world.store.count_alerts() == 0
        world.runtime.intake.decided(10)
        assert world.post(alert("Unrouted", "web1")).status_code == 200


def test_the_backlog_counts_alerts_not_requests(tmp_path: Path) -> None:
    with running(tmp_path, max_queue=5) as world:
        intake = world.runtime.intake
        with pytest.raises(Overloaded):
            intake.submit([object()] * 6, "alertmanager")  # type: ignore[list-item]


def test_an_unwritable_audit_log_refuses_the_alert_with_503(tmp_path: Path) -> None:
    with running(tmp_path) as world:
        audit_path = world.audit.path
        audit_path.unlink()
        audit_path.mkdir()  # appending to a directory fails: the audit is fail-closed
        try:
            answer = world.post(alert("Echo", "web1"))
            assert answer.status_code == 503
            assert answer.headers["retry-after"]
            assert world.store.count_alerts() == 0
            ready = world.client.get("/readyz")
            assert ready.status_code == 503
            assert any("audit" in p for p in ready.json()["problems"])
        finally:
            audit_path.rmdir()
