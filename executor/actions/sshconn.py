"""Getting an SSH connection the ``ssh`` action may trust, and keeping it for the run.

Three rules shape this module:

- **Host keys are pinned.** Fabric's default is to accept and remember any
  host key (``AutoAddPolicy``): at 3 a.m. that turns a man in the middle into
  a silent success. Here only the configured known_hosts file counts (never
  ``~/.ssh/known_hosts`` nor any ssh_config file), an unknown key is refused
  and a changed key is refused, each with a message that says which host,
  which address and what to check.
- **The certificate is the identity.** The step's Vault-signed certificate
  and its in-memory key are the only thing offered (no agent, no key files).
  What the certificate says (serial, principals, validity) is read locally so
  that a refusal can be explained ("principals [dba] are not allowed for
  rb-web2") and an expired certificate fails before any connection is tried.
- **A connection serves one run and one certificate.** Connections are
  pooled per run and keyed by host, address, port, user and the certificate's
  fingerprint, so a second step on the same hosts reuses the transport, and a
  connection authenticated with one certificate never carries a command for
  another. The run's end closes them (``close_run``).
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fabric
import paramiko
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from paramiko.ssh_exception import NoValidConnectionsError

from executor.errors import ActionError
from executor.ports import IssuedCredential

FOREVER = 2**64 - 1
"""``valid_before`` of a certificate that never expires."""

# --------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class CertificateInfo:
    """What an OpenSSH user certificate says about itself (nothing secret)."""

    key_type: str
    serial: int
    key_id: str
    principals: tuple[str, ...]
    valid_after: int
    valid_before: int
    fingerprint: str
    """SHA256 of the certificate blob: distinguishes two certificates with equal serials."""
    certified_key: str = ""
    """The public key the certificate vouches for, as ``ssh-ed25519 AAAA...``."""

    def principals_text(self) -> str:
        return "[" + ", ".join(self.principals) + "]"

    def expired(self, now: float) -> bool:
        return self.valid_before != FOREVER and now >= self.valid_before

    def not_yet_valid(self, now: float) -> bool:
        return now < self.valid_after

    def describe(self) -> str:
        return f"certificate serial {self.serial} (principals {self.principals_text()})"


def parse_certificate(text: str) -> CertificateInfo:
    """Read an OpenSSH certificate line (``ssh-ed25519-cert-v01@openssh.com AAAA...``).

    Raises ActionError when the text is not an OpenSSH certificate.
    """
    hint = "the credential must be a vault_ssh certificate signed by Vault's SSH CA"
    parts = text.strip().split()
    try:
        parsed = serialization.load_ssh_public_identity(text.strip().encode("ascii"))
    except (ValueError, UnicodeEncodeError, UnsupportedAlgorithm) as exc:
        raise ActionError(
            f"the credential's certificate cannot be parsed: {exc}", hint=hint
        ) from None
    if not isinstance(parsed, serialization.SSHCertificate):
        raise ActionError(
            "the credential holds a plain public key where a certificate is needed", hint=hint
        )
    blob = base64.b64decode(parts[1])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return CertificateInfo(
        key_type=parts[0],
        serial=parsed.serial,
        key_id=parsed.key_id.decode("utf-8", "replace"),
        principals=tuple(p.decode("utf-8", "replace") for p in parsed.valid_principals),
        valid_after=parsed.valid_after,
        valid_before=parsed.valid_before,
        fingerprint=f"SHA256:{digest}",
        certified_key=parsed.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode(),
    )


def format_time(epoch: int | float) -> str:
    if epoch >= FOREVER:
        return "never"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class ClientIdentity:
    """An in-memory private key with the step's certificate attached to it."""

    key: paramiko.PKey = field(repr=False)
    cert: CertificateInfo

    def check_valid(self, now: float) -> str | None:
        """Why the certificate cannot be used at ``now``, or None if it can."""
        if self.cert.expired(now):
            return (
                f"the {self.cert.describe()} expired at {format_time(self.cert.valid_before)}: "
                "nothing was run; the run must obtain a fresh certificate (retry the step, or "
                "raise the credential's ttl if the run outlives it)"
            )
        if self.cert.not_yet_valid(now):
            return (
                f"the {self.cert.describe()} is valid only from "
                f"{format_time(self.cert.valid_after)}: check this machine's clock"
            )
        return None


_KEY_CLASSES: tuple[type[paramiko.PKey], ...] = (
    paramiko.Ed25519Key,
    paramiko.ECDSAKey,
    paramiko.RSAKey,
)


def _load_private_key(text: str) -> paramiko.PKey:
    for cls in _KEY_CLASSES:
        try:
            return cls.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError, TypeError):
            continue
    raise ActionError(
        "the credential's private key cannot be loaded (not an unencrypted "
        "Ed25519, ECDSA or RSA key)",
        hint="the vault_ssh credential provider must hand over an OpenSSH private key",
    )


def identity_from_credential(credential: IssuedCredential) -> ClientIdentity:
    """A fresh key object with the certificate loaded, from a ``vault_ssh`` credential.

    The material is read through its public methods (``private_key_openssh()``
    and ``certificate()``); a new key object is made each time so that loading
    the certificate never mutates an object the credential provider shares.
    Error messages name the credential, never its content.
    """
    material = credential.material
    where = f"credential {credential.name!r} ({credential.kind})"
    get_key = getattr(material, "private_key_openssh", None)
    get_cert = getattr(material, "certificate", None)
    if not callable(get_key) or not callable(get_cert):
        raise ActionError(
            f"{where} holds no SSH key and certificate",
            hint="an ssh step needs a vault_ssh credential (credentials: NAME: {vault_ssh: ...})",
        )
    cert_text = str(get_cert()).strip()
    info = parse_certificate(cert_text)
    key = _load_private_key(str(get_key()))
    if info.certified_key != f"{key.get_name()} {key.get_base64()}":
        raise ActionError(
            f"{where}: the certificate ({info.describe()}) does not belong to the private key",
            hint="this is a credential provider bug: it must sign the key it hands over",
        )
    key.load_certificate(cert_text)
    return ClientIdentity(key=key, cert=info)


# --------------------------------------------------------------------------- hosts


@dataclass(frozen=True)
class HostAddress:
    """Where and as whom to log in to one inventory host."""

    name: str
    address: str
    port: int
    user: str

    @property
    def lookup_name(self) -> str:
        """The name known_hosts files use for this address (``[addr]:port`` off port 22)."""
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"

    def __str__(self) -> str:
        return f"{self.user}@{self.address}:{self.port}"


def host_address(name: str, host_vars: Mapping[str, Any]) -> HostAddress:
    """Address, port and login user from a host's inventory variables, as Ansible reads them.

    The login user must be explicit: a certificate's principals map to one
    account, and falling back to the executor's own user (often root) would
    only produce a confusing refusal.
    """
    address = _first(host_vars, "ansible_host", "ansible_ssh_host") or name
    raw_port = _first(host_vars, "ansible_port", "ansible_ssh_port")
    raw_port = 22 if raw_port is None else raw_port
    user = _first(host_vars, "ansible_user", "ansible_ssh_user")
    try:
        port = int(raw_port)
    except (TypeError, ValueError):
        port = 0
    if not 0 < port < 65536:
        raise ActionError(
            f"host {name!r} has an invalid ansible_port {raw_port!r} in the inventory",
            hint="set ansible_port to the port its sshd listens on (1-65535)",
        )
    if not user:
        raise ActionError(
            f"host {name!r} has no ansible_user in the inventory",
            hint="set ansible_user to the account the certificate's principals may log in as",
        )
    return HostAddress(name=name, address=str(address), port=port, user=str(user))


def _first(values: Mapping[str, Any], *names: str) -> Any:
    """The first of ``names`` that is set (not None), as Ansible prefers the newer name."""
    for name in names:
        if values.get(name) is not None:
            return values[name]
    return None


class PinnedHostKeys:
    """The known_hosts file the runner trusts, re-read when it changes on disk."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._keys = paramiko.HostKeys()

    def lookup(self, name: str) -> Mapping[str, paramiko.PKey]:
        """Pinned keys for ``name`` by key type; empty if none (or no file)."""
        with self._lock:
            self._refresh()
            return dict(self._keys.lookup(name) or {})

    def missing(self) -> str | None:
        """Why the file cannot be used, or None."""
        if not self.path.is_file():
            return (
                f"the known_hosts file {self.path} does not exist: refusing to connect to any "
                "host without pinned host keys"
            )
        return None

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except OSError:
            self._keys, self._stamp = paramiko.HostKeys(), None
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            self._keys = paramiko.HostKeys(str(self.path))
            self._stamp = stamp


class HostKeyRefused(paramiko.SSHException):
    """The host offered a key that known_hosts does not pin."""


class RefuseUnknownHostKey(paramiko.RejectPolicy):
    """``RejectPolicy`` whose refusal names the inventory host and the file to fix."""

    def __init__(self, target: HostAddress, known_hosts: Path) -> None:
        self.target = target
        self.known_hosts = known_hosts

    def missing_host_key(self, client: Any, hostname: str, key: paramiko.PKey) -> None:
        raise HostKeyRefused(
            f"host key for {self.target.name} ({self.target.lookup_name}) is not in known_hosts "
            f"{self.known_hosts} (the host offered {key.get_name()} {key.fingerprint}): refusing "
            "to connect; verify the key out of band and pin it in that file"
        )


def explain_connect_error(
    exc: BaseException, target: HostAddress, cert: CertificateInfo, known_hosts: Path
) -> str:
    """One line on why a host could not be reached or refused us, and what to check."""
    if isinstance(exc, HostKeyRefused):
        return str(exc)
    if isinstance(exc, paramiko.BadHostKeyException):
        return (
            f"host key for {target.name} ({target.lookup_name}) does not match the key pinned in "
            f"known_hosts {known_hosts}: the host offered {exc.key.get_name()} "
            f"{exc.key.fingerprint}, the file pins {exc.expected_key.fingerprint}: refusing to "
            "connect (a rebuilt host or a man in the middle); verify the new key out of band "
            "before replacing the pinned one"
        )
    if isinstance(exc, paramiko.AuthenticationException):
        return (
            f"authentication refused: the certificate's principals {cert.principals_text()} are "
            f"not allowed for {target.user} on {target.name}, or {target.name} does not trust "
            f"the CA that signed it ({cert.describe()}, key id {cert.key_id!r}); nothing was run"
        )
    if isinstance(exc, NoValidConnectionsError | ConnectionRefusedError):
        return (
            f"cannot connect to {target.address}:{target.port}: connection refused; is sshd "
            f"running on {target.name}, and are ansible_host/ansible_port right in the inventory?"
        )
    if isinstance(exc, socket.timeout | TimeoutError):
        return (
            f"no answer from {target.address}:{target.port} ({target.name}) in time: the host "
            "is down or a firewall drops the connection"
        )
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve {target.address!r} ({target.name}): {exc.strerror or exc}"
    if isinstance(exc, paramiko.SSHException):
        return f"SSH handshake with {target.name} ({target}) failed: {exc or type(exc).__name__}"
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc) or type(exc).__name__
        return f"cannot connect to {target.address}:{target.port} ({target.name}): {reason}"
    return f"cannot connect to {target.name} ({target}): {type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- the pool


def hermetic_config() -> fabric.Config:
    """A Fabric config that reads no ssh_config and no Fabric/Invoke config file.

    Files in the executor's home must not redirect a host, add keys or a proxy
    behind the runbook's back: everything comes from the inventory.
    """
    return fabric.Config(lazy=True, ssh_config=paramiko.SSHConfig())


@dataclass
class _Slot:
    """One pooled connection and the lock that serialises opening it."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    connection: fabric.Connection | None = None


PoolKey = tuple[str, str, int, str, str]


class ConnectionPool:
    """Open Fabric connections, per run, reused by later steps of the same run.

    Thread-safe: hosts of a step connect in parallel, and two steps of one run
    that reach the same host at once share one connection (a transport carries
    many channels) rather than racing to open two.
    """

    def __init__(
        self,
        known_hosts: PinnedHostKeys,
        *,
        connect_timeout: float = 10.0,
    ) -> None:
        self.known_hosts = known_hosts
        self.connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._runs: dict[str, dict[PoolKey, _Slot]] = {}

    @staticmethod
    def key(target: HostAddress, identity: ClientIdentity) -> PoolKey:
        return (target.name, target.address, target.port, target.user, identity.cert.fingerprint)

    def acquire(
        self, run_id: str, target: HostAddress, identity: ClientIdentity
    ) -> tuple[fabric.Connection, bool]:
        """An open connection and whether it was reused. Raises what connecting raised."""
        with self._lock:
            slot = self._runs.setdefault(run_id, {}).setdefault(self.key(target, identity), _Slot())
        with slot.lock:
            conn = slot.connection
            if conn is not None and conn.is_connected:
                return conn, True
            if conn is not None:
                conn.close()
            slot.connection = None
            conn = self._open(target, identity)
            slot.connection = conn
            return conn, False

    def discard(self, run_id: str, target: HostAddress, identity: ClientIdentity) -> None:
        """Forget (and close) a connection found broken, so the next step reconnects."""
        with self._lock:
            slot = self._runs.get(run_id, {}).pop(self.key(target, identity), None)
        if slot is not None and slot.connection is not None:
            slot.connection.close()

    def open_count(self, run_id: str | None = None) -> int:
        with self._lock:
            runs = [self._runs.get(run_id, {})] if run_id else list(self._runs.values())
            return sum(
                1
                for run in runs
                for s in run.values()
                if s.connection and s.connection.is_connected
            )

    def transports(self, run_id: str) -> dict[tuple[str, str], paramiko.Transport]:
        """Transports of ``run_id`` by (host, certificate fingerprint): for diagnostics."""
        with self._lock:
            slots = list(self._runs.get(run_id, {}).items())
        return {
            (key[0], key[4]): slot.connection.transport
            for key, slot in slots
            if slot.connection is not None and slot.connection.transport is not None
        }

    def close_run(self, run_id: str) -> int:
        """Close every connection of ``run_id``; returns how many there were."""
        with self._lock:
            slots = self._runs.pop(run_id, {})
        return _close_slots(slots.values())

    def close(self) -> int:
        with self._lock:
            slots = [s for run in self._runs.values() for s in run.values()]
            self._runs.clear()
        return _close_slots(slots)

    def _open(self, target: HostAddress, identity: ClientIdentity) -> fabric.Connection:
        timeout = self.connect_timeout
        conn = fabric.Connection(
            host=target.address,
            port=target.port,
            user=target.user,
            config=hermetic_config(),  # one each: Invoke configs are not thread-safe
            forward_agent=False,
            connect_kwargs={
                "pkey": identity.key,
                "look_for_keys": False,
                "allow_agent": False,
                "timeout": timeout,
                "banner_timeout": timeout,
                "auth_timeout": timeout,
            },
        )
        client = conn.client
        client.set_missing_host_key_policy(RefuseUnknownHostKey(target, self.known_hosts.path))
        pinned = client.get_host_keys()
        for key_type, key in self.known_hosts.lookup(target.lookup_name).items():
            pinned.add(target.lookup_name, key_type, key)
        try:
            conn.connect_kwargs["sock"] = _tcp_connect(target, timeout)
            conn.open()
        except BaseException:
            conn.close()
            sock = conn.connect_kwargs.get("sock")
            if sock is not None:
                sock.close()
            raise
        return conn


def _tcp_connect(target: HostAddress, timeout: float) -> socket.socket:
    """The TCP connection under the SSH transport, with Nagle's algorithm off.

    Every request on a warm connection (open a channel, exec) is one small
    packet waiting for one small answer; with Nagle on, some of them wait
    for a delayed ACK, about 40 ms each, which is more than the command costs.
    """
    sock = socket.create_connection((target.address, target.port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _close_slots(slots: Any) -> int:
    count = 0
    for slot in slots:
        with slot.lock:
            if slot.connection is not None:
                slot.connection.close()
                slot.connection = None
                count += 1
    return count
