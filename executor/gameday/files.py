"""Writing a drill's report: read the audit log back, verify it, render three files.

report.md    for the incident review document
report.html  one self-contained page, the timeline drawn as SVG
report.json  for machines (and the test that checks the timings)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from executor.audit import iter_records, verify
from executor.gameday.html import render_html
from executor.gameday.report import GamedayReport, build_report, render_json, render_markdown
from executor.gameday.timeline import assemble


@dataclass(frozen=True)
class Published:
    report: GamedayReport
    markdown: Path
    html: Path
    json: Path


def report_from_log(audit_log: Path, drill: str | None = None) -> GamedayReport:
    """The report of ``drill`` (default: the last one) as the audit log tells it."""
    timeline = assemble(list(iter_records(audit_log)), drill)
    return build_report(timeline, audit_log, verify(audit_log))


def publish(audit_log: Path, out: Path, drill: str | None = None) -> Published:
    out.mkdir(parents=True, exist_ok=True)
    report = report_from_log(audit_log, drill)
    files = {
        "report.md": render_markdown(report),
        "report.html": render_html(report),
        "report.json": render_json(report),
    }
    for name, text in files.items():
        _write(out / name, text)
    return Published(report, out / "report.md", out / "report.html", out / "report.json")


def _write(path: Path, text: str) -> None:
    """Replace the file whole: a reader never sees half a report."""
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
