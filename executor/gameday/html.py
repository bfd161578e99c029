"""The game day report as one self-contained HTML page, its timeline drawn as inline SVG.

No script, no stylesheet or font from elsewhere: the page opens from a mail
attachment or an air-gapped laptop as it looked when it was written. Every
text from the audit log is escaped (Jinja2's autoescape, ``html.escape`` in
the SVG), since alert labels and command output end up in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from jinja2 import Environment
from markupsafe import Markup

from executor.gameday.report import GamedayReport, facts, seconds_text, timing_rows
from executor.gameday.timeline import Span, Timeline

WIDTH = 960
LABEL_WIDTH = 210
ROW_HEIGHT = 26
TOP = 58
BOTTOM = 30
COLOURS = {
    "succeeded": "#2e7d32",
    "failed": "#c62828",
    "cut off": "#9e9e9e",
    "approval": "#f9a825",
    "granted": "#f9a825",
    "denied": "#c62828",
    "expired": "#6d4c41",
    "waiting": "#bdbdbd",
    "fault": "#c62828",
    "alert": "#ef6c00",
    "check": "#1565c0",
    "drill": "#455a64",
}
MARKS = (
    ("detect", "detected"),
    ("first_action", "first action"),
    ("mitigate", "mitigated"),
)


@dataclass(frozen=True)
class _Row:
    label: str
    spans: tuple[Span, ...] = ()
    points: tuple[tuple[float, str, str], ...] = ()  # (t, colour, tooltip)


def _rows(line: Timeline) -> list[_Row]:
    t = line.timings
    alert = [
        (t[k], COLOURS["alert"], label)
        for k, label in (
            ("fired", "alert fired (Alertmanager)"),
            ("detect", "alert received"),
            ("resolved", "alert resolved"),
        )
        if t.get(k) is not None
    ]
    alert += [(e.t, COLOURS["alert"], e.summary) for e in line.events if e.event == "alert.pending"]
    rows = [
        _Row("fault injected", points=((0.0, COLOURS["fault"], "; ".join(line.fault_lines)),)),
        _Row("alert", points=tuple(sorted(alert))),
    ]
    rows += [_Row(f"{s.kind}: {s.label}", spans=(s,)) for s in line.spans]
    rows += [
        _Row(
            f"check: {c.name}",
            points=((c.first_passed, COLOURS["check"], f"{c.name} first passed"),),
        )
        for c in line.checks
        if c.first_passed is not None
    ]
    drill = [
        (e.t, COLOURS["drill"], e.summary)
        for e in line.events
        if e.event in ("gameday.answered", "gameday.cleanup", "gameday.deadline")
    ]
    if drill:
        rows.append(_Row("drill", points=tuple(drill)))
    return rows


def _extent(line: Timeline) -> tuple[float, float]:
    times = [0.0] + [e.t for e in line.events]
    times += [s.end for s in line.spans if s.end is not None]
    low, high = min(times), max(times)
    return min(low, 0.0), max(high, low + 1.0)


def _tick_step(span: float) -> float:
    for step in (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600):
        if span / step <= 12:
            return float(step)
    return 1200.0


def timeline_svg(line: Timeline) -> str:
    """The drill as lanes on a time axis (seconds from the fault); tooltips carry the detail."""
    rows = _rows(line)
    low, high = _extent(line)
    plot = WIDTH - LABEL_WIDTH - 20
    height = TOP + ROW_HEIGHT * len(rows) + BOTTOM

    def x(t: float) -> float:
        return LABEL_WIDTH + (t - low) / (high - low) * plot

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" role="img" aria-label="drill timeline" '
        'font-family="sans-serif" font-size="12">'
    ]
    step = _tick_step(high - low)
    tick = (low // step) * step
    while tick <= high:
        if tick >= low:
            out.append(
                f'<line x1="{x(tick):.1f}" y1="{TOP - 6}" x2="{x(tick):.1f}" '
                f'y2="{height - BOTTOM}" stroke="#eee"/>'
            )
            out.append(
                f'<text x="{x(tick):.1f}" y="{height - 10}" text-anchor="middle" '
                f'fill="#555">{tick:g}s</text>'
            )
        tick += step
    for index, row in enumerate(rows):
        y = TOP + index * ROW_HEIGHT
        out.append(
            f'<text x="6" y="{y + 17}" fill="#222">{escape(row.label[:30])}'
            f"<title>{escape(row.label)}</title></text>"
        )
        for span in row.spans:
            end = span.end if span.end is not None else high
            colour = COLOURS.get(span.status, COLOURS.get(span.kind, "#607d8b"))
            width = max(2.0, x(end) - x(span.start))
            when = f"{seconds_text(span.start)} to {seconds_text(span.end)}"
            tip = f"{span.label}: {span.status}, {when}"
            out.append(
                f'<rect x="{x(span.start):.1f}" y="{y + 5}" width="{width:.1f}" '
                f'height="{ROW_HEIGHT - 10}" rx="3" fill="{colour}">'
                f"<title>{escape(tip)}</title></rect>"
            )
        for t, colour, tip in row.points:
            out.append(
                f'<circle cx="{x(t):.1f}" cy="{y + ROW_HEIGHT / 2}" r="5" '
                f'fill="{colour}"><title>{escape(f"{t:+.3f}s {tip}")}</title></circle>'
            )
    for index, (key, label) in enumerate(MARKS):
        t = line.timings.get(key)
        if t is None:
            continue
        y = 14 + 14 * index  # one line each: the marks are often a few ms apart
        anchor = "end" if x(t) > WIDTH - 160 else "start"
        shift = -3 if anchor == "end" else 3
        out.append(
            f'<line x1="{x(t):.1f}" y1="{y + 3}" x2="{x(t):.1f}" y2="{height - BOTTOM}" '
            'stroke="#333" stroke-dasharray="4 3"/>'
        )
        out.append(
            f'<text x="{x(t) + shift:.1f}" y="{y}" text-anchor="{anchor}" fill="#333">'
            f"{escape(label)} {t:.1f}s</text>"
        )
    out.append("</svg>")
    return "\n".join(out)


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Game day: {{ r.title }}</title>
<style>
body{font-family:sans-serif;margin:2em;max-width:1000px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top;font-size:13px}
th{background:#f5f5f5}
.pass{color:#2e7d32;font-weight:bold}.fail{color:#c62828;font-weight:bold}
.num{text-align:right;font-variant-numeric:tabular-nums}code{font-size:12px}
</style></head><body>
<h1>Game day: {{ r.title }}:
{% if r.passed %}<span class="pass">PASSED</span>
{% else %}<span class="fail">FAILED</span>{% endif %}
</h1>
<table>
{% for k, v in facts %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>
{% endfor %}</table>
<h2>Timeline</h2>
<p>Seconds from the fault injection. Bars: steps (green succeeded, red failed, grey cut
off) and approval waits (amber); dots: the fault, the alert (pending, fired, received,
resolved), each check's first pass after the fault, the drill's own acts. Hover for detail.</p>
{{ svg }}
<h2>Timings</h2>
<p>Seconds from the fault injection, as differences of audit-log timestamps.</p>
<table><tr><th>Measure</th><th>Time</th><th>Objective</th><th></th><th>Measured as</th></tr>
{% for label, time, limit, met, meaning in timings %}<tr><td>{{ label }}</td>
<td class="num">{{ time }}</td><td class="num">{{ limit }}</td>
<td class="{{ 'fail' if met == 'MISSED' else 'pass' }}">{{ met }}</td><td>{{ meaning }}</td></tr>
{% endfor %}</table>
{% if line.approvals %}<h2>Approvals</h2>
<table><tr><th>Step</th><th>Decision</th><th>By</th><th>Wait</th></tr>
{% for a in line.approvals %}<tr><td>{{ a.step }}</td><td>{{ a.decision or 'none' }}</td>
<td>{{ a.by or '-' }}</td><td class="num">{{ secs(a.wait) }}</td></tr>{% endfor %}</table>
{% endif %}
<h2>Checks</h2>
<table><tr><th>Check</th><th>First passed</th><th>At the end</th><th>Detail</th></tr>
{% for c in line.checks %}<tr><td>{{ c.name }}</td>
<td class="num">{{ secs(c.first_passed) }}</td>
<td class="{{ 'pass' if c.final else 'fail' }}">{{ 'pass' if c.final else 'FAIL' }}</td>
<td>{{ c.detail or '-' }}</td></tr>{% endfor %}</table>
<h2>Verdict</h2>
{% if r.reasons %}<ul>{% for reason in r.reasons %}<li>{{ reason }}</li>{% endfor %}</ul>
{% else %}<p class="pass">Every expectation was met.</p>{% endif %}
<h2>Events</h2>
<table><tr><th>t (s)</th><th>UTC</th><th>Source</th><th>Event</th><th>Detail</th></tr>
{% for e in line.events %}<tr><td class="num">{{ '%+.3f' % e.t }}</td>
<td><code>{{ e.ts }}</code></td>
<td>{{ e.source }}</td><td>{{ e.event }}</td><td>{{ e.summary }}</td></tr>{% endfor %}</table>
<h2>Cleanup</h2>
<ul>{% for c in line.cleanup_lines %}<li>{{ c }}</li>{% else %}<li>nothing was repaired</li>
{% endfor %}</ul>
</body></html>
"""


def render_html(report: GamedayReport) -> str:
    template = Environment(autoescape=True).from_string(_PAGE)
    return template.render(
        r=report,
        line=report.timeline,
        facts=facts(report),
        timings=timing_rows(report),
        secs=seconds_text,
        svg=Markup(timeline_svg(report.timeline)),  # built with every text escaped
    )
