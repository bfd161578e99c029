"""SSH key pairs that live only in memory, and the certificates Vault signs for them.

A run's SSH identity is a fresh ed25519 key generated in this process and a
short-lived certificate from Vault's SSH CA. The private key is never written
to disk: Fabric gets a paramiko key object, ansible-runner gets the text
through ``ssh_key=`` (it hands it to ssh-agent). Nothing here prints the
private key; ``repr`` shows only what an audit record may show.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import UTC, datetime

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from executor.errors import CredentialError


class KeyPair:
    """A fresh ed25519 key pair; the private half never leaves memory."""

    def __init__(self) -> None:
        self._private = ed25519.Ed25519PrivateKey.generate()
        # Serialised once: the OpenSSH format carries a random check value, so
        # each serialisation differs, and the masker must know the text handed out.
        self._private_text = self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ).decode("ascii")

    @property
    def public_openssh(self) -> str:
        """``ssh-ed25519 AAAA...``: what Vault signs."""
        public = self._private.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        return public.decode("ascii")

    def public_raw(self) -> bytes:
        return self._private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def private_openssh(self) -> str:
        """The unencrypted OpenSSH private key text (for ssh-agent via ansible-runner)."""
        return self._private_text

    def __repr__(self) -> str:
        return "KeyPair(ed25519, private half hidden)"


class SshCertificate:
    """A key pair plus the user certificate Vault signed for it: the ``material`` of a
    ``vault_ssh`` credential.

    ``private_key`` is a paramiko key with the certificate loaded, ready for
    Fabric/paramiko (``connect_kwargs={"pkey": ...}``); ``private_key_openssh()``
    and ``certificate()`` give the two files' contents for OpenSSH clients.
    """

    def __init__(self, keys: KeyPair, certificate_openssh: str) -> None:
        text = certificate_openssh.strip()
        try:
            parsed = serialization.load_ssh_public_identity(text.encode("ascii"))
        except (ValueError, UnicodeEncodeError) as exc:
            raise CredentialError(
                f"Vault returned something that is not an OpenSSH certificate: {exc}",
                hint="check that the Vault role is an SSH CA role (key_type=ca)",
            ) from None
        if not isinstance(parsed, serialization.SSHCertificate):
            raise CredentialError(
                "Vault returned a plain public key where a certificate was expected",
                hint="check that the Vault role is an SSH CA role (key_type=ca)",
            )
        certified = parsed.public_key()
        if not isinstance(certified, ed25519.Ed25519PublicKey) or (
            certified.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            != keys.public_raw()
        ):
            raise CredentialError(
                "Vault returned a certificate for a different public key than the one sent",
                hint="this should never happen; report it to the Vault admins",
            )
        self._keys = keys
        self._text = text
        self.serial: int = parsed.serial
        self.key_id: str = parsed.key_id.decode("utf-8", "replace")
        self.principals: tuple[str, ...] = tuple(
            p.decode("utf-8", "replace") for p in parsed.valid_principals
        )
        self.valid_after: int = parsed.valid_after
        self.valid_before: int = parsed.valid_before
        self.user_certificate: bool = parsed.type is serialization.SSHCertificateType.USER
        self.private_key: paramiko.PKey = self._paramiko_key()

    def _paramiko_key(self) -> paramiko.PKey:
        key = paramiko.Ed25519Key(file_obj=io.StringIO(self._keys.private_openssh()))
        key.load_certificate(self._text)
        return key

    def private_key_openssh(self) -> str:
        """The private key as OpenSSH text, for ``ssh_key=`` of ansible-runner."""
        return self._keys.private_openssh()

    def certificate(self) -> str:
        """The ``-cert.pub`` file's content (``ssh-ed25519-cert-v01@openssh.com ...``)."""
        return self._text + "\n"

    def public_key_openssh(self) -> str:
        return self._keys.public_openssh

    def expected(self, principals: Sequence[str], key_id: str) -> None:
        """Refuse a certificate that is not exactly what was asked for.

        Vault enforces its role; this checks that the role did not widen the
        request (a default principal added, another key id), because a
        certificate must carry only the principals the step needs.
        """
        problems = []
        if not self.user_certificate:
            problems.append("it is not a user certificate")
        if sorted(self.principals) != sorted(principals):
            problems.append(
                f"it names principals {', '.join(self.principals) or '(none)'}, "
                f"not exactly {', '.join(principals)}"
            )
        if self.key_id != key_id:
            problems.append(f"its key id is {self.key_id!r}, not {key_id!r}")
        if problems:
            raise CredentialError(
                f"refusing the certificate Vault signed (serial {self.serial}): "
                + "; ".join(problems),
                hint="check the Vault SSH role's allowed_users, default_user and "
                "allow_user_key_ids settings",
            )

    def needs_renewal(self, now: float, margin: float = 60.0) -> bool:
        """True once the certificate expires within ``margin`` seconds: sign a new one."""
        return now + margin >= self.valid_before

    @property
    def valid_before_iso(self) -> str:
        return iso_utc(self.valid_before)

    def __repr__(self) -> str:
        return (
            f"SshCertificate(key_id={self.key_id!r}, serial={self.serial}, "
            f"principals={list(self.principals)}, valid_before={self.valid_before_iso})"
        )

    __str__ = __repr__


def iso_utc(epoch: float) -> str:
    """``2026-11-22T11:34:54Z``: how audit records show an instant.

    An OpenSSH certificate without expiry has valid_before 2**64-1: "forever".
    """
    try:
        return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return "forever"
