"""The plan's checks, evaluated against the world: demoapp over HTTP, Prometheus, Alertmanager.

A check never raises: a server that does not answer is a failing check with
the reason as its detail, since "cannot tell" is not "healthy".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from executor.gameday.api import GamedayError, Observatory
from executor.gameday.plan import AlertResolvedCheck, Check, HttpCheck, PrometheusCheck
from executor.gameday.world import World

BODY_SHOWN = 80


@dataclass(frozen=True)
class Verdict:
    passed: bool
    detail: str


class Checker:
    """Evaluates checks; remembers which watched alerts were seen firing during the drill."""

    def __init__(self, checks: Sequence[Check], world: World, observatory: Observatory) -> None:
        self.checks = tuple(checks)
        self.world = world
        self.observatory = observatory
        self.fired: set[str] = set()

    def watch(self) -> None:
        """Note the alerts of ``alert_resolved`` checks that are active now."""
        for check in self.checks:
            if isinstance(check.probe, AlertResolvedCheck) and check.name not in self.fired:
                try:
                    if self._active(check.probe):
                        self.fired.add(check.name)
                except GamedayError:
                    pass  # asked again at the next turn; the check itself reports the error

    def evaluate(self, check: Check) -> Verdict:
        probe = check.probe
        try:
            if isinstance(probe, HttpCheck):
                return self._http(probe)
            if isinstance(probe, PrometheusCheck):
                return self._prometheus(probe)
            return self._alert_resolved(check.name, probe)
        except GamedayError as exc:
            return Verdict(False, exc.message)

    def evaluate_all(self) -> dict[str, Verdict]:
        return {check.name: self.evaluate(check) for check in self.checks}

    def url_of(self, probe: HttpCheck) -> str:
        if probe.url is not None:
            return probe.url
        assert probe.host is not None
        return self.world.app_url(probe.host).rstrip("/") + probe.path

    def _http(self, probe: HttpCheck) -> Verdict:
        url = self.url_of(probe)
        try:
            response = self.observatory.get(url)
        except httpx.HTTPError as exc:
            return Verdict(False, f"GET {url}: {type(exc).__name__}: {exc}")
        body = response.text
        shown = " ".join(body.split())[:BODY_SHOWN]
        if response.status_code not in probe.expect_status:
            wanted = ", ".join(str(s) for s in probe.expect_status)
            return Verdict(False, f"HTTP {response.status_code} (expected {wanted}): {shown}")
        if probe.contains is not None and probe.contains not in body:
            return Verdict(
                False, f"HTTP {response.status_code} without {probe.contains!r}: {shown}"
            )
        return Verdict(True, f"HTTP {response.status_code}: {shown}")

    def _prometheus(self, probe: PrometheusCheck) -> Verdict:
        series = self.observatory.query(probe.query)
        if not series:
            return Verdict(False, "the query returns no series")
        return Verdict(True, f"the query returns {len(series)} series")

    def _active(self, probe: AlertResolvedCheck) -> list[dict[str, object]]:
        return self.observatory.active_alerts({"alertname": probe.alert, **probe.labels})

    def _alert_resolved(self, name: str, probe: AlertResolvedCheck) -> Verdict:
        active = self._active(probe)
        if active:
            self.fired.add(name)
            return Verdict(False, f"{probe.alert} is active (since {active[0].get('startsAt')})")
        if name not in self.fired:
            return Verdict(False, f"{probe.alert} has not fired during the drill")
        return Verdict(True, f"{probe.alert} is no longer active in Alertmanager")
