"""Credentials from Vault (hvac): per-run child tokens, SSH certificates, KV secrets.

``VaultSettings.from_env()`` reads where Vault is and how to log in;
``VaultCredentialProvider`` (one per run) issues what the run's steps need and
revokes it all when the run ends. ``SshCertificate`` is the ``material`` of a
``vault_ssh`` credential: an in-memory key pair and its signed certificate.
"""

from executor.credentials.settings import VaultSettings
from executor.credentials.sshkeys import SshCertificate
from executor.credentials.vault import VaultCredential, VaultCredentialProvider

__all__ = ["SshCertificate", "VaultCredential", "VaultCredentialProvider", "VaultSettings"]
