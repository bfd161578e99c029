"""One exception hierarchy for the whole executor.

Every message is written for the person who must act on it: it says what went
wrong, where, and what to do next. Library code raises these; only the CLI
turns them into exit codes (library code never calls ``sys.exit``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class RunbookError(Exception):
    """Root of every error the executor raises on purpose.

    ``exit_code`` is what the CLI exits with when this error reaches it.
    """

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class UsageError(RunbookError):
    """The command line or an argument is wrong (exit code 2)."""

    exit_code = 2


@dataclass(frozen=True)
class Issue:
    """One problem found in a file, with the place a person must look at.

    ``severity`` is ``error`` (the runbook is refused) or ``warning`` (lint).
    ``code`` is a short stable identifier that tests and ``--json`` consumers
    can rely on; the message is for people and may be reworded.
    """

    path: str
    line: int
    column: int
    message: str
    code: str = "invalid"
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.message}"

    def as_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "line": self.line,
            "column": self.column,
            "message": self.message,
            "code": self.code,
            "severity": self.severity,
        }


class ValidationFailed(RunbookError):
    """A runbook (or routes/scenario file) has one or more errors.

    Carries every issue found, not only the first, so a person fixes them all
    in one pass.
    """

    def __init__(self, issues: Sequence[Issue]) -> None:
        self.issues = list(issues)
        lines = "\n".join(str(i) for i in self.issues)
        super().__init__(f"{len(self.issues)} problem(s) found:\n{lines}")


class CatalogError(RunbookError):
    """The catalog cannot resolve a runbook, or two versions conflict."""


class PolicyRefused(RunbookError):
    """A policy guard refused to start a run or a step (exit code 3)."""

    exit_code = 3


class KillSwitchEngaged(PolicyRefused):
    """The kill-switch is engaged globally or for this runbook (exit code 4)."""

    exit_code = 4


class AuditWriteError(RunbookError):
    """The audit record could not be written, so the action did not happen.

    Audit is fail-closed (DESIGN.md section 3): fix the audit file or disk and
    resume the run.
    """

    exit_code = 5


class StoreError(RunbookError):
    """The state store failed or holds something unexpected."""

    exit_code = 5


class NotFound(RunbookError):
    """A run, step or runbook named by the user does not exist."""

    exit_code = 2


class ApprovalRefused(RunbookError):
    """An approval or denial was not accepted (wrong group, own run, done)."""

    exit_code = 3


class CredentialError(RunbookError):
    """Vault could not issue, renew or revoke a credential."""


class ActionError(RunbookError):
    """An action could not be carried out (distinct from a command failing)."""


class ExpressionError(RunbookError):
    """A guard or template could not be evaluated."""
