"""Draw a runbook's graph as Mermaid or Graphviz dot.

Guards, approvals, triggers and rollbacks are drawn, because a reviewer must
see on the picture which branch a false guard prunes and where a human stops
the run, not only the order of steps.
"""

from __future__ import annotations

from collections.abc import Callable

from executor.model import Runbook, Step, Trigger

FORMATS = ("mermaid", "dot")


def _label(step: Step) -> str:
    parts = [step.id, f"[{step.kind}]"]
    if step.is_approval and step.action is not None:
        approvers = ", ".join(step.action.approvers)  # type: ignore[union-attr]
        quorum = step.action.quorum  # type: ignore[union-attr]
        parts.append(f"approval: {approvers} (quorum {quorum})")
    if step.when:
        parts.append(f"when: {step.when}")
    if step.trigger is not Trigger.ALL_SUCCEEDED:
        parts.append(f"trigger: {step.trigger.value}")
    if step.retries:
        parts.append(f"retries: {step.retries.count}")
    if step.on_failure.value != "abort":
        parts.append(f"on_failure: {step.on_failure.value}")
    return "\n".join(parts)


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;").replace("\n", "<br/>")


def to_mermaid(runbook: Runbook) -> str:
    lines = [f"%% {runbook.ref}: {runbook.metadata.title or ''}".rstrip(": "), "flowchart TD"]
    for step in runbook.steps:
        text = _mermaid_text(_label(step))
        if step.is_approval:
            lines.append(f'  {step.id}{{{{"{text}"}}}}')
        elif step.when:
            lines.append(f'  {step.id}{{"{text}"}}')
        else:
            lines.append(f'  {step.id}["{text}"]')
    for step in runbook.steps:
        for need in step.needs:
            arrow = "-.->" if step.trigger is Trigger.ALWAYS else "-->"
            edge_label = "|if true|" if step.when else ""
            lines.append(f"  {need} {arrow}{edge_label} {step.id}")
        if step.rollback:
            kinds = ", ".join(a.kind for a in step.rollback)
            lines.append(f'  {step.id}_rollback(["rollback: {kinds}"])')
            lines.append(f"  {step.id} -. on failure .-> {step.id}_rollback")
    lines.append("  classDef approval fill:#fde68a,stroke:#b45309")
    lines.append("  classDef guarded stroke-dasharray: 4 2")
    approvals = [s.id for s in runbook.steps if s.is_approval]
    guarded = [s.id for s in runbook.steps if s.when]
    if approvals:
        lines.append(f"  class {','.join(approvals)} approval")
    if guarded:
        lines.append(f"  class {','.join(guarded)} guarded")
    return "\n".join(lines) + "\n"


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def to_dot(runbook: Runbook) -> str:
    lines = [
        f'digraph "{_dot_text(runbook.ref)}" {{',
        "  rankdir=TB;",
        "  node [fontname=Helvetica];",
    ]
    for step in runbook.steps:
        attrs = [f'label="{_dot_text(_label(step))}"']
        if step.is_approval:
            attrs += ["shape=hexagon", "style=filled", 'fillcolor="#fde68a"']
        elif step.when:
            attrs += ["shape=diamond"]
        else:
            attrs += ["shape=box"]
        lines.append(f'  "{step.id}" [{", ".join(attrs)}];')
    for step in runbook.steps:
        for need in step.needs:
            attrs = []
            if step.trigger is Trigger.ALWAYS:
                attrs.append("style=dashed")
            if step.when:
                attrs.append('label="if true"')
            suffix = f" [{', '.join(attrs)}]" if attrs else ""
            lines.append(f'  "{need}" -> "{step.id}"{suffix};')
        if step.rollback:
            kinds = ", ".join(a.kind for a in step.rollback)
            lines.append(f'  "{step.id}_rollback" [label="rollback: {kinds}", shape=note];')
            lines.append(
                f'  "{step.id}" -> "{step.id}_rollback" [style=dotted, label="on failure"];'
            )
    lines.append("}")
    return "\n".join(lines) + "\n"


RENDERERS: dict[str, Callable[[Runbook], str]] = {"mermaid": to_mermaid, "dot": to_dot}
