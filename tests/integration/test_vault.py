"""Vault credentials against a real OpenBao: the sandbox's, and a private one to seal.

Everything the provider does is checked from Vault's side with the admin
token (the child token's policies and TTL, that it is gone after the run),
and every certificate is read back independently with ``ssh-keygen -L``.
Each refusal has its case: a role outside the run's policy, a path outside
it, a wrong secret id, Vault down, Vault sealed, a token that expired.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import hvac
import hvac.exceptions
import paramiko
import pytest
from cryptography.hazmat.primitives import serialization

from executor.credentials import SshCertificate, VaultCredentialProvider, VaultSettings
from executor.errors import CredentialError
from executor.model import CredentialSpec
from executor.sandbox import SandboxInfo
from executor.sandbox import vault as sandbox_vault
from executor.sandbox.keys import ed25519_keypair

pytestmark = pytest.mark.integration

RUN_POLICY = "runbook-run"


def ssh_spec(
    principals: tuple[str, ...] = ("ops",), ttl: float | None = 900, role: str = "responder"
) -> CredentialSpec:
    return CredentialSpec(
        name="ops_ssh", kind="vault_ssh", role=role, principals=principals, ttl=ttl
    )


KV_SPEC = CredentialSpec(name="api", kind="vault_kv", path="runbooks/demo-app", key="api_key")


def run_id() -> str:
    return f"run-{secrets.token_hex(4)}"


def approle_env(addr: str, role_id: str, secret_id: str) -> dict[str, str]:
    return {"VAULT_ADDR": addr, "VAULT_ROLE_ID": role_id, "VAULT_SECRET_ID": secret_id}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def admin(sandbox: SandboxInfo) -> hvac.Client:
    """The sandbox's root token: only to check from Vault's side what the provider did."""
    return hvac.Client(url=sandbox.vault_addr, token=sandbox.admin_token, timeout=10)


@pytest.fixture
def providers(sandbox: SandboxInfo) -> Iterator[Callable[..., VaultCredentialProvider]]:
    """``make(run_id, ttl=600, **settings changes)``; every provider is revoked at the end."""
    made: list[VaultCredentialProvider] = []
    base = VaultSettings.from_env(
        approle_env(sandbox.vault_addr, sandbox.role_id, sandbox.secret_id)
    )

    def make(rid: str, ttl: float = 600, **changes: object) -> VaultCredentialProvider:
        provider = VaultCredentialProvider(base.with_overrides(**changes), rid, ttl)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        provider.revoke_all()


@dataclass(frozen=True)
class PrivateVault:
    addr: str
    root_token: str
    role_id: str
    secret_id: str


@pytest.fixture
def private_vault(tmp_path: Path) -> Iterator[PrivateVault]:
    """A dev OpenBao of this test's own (to seal it), configured as the sandbox's is."""
    port = free_port()
    root = secrets.token_hex(16)
    log = (tmp_path / "bao.log").open("wb")
    process = subprocess.Popen(
        [
            sandbox_vault.bao_binary(),
            "server",
            "-dev",
            f"-dev-listen-address=127.0.0.1:{port}",
            "-dev-no-store-token",
        ],
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "BAO_DEV_ROOT_TOKEN_ID": root},
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        addr = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while True:
            try:
                if httpx.get(f"{addr}/v1/sys/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, (tmp_path / "bao.log").read_text()
            assert time.monotonic() < deadline, "OpenBao did not become ready"
            time.sleep(0.02)
        setup = sandbox_vault.configure(addr, root)
        yield PrivateVault(addr, root, setup.role_id, setup.secret_id)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


# --- child token ------------------------------------------------------------------------


def test_approle_login_makes_a_child_token_with_the_run_ttl_and_only_the_run_policy(
    sandbox: SandboxInfo, admin: hvac.Client, providers: Callable[..., VaultCredentialProvider]
) -> None:
    rid = run_id()
    provider = providers(rid, ttl=600)
    issued = provider.issue(ssh_spec(), run_id=rid, ttl=600)
    assert issued.public["key_id"] == rid
    accessor = provider.token_info["accessor"]
    token = admin.auth.token.lookup_accessor(accessor)["data"]
    assert token["policies"] == [RUN_POLICY]  # not even "default"
    assert 590 <= token["ttl"] <= 600 and token["explicit_max_ttl"] == 600
    assert token["renewable"] is False and token["orphan"] is False
    assert token["meta"] == {"run_id": rid}
    assert token["display_name"] == f"token-run-{rid}"
    assert token["path"] == "auth/token/create/runbook-run"

    records = provider.revoke_all()
    assert {r["what"]: r["result"] for r in records} == {
        "ssh_certificate": "expires",
        "run_token": "revoked",
        "login_token": "revoked",
    }
    with pytest.raises(hvac.exceptions.VaultError):
        admin.auth.token.lookup_accessor(accessor)
    assert provider.revoke_all() == []  # idempotent
    with pytest.raises(CredentialError, match="already revoked"):
        provider.issue(KV_SPEC, run_id=rid, ttl=60)


def test_signing_uses_the_child_token_so_a_role_outside_the_run_policy_is_refused(
    sandbox: SandboxInfo, admin: hvac.Client, providers: Callable[..., VaultCredentialProvider]
) -> None:
    # A role that exists and that the executor's own AppRole token may use
    # (ssh/sign/*), but that the run policy does not grant.
    admin.secrets.ssh.create_role(
        name="outside-policy",
        key_type="ca",
        allow_user_certificates=True,
        allowed_users="ops",
        ttl="5m",
        allow_user_key_ids=True,
        mount_point="ssh",
    )
    login = sandbox_vault.approle_login(sandbox.vault_addr, sandbox.role_id, sandbox.secret_id)
    login.secrets.ssh.sign_ssh_key(
        name="outside-policy", public_key=ed25519_keypair().public_openssh, valid_principals="ops"
    )  # the login token could
    login.auth.token.revoke_self()

    rid = run_id()
    with pytest.raises(CredentialError) as info:
        providers(rid).issue(ssh_spec(role="outside-policy"), run_id=rid, ttl=600)
    assert info.value.message == (
        f"Vault denied signing with role 'outside-policy' (mount 'ssh') at {sandbox.vault_addr}: "
        "1 error occurred: permission denied"
    )
    assert info.value.hint


# --- the certificate --------------------------------------------------------------------


def keygen_fields(cert_file: Path) -> dict[str, object]:
    out = subprocess.run(
        ["ssh-keygen", "-L", "-f", str(cert_file)], capture_output=True, text=True, check=True
    ).stdout
    principals = re.search(r"Principals:\s*\n((?:\s{16}\S+\n)+)", out)
    return {
        "type": re.search(r"Type: (.+)", out).group(1).strip(),  # type: ignore[union-attr]
        "key_id": re.search(r'Key ID: "(.*)"', out).group(1),  # type: ignore[union-attr]
        "serial": re.search(r"Serial: (\d+)", out).group(1),  # type: ignore[union-attr]
        "principals": principals.group(1).split() if principals else [],
        "ca": re.search(r"Signing CA: \S+ (\S+)", out).group(1),  # type: ignore[union-attr]
    }


def test_the_certificate_has_exactly_the_declared_principals_the_run_id_and_a_short_ttl(
    sandbox: SandboxInfo, providers: Callable[..., VaultCredentialProvider], tmp_path: Path
) -> None:
    rid = run_id()
    provider = providers(rid)
    before = time.time()
    issued = provider.issue(ssh_spec(("ops", "web"), ttl=900), run_id=rid, ttl=90)
    cert: SshCertificate = issued.material
    cert_file = tmp_path / "id-cert.pub"  # a certificate is public; the key is never written
    cert_file.write_text(cert.certificate())
    fields = keygen_fields(cert_file)
    ca_fp = subprocess.run(
        ["ssh-keygen", "-l", "-f", "-"],
        input=sandbox.ca_public_key,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[1]
    assert fields == {
        "type": "ssh-ed25519-cert-v01@openssh.com user certificate",
        "key_id": rid,
        "serial": issued.public["serial"],
        "principals": ["ops", "web"],
        "ca": ca_fp,
    }
    parsed = serialization.load_ssh_public_identity(cert.certificate().encode())
    assert isinstance(parsed, serialization.SSHCertificate)
    assert parsed.valid_before <= before + 90 + 2  # min(declared 900s, 90s left in the run)
    assert parsed.valid_before >= before + 85
    assert issued.public["ttl"] == 90 and issued.expires_at == parsed.valid_before
    assert issued.public["principals"] == ["ops", "web"] and issued.public["lease_id"] == ""
    assert not cert.needs_renewal(time.time(), margin=30)
    assert cert.needs_renewal(time.time(), margin=120)


def test_the_material_logs_in_to_a_sandbox_host_with_paramiko(
    sandbox: SandboxInfo, providers: Callable[..., VaultCredentialProvider]
) -> None:
    rid = run_id()
    issued = providers(rid).issue(ssh_spec(("web",)), run_id=rid, ttl=300)
    host = sandbox.host("web2")
    client = paramiko.SSHClient()
    client.load_host_keys(str(sandbox.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            host.address,
            port=host.port,
            username=host.user,
            pkey=issued.material.private_key,
            allow_agent=False,
            look_for_keys=False,
            timeout=10,
        )
        _, stdout, _ = client.exec_command("id -un")
        assert stdout.read().decode().strip() == host.user
    finally:
        client.close()


# --- KV ---------------------------------------------------------------------------------


def test_kv_read_gives_the_secret_and_lists_it_for_masking(
    sandbox: SandboxInfo, admin: hvac.Client, providers: Callable[..., VaultCredentialProvider]
) -> None:
    truth = admin.secrets.kv.v2.read_secret_version(
        path="runbooks/demo-app-db", raise_on_deleted_version=True
    )["data"]
    rid = run_id()
    provider = providers(rid)
    issued = provider.issue(KV_SPEC, run_id=rid, ttl=600)
    expected = admin.secrets.kv.v2.read_secret_version(
        path="runbooks/demo-app", raise_on_deleted_version=True
    )["data"]["data"]["api_key"]
    assert issued.material == expected and issued.secret_values == (expected,)
    assert issued.public["path"] == "secret/runbooks/demo-app"
    assert issued.public["key"] == "api_key" and issued.public["lease_id"] == ""
    whole = provider.issue(
        CredentialSpec(name="db", kind="vault_kv", path="secret/runbooks/demo-app-db"),
        run_id=rid,
        ttl=600,
    )
    assert whole.material == truth["data"]
    assert whole.public["version"] == truth["metadata"]["version"]
    assert set(whole.secret_values) == set(truth["data"].values())

    with pytest.raises(CredentialError) as info:
        provider.issue(
            CredentialSpec(name="x", kind="vault_kv", path="other/admin"), run_id=rid, ttl=600
        )
    assert info.value.message.startswith(
        f"Vault denied reading secret 'secret/other/admin' (KV v2) at {sandbox.vault_addr}"
    )
    with pytest.raises(CredentialError, match="found nothing for reading secret 'secret/runbooks/"):
        provider.issue(
            CredentialSpec(name="y", kind="vault_kv", path="runbooks/missing"), run_id=rid, ttl=60
        )


# --- failures ---------------------------------------------------------------------------


def test_a_wrong_secret_id_is_refused_without_showing_it(
    sandbox: SandboxInfo, providers: Callable[..., VaultCredentialProvider]
) -> None:
    rid = run_id()
    wrong = "0badc0de-" + secrets.token_hex(8)
    with pytest.raises(CredentialError) as info:
        providers(rid, secret_id=wrong).issue(KV_SPEC, run_id=rid, ttl=60)
    assert "logging in with AppRole" in str(info.value)
    assert "invalid role or secret ID" in str(info.value)
    assert wrong not in str(info.value) and "VAULT_SECRET_ID" in str(info.value)


def test_vault_down_names_the_address() -> None:
    addr = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings = VaultSettings.from_env(approle_env(addr, "role", "secret-id-xyz"))
    provider = VaultCredentialProvider(settings, "run-down", 60)
    started = time.monotonic()
    with pytest.raises(CredentialError) as info:
        provider.issue(ssh_spec(), run_id="run-down", ttl=60)
    assert time.monotonic() - started < 5
    assert info.value.message == (
        f"Vault at {addr} is unreachable, so logging in with AppRole (mount 'approle') "
        "failed: connection refused"
    )
    assert "VAULT_ADDR" in (info.value.hint or "")
    assert provider.revoke_all() == []


def test_a_sealed_vault_is_a_clear_error_and_revocation_does_not_raise(
    private_vault: PrivateVault,
) -> None:
    settings = VaultSettings.from_env(
        approle_env(private_vault.addr, private_vault.role_id, private_vault.secret_id)
    )
    provider = VaultCredentialProvider(settings, "run-seal", 600)
    assert provider.issue(KV_SPEC, run_id="run-seal", ttl=600).material.startswith("demo-")
    hvac.Client(url=private_vault.addr, token=private_vault.root_token).sys.seal()

    with pytest.raises(CredentialError) as info:
        provider.issue(ssh_spec(), run_id="run-seal", ttl=600)
    assert info.value.message == (
        f"Vault at {private_vault.addr} is sealed or unavailable, so signing with role "
        "'responder' (mount 'ssh') failed: Vault is sealed"
    )
    assert "unseal" in (info.value.hint or "")
    records = provider.revoke_all()  # must not raise: the run is ending anyway
    assert {r["what"]: r["result"] for r in records} == {
        "run_token": "failed",
        "login_token": "failed",
    }
    assert all("sealed" in r["error"] for r in records)

    fresh = VaultCredentialProvider(settings, "run-seal-2", 600)
    with pytest.raises(CredentialError, match="is sealed or unavailable, so logging in"):
        fresh.issue(KV_SPEC, run_id="run-seal-2", ttl=600)


def test_an_expired_child_token_is_reported_already_gone(
    sandbox: SandboxInfo, providers: Callable[..., VaultCredentialProvider]
) -> None:
    rid = run_id()
    provider = providers(rid, ttl=1)
    provider.issue(KV_SPEC, run_id=rid, ttl=1)
    time.sleep(2.2)
    records = {r["what"]: r["result"] for r in provider.revoke_all()}
    assert records == {"run_token": "already gone", "login_token": "revoked"}


def test_a_given_token_is_used_but_not_revoked(sandbox: SandboxInfo, admin: hvac.Client) -> None:
    given = admin.auth.token.create(
        policies=["runbook-executor"], no_default_policy=True, ttl="5m"
    )["auth"]["client_token"]
    try:
        settings = VaultSettings.from_env({"VAULT_ADDR": sandbox.vault_addr, "VAULT_TOKEN": given})
        rid = run_id()
        with VaultCredentialProvider(settings, rid, 300) as provider:
            provider.issue(ssh_spec(), run_id=rid, ttl=300)
            accessor = provider.token_info["accessor"]
        with pytest.raises(hvac.exceptions.VaultError):
            admin.auth.token.lookup_accessor(accessor)  # the run's token is gone...
        still = hvac.Client(url=sandbox.vault_addr, token=given).auth.token.lookup_self()
        assert still["data"]["policies"] == ["runbook-executor"]  # ...the operator's is not
    finally:
        admin.auth.token.revoke(given)


# --- secrets stay secret ----------------------------------------------------------------


def test_no_secret_in_public_fields_reprs_errors_records_or_logs(
    sandbox: SandboxInfo,
    providers: Callable[..., VaultCredentialProvider],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # hvac, urllib3 and ours, all of it
    rid = run_id()
    provider = providers(rid)
    ssh = provider.issue(ssh_spec(), run_id=rid, ttl=600)
    kv = provider.issue(KV_SPEC, run_id=rid, ttl=600)
    tokens = [provider._login.token, provider._child.token]  # type: ignore[union-attr]
    texts = [
        repr(ssh),
        str(ssh),
        repr(kv),
        str(kv),
        repr(ssh.material),
        repr(ssh.material.private_key),
        repr(provider),
        repr(provider.settings),
        json.dumps(dict(ssh.public)),
        json.dumps(dict(kv.public)),
        json.dumps(dict(provider.token_info)),
    ]
    for spec in (
        ssh_spec(role="no-such-role"),
        ssh_spec(("root",)),
        CredentialSpec(name="x", kind="vault_kv", path="other/admin"),
        CredentialSpec(name="y", kind="vault_kv", path="runbooks/demo-app", key="nope"),
    ):
        with pytest.raises(CredentialError) as info:
            provider.issue(spec, run_id=rid, ttl=600)
        texts.append(str(info.value))
    texts.append(json.dumps(provider.revoke_all()))
    texts.extend(record.getMessage() for record in caplog.records)

    private = ssh.material.private_key_openssh()
    body = "".join(private.splitlines()[1:-1])
    forbidden = [
        sandbox.secret_id,
        sandbox.admin_token,
        *tokens,
        kv.material,
        body[:40],
        body[-40:],
        "PRIVATE KEY",
    ]
    blob = "\n".join(texts)
    for secret in forbidden:
        assert secret and secret not in blob
    assert private in ssh.secret_values  # but the masker is told about the key
    assert "accessor" in blob and ssh.public["serial"] in blob  # the audit-safe parts are there
