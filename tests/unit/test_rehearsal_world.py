"""The simulated world: clock, store, audit and inventory behave like the real adapters."""

from __future__ import annotations

import pytest

from executor.errors import ApprovalRefused, NotFound, StoreError
from executor.ports import CancelToken
from executor.rehearsal.world import (
    MAX_POLLS,
    MemoryAudit,
    MemoryStore,
    SimulatedClock,
    SimulatedInventory,
    literal_hosts,
)


def test_the_clock_moves_only_when_told() -> None:
    clock = SimulatedClock()
    start, mono = clock.now(), clock.monotonic()
    assert clock.sleep(3600) is False
    assert clock.now() - start == 3600 and clock.monotonic() - mono == 3600
    token = CancelToken()
    token.cancel("kill")
    assert clock.sleep(60, token) is True and clock.now() - start == 3600


def test_the_audit_is_a_hash_chain_with_listeners() -> None:
    seen: list[str] = []
    audit = MemoryAudit(SimulatedClock())
    audit.listeners.append(lambda r: seen.append(r.event))
    first = audit.append("run.requested", run_id="r1", data={"a": 1})
    second = audit.append("run.started", run_id="r1")
    audit.append("other", run_id="r2")
    assert second.prev == first.hash and first.prev == "0" * 64
    assert first.ts == "2026-01-01T00:00:00.000Z"
    assert [r.event for r in audit.records("r1")] == ["run.requested", "run.started"]
    assert seen == ["run.requested", "run.started", "other"]


def test_the_store_refuses_a_second_decision_by_the_same_person() -> None:
    store = MemoryStore()
    store.create_run({"id": "r1", "status": "pending"})
    store.add_approval("r1", "gate", {"approver": "ann", "decision": "approve", "at": 1.0})
    with pytest.raises(ApprovalRefused):
        store.add_approval("r1", "gate", {"approver": "ann", "decision": "deny", "at": 2.0})
    assert [a["id"] for a in store.get_approvals("r1", "gate")] == [1]
    with pytest.raises(NotFound):
        store.get_run("r2")


def test_locks_cooldowns_and_kill_switch_scopes() -> None:
    store = MemoryStore()
    assert store.acquire_lock("k", "r1", 1) and store.acquire_lock("k", "r1", 1)
    assert not store.acquire_lock("k", "r2", 1)
    store.release_lock("k", "r1")
    assert store.acquire_lock("k", "r2", 1) and store.holders("k") == ["r2"]
    store.engage_killswitch("disk", reason="x", actor="op", at=1.0)
    assert store.killswitch("disk")["scope"] == "disk"  # type: ignore[index]
    assert store.killswitch("other") is None
    store.engage_killswitch("*", reason="all", actor="op", at=2.0)
    assert store.killswitch("other")["scope"] == "*"  # type: ignore[index]
    assert [s["scope"] for s in store.killswitches()] == ["*", "disk"]


def test_a_run_that_never_ends_is_stopped_after_many_turns() -> None:
    store = MemoryStore()
    for _ in range(MAX_POLLS):
        store.killswitch("x")
    with pytest.raises(StoreError, match="did not end"):
        store.killswitch("x")


@pytest.mark.parametrize(
    ("pattern", "hosts"),
    [
        ("web1", ["web1"]),
        ("web1,web2", ["web1", "web2"]),
        ("web:&web2", ["web2"]),
        ("web:!web3", ["web"]),
        ("", []),
    ],
)
def test_patterns_resolve_literally_unless_the_scenario_names_hosts(
    pattern: str, hosts: list[str]
) -> None:
    assert literal_hosts(pattern) == hosts
    assert SimulatedInventory({"web": ["a", "b"]}).resolve("web") == ["a", "b"]
