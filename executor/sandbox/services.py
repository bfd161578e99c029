"""The breakable services on each host: demoapp, its queue worker, and on lb hosts a
load balancer membership file.

Each host's home gets the same layout (``sandbox/app/`` holds the sources):

    ~/bin/appctl, workerctl, diskusage, lbctl   control scripts
    ~/app/releases/1.0.0, 1.1.0                 releases (a BROKEN file marks one broken)
    ~/app/current -> releases/1.1.0             the running release
    ~/app/config.ini, config.ini.good           config, and its last known good copy
    ~/app/disk.conf                             capacity of the simulated data disk
    ~/app/env                                   HOST_NAME, APP_PORT, PYTHON for the scripts
    ~/data/logs/                                what fills the disk
    ~/queue/incoming/, ~/queue/worker.lock      the queue and the worker's lock
    ~/lb/backends                               lb hosts: "NAME ADDRESS enabled|drained"
    ~/run/*.pid, ~/log/*.log                    pid files and logs

``install`` writes that layout from scratch (it is also what ``repair-all``
restores), and the services are started as the host user through the same
``appctl``/``workerctl`` a runbook would call over SSH.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from executor.sandbox import users
from executor.sandbox.errors import SandboxError
from executor.sandbox.layout import APP_SOURCE_DIR
from executor.sandbox.procs import is_running, uid_of
from executor.sandbox.state import HostInfo

RELEASES = ("1.0.0", "1.1.0")
CURRENT_RELEASE = RELEASES[-1]
DISK_CAPACITY_MB = 64
BASELINE_LOG_BYTES = 2 * 1024 * 1024  # ~3% of the disk used after install
SCRIPTS = ("appctl", "workerctl", "diskusage")
LB_SCRIPTS = ("lbctl",)
CODE = ("demoapp.py", "worker.py")
SERVICES = {"demoapp": "appctl", "worker": "workerctl"}


def host_python() -> str:
    """A python3 every host user can execute.

    The virtualenv's interpreter lives under /root here (mode 0700), out of a
    host user's reach; demoapp needs only the standard library, so the
    system python3 serves when the sandbox's own is not reachable.
    """
    for candidate in (os.path.realpath(sys.executable), "/usr/bin/python3"):
        if _world_executable(Path(candidate)):
            return candidate
    raise SandboxError(
        "no python3 that unprivileged users can run: the virtualenv's is private and "
        "/usr/bin/python3 is missing",
        hint="install Debian's python3 (apt-get install python3)",
    )


def _world_executable(path: Path) -> bool:
    try:
        if not path.is_file() or not path.stat().st_mode & stat.S_IXOTH:
            return False
        return all(p.stat().st_mode & stat.S_IXOTH for p in path.parents)
    except OSError:
        return False


def _copy(src: Path, dst: Path, mode: int) -> None:
    shutil.copyfile(src, dst)
    dst.chmod(mode)


def install(host: HostInfo, python: str, backends: Sequence[HostInfo]) -> None:
    """Write the host's home from scratch (keeping nothing), owned by the host user."""
    if not APP_SOURCE_DIR.is_dir():
        raise SandboxError(f"the sandbox app sources are missing: {APP_SOURCE_DIR}")
    home = Path(host.home)
    if home.exists():
        shutil.rmtree(home)
    for sub in ("bin", "app/releases", "data/logs", "queue/incoming", "run", "log"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    for name in SCRIPTS + (LB_SCRIPTS if "lb" in host.groups else ()):
        _copy(APP_SOURCE_DIR / name, home / "bin" / name, 0o755)
    for version in RELEASES:
        release = home / "app" / "releases" / version
        release.mkdir()
        for name in CODE:
            _copy(APP_SOURCE_DIR / name, release / name, 0o755)
        (release / "VERSION").write_text(version + "\n")
    (home / "app" / "current").symlink_to(f"releases/{CURRENT_RELEASE}")
    for name in ("config.ini", "config.ini.good"):
        _copy(APP_SOURCE_DIR / "config.ini", home / "app" / name, 0o644)
    (home / "app" / "disk.conf").write_text(f"capacity_mb = {DISK_CAPACITY_MB}\n")
    (home / "app" / "env").write_text(
        f"HOST_NAME={host.name}\nAPP_PORT={host.app_port}\nPYTHON={python}\n"
    )
    with open(home / "data" / "logs" / "app.log", "wb") as f:
        f.truncate(BASELINE_LOG_BYTES)  # sparse: the budget counts apparent size
    if "lb" in host.groups:
        (home / "lb").mkdir()
        lines = [f"{b.name} 127.0.0.1:{b.app_port} enabled" for b in backends]
        (home / "lb" / "backends").write_text("\n".join(lines) + "\n")
    chown_tree(home, host.user)
    home.chmod(0o700)  # each host's area is its own: other host users cannot look in


def chown_tree(path: Path, user: str) -> None:
    uid, gid = users.ids(user)
    os.chown(path, uid, gid, follow_symlinks=False)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def control(host: HostInfo, service: str, action: str, *, check: bool = True) -> str:
    """Run ``appctl``/``workerctl`` ACTION as the host user; the script's output."""
    home = Path(host.home)
    done = users.run_as(host.user, [str(home / "bin" / SERVICES[service]), action], home=home)
    output = (done.stdout + done.stderr).strip()
    if check and done.returncode != 0:
        raise SandboxError(f"{service} {action} on {host.name} failed: {output}")
    return output


def start_all(hosts: Sequence[HostInfo]) -> None:
    """Start demoapp and the worker on every host, all at once (they are independent)."""
    jobs = [(h, service) for h in hosts for service in SERVICES]
    with ThreadPoolExecutor(max_workers=max(1, len(jobs))) as pool:
        for future in [pool.submit(control, h, service, "start") for h, service in jobs]:
            future.result()


def service_pid(host: HostInfo, service: str) -> int | None:
    """The pid in the service's pid file, if that process runs as the host user."""
    pidfile = Path(host.home) / "run" / f"{service}.pid"
    try:
        pid = int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        uid = users.ids(host.user)[0]
    except KeyError:
        return None
    return pid if is_running(pid) and uid_of(pid) == uid else None
