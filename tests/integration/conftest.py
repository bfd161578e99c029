"""Shared fixtures for integration tests: one sandbox world per test session.

``sandbox`` brings a fresh world up once, in its own directory (so it never
touches a developer's ``sandbox/.state`` world, nor another test session's),
and always takes it down at the end of the session, after failures and
interrupts too. ``sandbox_identity`` makes SSH keys and OpenBao-signed
certificates for it.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path

import paramiko
import pytest

from executor.sandbox import SandboxInfo, down, sign_certificate, up
from executor.sandbox.keys import ed25519_keypair

WORLD_PREFIX = "runbook-sandbox-session-"


def _take_down_abandoned_worlds() -> None:
    """Worlds left by test sessions that were killed (SIGKILL skips finalizers).

    A world's directory carries the pid of the session that made it; a world
    whose session is gone is taken down. A live session's world is left alone.
    """
    for path in Path(tempfile.gettempdir()).glob(f"{WORLD_PREFIX}*"):
        try:
            owner = int(path.name[len(WORLD_PREFIX) :].split("-")[0])
        except ValueError:
            continue
        if owner != os.getpid() and not Path(f"/proc/{owner}").exists():
            down(path)
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxInfo]:
    """A running world of five hosts (web1-3, db1, lb1), OpenBao and the demo services.

    Tests may break services (``executor.sandbox.inject``) but must repair
    what they break (``repair-all``), since the world is shared by the session.
    """
    _take_down_abandoned_worlds()
    # Not pytest's tmp_path: that lives under a 0700 directory the host users
    # could not traverse to reach their homes.
    state_dir = Path(tempfile.mkdtemp(prefix=f"{WORLD_PREFIX}{os.getpid()}-"))
    try:
        info = up(hosts=5, state_dir=state_dir)
        yield info
    finally:
        down(state_dir)
        if state_dir.exists():
            state_dir.rmdir()


@dataclass(frozen=True)
class Identity:
    """An SSH key pair on disk (mode 0600), with its certificate when it has one.

    The certificate sits beside the key as ``<key>-cert.pub``, where OpenSSH and
    Ansible pick it up on their own.
    """

    key_file: Path
    public_key: str
    cert: str | None

    @property
    def cert_file(self) -> Path | None:
        return Path(f"{self.key_file}-cert.pub") if self.cert else None

    def pkey(self) -> paramiko.PKey:
        """A paramiko key (with its certificate loaded) for ``SSHClient.connect(pkey=...)``."""
        key = paramiko.Ed25519Key(file_obj=io.StringIO(self.key_file.read_text()))
        if self.cert:
            key.load_certificate(self.cert)
        return key


@pytest.fixture(scope="session")
def sandbox_identity(
    sandbox: SandboxInfo, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., Identity]:
    """``make(principals=("ops",), ttl="15m", key_id=None, certify=True) -> Identity``."""

    def make(
        principals: Sequence[str] = ("ops",),
        ttl: str = "15m",
        key_id: str | None = None,
        *,
        certify: bool = True,
    ) -> Identity:
        directory = tmp_path_factory.mktemp("ssh-identity")
        pair = ed25519_keypair()
        key_file = directory / "id_ed25519"
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(pair.private_openssh)
        (directory / "id_ed25519.pub").write_text(pair.public_openssh + "\n")
        cert = None
        if certify:
            cert = sign_certificate(sandbox, pair.public_openssh, principals, ttl, key_id)
            Path(f"{key_file}-cert.pub").write_text(cert + "\n")
        return Identity(key_file, pair.public_openssh, cert)

    return make


FORK = multiprocessing.get_context("fork")  # cheap: no re-import per worker


@pytest.fixture
def start() -> Iterator[Callable[..., BaseProcess]]:
    """Start forked worker processes; whatever is still alive at the end is killed."""
    started: list[BaseProcess] = []

    def _start(target: Callable[..., None], *args: object) -> BaseProcess:
        process = FORK.Process(target=target, args=args)
        process.start()
        started.append(process)
        return process

    yield _start
    for process in started:
        if process.is_alive():
            process.kill()
        process.join(timeout=10)
