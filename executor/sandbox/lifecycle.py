"""Inspect a world and take it down, by pid.

Kept apart from ``world`` (which brings a world up) so that ``status`` and
``down`` load no Vault client: they are what a person runs in a hurry.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from executor.sandbox import hosts, services, users
from executor.sandbox.errors import SandboxError
from executor.sandbox.layout import Layout
from executor.sandbox.procs import (
    Registry,
    descendants,
    pids_of_uids,
    port_open,
    start_ticks,
    terminate,
)
from executor.sandbox.state import HostInfo, Plan, load_info

Log = Callable[[str], None]


def quiet(message: str) -> None:
    """The default ``log``: the Python API prints nothing."""


# Everything a world writes in its state directory; ``down`` removes these and
# nothing else, so a mistaken RUNBOOK_SANDBOX_DIR cannot cost anyone a directory.
OWNED_ENTRIES = (
    "env.json",
    "env.sh",
    "plan.json",
    "known_hosts",
    "inventory.yml",
    "ssh_config",
    "run",
    "logs",
    "vault",
    "hosts",
    "operator",
    "alerting",
)


def has_world(layout: Layout) -> bool:
    return layout.root.is_dir() and any(layout.root.iterdir())


def _planned_hosts(layout: Layout) -> tuple[HostInfo, ...]:
    plan = Plan.load(layout)
    if plan is not None:
        return plan.hosts
    try:
        return load_info(layout.root).hosts
    except SandboxError:
        return ()


def _world_pids(registry: Registry, host_list: tuple[HostInfo, ...]) -> dict[int, int | None]:
    """Every process of the world, with its start time: managed processes, their
    children (sshd's per-connection processes) and anything running as a host user."""
    targets: dict[int, int | None] = {r.pid: r.start_ticks for r in registry.records() if r.alive()}
    uids = [users.ids(h.user)[0] for h in host_list if users.exists(h.user)]
    for pid in descendants(targets) | pids_of_uids(uids):
        ticks = start_ticks(pid)
        if ticks is not None:
            targets.setdefault(pid, ticks)
    return targets


def down(state_dir: Path | str | None = None, *, log: Log = quiet) -> dict[str, Any]:
    """Stop every process of the world by pid, remove its users, sudoers file and state.

    Raises SandboxError if a process survives SIGKILL (the state is then kept,
    so a second ``down`` can try again).
    """
    layout = Layout.of(state_dir)
    registry = Registry(layout.run_dir, layout.log_dir)
    host_list = _planned_hosts(layout)
    stopped: list[int] = []
    for _ in range(3):  # a session may fork while the first round runs
        targets = _world_pids(registry, host_list)
        if not targets:
            break
        survivors = terminate(targets)
        stopped += [p for p in targets if p not in survivors]
        if survivors:
            raise SandboxError(
                f"processes {', '.join(map(str, survivors))} of the sandbox in {layout.root} "
                "survived SIGKILL",
                hint="look at them with `ps -o pid,user,stat,cmd -p PID...` and run down again",
            )
    hosts.remove_sudoers(layout)
    for host in host_list:
        users.delete_user(host.user)
    removed = _remove_state(layout)
    if stopped or removed:
        log(f"sandbox down: stopped {len(stopped)} process(es), removed {layout.root}")
    else:
        log(f"no sandbox in {layout.root}")
    return {"state_dir": str(layout.root), "stopped_pids": sorted(stopped), "removed": removed}


def _remove_state(layout: Layout) -> bool:
    """Remove what the world wrote (and the directory, if that leaves it empty)."""
    if not layout.root.is_dir():
        return False
    removed = False
    for name in OWNED_ENTRIES:
        path = layout.root / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        removed = True
    with contextlib.suppress(OSError):  # something else lives there: leave it
        layout.root.rmdir()
    return removed


def status(state_dir: Path | str | None = None) -> dict[str, Any]:
    """What runs: each managed process (pid alive, port listening), each host's services.

    ``state`` is ``up`` when every managed process runs and listens, ``down``
    when there is no world, ``partial`` otherwise. A stopped demoapp or worker
    does not make the world partial: breaking them is what faults are for.
    """
    layout = Layout.of(state_dir)
    registry = Registry(layout.run_dir, layout.log_dir)
    processes = [
        {
            "name": r.name,
            "pid": r.pid,
            "alive": r.alive(),
            "port": r.port,
            "listening": r.port is None or port_open(r.port),
            "log": r.log,
        }
        for r in registry.records()
    ]
    host_list = _planned_hosts(layout)
    host_rows = [_host_status(h) for h in host_list]
    report: dict[str, Any] = {
        "state_dir": str(layout.root),
        "processes": processes,
        "hosts": host_rows,
        "sudoers": layout.sudoers_file.exists(),
    }
    if not has_world(layout):
        report["state"] = "down"
        return report
    # Every recorded process must run, so a service added to ``up`` later
    # (Prometheus, Alertmanager) counts here without a change.
    expected = {"vault", *(f"sshd-{h.name}" for h in host_list)}
    healthy = {p["name"] for p in processes if p["alive"] and p["listening"]}
    complete = (
        layout.env_json.exists()
        and expected <= healthy
        and len(healthy) == len(processes)
        and report["sudoers"]
        and all(row["user_exists"] for row in host_rows)
    )
    report["state"] = "up" if complete else "partial"
    return report


def _host_status(host: HostInfo) -> dict[str, Any]:
    demoapp = services.service_pid(host, "demoapp") if users.exists(host.user) else None
    worker = services.service_pid(host, "worker") if users.exists(host.user) else None
    return {
        "name": host.name,
        "ssh_port": host.port,
        "user": host.user,
        "user_exists": users.exists(host.user),
        "groups": list(host.groups),
        "app_port": host.app_port,
        "demoapp_pid": demoapp,
        "demoapp_listening": port_open(host.app_port),
        "worker_pid": worker,
    }
