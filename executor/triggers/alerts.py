"""Alertmanager's webhook payload (version 4): its schema, and the alerts in it.

Alertmanager posts ``{"version": "4", "status", "receiver", "groupKey",
"alerts": [{"status", "labels", "annotations", "startsAt", "endsAt",
"generatorURL", "fingerprint"}], ...}``. Newer versions add fields, so unknown
keys are accepted; what the executor reads is checked strictly, and bounded,
because an alert's labels end up as runbook inputs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import fastjsonschema
import jsonschema

__all__ = [
    "MAX_ALERTS",
    "WEBHOOK_SCHEMA",
    "Alert",
    "PayloadError",
    "parse_payload",
]

MAX_ALERTS = 10_000
"""Alerts in one webhook body; Alertmanager's ``max_alerts`` should stay below this."""
MAX_LABELS = 64
MAX_VALUE = 8192

_LABELS = {
    "type": "object",
    "maxProperties": MAX_LABELS,
    "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$", "maxLength": 256},
    "additionalProperties": {"type": "string", "maxLength": MAX_VALUE},
}

WEBHOOK_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Alertmanager webhook payload (version 4)",
    "type": "object",
    "required": ["version", "status", "alerts"],
    "properties": {
        "version": {"type": "string", "const": "4"},
        "status": {"type": "string", "enum": ["firing", "resolved"]},
        "receiver": {"type": "string", "maxLength": 1024},
        "groupKey": {"type": "string", "maxLength": 8192},
        "truncatedAlerts": {"type": "integer", "minimum": 0},
        "groupLabels": _LABELS,
        "commonLabels": _LABELS,
        "commonAnnotations": _LABELS,
        "externalURL": {"type": "string", "maxLength": 4096},
        "alerts": {
            "type": "array",
            "maxItems": MAX_ALERTS,
            "items": {
                "type": "object",
                "required": ["status", "labels"],
                "properties": {
                    "status": {"type": "string", "enum": ["firing", "resolved"]},
                    "labels": {**_LABELS, "minProperties": 1},
                    "annotations": _LABELS,
                    "startsAt": {"type": "string", "maxLength": 64},
                    "endsAt": {"type": "string", "maxLength": 64},
                    "generatorURL": {"type": "string", "maxLength": 4096},
                    "fingerprint": {
                        "type": "string",
                        "pattern": "^[0-9A-Za-z]{1,64}$",
                    },
                },
            },
        },
    },
}


class PayloadError(ValueError):
    """The body is not an Alertmanager webhook payload; the message says where."""


@cache
def _fast() -> Any:
    draft07 = {k: v for k, v in WEBHOOK_SCHEMA.items() if k != "$schema"}
    draft07["$schema"] = "http://json-schema.org/draft-07/schema#"
    return fastjsonschema.compile(draft07)


@cache
def _full() -> jsonschema.protocols.Validator:
    return jsonschema.Draft202012Validator(WEBHOOK_SCHEMA)


def _where(path: Any) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "the body"


def check_payload(data: Any) -> None:
    """Raise PayloadError with the first problem (by position) if ``data`` is not valid."""
    try:
        _fast()(data)
        return
    except fastjsonschema.JsonSchemaException:
        pass
    errors = sorted(_full().iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    if not errors:  # the two validators disagree: trust the strict one
        return
    first = errors[0]
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    raise PayloadError(f"{_where(first.absolute_path)}: {first.message}{more}")


def fingerprint_of(labels: Mapping[str, str]) -> str:
    """Alertmanager's identity of an alert is its label set; used when a sender omits it."""
    canonical = json.dumps(dict(sorted(labels.items())), separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Alert:
    """One alert of a delivery, as stored and as runbook expressions see it (``alert.*``)."""

    fingerprint: str
    status: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str] = field(default_factory=dict)
    starts_at: str | None = None
    ends_at: str | None = None
    generator_url: str | None = None
    receiver: str | None = None
    group_key: str | None = None

    @property
    def alertname(self) -> str | None:
        return self.labels.get("alertname")

    @property
    def resolved(self) -> bool:
        return self.status == "resolved"

    def row(self, *, source: str) -> dict[str, Any]:
        """The store's record of this alert."""
        return {
            "fingerprint": self.fingerprint,
            "status": self.status,
            "alertname": self.alertname,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "generator_url": self.generator_url,
            "receiver": self.receiver,
            "group_key": self.group_key,
            "source": source,
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Alert:
        return cls(
            fingerprint=row["fingerprint"],
            status=row["status"],
            labels=dict(row.get("labels") or {}),
            annotations=dict(row.get("annotations") or {}),
            starts_at=row.get("starts_at"),
            ends_at=row.get("ends_at"),
            generator_url=row.get("generator_url"),
            receiver=row.get("receiver"),
            group_key=row.get("group_key"),
        )

    def context(self, **extra: Any) -> dict[str, Any]:
        """``alert`` in runbook and route expressions: labels, annotations, fingerprint..."""
        return {
            "fingerprint": self.fingerprint,
            "status": self.status,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "startsAt": self.starts_at,
            "endsAt": self.ends_at,
            "generatorURL": self.generator_url,
            "receiver": self.receiver,
            "groupKey": self.group_key,
            **extra,
        }


def parse_payload(data: Any) -> list[Alert]:
    """The alerts of a webhook payload; raises PayloadError saying what is wrong."""
    check_payload(data)
    receiver, group_key = data.get("receiver"), data.get("groupKey")
    alerts = []
    for raw in data["alerts"]:
        labels = dict(raw["labels"])
        alerts.append(
            Alert(
                fingerprint=raw.get("fingerprint") or fingerprint_of(labels),
                status=raw["status"],
                labels=labels,
                annotations=dict(raw.get("annotations") or {}),
                starts_at=raw.get("startsAt"),
                ends_at=raw.get("endsAt"),
                generator_url=raw.get("generatorURL"),
                receiver=receiver,
                group_key=group_key,
            )
        )
    return alerts
