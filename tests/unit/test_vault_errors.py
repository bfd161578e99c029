"""Vault credentials with HTTP stubbed under hvac: error mapping, settings, revocation.

The stub is a requests transport adapter (no socket): it answers Vault's API
paths the provider uses and records what it was sent. Signing is real: the
stub signs the sent public key with a local ed25519 CA through cryptography,
so the certificate checks run on genuine certificates. The same flows run
against a real OpenBao in tests/integration/test_vault.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from requests.adapters import BaseAdapter

from executor.credentials import VaultCredentialProvider, VaultSettings
from executor.credentials.vault import kv_path
from executor.credentials.vault_errors import is_gone, vault_words
from executor.errors import CredentialError
from executor.model import CredentialSpec

ADDR = "http://vault.test:8200"
ROLE_ID = "role-id-0f3c"
SECRET_ID = "secret-id-9d8e7f6a5b4c"
LOGIN_TOKEN = "s.LOGINTOKEN1234567890"
CHILD_TOKEN = "s.CHILDTOKEN0987654321"
API_KEY = "sk-live-abcdef123456"
RUN = "run-20240101-abcd"

SSH = CredentialSpec(
    name="ops_ssh", kind="vault_ssh", role="responder", principals=("ops",), ttl=900
)
KV = CredentialSpec(name="api", kind="vault_kv", path="runbooks/demo-app", key="api_key")

Reply = tuple[int, dict[str, Any] | None]
Handler = Callable[[dict[str, Any]], Reply]


def vault_error(status: int, *errors: str) -> Handler:
    return lambda body: (status, {"errors": list(errors)})


class ConnectionRefused(Exception):
    """Marker: the stub raises requests' ConnectionError for this route."""


@dataclass
class StubVault(BaseAdapter):
    """Vault's HTTP API for the paths the provider uses; override a route to fail it."""

    routes: dict[str, Handler] = field(default_factory=dict)
    seen: list[tuple[str, str, dict[str, Any], str | None]] = field(default_factory=list)
    principals_override: tuple[str, ...] | None = None
    sign_other_key: bool = False
    lease_id: str = ""

    def __post_init__(self) -> None:
        super().__init__()
        self.ca = ed25519.Ed25519PrivateKey.generate()
        defaults: dict[str, Handler] = {
            "POST /v1/auth/approle/login": self._login,
            "POST /v1/auth/token/create/runbook-run": self._child,
            "POST /v1/auth/token/create": self._child,
            "POST /v1/ssh/sign/responder": self._sign,
            "GET /v1/secret/data/runbooks/demo-app": self._kv,
            "POST /v1/auth/token/revoke-self": lambda body: (204, None),
            "GET /v1/auth/token/lookup-self": lambda body: (200, {"data": {"ttl": 100}}),
            "PUT /v1/sys/leases/revoke": lambda body: (204, None),
        }
        self.routes = {**defaults, **self.routes}

    # requests' transport interface
    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        path = request.path_url.split("?")[0]
        key = f"{request.method} {path}"
        body = json.loads(request.body) if request.body else {}
        self.seen.append((request.method or "", path, body, request.headers.get("X-Vault-Token")))
        handler = self.routes.get(key)
        if handler is None:
            status, payload = 404, {"errors": []}
        else:
            status, payload = handler(body)
        if status == -1:
            raise requests.exceptions.ConnectionError(
                f"HTTPConnectionPool(host='vault.test', port=8200): Max retries exceeded with url: "
                f"{path} (Caused by NewConnectionError('[Errno 111] Connection refused'))",
                request=request,
            )
        if status == -2:
            raise requests.exceptions.ReadTimeout("Read timed out. (read timeout=10)")
        response = requests.Response()
        response.status_code = status
        response._content = json.dumps(payload).encode() if payload is not None else b""
        response.headers["Content-Type"] = "application/json"
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        pass

    # default handlers
    def _login(self, body: dict[str, Any]) -> Reply:
        if body.get("secret_id") != SECRET_ID:
            return 400, {"errors": ["invalid role or secret ID"]}
        return 200, {"auth": {"client_token": LOGIN_TOKEN, "accessor": "acc-login", "policies": []}}

    def _child(self, body: dict[str, Any]) -> Reply:
        auth = {
            "client_token": CHILD_TOKEN,
            "accessor": "acc-child",
            "policies": body.get("policies", []),
            "lease_duration": int(str(body.get("ttl", "0s")).rstrip("s")),
            "renewable": body.get("renewable", True),
        }
        return 200, {"auth": auth}

    def _sign(self, body: dict[str, Any]) -> Reply:
        public = serialization.load_ssh_public_key(body["public_key"].encode())
        if self.sign_other_key:
            public = ed25519.Ed25519PrivateKey.generate().public_key()
        principals = self.principals_override or tuple(body["valid_principals"].split(","))
        now = int(time.time())
        ttl = int(body["ttl"].rstrip("s"))
        builder = (
            serialization.SSHCertificateBuilder()
            .public_key(public)
            .serial(4242)
            .type(serialization.SSHCertificateType.USER)
            .key_id(body["key_id"].encode())
            .valid_principals([p.encode() for p in principals])
            .valid_after(now - 30)
            .valid_before(now + ttl)
        )
        signed = builder.sign(self.ca).public_bytes().decode()
        return 200, {"lease_id": "", "data": {"signed_key": signed, "serial_number": "1092"}}

    def _kv(self, body: dict[str, Any]) -> Reply:
        data = {"api_key": API_KEY, "nested": {"password": "pw-nested-1"}, "port": 5432}
        return 200, {
            "lease_id": self.lease_id,
            "lease_duration": 60 if self.lease_id else 0,
            "data": {"data": data, "metadata": {"version": 3}},
        }


def settings(**changes: Any) -> VaultSettings:
    base = VaultSettings(addr=ADDR, role_id=ROLE_ID, secret_id=SECRET_ID)
    return base.with_overrides(**changes) if changes else base


def provider(stub: StubVault, ttl: float = 600, **changes: Any) -> VaultCredentialProvider:
    session = requests.Session()
    session.mount("http://", stub)
    return VaultCredentialProvider(settings(**changes), RUN, ttl, session=session)


def assert_clean(text: str) -> None:
    """No token, secret id or secret value in ``text``."""
    for secret in (SECRET_ID, LOGIN_TOKEN, CHILD_TOKEN, API_KEY, "PRIVATE KEY"):
        assert secret not in text


# --------------------------------------------------------------------------- settings


def test_settings_need_an_address_and_credentials() -> None:
    with pytest.raises(CredentialError, match="VAULT_ADDR is not set") as info:
        VaultSettings.from_env({"VAULT_TOKEN": "t"})
    assert "VAULT_ROLE_ID/VAULT_SECRET_ID" in str(info.value)
    with pytest.raises(CredentialError, match="set VAULT_ADDR and either VAULT_TOKEN or"):
        VaultSettings.from_env({"VAULT_ADDR": ADDR})
    with pytest.raises(CredentialError, match="VAULT_ROLE_ID is set but VAULT_SECRET_ID is not"):
        VaultSettings.from_env({"VAULT_ADDR": ADDR, "VAULT_ROLE_ID": ROLE_ID})
    with pytest.raises(CredentialError, match="VAULT_SECRET_ID is set but VAULT_ROLE_ID is not"):
        VaultSettings.from_env({"VAULT_ADDR": ADDR, "VAULT_SECRET_ID": SECRET_ID})
    with pytest.raises(CredentialError, match="not an http:// or https:// URL"):
        VaultSettings.from_env({"VAULT_ADDR": "vault:8200", "VAULT_TOKEN": "t"})


def test_settings_from_env(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    env = {
        "VAULT_ADDR": "https://vault.example:8200/",
        "VAULT_TOKEN": LOGIN_TOKEN,
        "VAULT_ROLE_ID": ROLE_ID,
        "VAULT_SECRET_ID": SECRET_ID,
        "VAULT_CACERT": str(ca),
        "VAULT_NAMESPACE": "ops",
        "RUNBOOK_VAULT_RUN_POLICIES": "runbook-run, kv-read",
        "RUNBOOK_VAULT_TOKEN_ROLE": "",
    }
    s = VaultSettings.from_env(env)
    assert s.addr == "https://vault.example:8200"
    assert s.uses_approle  # AppRole wins over a stray VAULT_TOKEN
    assert s.verify == str(ca) and s.namespace == "ops"
    assert s.run_policies == ("runbook-run", "kv-read") and s.token_role is None
    assert_clean(repr(s))
    token_only = VaultSettings.from_env({"VAULT_ADDR": ADDR, "VAULT_TOKEN": LOGIN_TOKEN})
    assert not token_only.uses_approle and token_only.token_role == "runbook-run"
    with pytest.raises(CredentialError, match=r"VAULT_CACERT=.*does not exist"):
        VaultSettings.from_env({**env, "VAULT_CACERT": str(tmp_path / "missing.pem")})


# --------------------------------------------------------------------------- the happy path


def test_login_child_token_and_signing_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_TOKEN", "s.STRAY-operator-token")  # hvac would pick it up
    stub = StubVault()
    with provider(stub, ttl=1800) as vault:
        issued = vault.issue(SSH, run_id=RUN, ttl=120.5)
    calls = {f"{m} {p}": (body, token) for m, p, body, token in stub.seen}
    login_body, login_auth = calls["POST /v1/auth/approle/login"]
    assert login_body == {"role_id": ROLE_ID, "secret_id": SECRET_ID}
    assert login_auth is None  # no stray token sent along
    child_body, child_auth = calls["POST /v1/auth/token/create/runbook-run"]
    assert child_auth == LOGIN_TOKEN
    assert child_body["policies"] == ["runbook-run"]
    assert child_body["ttl"] == child_body["explicit_max_ttl"] == "1800s"
    assert child_body["renewable"] is False and child_body["meta"] == {"run_id": RUN}
    sign_body, sign_auth = calls["POST /v1/ssh/sign/responder"]
    assert sign_auth == CHILD_TOKEN  # the run's child token, not the login token
    assert sign_body["valid_principals"] == "ops" and sign_body["key_id"] == RUN
    assert sign_body["ttl"] == "120s" and sign_body["cert_type"] == "user"
    assert issued.public["serial"] == "4242" and issued.public["principals"] == ["ops"]
    assert issued.public["ttl"] == 120 and issued.public["lease_id"] == ""
    cert = issued.material
    assert cert.certificate().startswith("ssh-ed25519-cert-v01@openssh.com ")
    assert cert.private_key_openssh().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    # the text handed to ansible-runner is the very text the masker is told about
    assert issued.secret_values == (cert.private_key_openssh(),)
    assert cert.private_key_openssh() == cert.private_key_openssh()
    assert cert.private_key.public_blob.key_type == "ssh-ed25519-cert-v01@openssh.com"
    assert not cert.needs_renewal(time.time(), margin=60)
    assert cert.needs_renewal(time.time(), margin=200)
    revokes = [(m, p, t) for m, p, _, t in stub.seen if p.endswith("revoke-self")]
    assert revokes == [
        ("POST", "/v1/auth/token/revoke-self", CHILD_TOKEN),
        ("POST", "/v1/auth/token/revoke-self", LOGIN_TOKEN),
    ]


def test_the_declared_ttl_wins_when_shorter_and_a_given_token_is_not_revoked() -> None:
    stub = StubVault()
    vault = provider(stub, role_id=None, secret_id=None, token=LOGIN_TOKEN, token_role=None)
    spec = CredentialSpec(name="s", kind="vault_ssh", role="responder", principals=("ops",), ttl=60)
    assert vault.issue(spec, run_id=RUN, ttl=3000).public["ttl"] == 60
    assert not any(p.endswith("approle/login") for _, p, _, _ in stub.seen)
    assert any(p == "/v1/auth/token/create" for _, p, _, _ in stub.seen)
    records = vault.revoke_all()
    assert [r["what"] for r in records] == ["ssh_certificate", "run_token"]  # not VAULT_TOKEN
    assert vault.revoke_all() == []


def test_kv_secret_value_and_everything_to_mask() -> None:
    stub = StubVault(lease_id="secret/data/runbooks/demo-app/lease-1")
    vault = provider(stub)
    issued = vault.issue(KV, run_id=RUN, ttl=100)
    assert issued.material == API_KEY and issued.secret_values == (API_KEY,)
    assert issued.public == {
        "path": "secret/runbooks/demo-app",
        "key": "api_key",
        "version": 3,
        "lease_id": "secret/data/runbooks/demo-app/lease-1",
    }
    whole = vault.issue(
        CredentialSpec(name="all", kind="vault_kv", path="secret/data/runbooks/demo-app"),
        run_id=RUN,
        ttl=100,
    )
    assert whole.material["port"] == 5432
    assert set(whole.secret_values) == {API_KEY, "pw-nested-1"}
    assert_clean(repr(issued) + str(whole) + repr(vault))
    with pytest.raises(CredentialError, match="has no key 'passwd'") as info:
        vault.issue(
            CredentialSpec(name="x", kind="vault_kv", path="runbooks/demo-app", key="passwd"),
            run_id=RUN,
            ttl=100,
        )
    assert "api_key, nested, port" in str(info.value)
    assert_clean(str(info.value))
    records = vault.revoke_all()
    leases = [r for r in records if r["what"] == "lease"]
    # three reads, three leases: the one whose key was missing is revoked too
    assert [r["result"] for r in leases] == ["revoked"] * 3
    revoked = [(b, t) for m, p, b, t in stub.seen if p == "/v1/sys/leases/revoke"]
    assert revoked[0] == ({"lease_id": "secret/data/runbooks/demo-app/lease-1"}, LOGIN_TOKEN)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("runbooks/x", "runbooks/x"),
        ("/secret/runbooks/x/", "runbooks/x"),
        ("secret/data/runbooks/x", "runbooks/x"),
        ("secretive/x", "secretive/x"),
    ],
)
def test_kv_paths_accept_the_mount_prefix(given: str, expected: str) -> None:
    assert kv_path(given, "secret") == expected


# --------------------------------------------------------------------------- error mapping


SIGN = "signing with role 'responder' (mount 'ssh')"


@pytest.mark.parametrize(
    ("status", "errors", "expected"),
    [
        (
            403,
            ["1 error occurred:\n\t* permission denied\n\n"],
            f"Vault denied {SIGN} at {ADDR}: 1 error occurred: permission denied",
        ),
        (400, ["unknown role: responder"], f"Vault rejected {SIGN} at {ADDR}: unknown role"),
        (404, [], f"Vault found nothing for {SIGN} at {ADDR}: no such path"),
        (
            429,
            ['request path "ssh/sign/responder": rate limit quota exceeded'],
            f"Vault rate-limited {SIGN} at {ADDR}: request path",
        ),
        (
            503,
            ["Vault is sealed"],
            f"Vault at {ADDR} is sealed or unavailable, so {SIGN} failed: Vault is sealed",
        ),
        (500, ["internal error"], f"Vault failed {SIGN} at {ADDR}: internal error"),
        (502, ["bad gateway"], f"Vault failed {SIGN} at {ADDR}: bad gateway"),
        (401, ["no auth"], f"Vault refused the executor's credentials while {SIGN} at {ADDR}"),
        (-1, [], f"Vault at {ADDR} is unreachable, so {SIGN} failed: connection refused"),
        (-2, [], f"Vault at {ADDR} is unreachable, so {SIGN} failed: timed out"),
    ],
)
def test_each_failure_of_signing_becomes_one_clear_credential_error(
    status: int, errors: list[str], expected: str
) -> None:
    stub = StubVault(routes={"POST /v1/ssh/sign/responder": vault_error(status, *errors)})
    with pytest.raises(CredentialError) as info:
        provider(stub).issue(SSH, run_id=RUN, ttl=100)
    assert expected in info.value.message
    assert info.value.hint
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert_clean(str(info.value))


def test_vault_text_that_echoes_a_secret_is_scrubbed() -> None:
    echo = vault_error(400, f"bad secret_id {SECRET_ID}")
    stub = StubVault(routes={"POST /v1/auth/approle/login": echo})
    with pytest.raises(CredentialError, match=r"bad secret_id \*\*\*") as info:
        provider(stub).issue(KV, run_id=RUN, ttl=100)
    assert "VAULT_ROLE_ID and VAULT_SECRET_ID" in str(info.value)  # the login-specific hint
    assert_clean(str(info.value))
    echo = vault_error(400, f"tokens {LOGIN_TOKEN} and {CHILD_TOKEN} may not sign")
    stub = StubVault(routes={"POST /v1/ssh/sign/responder": echo})
    with pytest.raises(CredentialError, match=r"tokens \*\*\* and \*\*\* may not sign") as info:
        provider(stub).issue(SSH, run_id=RUN, ttl=100)
    assert_clean(str(info.value))


def test_a_wrong_secret_id_names_the_approle_login_and_not_the_secret() -> None:
    vault = provider(StubVault(), secret_id="wrong-secret-id-1234")
    with pytest.raises(CredentialError, match="rejected logging in with AppRole") as info:
        vault.issue(SSH, run_id=RUN, ttl=100)
    assert "wrong-secret-id-1234" not in str(info.value)
    assert vault.revoke_all() == []  # nothing was obtained


def test_a_refused_child_token_names_the_token_role() -> None:
    stub = StubVault(
        routes={"POST /v1/auth/token/create/runbook-run": vault_error(403, "permission denied")}
    )
    vault = provider(stub)
    with pytest.raises(
        CredentialError, match=r"denied creating the run's child token .*token role 'runbook-run'"
    ) as info:
        vault.issue(SSH, run_id=RUN, ttl=100)
    assert "auth/token/create/runbook-run" in str(info.value)  # the hint says what to grant
    assert [r["what"] for r in vault.revoke_all()] == ["login_token"]


@pytest.mark.parametrize(
    ("policies", "renewable", "message"),
    [
        (["runbook-run", "admin"], False, "extra policies admin"),
        (["runbook-run", "default"], True, "a renewable token"),
    ],
)
def test_a_child_token_with_more_than_asked_is_revoked_and_refused(
    policies: list[str], renewable: bool, message: str
) -> None:
    def generous(body: dict[str, Any]) -> Reply:
        auth = {"client_token": CHILD_TOKEN, "accessor": "a", "policies": policies}
        return 200, {"auth": {**auth, "renewable": renewable, "lease_duration": 600}}

    stub = StubVault(routes={"POST /v1/auth/token/create/runbook-run": generous})
    vault = provider(stub)
    with pytest.raises(CredentialError, match=message):
        vault.issue(SSH, run_id=RUN, ttl=100)
    assert ("POST", "/v1/auth/token/revoke-self", CHILD_TOKEN) in [
        (m, p, t) for m, p, _, t in stub.seen
    ]
    assert not any(p.startswith("/v1/ssh/") for _, p, _, _ in stub.seen)  # never used


def test_a_certificate_wider_than_asked_is_refused() -> None:
    stub = StubVault(principals_override=("ops", "root"))
    with pytest.raises(CredentialError, match="names principals ops, root, not exactly ops"):
        provider(stub).issue(SSH, run_id=RUN, ttl=100)
    stub = StubVault(sign_other_key=True)
    with pytest.raises(CredentialError, match="different public key"):
        provider(stub).issue(SSH, run_id=RUN, ttl=100)


def test_bad_specs_fail_before_vault_is_asked() -> None:
    stub = StubVault()
    vault = provider(stub)
    for spec, message in [
        (CredentialSpec(name="s", kind="vault_ssh", role="responder"), "at least one principal"),
        (CredentialSpec(name="k", kind="vault_kv", path=" "), "names no KV path"),
        (CredentialSpec(name="o", kind="aws"), "kind 'aws'"),
    ]:
        with pytest.raises(CredentialError, match=message):
            vault.issue(spec, run_id=RUN, ttl=100)
    with pytest.raises(CredentialError, match="no time left"):
        vault.issue(SSH, run_id=RUN, ttl=0.5)
    with pytest.raises(CredentialError, match="asked for a credential of run other"):
        vault.issue(SSH, run_id="other", ttl=100)
    assert stub.seen == []


# --------------------------------------------------------------------------- revocation


def test_revoke_all_reports_already_gone_and_failures_without_raising() -> None:
    stub = StubVault(lease_id="kv/lease-9")
    vault = provider(stub)
    vault.issue(SSH, run_id=RUN, ttl=100)
    vault.issue(KV, run_id=RUN, ttl=100)
    stub.routes["PUT /v1/sys/leases/revoke"] = vault_error(400, "invalid lease ID")
    stub.routes["POST /v1/auth/token/revoke-self"] = vault_error(403, "permission denied")
    stub.routes["GET /v1/auth/token/lookup-self"] = vault_error(403, "permission denied")
    records = vault.revoke_all()
    by_what = {r["what"]: r for r in records}
    assert by_what["ssh_certificate"]["result"] == "expires"
    assert by_what["ssh_certificate"]["serial"] == "4242"
    assert by_what["lease"] == {
        "what": "lease",
        "credential": "api",
        "lease_id": "kv/lease-9",
        "result": "already gone",
    }
    assert by_what["run_token"] == {
        "what": "run_token",
        "accessor": "acc-child",
        "result": "already gone",
    }
    assert vault.revoke_all() == []
    with pytest.raises(CredentialError, match="already revoked"):
        vault.issue(SSH, run_id=RUN, ttl=100)

    down = StubVault()
    vault = provider(down)
    vault.issue(SSH, run_id=RUN, ttl=100)
    down.routes["POST /v1/auth/token/revoke-self"] = vault_error(-1)
    records = vault.revoke_all()
    failed = [r for r in records if r["result"] == "failed"]
    assert [r["what"] for r in failed] == ["run_token", "login_token"]
    assert "unreachable" in failed[0]["error"]
    assert_clean(json.dumps(records))


def test_a_real_refusal_to_revoke_is_a_failure_not_already_gone() -> None:
    stub = StubVault()
    vault = provider(stub)
    vault.issue(SSH, run_id=RUN, ttl=100)
    stub.routes["POST /v1/auth/token/revoke-self"] = vault_error(403, "permission denied")
    records = {r["what"]: r for r in vault.revoke_all()}
    assert records["run_token"]["result"] == "failed"  # the token still looks itself up
    assert "denied revoking the run token" in records["run_token"]["error"]


def test_vault_words_and_gone_detection() -> None:
    from hvac import exceptions as vault_exc

    multi = vault_exc.Forbidden(errors=["2 errors occurred:\n\t* a\n\t* b\n\n"])
    assert vault_words(multi) == "2 errors occurred: a b"
    assert vault_words(vault_exc.InvalidPath()) == "no such path"
    assert is_gone(vault_exc.InvalidRequest(errors=["invalid lease ID"]))
    assert is_gone(vault_exc.InvalidPath())
    assert not is_gone(vault_exc.Forbidden(errors=["permission denied"]))
    assert not is_gone(vault_exc.VaultDown(errors=["Vault is sealed"]))
