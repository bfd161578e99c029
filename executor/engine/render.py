"""Turn a step's templated action into the concrete action an adapter runs.

Rendering happens in the engine, never in an adapter, so every adapter sees
values that were shell-quoted (commands) or passed as data (extravars, JSON),
and the audit records exactly what ran, with secrets masked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from executor import expressions
from executor.errors import ExpressionError
from executor.model import (
    Action,
    AnsibleAction,
    ApprovalAction,
    HttpAction,
    LocalAction,
    LogAction,
    SshAction,
    Step,
    WaitAction,
)


def _text(template: str, context: Mapping[str, Any]) -> str:
    value = expressions.render(template, context)
    return "" if value is None else str(value)


def render_action(action: Action, context: Mapping[str, Any]) -> Action:
    """The action with every template filled in; commands get shell-quoted substitutions."""
    if isinstance(action, SshAction):
        return replace(action, command=expressions.render_command(action.command, context))
    if isinstance(action, LocalAction):
        return replace(action, command=expressions.render_command(action.command, context))
    if isinstance(action, AnsibleAction):
        return replace(
            action,
            args=expressions.render_data(dict(action.args), context),
            extravars=expressions.render_data(dict(action.extravars), context),
        )
    if isinstance(action, HttpAction):
        return replace(
            action,
            url=_text(action.url, context),
            headers={k: _text(v, context) for k, v in action.headers.items()},
            json=expressions.render_data(action.json, context) if action.json is not None else None,
            body=_text(action.body, context) if action.body is not None else None,
        )
    if isinstance(action, ApprovalAction):
        return replace(action, message=_text(action.message, context))
    if isinstance(action, LogAction):
        return replace(action, message=_text(action.message, context))
    if isinstance(action, WaitAction):
        return action
    raise TypeError(f"cannot render {type(action).__name__}")


def describe(action: Action, mask: Callable[[str], str]) -> dict[str, Any]:
    """What the audit and the plan show for an action: rendered, with secrets masked."""
    if isinstance(action, SshAction | LocalAction):
        shown: dict[str, Any] = {"command": mask(action.command)}
        if isinstance(action, SshAction):
            shown.update(target=action.target, sudo=action.sudo)
        return shown
    if isinstance(action, AnsibleAction):
        return {
            "target": action.target,
            "playbook": action.playbook,
            "module": action.module,
            "args": _mask_data(dict(action.args), mask),
            "extravars": _mask_data(dict(action.extravars), mask),
        }
    if isinstance(action, HttpAction):
        return {"method": action.method, "url": mask(action.url)}
    if isinstance(action, ApprovalAction):
        return {
            "message": mask(action.message),
            "approvers": list(action.approvers),
            "quorum": action.quorum,
        }
    if isinstance(action, LogAction):
        return {"message": mask(action.message)}
    if isinstance(action, WaitAction):
        return {"duration": action.duration}
    return {}


def _mask_data(value: Any, mask: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, Mapping):
        return {mask(str(k)): _mask_data(v, mask) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_data(v, mask) for v in value]
    return value


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list | tuple):
        return [s for item in value for s in _strings(item)]
    return []


def _templates(action: Action | None) -> list[str]:
    if action is None:
        return []
    fields = [getattr(action, name, None) for name in _TEMPLATE_FIELDS]
    return _strings([f for f in fields if f is not None])


_TEMPLATE_FIELDS = ("command", "url", "headers", "json", "body", "message", "args", "extravars")


def secrets_read(step: Step) -> frozenset[str]:
    """The ``secrets.<name>`` a step reads anywhere (action, rollback, guard, outputs, assert).

    The engine issues those KV credentials before it renders the step: a
    template cannot read a secret nobody fetched.
    """
    sources = [(s, "template") for s in _templates(step.action)]
    sources += [(s, "template") for a in step.rollback for s in _templates(a)]
    sources += [(s, "template") for s in step.outputs.values()]
    expressions_ = [step.when] if step.when else []
    if step.assertion is not None:
        expressions_ += list(step.assertion.that)
        if step.assertion.message:
            sources.append((step.assertion.message, "template"))
    if step.retries is not None and step.retries.until:
        expressions_.append(step.retries.until)
    sources += [(e, "expression") for e in expressions_]
    names = set()
    for source, kind in sources:
        try:
            references = expressions.analyze(source, kind=kind).references
        except ExpressionError:
            continue  # reported when the step renders
        names.update(path[1] for path in references if len(path) > 1 and path[0] == "secrets")
    return frozenset(names)
