"""The sandbox's one exception type.

Kept inside the package (not in ``executor.errors``) because only the sandbox,
its CLI wrapper and the tests that use it ever see it.
"""

from __future__ import annotations

from executor.errors import RunbookError


class SandboxError(RunbookError):
    """The sandbox could not be brought up, inspected or taken down.

    The message names the part that failed and the log file to read.
    """
