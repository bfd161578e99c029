"""The drill's HTTP clients: `runbook serve`'s API, Prometheus and Alertmanager.

Every call has a short timeout so the drill's hard deadline holds even when
a server hangs; a failure becomes a ``GamedayError`` that names the server,
the call and what to check.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

import httpx

from executor.errors import RunbookError

CALL_TIMEOUT = 5.0


class GamedayError(RunbookError):
    """The drill could not do what the plan asks (a server refused or did not answer)."""


def _fail(
    what: str, exc: Exception | None = None, response: httpx.Response | None = None
) -> NoReturn:
    """Raise the failure of one call: the server's own error and hint when it gave them."""
    if response is None:
        raise GamedayError(f"{what}: {exc}", hint="is the server running? see its log")
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        detail = body.get("error") or body.get("detail") or response.text
        raise GamedayError(
            f"{what}: HTTP {response.status_code}: {str(detail)[:300]}", hint=body.get("hint")
        )
    raise GamedayError(f"{what}: HTTP {response.status_code}: {response.text[:300]}")


class ServeApi:
    """`runbook serve`'s HTTP API as the drill uses it; ``tokens`` maps identities to tokens."""

    def __init__(self, url: str, tokens: Mapping[str, str], driver: str) -> None:
        self.url = url.rstrip("/")
        self._tokens = dict(tokens)
        self.driver = driver
        self._client = httpx.Client(timeout=CALL_TIMEOUT)

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, path: str, who: str | None = None, **kwargs: Any) -> Any:
        token = self._tokens[who or self.driver]
        what = f"{method} {self.url}{path} as {who or self.driver}"
        try:
            response = self._client.request(
                method, self.url + path, headers={"Authorization": f"Bearer {token}"}, **kwargs
            )
        except httpx.HTTPError as exc:
            _fail(what, exc)
        if response.status_code >= 400:
            _fail(what, response=response)
        try:
            return response.json()
        except ValueError as exc:
            _fail(f"{what}: the answer is not JSON", exc)

    def ready(self) -> bool:
        try:
            return self._client.get(self.url + "/readyz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def alerts(self, limit: int = 200) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._call("GET", f"/v1/alerts?limit={limit}")
        return found

    def start(self, runbook: str, inputs: Mapping[str, Any], who: str) -> str:
        body = {"runbook": runbook, "inputs": dict(inputs)}
        started = self._call("POST", "/v1/runs", who, json=body)
        return str(started["run_id"])

    def run(self, run_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self._call("GET", f"/v1/runs/{run_id}")
        return found

    def decide(
        self, run_id: str, step: str, who: str, *, approve: bool, reason: str | None
    ) -> dict[str, Any]:
        verb = "approve" if approve else "deny"
        body = {"reason": reason or f"game day: {verb}d by {who}"}
        answer: dict[str, Any] = self._call(
            "POST", f"/v1/runs/{run_id}/steps/{step}/{verb}", who, json=body
        )
        return answer

    def kill(self, run_id: str, reason: str) -> None:
        self._call("POST", f"/v1/runs/{run_id}/kill", json={"reason": reason})


class Observatory:
    """Prometheus and Alertmanager, read-only: alert states and instant queries."""

    def __init__(self, prometheus_url: str, alertmanager_url: str) -> None:
        self.prometheus_url = prometheus_url.rstrip("/")
        self.alertmanager_url = alertmanager_url.rstrip("/")
        self._client = httpx.Client(timeout=CALL_TIMEOUT)

    def close(self) -> None:
        self._client.close()

    def _get(self, url: str, params: Any = None) -> Any:
        try:
            response = self._client.get(url, params=params)
        except httpx.HTTPError as exc:
            _fail(f"GET {url}", exc)
        if response.status_code >= 400:
            _fail(f"GET {url}", response=response)
        try:
            return response.json()
        except ValueError as exc:
            _fail(f"GET {url}: the answer is not JSON", exc)

    def active_alerts(self, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """Alertmanager's active alerts carrying ``labels`` (resolved ones are not listed)."""
        filters = [f'{k}="{_quote(v)}"' for k, v in labels.items()]
        found: list[dict[str, Any]] = self._get(
            self.alertmanager_url + "/api/v2/alerts", params={"filter": filters}
        )
        return [a for a in found if (a.get("status") or {}).get("state") != "suppressed"]

    def rule_alerts(self, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """Prometheus's pending and firing alerts carrying ``labels``."""
        data = self._get(self.prometheus_url + "/api/v1/alerts")
        alerts = (data.get("data") or {}).get("alerts") or []
        return [a for a in alerts if all(a["labels"].get(k) == v for k, v in labels.items())]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The series an instant query returns (an error for a query Prometheus refuses)."""
        data = self._get(self.prometheus_url + "/api/v1/query", params={"query": promql})
        if data.get("status") != "success":
            raise GamedayError(f"Prometheus refused the query {promql!r}: {data.get('error')}")
        result: list[dict[str, Any]] = data["data"]["result"]
        return result

    def get(self, url: str) -> httpx.Response:
        """A plain GET for an http check; transport errors are raised as httpx raises them."""
        return self._client.get(url, timeout=2.0)


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
