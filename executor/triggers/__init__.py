"""Alert triggers: routes, matchers, the guardrails, and turning alerts into runs.

Alertmanager posts alerts; ``runbook serve`` stores them and hands them here.
``routes`` says which runbook an alert starts and with which inputs;
``decide`` applies the guardrails (kill-switch, automation level,
deduplication, budget, rate limits) as a pure decision over ``Facts``;
``dispatch`` carries the decisions out through the engine and records them.
"""

from __future__ import annotations

from executor.triggers.alerts import Alert, PayloadError, parse_payload
from executor.triggers.decide import Decision, Disposition, Facts, decide_resolved, decide_route
from executor.triggers.dispatch import Decided, Dispatcher, RunStarter
from executor.triggers.facts import StoreFacts
from executor.triggers.matchers import Matcher, MatcherError, parse_matcher
from executor.triggers.routes import (
    RateLimit,
    Route,
    RouteTable,
    is_routes_document,
    load_routes,
    parse_routes,
    validate_routes_document,
)
from executor.triggers.sources import CatalogView, RoutesFile, default_routes

__all__ = [
    "Alert",
    "CatalogView",
    "Decided",
    "Decision",
    "Dispatcher",
    "Disposition",
    "Facts",
    "Matcher",
    "MatcherError",
    "PayloadError",
    "RateLimit",
    "Route",
    "RouteTable",
    "RoutesFile",
    "RunStarter",
    "StoreFacts",
    "decide_resolved",
    "decide_route",
    "default_routes",
    "is_routes_document",
    "load_routes",
    "parse_matcher",
    "parse_payload",
    "parse_routes",
    "validate_routes_document",
]
