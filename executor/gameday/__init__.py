"""Game days (DESIGN.md section 8): break the sandbox on purpose, let the real pipeline
repair it, and report the timeline with the time to detect, to first action and to mitigate.

    plan = load_plan("gamedays/web2-demoapp-killed.yaml", catalog=Path("runbooks"))
    outcome = Drill(plan, world, DrillSettings(out=Path("report"), catalog=Path("runbooks"))).run()
    published = publish(outcome.audit_log, Path("report"), outcome.drill)

The parts, each with one job:

    plan, schema, semantics   the plan file: typed objects, file:line errors, checked against
                              the catalog and its routes
    world                     what the drill needs from the sandbox (handed in by the CLI:
                              the sandbox is a sibling layer this package does not import)
    serve, api, probes        the drill's own `runbook serve`; HTTP clients for it, Prometheus
                              and Alertmanager; the checks
    drill                     steady state, fault, watch, approvals, verdict, cleanup
    timeline, auditfacts,     the drill read back from the audit log; the report as data,
    summaries, report, html,  Markdown and one self-contained HTML page; the report files
    files
    stats                     `runbook report`: runs by status and timings from store and audit
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from executor.gameday.api import GamedayError
    from executor.gameday.drill import Drill, DrillOutcome, DrillSettings
    from executor.gameday.files import Published, publish, report_from_log
    from executor.gameday.plan import Plan, load_plan
    from executor.gameday.stats import RunbookStats, run_stats
    from executor.gameday.world import Alerting, World

# Loaded on first use: `runbook --help` and `runbook report` need neither httpx nor Jinja2.
_EXPORTS = {
    "Alerting": "executor.gameday.world",
    "Drill": "executor.gameday.drill",
    "DrillOutcome": "executor.gameday.drill",
    "DrillSettings": "executor.gameday.drill",
    "GamedayError": "executor.gameday.api",
    "Plan": "executor.gameday.plan",
    "Published": "executor.gameday.files",
    "RunbookStats": "executor.gameday.stats",
    "World": "executor.gameday.world",
    "load_plan": "executor.gameday.plan",
    "publish": "executor.gameday.files",
    "report_from_log": "executor.gameday.files",
    "run_stats": "executor.gameday.stats",
}

__all__ = [
    "Alerting",
    "Drill",
    "DrillOutcome",
    "DrillSettings",
    "GamedayError",
    "Plan",
    "Published",
    "RunbookStats",
    "World",
    "load_plan",
    "publish",
    "report_from_log",
    "run_stats",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
