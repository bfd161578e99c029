"""The unix users the hosts log in as, and running commands as them.

Each host has its own login user (not root: root's shell start-up here costs
about 110 ms per remote command). ``useradd`` leaves the account locked, and
sshd refuses a locked account even for certificate login when PAM is off, so
the password field is set to ``*`` (no password, not locked).
"""

from __future__ import annotations

import pwd
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from executor.sandbox.errors import SandboxError


def _run(argv: Sequence[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SandboxError(f"`{' '.join(argv)}` failed: {done.stderr.strip() or done.stdout}")


def exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def ensure_user(name: str, home: Path) -> None:
    """Create ``name`` with ``home`` (not created here), or point an existing one at it."""
    if exists(name):
        _run(["usermod", "-d", str(home), "-s", "/bin/bash", "-p", "*", name])
    else:
        _run(["useradd", "-M", "-d", str(home), "-s", "/bin/bash", "-p", "*", name])


def delete_user(name: str) -> None:
    if exists(name):
        _run(["userdel", name])


def ids(name: str) -> tuple[int, int]:
    entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid


def run_as(
    user: str,
    argv: Sequence[str],
    *,
    home: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as ``user`` in a clean environment, the way a login would see it."""
    uid, gid = ids(user)
    base = {
        "HOME": str(home),
        "USER": user,
        "LOGNAME": user,
        "PATH": f"{home}/bin:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
    }
    base.update(env or {})
    return subprocess.run(
        list(argv),
        user=uid,
        group=gid,
        extra_groups=[],
        env=base,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
