"""Accepting alerts: durable before the answer, in batches, with a bounded backlog.

Every webhook request waits until its alerts are in the audit log and in the
store; only then is it answered 2xx, so an alert Alertmanager thinks
delivered is never lost. Requests that arrive together are written together
(group commit: one audit record and one transaction for the lot), which is
what lets a storm of thousands of alerts be stored in seconds.

The backlog (alerts accepted and not yet decided) is bounded: past
``max_queue`` a request is refused with ``Overloaded`` (503) before anything
is written, and Alertmanager retries it later. Nothing is ever accepted and
then dropped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from executor.errors import RunbookError
from executor.triggers.alerts import Alert

log = logging.getLogger("runbook.serve")

MAX_BATCH_ALERTS = 2000


class Overloaded(Exception):
    """The backlog is full: answer 503 with Retry-After so the sender retries."""


class Closed(Exception):
    """The server is shutting down and takes no new alerts."""


@dataclass
class _Delivery:
    alerts: Sequence[Alert]
    source: str
    done: Future[list[int]] = field(default_factory=Future)


class Intake:
    def __init__(
        self,
        store: Any,
        audit: Any,
        *,
        max_queue: int,
        on_stored: Callable[[Sequence[Alert]], None] | None = None,
    ) -> None:
        self.store = store
        self.audit = audit
        self.max_queue = max_queue
        self.on_stored = on_stored
        self._cond = threading.Condition()
        self._waiting: list[_Delivery] = []
        self._waiting_alerts = 0
        self._backlog = int(store.count_alerts(stage="queued"))
        self._closed = False
        self._thread = threading.Thread(target=self._write_loop, name="alert-intake", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def backlog(self) -> int:
        with self._cond:
            return self._backlog + self._waiting_alerts

    def submit(self, alerts: Sequence[Alert], source: str) -> Future[list[int]]:
        """Queue a delivery for the writer; its future gives the stored alert ids."""
        with self._cond:
            if self._closed:
                raise Closed("the server is shutting down; retry against the next one")
            if self._backlog + self._waiting_alerts + len(alerts) > self.max_queue:
                raise Overloaded(
                    f"{self._backlog + self._waiting_alerts} alert(s) wait to be decided "
                    f"(max_queue {self.max_queue}); retry shortly"
                )
            delivery = _Delivery(list(alerts), source)
            self._waiting.append(delivery)
            self._waiting_alerts += len(alerts)
            self._cond.notify()
        return delivery.done

    def decided(self, count: int) -> None:
        """The dispatcher decided ``count`` alerts: room for as many more."""
        with self._cond:
            self._backlog = max(0, self._backlog - count)

    def close(self, timeout: float = 10.0) -> None:
        """Refuse new deliveries, write the ones already waiting, stop the writer."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    # ---------------------------------------------------------------- writer

    def _take(self) -> list[_Delivery] | None:
        with self._cond:
            while not self._waiting and not self._closed:
                self._cond.wait()
            if not self._waiting:
                return None
            batch, count = [], 0
            while self._waiting and (
                not batch or count + len(self._waiting[0].alerts) <= MAX_BATCH_ALERTS
            ):
                delivery = self._waiting.pop(0)
                batch.append(delivery)
                count += len(delivery.alerts)
            return batch

    def _write_loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            count = sum(len(d.alerts) for d in batch)
            try:
                ids = self._write(batch)
            except BaseException as exc:  # every waiting request gets an answer
                with self._cond:
                    self._waiting_alerts -= count
                for delivery in batch:
                    delivery.done.set_exception(exc)
                if not isinstance(exc, RunbookError):
                    log.exception("storing alerts failed")
                continue
            with self._cond:
                self._waiting_alerts -= count
                self._backlog += count
            start = 0
            for delivery in batch:
                delivery.done.set_result(ids[start : start + len(delivery.alerts)])
                start += len(delivery.alerts)
            if self.on_stored is not None:
                self.on_stored([a for d in batch for a in d.alerts])

    def _write(self, batch: Sequence[_Delivery]) -> list[int]:
        """Audit first (fail-closed), then store; both once for the whole batch."""
        by_source: dict[str, list[Alert]] = {}
        for delivery in batch:
            by_source.setdefault(delivery.source, []).extend(delivery.alerts)
        for source, alerts in by_source.items():
            self.audit.append(
                "alerts.received",
                actor=source,
                data={
                    "count": len(alerts),
                    "alerts": [
                        {
                            "fingerprint": a.fingerprint,
                            "status": a.status,
                            "labels": dict(a.labels),
                            "receiver": a.receiver,
                            "group_key": a.group_key,
                        }
                        for a in alerts
                    ],
                },
            )
        rows = [a.row(source=d.source) for d in batch for a in d.alerts]
        ids: list[int] = self.store.add_alerts(rows)
        return ids
