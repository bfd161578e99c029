"""The game day report: its verdict, its Markdown, its self-contained HTML, and its files."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from test_gameday_timeline import DRILL, PLAN, Log, full_drill

from executor.audit import iter_records
from executor.gameday.auditfacts import parse_ts
from executor.gameday.files import publish, report_from_log
from executor.gameday.html import render_html, timeline_svg
from executor.gameday.report import GamedayReport, render_markdown


@pytest.fixture
def log(tmp_path: Path) -> Log:
    return Log(tmp_path / "home" / "audit.jsonl")


def report_of(log: Log) -> GamedayReport:
    return report_from_log(log.path)


def rewrite(log: Log, event: str, **data: Any) -> None:
    """Replace the data of the drill's ``event`` record (a drill that went otherwise)."""
    kept = list(iter_records(log.path))
    log.path.unlink()
    log.path.with_name(log.path.name + ".head").unlink()
    fresh = Log(log.path)
    for record in kept:
        fresh.clock.t = parse_ts(record.ts)
        body = {**record.data, **data} if record.event == event else record.data
        fresh.audit.append(
            record.event,
            run_id=record.run_id,
            actor=record.actor,
            runbook=record.runbook,
            step=record.step,
            data=body,
        )


def test_a_drill_that_met_every_expectation_passes(log: Log) -> None:
    full_drill(log, {**PLAN, "objectives": {"detect": 10.0, "mitigate": 10.0}})
    report = report_of(log)
    assert report.passed, report.reasons
    assert report.audit_ok and report.audit_records == 35
    data = report.to_dict()
    assert data["timings"]["detect"] == 3.0 and data["run"]["status"] == "succeeded"
    assert [o["met"] for o in data["objectives"]] == [True, True]
    assert data["approvals"][0]["wait"] == 5.0
    assert json.loads(json.dumps(data)) == data


@pytest.mark.parametrize(
    ("event", "data", "reason"),
    [
        ("gameday.finished", {"ended": "deadline"}, "hard time limit of 180.000 s (3m)"),
        ("gameday.finished", {"ended": "error", "error": "boom"}, "stopped early (error): boom"),
        (
            "run.finished",
            {"status": "failed"},
            f"run {'r-20270115-080003-bbbbbb'} ended failed, expected succeeded",
        ),
        (
            "gameday.verified",
            {"results": {"health": {"passed": False, "detail": "HTTP 500"}}},
            "check 'health' does not pass at the end: HTTP 500",
        ),
        (
            "gameday.cleanup",
            {"lines": [], "error": "repair-all on web2 failed: no"},
            "the cleanup did not restore the host (repair-all on web2 failed: no)",
        ),
    ],
)
def test_each_failure_is_a_reason(log: Log, event: str, data: dict[str, Any], reason: str) -> None:
    full_drill(log, {**PLAN, "objectives": {}})
    rewrite(log, event, **data)
    report = report_of(log)
    assert not report.passed
    assert any(reason in r for r in report.reasons), report.reasons


def test_a_missed_objective_fails_the_drill(log: Log) -> None:
    full_drill(log)  # mitigate took 9.002 s against 5 s
    (reason,) = report_of(log).reasons
    assert reason == "time to mitigate took 9.002 s, over the objective of 5.000 s"


def test_an_alert_that_never_came_and_a_run_that_never_started_are_reasons(log: Log) -> None:
    log.drill(-1, "started", plan={**PLAN, "objectives": {"detect": 10.0}})
    log.drill(0, "fault_injected", lines=["killed"])
    log.drill(180, "deadline", timeout=180)
    log.drill(181, "cleanup", lines=["restored"])
    log.drill(182, "finished", ended="deadline")
    reasons = report_of(log).reasons
    assert "no run of restart-crashlooping-service started" in reasons
    assert "DemoappDown never reached the executor" in reasons
    assert "check 'health' does not pass at the end: never evaluated" in reasons
    assert "time to detect never came, against an objective of 10.000 s" in reasons


def test_a_tampered_audit_log_fails_the_report(log: Log) -> None:
    full_drill(log, {**PLAN, "objectives": {}})
    text = log.path.read_text().replace('"HTTP 200: ok"', '"HTTP 200: OK"', 1)
    log.path.write_text(text)
    report = report_of(log)
    assert not report.audit_ok
    assert any("the audit log does not verify: TAMPERED" in r for r in report.reasons)


def test_markdown_has_every_section_and_escapes_table_cells(log: Log) -> None:
    full_drill(log)
    rewrite(
        log,
        "gameday.verified",
        results={"health": {"passed": True, "detail": "a | b\nc"}, "scraped": {"passed": True}},
    )
    text = render_markdown(report_of(log))
    assert text.startswith("# Game day: kill-web2: FAILED\n")
    for heading in (
        "## Timings",
        "## Approvals",
        "## Checks",
        "## Verdict",
        "## Timeline",
        "## Cleanup",
    ):
        assert f"\n{heading}\n" in text
    assert "| Time to detect | 3.000 s | 10.000 s | met |" in text
    assert "| Time to mitigate | 9.002 s | 5.000 s | MISSED |" in text
    assert "| health | 9.000 s | pass | a \\| b c |" in text
    assert "| +0.000 | 2027-01-15T08:00:00.000000Z | audit | gameday.fault_injected |" in text


def test_the_html_page_is_self_contained_and_escapes_what_the_log_says(log: Log) -> None:
    full_drill(log)
    rewrite(log, "gameday.fault_injected", lines=['<script>alert("x")</script>'])
    page = render_html(report_of(log))
    assert "<script" not in page and "&lt;script&gt;" in page
    assert not re.search(r"(src|href)=|@import|url\(", page)
    svg = re.search(r"<svg.*?</svg>", page, re.S)
    assert svg is not None
    ET.fromstring(svg.group(0))  # well-formed, so browsers draw it


def test_the_chart_draws_steps_approvals_and_the_three_marks(log: Log) -> None:
    full_drill(log)
    root = ET.fromstring(timeline_svg(report_of(log).timeline))
    ns = "{http://www.w3.org/2000/svg}"
    width = float(root.attrib["width"])
    bars = root.findall(f"{ns}rect")
    assert len(bars) == 5  # four step attempts (one cut off) and one approval wait
    texts = [t.text or "" for t in root.iter(f"{ns}text")]
    for mark in ("detected 3.0s", "first action 3.0s", "mitigated 9.0s"):
        assert mark in texts
    for shape in [*bars, *root.findall(f"{ns}circle")]:
        x = float(shape.attrib.get("x", shape.attrib.get("cx", "0")))
        assert 0 <= x <= width


def test_publish_writes_three_files_that_agree(log: Log, tmp_path: Path) -> None:
    full_drill(log)
    out = tmp_path / "report"
    published = publish(log.path, out, DRILL)
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json", "report.md"]
    data = json.loads(published.json.read_text())
    assert data["timings"] == published.report.timeline.timings
    assert data["audit"]["path"] == str(log.path) and data["drill"] == DRILL
    assert published.markdown.read_text() == render_markdown(published.report)
