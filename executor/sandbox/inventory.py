"""The Ansible inventory of a world, and an OpenSSH client config for people.

Host key checking stays on everywhere: both files point clients at the
world's own known_hosts, where every host key is pinned.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from executor.sandbox.hosts import KEX
from executor.sandbox.state import HostInfo

HOST_PYTHON = "/usr/bin/python3"
GROUPS = ("web", "db", "lb")


def inventory_data(hosts: Sequence[HostInfo], known_hosts: Path) -> dict[str, Any]:
    ssh_args = (
        f"-o UserKnownHostsFile={known_hosts} -o GlobalKnownHostsFile=/dev/null "
        f"-o StrictHostKeyChecking=yes -o KexAlgorithms={KEX}"
    )
    children: dict[str, Any] = {}
    for group in GROUPS:
        members = {
            h.name: {
                "ansible_host": h.address,
                "ansible_port": h.port,
                "ansible_user": h.user,
                "app_port": h.app_port,
            }
            for h in hosts
            if group in h.groups
        }
        if members:
            children[group] = {"hosts": members}
    return {
        "all": {
            "children": {
                "sandbox": {
                    "vars": {
                        "ansible_connection": "ssh",
                        "ansible_host_key_checking": True,
                        "ansible_ssh_common_args": ssh_args,
                        "ansible_python_interpreter": HOST_PYTHON,
                    },
                    "children": children,
                }
            }
        }
    }


def write_inventory(path: Path, hosts: Sequence[HostInfo], known_hosts: Path) -> None:
    header = "# Ansible inventory of the runbook sandbox, written by `sandbox/up`.\n"
    body = yaml.safe_dump(inventory_data(hosts, known_hosts), sort_keys=False, width=1000)
    path.write_text(header + body)


def write_ssh_config(
    path: Path, hosts: Sequence[HostInfo], known_hosts: Path, identity: Path
) -> None:
    """``ssh -F ssh_config web1`` with the operator key that ``sandbox ssh`` certifies."""
    blocks = [
        textwrap.dedent(
            f"""\
            Host {h.name}
              HostName {h.address}
              Port {h.port}
              User {h.user}
            """
        )
        for h in hosts
    ]
    blocks.append(
        textwrap.dedent(
            f"""\
            Host *
              UserKnownHostsFile {known_hosts}
              GlobalKnownHostsFile /dev/null
              StrictHostKeyChecking yes
              IdentitiesOnly yes
              IdentityFile {identity}
              CertificateFile {identity}-cert.pub
              KexAlgorithms {KEX}
              BatchMode yes
            """
        )
    )
    path.write_text("# OpenSSH client config of the runbook sandbox.\n" + "\n".join(blocks))
