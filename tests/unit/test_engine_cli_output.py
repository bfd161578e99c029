"""What the CLI prints for people: markup in user text is printed literally, never parsed.

Rich treats ``[red]`` as a style and ``[/]`` as closing one, and raises
``MarkupError`` on a closing tag with nothing open. Step errors, messages,
command output, reasons and names come from runbooks, commands and people,
so every one of them must reach the terminal as written.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

from executor.cli import runs

NASTY = "[/] [red]alarm[/red] [bold]x [link=http://evil]y[/link] \\[z]"


@pytest.fixture
def console(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    buffer = io.StringIO()
    monkeypatch.setattr(runs, "out", Console(file=buffer, width=400, color_system=None))
    return buffer


def _progress(events: list[tuple[str, dict[str, Any]]]) -> str:
    buffer = io.StringIO()
    progress = runs.Progress(Console(file=buffer, width=400, color_system=None), as_json=False)
    for event, data in events:
        progress(event, data)
    return buffer.getvalue()


def test_progress_prints_user_text_literally() -> None:
    text = _progress(
        [
            ("run.created", {"run_id": "r-1", "runbook": "t@1.0.0"}),
            ("step.started", {"step": "a", "kind": "local", "attempt": 1, "hosts": []}),
            ("step.finished", {"step": "a", "ok": False, "error": NASTY, "attempt": 1}),
            ("step.skipped", {"step": "b", "reason": NASTY}),
            (
                "approval.requested",
                {
                    "step": "gate",
                    "run_id": "r-1",
                    "message": NASTY,
                    "approvers": ["sre"],
                    "quorum": 2,
                    "plan": [{"step": "c", "kind": "local", "action": {"command": NASTY}}],
                },
            ),
            (
                "approval.decided",
                {"step": "gate", "decision": "deny", "approver": "[b]o", "reason": NASTY},
            ),
            ("rollback.finished", {"step": "c", "ok": False, "error": NASTY}),
            ("run.finished", {"status": "failed", "reason": NASTY}),
        ]
    )
    assert text.count(NASTY) == 7
    assert "denied by [b]o" in text
    assert "runbook approve r-1 gate --as NAME" in text
    assert "2 approvals" in text


def test_json_mode_prints_nothing_on_the_progress_stream() -> None:
    buffer = io.StringIO()
    runs.Progress(Console(file=buffer), as_json=True)("run.finished", {"status": "failed"})
    assert buffer.getvalue() == ""


def test_status_prints_user_text_literally(console: io.StringIO) -> None:
    info = {
        "id": "r-1",
        "runbook": "t",
        "version": "1.0.0",
        "status": "cancelled",
        "actor": "[x]alice",
        "trigger": "cli",
        "error": NASTY,
        "summary": "cancelled: " + NASTY,
        "state": {
            "steps": {
                "a": {"status": "failed", "attempts": 1, "error": NASTY, "hosts": {}},
                "b": {"status": "cancelled", "attempts": 1, "reason": NASTY, "hosts": {}},
            }
        },
        "approvals": [{"step_id": "g", "decision": "deny", "approver": "bob", "reason": NASTY}],
        "pending_approvals": [
            {
                "step": "g",
                "message": NASTY,
                "approvers": ["sre"],
                "quorum": 1,
                "expires_at": None,
                "decisions": [],
                "plan": [{"step": "c", "kind": "local", "action": {"command": NASTY}}],
            }
        ],
        "touched": [
            {"step": "a", "outcome": "cut off", "hosts": {"web1": {"rc": None, "cut_off": True}}}
        ],
    }
    runs._print_status(info)
    text = console.getvalue()
    assert text.count(NASTY) >= 6
    assert "by [x]alice" in text
    assert "a: cut off on web1 (cut off)" in text
    assert "runbook approve r-1 g --as NAME" in text


def test_the_dry_run_plan_prints_commands_literally(console: io.StringIO) -> None:
    runs._print_plan(
        {
            "runbook": "t@1.0.0",
            "sha256": "0" * 64,
            "steps": [
                {
                    "step": "a",
                    "kind": "local",
                    "needs": [],
                    "when": "inputs.x == '[/]'",
                    "action": {"command": f"test -f [ {NASTY} ]"},
                    "rollback": [{"command": NASTY}],
                }
            ],
        }
    )
    text = console.getvalue()
    assert f"command: test -f [ {NASTY} ]" in text
    assert "when inputs.x == '[/]'" in text
    assert f"rollback: {{'command': '{NASTY}'}}" in text.replace("\\\\", "\\")
