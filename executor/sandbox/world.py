"""Bring a whole world up.

``up`` starts OpenBao first and, while it boots, prepares users, host keys
and homes, starts every sshd and the services of every host; then it
configures OpenBao. With ``alerting`` (what ``sandbox/up`` asks for) it also
starts Prometheus and Alertmanager, watching the hosts' demoapp and paging
``runbook serve`` (``executor.sandbox.alerting``). Whatever goes wrong
half-way, ``up`` takes down what it started before it raises, and ``down``
can undo any half-built world because ``plan.json`` and the process records
are written before anything starts.
"""

from __future__ import annotations

import os
import secrets
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from executor.sandbox import access, services, users, vault
from executor.sandbox import alerting as alerting_module
from executor.sandbox import hosts as sshd_hosts
from executor.sandbox.errors import SandboxError
from executor.sandbox.inventory import write_inventory, write_ssh_config
from executor.sandbox.layout import Layout
from executor.sandbox.lifecycle import OWNED_ENTRIES, Log, down, has_world, quiet, status
from executor.sandbox.procs import ProcessRecord, Registry, free_ports, wait_listening
from executor.sandbox.state import HostInfo, Plan, SandboxInfo, load_info, save_info

SAFE_PATH_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./-")


def up(
    hosts: int = 5,
    state_dir: Path | str | None = None,
    *,
    log: Log = quiet,
    alerting: bool = False,
) -> SandboxInfo:
    """Bring a world up in ``state_dir``; if one is already fully up there, return it.

    ``alerting`` adds Prometheus and Alertmanager (to a world already up, too).
    """
    layout = Layout.of(state_dir)
    _preflight(layout)
    if has_world(layout):
        if status(layout.root)["state"] == "up":
            log(f"the sandbox is already up in {layout.root}")
            info = load_info(layout.root)
            if alerting:
                alerting_module.ensure(info)
            return info
        log(f"cleaning up a half-dead sandbox in {layout.root}")
        down(layout.root)
    try:
        info = _build(layout, hosts)
        if alerting:
            alerting_module.ensure(info)
        return info
    except BaseException:
        down(layout.root)
        raise


def _preflight(layout: Layout) -> None:
    if os.geteuid() != 0:
        raise SandboxError(
            "the sandbox needs root: it creates unix users, runs sshd and writes /etc/sudoers.d",
            hint="run it as root (the dev container runs everything as root)",
        )
    for tool in (sshd_hosts.SSHD, "/usr/sbin/useradd", "/usr/bin/sudo", "/usr/sbin/visudo"):
        if not os.path.exists(tool):
            raise SandboxError(
                f"{tool} is missing", hint="run `bash sandbox/install-system-deps` (or `make deps`)"
            )
    if not set(str(layout.root)) <= SAFE_PATH_CHARS:
        raise SandboxError(
            f"the sandbox state directory {layout.root} has characters sshd_config and "
            "sudoers cannot take unquoted",
            hint="use a path of letters, digits, '_', '.', '-' and '/' (RUNBOOK_SANDBOX_DIR)",
        )
    if layout.root.is_dir():
        foreign = sorted(p.name for p in layout.root.iterdir() if p.name not in OWNED_ENTRIES)
        if foreign:
            raise SandboxError(
                f"{layout.root} is not empty and is not a sandbox state directory "
                f"(it holds {', '.join(foreign[:5])})",
                hint="point RUNBOOK_SANDBOX_DIR at an empty or new directory",
            )


def _make_root(layout: Layout) -> None:
    """Create the state directory so host users can reach their homes inside it."""
    layout.root.mkdir(parents=True, exist_ok=True)
    layout.root.chmod(0o755)
    for parent in layout.root.parents:
        if not parent.stat().st_mode & stat.S_IXOTH:
            raise SandboxError(
                f"host users cannot reach their homes: {parent} is not searchable by others",
                hint=f"choose a state directory outside {parent}, or `chmod o+x {parent}`",
            )


def _build(layout: Layout, count: int) -> SandboxInfo:
    """Start everything that does not need OpenBao while OpenBao boots, then configure it.

    sshd reads ``TrustedUserCAKeys`` per connection, so the hosts can start
    before the CA key exists; ``up`` returns (and clients connect) only after.
    """
    _make_root(layout)
    ports = free_ports(1 + 2 * count)
    plan = sshd_hosts.plan_hosts(layout, count, ports[1 : 1 + count], ports[1 + count :])
    Plan(plan).save(layout)
    registry = Registry(layout.run_dir, layout.log_dir)
    root_token = secrets.token_hex(20)
    addr = f"http://127.0.0.1:{ports[0]}"
    vault_proc = vault.start(registry, layout, ports[0], root_token)

    python = services.host_python()
    _prepare_hosts(layout, plan, python)
    sshds = [sshd_hosts.start_sshd(registry, layout, h) for h in plan]
    with ThreadPoolExecutor(max_workers=1) as background:
        started = background.submit(services.start_all, plan)
        vault.wait_ready(vault_proc)
        setup = vault.configure(addr, root_token)
        layout.ca_public_key.write_text(setup.ca_public_key + "\n")
        _wait_all(sshds)
        started.result()
    sshd_hosts.install_sudoers(layout, plan)
    write_inventory(layout.inventory, plan, layout.known_hosts)
    identity = access.create_operator_key(layout)
    write_ssh_config(layout.ssh_config, plan, layout.known_hosts, identity)
    info = SandboxInfo(
        state_dir=layout.root,
        vault_addr=addr,
        role_id=setup.role_id,
        secret_id=setup.secret_id,
        admin_token=root_token,
        inventory=layout.inventory,
        known_hosts=layout.known_hosts,
        ssh_config=layout.ssh_config,
        hosts=plan,
        ca_public_key=setup.ca_public_key,
        sudoers_file=layout.sudoers_file,
        host_python=python,
    )
    save_info(layout, info)
    return info


def _prepare_hosts(layout: Layout, plan: tuple[HostInfo, ...], python: str) -> None:
    """Users, host keys, sshd configs, homes, and the known_hosts that pins the keys."""
    host_keys = {}
    backends = [h for h in plan if "web" in h.groups]
    for host in plan:
        users.ensure_user(host.user, Path(host.home))
        host_keys[host.name] = sshd_hosts.write_host_files(layout, host)
        services.install(host, python, backends)
    lines = [line for h in plan for line in sshd_hosts.known_hosts_lines(h, host_keys[h.name])]
    layout.known_hosts.write_text("".join(f"{line}\n" for line in lines))


def _wait_all(records: list[ProcessRecord]) -> None:
    with ThreadPoolExecutor(max_workers=max(1, len(records))) as pool:
        for future in [pool.submit(wait_listening, r) for r in records]:
            future.result()
