"""The guardrails' facts read from a real store: what every process recorded counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from executor.loader import parse_document
from executor.model import Runbook
from executor.store import SqliteStore
from executor.triggers import CatalogView, StoreFacts
from executor.triggers.facts import predicted_hosts

TEXT = """\
apiVersion: runbook/v1
kind: Runbook
metadata: {name: fix, version: 1.0.0}
inputs:
  host: {type: string}
targets:
  node: {hosts: "{{ inputs.host }}"}
  lb: {hosts: "lb"}
policy:
  automation: auto
  concurrency: {key: "{{ inputs.host }}", limit: 2}
  cooldown: 10m
  budget: {hosts: 3, per: 1h}
steps:
  - id: look
    log: {message: "{{ inputs.host }}"}
"""


class Inventory:
    def resolve(self, pattern: str) -> list[str]:
        return [pattern] if pattern.isalnum() else []


class Clock:
    now_value = 10_000.0

    def __call__(self) -> float:
        return self.now_value


@pytest.fixture
def world(tmp_path: Path):
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    (catalog / "fix.yaml").write_text(TEXT)
    clock = Clock()
    store = SqliteStore(tmp_path / "state.db", clock=clock)
    facts = StoreFacts(store, CatalogView(catalog), inventory=Inventory(), clock=clock)
    yield store, facts, clock
    store.close()


def the_book(facts: StoreFacts) -> Runbook:
    return facts.runbook("fix")


def add_run(store: SqliteStore, run_id: str, status: str, *, at: float, host: str, **more) -> None:
    document = parse_document(TEXT, "fix.yaml")
    store.create_run(
        {
            "id": run_id,
            "runbook": "fix",
            "version": "1.0.0",
            "sha256": document.sha256,
            "status": status,
            "inputs": {"host": host},
            "created": at,
            "updated": at,
            "runbook_text": TEXT,
            "trigger": more.pop("trigger", "cli"),
            **more,
        }
    )


def test_an_active_run_of_the_same_alert_deduplicates(world) -> None:
    store, facts, clock = world
    book = the_book(facts)
    assert facts.fingerprint_busy("fp1", book) is None
    add_run(store, "r-1", "running", at=clock.now_value, host="a")
    store.record_trigger_start("r-1", runbook="fix", at=clock.now_value, fingerprint="fp1")
    assert "active run of fix: r-1 (running)" in facts.fingerprint_busy("fp1", book)
    assert facts.fingerprint_busy("fp2", book) is None
    store.update_run("r-1", status="succeeded", finished=clock.now_value)
    clock.now_value += 60
    assert "within the cooldown of 10m" in facts.fingerprint_busy("fp1", book)
    clock.now_value += 600
    assert facts.fingerprint_busy("fp1", book) is None


def test_a_held_or_cooling_key_deduplicates_even_below_the_limit(world) -> None:
    store, facts, clock = world
    book = the_book(facts)
    assert facts.key_busy(book, {"host": "a"}, {}) is None
    store.acquire_lock("fix:a", "r-cli", 2)  # a run from the command line holds it
    assert "already runs for 'fix:a' (r-cli)" in facts.key_busy(book, {"host": "a"}, {})
    assert facts.key_busy(book, {"host": "b"}, {}) is None
    store.release_lock("fix:a", "r-cli")
    store.set_cooldown("fix:a", clock.now_value + 90)
    assert "next run allowed in 1m30s" in facts.key_busy(book, {"host": "a"}, {})


def test_the_budget_counts_distinct_hosts_of_every_run_in_the_window(world) -> None:
    store, facts, clock = world
    book = the_book(facts)
    assert facts.hosts_of(book, {"host": "a"}, {}) == {"a", "lb"}
    assert facts.budget_problem(book, {"host": "a"}, {}) is None
    # A run started from the command line, not by an alert: predicted from its stored inputs.
    add_run(store, "r-cli", "succeeded", at=clock.now_value - 100, host="a")
    assert facts.used_hosts(book, clock.now_value - 3600) == {"a", "lb"}
    assert store.budget_hosts("fix", 0) == {"r-cli": {"a", "lb"}}  # remembered
    assert facts.budget_problem(book, {"host": "b"}, {}) is None  # a, lb, b: 3
    add_run(store, "r-2", "running", at=clock.now_value - 50, host="b")
    problem = facts.budget_problem(book, {"host": "c"}, {})
    assert problem is not None and "3 host(s) touched in the last 1h (a, b, lb)" in problem
    assert "this run adds c" in problem
    assert facts.budget_problem(book, {"host": "a"}, {}) is None  # nothing new
    clock.now_value += 3600  # the window moves on
    assert facts.budget_problem(book, {"host": "c"}, {}) is None


def test_hosts_a_run_reported_count_even_when_they_could_not_be_predicted(world) -> None:
    store, facts, clock = world
    book = the_book(facts)
    state = {"steps": {"look": {"status": "succeeded", "hosts": {"x1": {}, "x2": {}}}}}
    add_run(store, "r-odd", "succeeded", at=clock.now_value, host="not valid!", state=state)
    assert facts.used_hosts(book, 0) == {"x1", "x2", "lb"}
    add_run(store, "r-dry", "succeeded", at=clock.now_value, host="zz", dry_run=True)
    assert "zz" not in facts.used_hosts(book, 0)


def test_rate_counts_and_waiting_runs(world) -> None:
    store, facts, clock = world
    for i, route in enumerate(["r1", "r1", "r2"]):
        store.record_trigger_start(f"t-{i}", runbook="fix", route=route, at=clock.now_value - i)
    assert facts.starts_since(clock.now_value - 10, "r1") == 2
    assert facts.starts_since(clock.now_value - 10) == 3
    assert facts.starts_since(clock.now_value - 0.5) == 1
    state = {"steps": {"gate": {"status": "waiting"}, "look": {"status": "succeeded"}}}
    add_run(store, "r-w", "waiting", at=clock.now_value, host="a", state=state)
    store.record_trigger_start("r-w", runbook="fix", at=clock.now_value, fingerprint="fpw")
    assert facts.waiting_runs("fpw") == [{"run_id": "r-w", "runbook": "fix", "steps": ["gate"]}]
    assert facts.waiting_runs("other") == []


def test_the_kill_switch_reason_names_who_and_why(world) -> None:
    store, facts, clock = world
    assert facts.killswitch("fix") is None
    store.engage_killswitch("fix", reason="bad fix", actor="ana", at=clock.now_value)
    assert facts.killswitch("fix") == "the kill-switch is engaged for fix by ana: bad fix"
    store.engage_killswitch("*", reason="freeze", actor="ic", at=clock.now_value)
    assert "engaged globally by ic: freeze" in facts.killswitch("other")


def test_predicted_hosts_skip_what_inputs_cannot_decide() -> None:
    document = parse_document(TEXT.replace('"lb"', '"{{ steps.look.outputs.x }}"'), "f.yaml")
    book = Runbook.from_mapping(document.data, source="f.yaml", sha256=document.sha256)
    assert predicted_hosts(book, {"host": "a"}, None, Inventory()) == {"a"}
    assert predicted_hosts(book, {"host": "a"}, None, None) == set()


def test_the_catalog_is_reloaded_when_a_file_changes(world, tmp_path: Path) -> None:
    _store, facts, _clock = world
    assert facts.catalog.refresh().versions("fix") == ["1.0.0"]
    (tmp_path / "catalog" / "fix2.yaml").write_text(TEXT.replace("1.0.0", "1.1.0"))
    assert facts.catalog.catalog().versions("fix") == ["1.0.0"]  # not before a refresh
    assert facts.catalog.refresh().versions("fix") == ["1.0.0", "1.1.0"]
    book = facts.runbook("fix")
    assert book.version == "1.1.0" and facts.catalog.text(book).startswith("apiVersion")
