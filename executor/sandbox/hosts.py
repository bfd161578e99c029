"""The SSH hosts: one real sshd per host on 127.0.0.1, trusting only the OpenBao user CA.

A host is an sshd with its own port, host key, login user and home directory;
that home is the host's own filesystem area, which is how one machine plays
several hosts. No static keys are accepted (``AuthorizedKeysFile none``): a
client gets in only with a certificate from the CA, for a principal that the
host's principals file lists.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import textwrap
from collections.abc import Sequence
from pathlib import Path

from executor.sandbox.errors import SandboxError
from executor.sandbox.keys import ed25519_keypair
from executor.sandbox.layout import Layout
from executor.sandbox.procs import ProcessRecord, Registry
from executor.sandbox.state import HostInfo

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")
# Principals by host group; "ops" is accepted everywhere.
GROUP_PRINCIPALS = {"web": "web", "db": "dba"}
# OpenSSH clients propose sntrup761 first, which costs ~100 ms per handshake here;
# the server's list decides what can be agreed, so it leaves sntrup761 out.
KEX = "curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256"


def host_roles(count: int) -> list[tuple[str, tuple[str, ...]]]:
    """Host names and groups: ``db1`` from 2 hosts, ``lb1`` from 3, the rest ``webN``.

    Five hosts give web1, web2, web3, db1, lb1. Every host is also in ``sandbox``.
    """
    if count < 1:
        raise SandboxError(f"a sandbox needs at least one host, not {count}")
    dbs = 1 if count >= 2 else 0
    lbs = 1 if count >= 3 else 0
    roles = [(f"web{i}", ("web", "sandbox")) for i in range(1, count - dbs - lbs + 1)]
    roles += [(f"db{i}", ("db", "sandbox")) for i in range(1, dbs + 1)]
    roles += [(f"lb{i}", ("lb", "sandbox")) for i in range(1, lbs + 1)]
    return roles


def plan_hosts(
    layout: Layout, count: int, ssh_ports: Sequence[int], app_ports: Sequence[int]
) -> tuple[HostInfo, ...]:
    hosts = []
    for (name, groups), port, app_port in zip(host_roles(count), ssh_ports, app_ports, strict=True):
        principals = ("ops", *(GROUP_PRINCIPALS[g] for g in groups if g in GROUP_PRINCIPALS))
        hosts.append(
            HostInfo(
                name=name,
                port=port,
                user=f"{layout.user_prefix}{name}",
                groups=groups,
                app_port=app_port,
                home=str(layout.host_home(name)),
                principals=principals,
            )
        )
    return tuple(hosts)


def write_host_files(layout: Layout, host: HostInfo) -> str:
    """Host key, principals file, sshd_config and the sudo wrapper; returns the host key."""
    etc = layout.host_etc(host.name)
    etc.mkdir(parents=True, exist_ok=True)
    key = ed25519_keypair()
    key_file = etc / "ssh_host_ed25519_key"
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.private_openssh)
    (etc / "ssh_host_ed25519_key.pub").write_text(key.public_openssh + "\n")
    (etc / "principals").write_text("\n".join(host.principals) + "\n")
    (etc / "sshd_config").write_text(sshd_config(layout, host))
    _write_svc(layout, host)
    return key.public_openssh


def sshd_config(layout: Layout, host: HostInfo) -> str:
    etc = layout.host_etc(host.name)
    path = f"{layout.host_sbin(host.name)}:{host.home}/bin:/usr/local/bin:/usr/bin:/bin"
    return textwrap.dedent(
        f"""\
        # sandbox host {host.name}: written by `sandbox/up`, removed by `sandbox/down`
        Port {host.port}
        ListenAddress 127.0.0.1
        AddressFamily inet
        HostKey {etc}/ssh_host_ed25519_key
        HostKeyAlgorithms ssh-ed25519
        PidFile none
        KexAlgorithms {KEX}
        LogLevel VERBOSE
        UsePAM no
        StrictModes no
        UseDNS no
        PermitRootLogin no
        AllowUsers {host.user}
        AuthenticationMethods publickey
        PubkeyAuthentication yes
        PasswordAuthentication no
        KbdInteractiveAuthentication no
        AuthorizedKeysFile none
        TrustedUserCAKeys {layout.ca_public_key}
        AuthorizedPrincipalsFile {etc}/principals
        MaxStartups 100
        MaxSessions 64
        X11Forwarding no
        AllowTcpForwarding no
        AllowAgentForwarding no
        PermitTunnel no
        PrintMotd no
        PrintLastLog no
        SetEnv PATH={path}
        Subsystem sftp internal-sftp
        """
    )


def _write_svc(layout: Layout, host: HostInfo) -> None:
    """The one command the host user may run with sudo: ``svc demoapp|worker ACTION``.

    It stands for ``systemctl`` and drops back to the host user at once, so sudo
    gives no power the user lacks; it exists so that runbooks' ``sudo: true``
    path is exercised for real.
    """
    sbin = layout.host_sbin(host.name)
    sbin.mkdir(parents=True, exist_ok=True)
    user, home = shlex.quote(host.user), shlex.quote(host.home)
    script = textwrap.dedent(
        f"""\
        #!/bin/bash
        # svc: control this host's services, like `systemctl`; meant for `sudo svc ...`.
        set -euo pipefail
        case "${{1:-}}" in
          demoapp) tool=appctl ;;
          worker) tool=workerctl ;;
          *) echo "usage: sudo svc demoapp|worker start|stop|restart|status" >&2; exit 2 ;;
        esac
        shift
        exec setpriv --reuid={user} --regid={user} --init-groups \\
          env -i HOME={home} USER={user} LOGNAME={user} PATH={home}/bin:/usr/bin:/bin \\
          {home}/bin/"$tool" "$@"
        """
    )
    svc = sbin / "svc"
    svc.write_text(script)
    svc.chmod(0o755)


def known_hosts_lines(host: HostInfo, host_key: str) -> list[str]:
    """Pinned as ``[127.0.0.1]:PORT`` (what clients look up) and by name (for HostKeyAlias)."""
    return [f"[{host.address}]:{host.port} {host_key}", f"{host.name} {host_key}"]


def sudoers_text(layout: Layout, hosts: Sequence[HostInfo]) -> str:
    lines = [
        f"# runbook sandbox {layout.root}: written by `sandbox/up`, removed by `sandbox/down`.",
        "# Each host user may run only its own service wrapper as root, nothing else.",
    ]
    for h in hosts:
        sbin = layout.host_sbin(h.name)
        lines.append(f'Defaults:{h.user} secure_path="{sbin}:/usr/bin:/bin"')
        lines.append(f"{h.user} ALL=(root) NOPASSWD: {sbin}/svc")
    return "\n".join(lines) + "\n"


def install_sudoers(layout: Layout, hosts: Sequence[HostInfo]) -> None:
    """Install the sudoers drop-in only after ``visudo`` accepts it.

    A broken file in /etc/sudoers.d breaks sudo for everyone on the machine, so
    it is checked under a name sudo ignores (it contains a dot), then renamed.
    """
    target = layout.sudoers_file
    if not target.parent.is_dir():
        raise SandboxError(
            f"{target.parent} does not exist: is sudo installed?",
            hint="run `bash sandbox/install-system-deps` (or `make deps`)",
        )
    staging = target.with_name(target.name + ".new")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o440)
    with os.fdopen(fd, "w") as f:
        f.write(sudoers_text(layout, hosts))
    check = subprocess.run(["visudo", "-cf", str(staging)], capture_output=True, text=True)
    if check.returncode != 0:
        staging.unlink()
        raise SandboxError(f"visudo rejected the sandbox sudoers: {check.stdout}{check.stderr}")
    staging.replace(target)


def remove_sudoers(layout: Layout) -> None:
    target = layout.sudoers_file
    for path in (target, target.with_name(target.name + ".new")):
        path.unlink(missing_ok=True)


def start_sshd(registry: Registry, layout: Layout, host: HostInfo) -> ProcessRecord:
    PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    log = layout.log_dir / f"sshd-{host.name}.log"
    argv = [SSHD, "-D", "-f", str(layout.host_etc(host.name) / "sshd_config"), "-E", str(log)]
    return registry.spawn(f"sshd-{host.name}", argv, port=host.port, env={"PATH": "/usr/bin:/bin"})
