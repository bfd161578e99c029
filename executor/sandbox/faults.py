"""Breaking a host on purpose, and putting it back.

Faults act directly on the host's files and processes as root (the sandbox's
own machine), not over SSH: a fault must work even when the thing it breaks is
what SSH would need, and it must not show up in the host's SSH log as if a
runbook had done it. Files they write are handed to the host user, so the
repair a runbook makes over SSH, as that user, works.

    kill            demoapp dies (SIGKILL): /health refuses connections, pid file stale
    fill-disk       old logs fill ~/data to 97%: /health 500 "disk full", diskusage 97
    corrupt-config  config.ini becomes unparsable: /health 500, demoapp_config_valid 0
    stick-queue     the worker dies holding its lock, messages pile up: queue depth > 0,
                    `workerctl status` says stuck, `workerctl start` refuses
    bad-release     release 1.2.0, marked broken, goes live: /health 500
    repair-all      the host's initial state, services running
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

from executor.sandbox import services, users
from executor.sandbox.errors import SandboxError
from executor.sandbox.procs import pids_of_uids, terminate
from executor.sandbox.state import HostInfo, SandboxInfo

FILL_TO_PERCENT = 97
FILL_FILE_BYTES = 8 * 1024 * 1024
OLD_LOG_AGE_DAYS = 10
STUCK_MESSAGES = 40
BAD_RELEASE = "1.2.0"
CORRUPT_CONFIG = "[app\nworkers = four\n# config.ini: truncated by a bad deploy\n"


def _own(path: Path, host: HostInfo) -> None:
    uid, gid = users.ids(host.user)
    os.chown(path, uid, gid, follow_symlinks=False)


def _sigkill(host: HostInfo, service: str) -> int | None:
    pid = services.service_pid(host, service)
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while services.service_pid(host, service) == pid and time.monotonic() < deadline:
            time.sleep(0.01)
    return pid


def kill(info: SandboxInfo, host: HostInfo) -> str:
    pid = _sigkill(host, "demoapp")
    if pid is None:
        raise SandboxError(f"demoapp on {host.name} is not running: there is nothing to kill")
    return f"killed demoapp on {host.name} (pid {pid}); its pid file is left behind"


def fill_disk(info: SandboxInfo, host: HostInfo) -> str:
    logs = Path(host.home) / "data" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    capacity = services.DISK_CAPACITY_MB * 1024 * 1024
    used = sum(p.stat().st_size for p in (Path(host.home) / "data").rglob("*") if p.is_file())
    missing = -(-capacity * FILL_TO_PERCENT // 100) - used  # rounded up: diskusage shows 97
    old = time.time() - OLD_LOG_AGE_DAYS * 86400
    index = 0
    while missing > 0:
        index += 1
        path = logs / f"app.log.{index}"
        while path.exists():
            index += 1
            path = logs / f"app.log.{index}"
        size = min(FILL_FILE_BYTES, missing)
        with open(path, "wb") as f:
            f.truncate(size)  # sparse: the disk budget counts apparent size
        os.utime(path, (old, old))
        _own(path, host)
        missing -= size
    return (
        f"filled the data disk of {host.name} to {FILL_TO_PERCENT}% with logs "
        f"{OLD_LOG_AGE_DAYS} days old in {logs}"
    )


def corrupt_config(info: SandboxInfo, host: HostInfo) -> str:
    config = Path(host.home) / "app" / "config.ini"
    config.write_text(CORRUPT_CONFIG)
    _own(config, host)
    return f"corrupted {config} (the last known good copy is config.ini.good)"


def stick_queue(info: SandboxInfo, host: HostInfo) -> str:
    queue = Path(host.home) / "queue"
    dead = _sigkill(host, "worker")
    lock = queue / "worker.lock"
    if not lock.exists():
        lock.write_text(f"{dead or _dead_pid()}\n")
        _own(lock, host)
    for n in range(STUCK_MESSAGES):
        message = queue / "incoming" / f"msg-{time.time_ns()}-{n:03d}.json"
        message.write_text(f'{{"id": {n}}}\n')
        _own(message, host)
    return f"killed the worker on {host.name} holding {lock} and queued {STUCK_MESSAGES} messages"


def _dead_pid() -> int:
    """A pid no process has now, for a stale lock when no worker was running."""
    pid = 999_999
    while Path(f"/proc/{pid}").exists():
        pid -= 1
    return pid


def bad_release(info: SandboxInfo, host: HostInfo) -> str:
    app = Path(host.home) / "app"
    previous = (app / "current").resolve().name
    release = app / "releases" / BAD_RELEASE
    if release.exists():
        shutil.rmtree(release)
    shutil.copytree(app / "releases" / services.CURRENT_RELEASE, release)
    (release / "VERSION").write_text(BAD_RELEASE + "\n")
    (release / "BROKEN").write_text("smoke test failed: migration 0042 was not applied\n")
    services.chown_tree(release, host.user)
    link = app / "current.new"
    link.unlink(missing_ok=True)
    link.symlink_to(f"releases/{BAD_RELEASE}")
    _own(link, host)
    link.replace(app / "current")
    services.control(host, "demoapp", "restart")
    return (
        f"deployed broken release {BAD_RELEASE} on {host.name} and restarted demoapp; "
        f"the previous release was {previous}"
    )


def repair_all(info: SandboxInfo, host: HostInfo) -> str:
    for service in ("worker", "demoapp"):
        services.control(host, service, "stop", check=False)
    _stop_strays(host)
    services.install(host, info.host_python, info.group("web"))
    services.start_all([host])
    return f"restored {host.name} to its initial state; demoapp and worker are running"


def _stop_strays(host: HostInfo) -> None:
    """Service processes of the host user that their pid files lost track of."""
    uid = users.ids(host.user)[0]
    app_dir = f"{host.home}/app/"
    strays = {}
    for pid in pids_of_uids([uid]):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except FileNotFoundError:
            continue
        if app_dir in cmdline:
            strays[pid] = None
    if strays:
        terminate(strays, grace=2.0)


FAULTS: dict[str, Callable[[SandboxInfo, HostInfo], str]] = {
    "kill": kill,
    "fill-disk": fill_disk,
    "corrupt-config": corrupt_config,
    "stick-queue": stick_queue,
    "bad-release": bad_release,
    "repair-all": repair_all,
}


def inject(info: SandboxInfo, host_name: str, fault: str) -> list[str]:
    """Apply ``fault`` to one host (or to every host, for ``all``); one line per host."""
    if fault not in FAULTS:
        raise SandboxError(f"unknown fault {fault!r}; choose one of: {', '.join(FAULTS)}")
    targets = list(info.hosts) if host_name == "all" else [info.host(host_name)]
    return [FAULTS[fault](info, host) for host in targets]
