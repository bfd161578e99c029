"""What ``/metrics`` shows, in Prometheus' text format (prometheus-client).

Each server has its own registry, so two servers in one test process do not
share counters. The kill-switch gauge and the queue gauges are read from the
store at scrape time: they show the truth even when another process changed
it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from executor.triggers.decide import Disposition
from executor.triggers.dispatch import Decided

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_WAIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200)
_FIRST_ACTION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _Gauges(Collector):
    """Gauges computed when scraped."""

    def __init__(self, read: Callable[[], dict[str, Any]]) -> None:
        self.read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            now = self.read()
        except Exception:  # a scrape must not fail because the store is busy
            return
        switch = GaugeMetricFamily(
            "runbook_killswitch_engaged",
            "1 while the kill-switch is engaged (scope '*' is global)",
            labels=["scope"],
        )
        switch.add_metric(["*"], 1.0 if "*" in now["killswitch"] else 0.0)
        for scope in sorted(now["killswitch"] - {"*"}):
            switch.add_metric([scope], 1.0)
        yield switch
        for name, help_text, key in (
            ("runbook_alerts_queued", "alerts accepted and not decided yet", "queued"),
            ("runbook_runs_executing", "runs executing in this server's workers", "executing"),
            (
                "runbook_runs_waiting_for_worker",
                "runs handed over, waiting for a worker",
                "pending",
            ),
        ):
            gauge = GaugeMetricFamily(name, help_text)
            gauge.add_metric([], float(now[key]))
            yield gauge


class Metrics:
    def __init__(self, read_gauges: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.runs_started = Counter(
            "runbook_runs_started", "runs started", ["runbook", "trigger"], registry=r
        )
        self.runs_finished = Counter(
            "runbook_runs_finished", "runs that ended", ["runbook", "status"], registry=r
        )
        self.steps = Counter(
            "runbook_steps", "steps that ended, by action", ["action", "status"], registry=r
        )
        self.alerts_received = Counter(
            "runbook_alerts_received", "alerts accepted from Alertmanager", ["status"], registry=r
        )
        self.alerts_matched = Counter(
            "runbook_alerts_matched", "alerts that matched a route", ["route"], registry=r
        )
        self.alerts_deduplicated = Counter(
            "runbook_alerts_deduplicated",
            "alerts that did not start a run: one is active or cooling down",
            ["route"],
            registry=r,
        )
        self.alerts_suppressed = Counter(
            "runbook_alerts_suppressed",
            "alerts past a rate limit",
            ["route", "limit"],
            registry=r,
        )
        self.alert_decisions = Counter(
            "runbook_alert_decisions",
            "every decision on an alert, by disposition",
            ["disposition", "route"],
            registry=r,
        )
        self.alerts_rejected = Counter(
            "runbook_alerts_rejected",
            "webhook deliveries refused (bad body, too large, overloaded, unauthorised)",
            ["reason"],
            registry=r,
        )
        self.approval_wait = Histogram(
            "runbook_approval_wait_seconds",
            "time from an approval step starting to wait until a decision",
            ["runbook"],
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.first_action = Histogram(
            "runbook_time_to_first_action_seconds",
            "time from an alert being received to its run's first step starting",
            ["runbook"],
            buckets=_FIRST_ACTION_BUCKETS,
            registry=r,
        )
        r.register(_Gauges(read_gauges))

    def decided(self, done: Decided) -> None:
        for decision in done.decisions:
            route = decision.route or ""
            self.alert_decisions.labels(decision.disposition.value, route).inc()
            if decision.route is not None:
                self.alerts_matched.labels(route).inc()
            if decision.disposition is Disposition.DEDUPLICATED:
                self.alerts_deduplicated.labels(route).inc()
            elif decision.disposition is Disposition.SUPPRESSED:
                self.alerts_suppressed.labels(route, decision.detail.get("limit", "")).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
