"""Getting into the hosts: certificates from OpenBao, and an operator key for people.

There are no static keys anywhere in the sandbox. Tests sign their own keys
with ``sign_certificate``; a person runs ``python -m executor.sandbox ssh web1``,
which certifies the world's operator key for 15 minutes and runs ssh with the
world's ``ssh_config`` (host keys pinned, checking on).
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Sequence
from pathlib import Path

import hvac

from executor.sandbox import vault
from executor.sandbox.keys import ed25519_keypair
from executor.sandbox.layout import Layout
from executor.sandbox.state import SandboxInfo


def sign_certificate(
    info: SandboxInfo,
    public_key_openssh: str,
    principals: Sequence[str],
    ttl: str = "15m",
    key_id: str | None = None,
    *,
    token: str | None = None,
) -> str:
    """Have OpenBao's ``responder`` role sign a user key; returns the certificate line.

    Uses ``token`` if given, else the world's admin token. The AppRole's own
    token works too (``vault.approle_login``): that is what the executor does.
    """
    client = hvac.Client(url=info.vault_addr, token=token or info.admin_token, timeout=10)
    return vault.sign_public_key(client, public_key_openssh, principals, ttl, key_id)


def create_operator_key(layout: Layout) -> Path:
    """The key ``sandbox ssh`` certifies; its certificate is written on each use."""
    directory = layout.operator_dir
    directory.mkdir(mode=0o700, exist_ok=True)
    key = ed25519_keypair()
    identity = directory / "id_ed25519"
    fd = os.open(identity, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.private_openssh)
    (directory / "id_ed25519.pub").write_text(key.public_openssh + "\n")
    return identity


def ssh_argv(info: SandboxInfo, host: str, command: Sequence[str], ttl: str = "15m") -> list[str]:
    """Certify the operator key for ``ops`` and return the ssh command line to run."""
    info.host(host)  # a clear error for an unknown host
    identity = Layout(info.state_dir).operator_dir / "id_ed25519"
    public = (identity.parent / "id_ed25519.pub").read_text().strip()
    cert = sign_certificate(info, public, ["ops"], ttl, key_id=f"operator-{getpass.getuser()}")
    Path(f"{identity}-cert.pub").write_text(cert + "\n")
    return ["ssh", "-F", str(info.ssh_config), host, *command]
