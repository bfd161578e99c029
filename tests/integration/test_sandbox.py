"""The sandbox world, tested for real: sshd hosts, OpenBao, Ansible, demo services, faults.

Every check that something is accepted has a twin that checks the wrong thing
is refused: a certificate for the wrong principal, an expired one, one from
another CA, no certificate at all, an unknown host key, a path outside the
policy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import pwd
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import hvac
import hvac.exceptions
import paramiko
import pytest

from executor.sandbox import SandboxError, SandboxInfo, down, inject, status, up
from executor.sandbox.__main__ import main as sandbox_main
from executor.sandbox.hosts import host_roles
from executor.sandbox.keys import ed25519_keypair
from executor.sandbox.procs import start_ticks
from executor.sandbox.vault import approle_login, sign_public_key

if TYPE_CHECKING:
    from conftest import Identity

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ALL_HOSTS = ("web1", "web2", "web3", "db1", "lb1")


# --- helpers ----------------------------------------------------------------------------


def paramiko_run(
    info: SandboxInfo,
    host: str,
    identity: Identity,
    command: str,
    *,
    known_hosts: Path | None = None,
) -> tuple[int, str]:
    """Log in with paramiko (host keys from ``known_hosts``, unknown ones rejected)."""
    h = info.host(host)
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts or info.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            h.address,
            port=h.port,
            username=h.user,
            pkey=identity.pkey(),
            allow_agent=False,
            look_for_keys=False,
            timeout=5,
            auth_timeout=5,
        )
        _, stdout, _ = client.exec_command(command, timeout=10)
        out = stdout.read().decode()
        return stdout.channel.recv_exit_status(), out
    finally:
        client.close()


def openssh_run(
    info: SandboxInfo,
    host: str,
    identity: Identity,
    command: str,
    *,
    known_hosts: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Log in with the OpenSSH client, no config file, only this key, host keys checked."""
    h = info.host(host)
    argv = [
        "ssh", "-F", "none", "-p", str(h.port), "-i", str(identity.key_file),
        "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
        "-o", f"UserKnownHostsFile={known_hosts or info.known_hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
    ]  # fmt: skip
    if identity.cert_file:
        argv += ["-o", f"CertificateFile={identity.cert_file}"]
    argv += [f"{h.user}@{h.address}", command]
    return subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)


# One client for the module: each new httpx client builds a TLS context (~0.1 s).
HTTP = httpx.Client(timeout=3, trust_env=False)


def get(port: int, path: str) -> tuple[int | None, str]:
    """(status, body) of the demo app, or (None, error) if nothing answers."""
    try:
        response = HTTP.get(f"http://127.0.0.1:{port}{path}")
    except httpx.HTTPError as exc:
        return None, str(exc)
    return response.status_code, response.text


def metrics(port: int) -> dict[str, float]:
    """Metric samples keyed by name with labels, e.g. ``demoapp_release_info{...}``."""
    code, body = get(port, "/metrics")
    assert code == 200, body
    samples = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)
    return samples


def metric(port: int, name: str) -> float:
    matches = [v for k, v in metrics(port).items() if k.split("{")[0] == name]
    assert len(matches) == 1, f"{name}: {matches}"
    return matches[0]


def faults_script(info: SandboxInfo, host: str, fault: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RUNBOOK_SANDBOX_DIR": str(info.state_dir)}
    return subprocess.run(
        [str(REPO / "sandbox" / "faults"), host, fault],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip


def cli(state_dir: Path, *args: str) -> tuple[int, str]:
    """``python -m executor.sandbox`` in-process (a process start costs ~0.5 s): (rc, stdout)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = sandbox_main(["--state-dir", str(state_dir), *args])
    return rc, out.getvalue()


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


# --- the plan (no processes) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "names"),
    [
        (1, ["web1"]),
        (2, ["web1", "db1"]),
        (3, ["web1", "db1", "lb1"]),
        (5, ["web1", "web2", "web3", "db1", "lb1"]),
        (7, ["web1", "web2", "web3", "web4", "web5", "db1", "lb1"]),
    ],
)
def test_host_roles_for_any_size(count: int, names: list[str]) -> None:
    roles = host_roles(count)
    assert [name for name, _ in roles] == names
    assert all("sandbox" in groups and len(groups) == 2 for _, groups in roles)
    with pytest.raises(SandboxError):
        host_roles(0)


def test_the_sshd_config_admits_certificates_only(sandbox: SandboxInfo) -> None:
    config = (sandbox.state_dir / "hosts" / "db1" / "etc" / "sshd_config").read_text()
    directives = dict(line.split(" ", 1) for line in config.splitlines() if line[:1].isalpha())
    assert directives["ListenAddress"] == "127.0.0.1"
    assert directives["AuthorizedKeysFile"] == "none"
    assert directives["PasswordAuthentication"] == "no"
    assert directives["KbdInteractiveAuthentication"] == "no"
    assert directives["PermitRootLogin"] == "no"
    assert directives["KexAlgorithms"].startswith("curve25519-sha256,")
    assert "sntrup" not in directives["KexAlgorithms"]
    principals = Path(directives["AuthorizedPrincipalsFile"]).read_text().split()
    assert principals == ["ops", "dba"]
    assert Path(directives["TrustedUserCAKeys"]).read_text().strip() == sandbox.ca_public_key


# --- SSH: who gets in ------------------------------------------------------------------


@pytest.fixture(scope="module")
def ops(sandbox_identity: Callable[..., Identity]) -> Identity:
    return sandbox_identity(["ops"], "15m", "test-ops")


def test_ops_certificate_logs_in_to_every_host_with_paramiko(
    sandbox: SandboxInfo, ops: Identity
) -> None:
    assert [h.name for h in sandbox.hosts] == list(ALL_HOSTS)
    for h in sandbox.hosts:
        rc, out = paramiko_run(sandbox, h.name, ops, "id -un; echo $HOME")
        assert rc == 0
        assert out.split() == [h.user, h.home]


def test_ops_certificate_logs_in_to_every_host_with_openssh(
    sandbox: SandboxInfo, ops: Identity
) -> None:
    for h in sandbox.hosts:
        done = openssh_run(sandbox, h.name, ops, "id -un")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == h.user


def test_each_host_has_its_own_filesystem_area(sandbox: SandboxInfo, ops: Identity) -> None:
    rc, _ = paramiko_run(sandbox, "web1", ops, "echo web1-was-here > ~/marker")
    assert rc == 0
    rc, out = paramiko_run(sandbox, "web2", ops, "cat ~/marker 2>&1; ls ~/../../web1/home/marker")
    assert rc != 0
    assert "No such file" in out or "Permission denied" in out


def test_the_certificate_key_id_shows_in_the_host_log(
    sandbox: SandboxInfo, sandbox_identity: Callable[..., Identity]
) -> None:
    identity = sandbox_identity(["ops"], "5m", "run-4f2a-step-measure")
    rc, _ = paramiko_run(sandbox, "db1", identity, "true")
    assert rc == 0
    log = (sandbox.state_dir / "logs" / "sshd-db1.log").read_text()
    assert 'Accepted certificate ID "run-4f2a-step-measure"' in log


@pytest.mark.parametrize(
    ("principal", "accepted_on", "refused_on"),
    [("dba", "db1", "web1"), ("web", "web2", "db1"), ("web", "web3", "lb1")],
)
def test_a_principal_gets_in_only_where_its_group_is(
    sandbox: SandboxInfo,
    sandbox_identity: Callable[..., Identity],
    principal: str,
    accepted_on: str,
    refused_on: str,
) -> None:
    identity = sandbox_identity([principal], "5m")
    assert paramiko_run(sandbox, accepted_on, identity, "true")[0] == 0
    with pytest.raises(paramiko.AuthenticationException):
        paramiko_run(sandbox, refused_on, identity, "true")
    refused = openssh_run(sandbox, refused_on, identity, "true")
    assert refused.returncode == 255
    assert "Permission denied" in refused.stderr


def test_an_expired_certificate_is_refused(
    sandbox: SandboxInfo, sandbox_identity: Callable[..., Identity]
) -> None:
    identity = sandbox_identity(["ops"], "2s")
    issued = time.monotonic()
    assert paramiko_run(sandbox, "web1", identity, "true")[0] == 0  # it did work
    time.sleep(max(0.0, 3.0 - (time.monotonic() - issued)))
    with pytest.raises(paramiko.AuthenticationException):
        paramiko_run(sandbox, "web1", identity, "true")
    refused = openssh_run(sandbox, "web1", identity, "true")
    assert refused.returncode == 255
    assert "Permission denied" in refused.stderr


def test_a_plain_key_without_certificate_is_refused(
    sandbox: SandboxInfo, sandbox_identity: Callable[..., Identity]
) -> None:
    identity = sandbox_identity(certify=False)
    with pytest.raises(paramiko.AuthenticationException):
        paramiko_run(sandbox, "web1", identity, "true")
    refused = openssh_run(sandbox, "web1", identity, "true")
    assert refused.returncode == 255
    assert "Permission denied" in refused.stderr


def test_a_certificate_from_another_ca_is_refused(
    sandbox: SandboxInfo, tmp_path: Path, sandbox_identity: Callable[..., Identity]
) -> None:
    other_ca = ed25519_keypair()
    ca_file = tmp_path / "other_ca"
    ca_file.write_text(other_ca.private_openssh)
    ca_file.chmod(0o600)
    identity = sandbox_identity(certify=False)
    pub = identity.key_file.with_name("id_ed25519.pub")
    subprocess.run(
        ["ssh-keygen", "-q", "-s", str(ca_file), "-I", "forged", "-n", "ops", "-V", "+5m",
         str(pub)],
        check=True, capture_output=True,
    )  # fmt: skip
    forged_cert = Path(f"{identity.key_file}-cert.pub").read_text().strip()
    forged = dataclasses.replace(identity, cert=forged_cert)
    assert (
        "forged"
        in subprocess.run(
            ["ssh-keygen", "-Lf", str(forged.cert_file)], capture_output=True, text=True, check=True
        ).stdout
    )
    with pytest.raises(paramiko.AuthenticationException):
        paramiko_run(sandbox, "web1", forged, "true")
    refused = openssh_run(sandbox, "web1", forged, "true")
    assert refused.returncode == 255
    assert "Permission denied" in refused.stderr


def test_an_unknown_or_changed_host_key_is_refused_by_the_client(
    sandbox: SandboxInfo, ops: Identity, tmp_path: Path
) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        paramiko_run(sandbox, "web1", ops, "true", known_hosts=empty)
    refused = openssh_run(sandbox, "web1", ops, "true", known_hosts=empty)
    assert refused.returncode == 255
    assert "Host key verification failed" in refused.stderr

    h = sandbox.host("web1")
    impostor = tmp_path / "changed_known_hosts"
    impostor.write_text(f"[127.0.0.1]:{h.port} {ed25519_keypair().public_openssh}\n")
    with pytest.raises(paramiko.BadHostKeyException):
        paramiko_run(sandbox, "web1", ops, "true", known_hosts=impostor)
    refused = openssh_run(sandbox, "web1", ops, "true", known_hosts=impostor)
    assert refused.returncode == 255
    assert "HOST IDENTIFICATION HAS CHANGED" in refused.stderr


def test_sudo_allows_only_the_service_wrapper(sandbox: SandboxInfo, ops: Identity) -> None:
    rc, out = paramiko_run(sandbox, "web1", ops, "sudo -n svc demoapp status")
    assert rc == 0, out
    assert "demoapp running" in out
    rc, out = paramiko_run(sandbox, "web1", ops, "sudo -n id -u 2>&1")
    assert rc != 0
    assert "0" not in out.split()
    assert sandbox.sudoers_file.exists()


# --- OpenBao ---------------------------------------------------------------------------


def test_the_hosts_trust_the_openbao_ca(sandbox: SandboxInfo) -> None:
    served = HTTP.get(f"{sandbox.vault_addr}/v1/ssh/public_key").text.strip()
    assert served == sandbox.ca_public_key
    trusted = (sandbox.state_dir / "vault" / "trusted-user-ca-keys.pub").read_text().strip()
    assert trusted == served


def test_the_approle_signs_and_reads_runbook_secrets_but_nothing_else(
    sandbox: SandboxInfo,
) -> None:
    client = approle_login(sandbox.vault_addr, sandbox.role_id, sandbox.secret_id)
    assert client.auth.token.lookup_self()["data"]["policies"] == ["runbook-executor"]
    cert = sign_public_key(client, ed25519_keypair().public_openssh, ["ops"], "5m", "run-1")
    assert cert.startswith("ssh-ed25519-cert-v01@openssh.com ")
    secret = client.secrets.kv.v2.read_secret_version(
        path="runbooks/demo-app", raise_on_deleted_version=True
    )
    assert secret["data"]["data"]["api_key"].startswith("demo-")
    for path in ("secret/data/other/admin", "sys/mounts", "sys/policies/acl/runbook-executor"):
        with pytest.raises(hvac.exceptions.Forbidden):
            client.read(path)
    with pytest.raises(hvac.exceptions.Forbidden):
        client.secrets.kv.v2.create_or_update_secret(path="runbooks/demo-app", secret={"x": "y"})


def test_the_signing_role_refuses_principals_and_ttls_beyond_its_bounds(
    sandbox: SandboxInfo,
) -> None:
    client = approle_login(sandbox.vault_addr, sandbox.role_id, sandbox.secret_id)
    public = ed25519_keypair().public_openssh
    assert sign_public_key(client, public, ["ops", "web", "dba"], "1h")
    with pytest.raises(hvac.exceptions.InvalidRequest, match="root"):
        sign_public_key(client, public, ["root"], "5m")
    with pytest.raises(hvac.exceptions.InvalidRequest, match="ttl"):
        sign_public_key(client, public, ["ops"], "2h")  # max_ttl is 1h


def test_a_per_run_child_token_can_sign_but_not_make_tokens(sandbox: SandboxInfo) -> None:
    executor = approle_login(sandbox.vault_addr, sandbox.role_id, sandbox.secret_id)
    child = executor.auth.token.create(  # as executor.credentials asks for it
        role_name="runbook-run",
        policies=["runbook-run"],
        ttl="600s",
        explicit_max_ttl="600s",
        renewable=False,
        display_name="run-test",
        meta={"run_id": "test"},
    )["auth"]
    assert (child["policies"], child["renewable"]) == (["runbook-run"], False)
    run = hvac.Client(url=sandbox.vault_addr, token=child["client_token"])
    assert sign_public_key(run, ed25519_keypair().public_openssh, ["web"], "5m", "run-2")
    with pytest.raises(hvac.exceptions.Forbidden):
        run.auth.token.create(role_name="runbook-run")
    with pytest.raises(hvac.exceptions.Forbidden):  # only through the token role
        executor.auth.token.create(policies=["runbook-run"])
    run.auth.token.revoke_self()
    with pytest.raises(hvac.exceptions.Forbidden):
        run.auth.token.lookup_self()


def test_a_wrong_secret_id_cannot_log_in(sandbox: SandboxInfo) -> None:
    with pytest.raises(hvac.exceptions.InvalidRequest):
        approle_login(sandbox.vault_addr, sandbox.role_id, "not-the-secret-id")


# --- Ansible ---------------------------------------------------------------------------


def ansible_env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-local"),
        "ANSIBLE_SSH_ARGS": "-o ControlMaster=no",  # no master left running after the test
        "ANSIBLE_NOCOLOR": "1",
    }


def test_ansible_inventory_lists_the_groups(sandbox: SandboxInfo, tmp_path: Path) -> None:
    done = subprocess.run(
        [str(REPO / ".venv" / "bin" / "ansible-inventory"), "-i", str(sandbox.inventory), "--list"],
        capture_output=True, text=True, env=ansible_env(tmp_path), timeout=60, check=True,
    )  # fmt: skip
    listing = json.loads(done.stdout)
    assert listing["web"]["hosts"] == ["web1", "web2", "web3"]
    assert listing["db"]["hosts"] == ["db1"]
    assert listing["lb"]["hosts"] == ["lb1"]
    assert set(listing["sandbox"]["children"]) == {"web", "db", "lb"}
    web1 = listing["_meta"]["hostvars"]["web1"]
    h = sandbox.host("web1")
    assert (web1["ansible_port"], web1["ansible_user"], web1["app_port"]) == (
        h.port,
        h.user,
        h.app_port,
    )
    assert f"UserKnownHostsFile={sandbox.known_hosts}" in web1["ansible_ssh_common_args"]
    assert "StrictHostKeyChecking=yes" in web1["ansible_ssh_common_args"]


def test_ansible_pings_the_web_hosts_with_a_certificate(
    sandbox: SandboxInfo, sandbox_identity: Callable[..., Identity], tmp_path: Path
) -> None:
    identity = sandbox_identity(["web"], "5m", "test-ansible")
    done = subprocess.run(
        [str(REPO / ".venv" / "bin" / "ansible"), "-i", str(sandbox.inventory), "web",
         "-m", "ping", "--private-key", str(identity.key_file), "-o"],
        capture_output=True, text=True, env=ansible_env(tmp_path), timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    for host in ("web1", "web2", "web3"):
        assert f"{host} | SUCCESS" in done.stdout
    assert "db1" not in done.stdout


# --- demo services and faults ----------------------------------------------------------


def test_every_host_serves_health_and_metrics(sandbox: SandboxInfo) -> None:
    for h in sandbox.hosts:
        assert get(h.app_port, "/health") == (200, "ok\n")
        samples = metrics(h.app_port)
        assert samples[f'demoapp_up{{host="{h.name}"}}'] == 1
        assert samples[f'demoapp_release_info{{host="{h.name}",version="1.1.0"}}'] == 1
        assert samples[f'demoapp_config_valid{{host="{h.name}"}}'] == 1
        assert samples[f'demoapp_queue_depth{{host="{h.name}"}}'] == 0
        assert samples[f'demoapp_worker_up{{host="{h.name}"}}'] == 1
        assert 0 < samples[f'demoapp_disk_used_percent{{host="{h.name}"}}'] < 10


@pytest.fixture
def web2(sandbox: SandboxInfo) -> Iterator[str]:
    """web2, put back in its initial state after the test whatever it did."""
    yield "web2"
    inject(sandbox, "web2", "repair-all")


def _healthy(info: SandboxInfo, host: str) -> bool:
    port = info.host(host).app_port
    return get(port, "/health") == (200, "ok\n") and metric(port, "demoapp_queue_depth") == 0


def test_kill_then_appctl_start(sandbox: SandboxInfo, ops: Identity, web2: str) -> None:
    port = sandbox.host(web2).app_port
    assert faults_script(sandbox, web2, "kill").returncode == 0
    assert get(port, "/health")[0] is None
    rc, out = paramiko_run(sandbox, web2, ops, "appctl status")
    assert (rc, "demoapp dead") == (1, out[: len("demoapp dead")])
    rc, out = paramiko_run(sandbox, web2, ops, "appctl start")
    assert rc == 0, out
    assert _healthy(sandbox, web2)


def test_fill_disk_then_clean_old_logs(sandbox: SandboxInfo, ops: Identity, web2: str) -> None:
    port = sandbox.host(web2).app_port
    assert cli(sandbox.state_dir, "fault", web2, "fill-disk")[0] == 0
    assert paramiko_run(sandbox, web2, ops, "diskusage") == (0, "97\n")
    assert metric(port, "demoapp_disk_used_percent") == 97
    status_code, body = get(port, "/health")
    assert (status_code, body.startswith("disk full: 97%")) == (500, True)
    rc, _ = paramiko_run(sandbox, web2, ops, "find ~/data/logs -name '*.log.*' -mtime +7 -delete")
    assert rc == 0
    assert paramiko_run(sandbox, web2, ops, "diskusage") == (0, "3\n")
    assert _healthy(sandbox, web2)


def test_corrupt_config_then_restore_it(sandbox: SandboxInfo, ops: Identity, web2: str) -> None:
    port = sandbox.host(web2).app_port
    assert cli(sandbox.state_dir, "fault", web2, "corrupt-config")[0] == 0
    status_code, body = get(port, "/health")
    assert (status_code, body.startswith("config invalid:")) == (500, True)
    assert metric(port, "demoapp_config_valid") == 0
    rc, _ = paramiko_run(sandbox, web2, ops, "cp ~/app/config.ini.good ~/app/config.ini")
    assert rc == 0
    assert metric(port, "demoapp_config_valid") == 1
    assert _healthy(sandbox, web2)


def test_stick_queue_then_clear_the_stale_lock(
    sandbox: SandboxInfo, ops: Identity, web2: str
) -> None:
    port = sandbox.host(web2).app_port
    assert cli(sandbox.state_dir, "fault", web2, "stick-queue")[0] == 0
    assert metric(port, "demoapp_queue_depth") == 40
    assert metric(port, "demoapp_worker_up") == 0
    rc, out = paramiko_run(sandbox, web2, ops, "workerctl status")
    assert (rc, out.startswith("worker stuck: stale lock")) == (1, True)
    rc, out = paramiko_run(sandbox, web2, ops, "workerctl start 2>&1")
    assert (rc, "stale lock" in out) == (1, True)
    time.sleep(0.3)
    assert metric(port, "demoapp_queue_depth") == 40  # nothing drains it
    rc, out = paramiko_run(sandbox, web2, ops, "rm ~/queue/worker.lock && workerctl start")
    assert rc == 0, out
    assert wait_for(lambda: metric(port, "demoapp_queue_depth") == 0)
    assert _healthy(sandbox, web2)


def test_bad_release_then_roll_back(sandbox: SandboxInfo, ops: Identity, web2: str) -> None:
    port = sandbox.host(web2).app_port
    assert cli(sandbox.state_dir, "fault", web2, "bad-release")[0] == 0
    status_code, body = get(port, "/health")
    assert (status_code, body.startswith("release 1.2.0 is broken")) == (500, True)
    assert metrics(port)[f'demoapp_release_info{{host="{web2}",version="1.2.0"}}'] == 1
    rc, out = paramiko_run(
        sandbox, web2, ops, "ln -sfn releases/1.1.0 ~/app/current && sudo -n svc demoapp restart"
    )
    assert rc == 0, out
    assert metrics(port)[f'demoapp_release_info{{host="{web2}",version="1.1.0"}}'] == 1
    assert _healthy(sandbox, web2)


def test_repair_all_undoes_every_fault_at_once(sandbox: SandboxInfo, web2: str) -> None:
    port = sandbox.host(web2).app_port
    for fault in ("fill-disk", "corrupt-config", "stick-queue", "bad-release", "kill"):
        inject(sandbox, web2, fault)
    assert get(port, "/health")[0] is None
    done = faults_script(sandbox, web2, "repair-all")
    assert done.returncode == 0, done.stderr
    assert "restored web2" in done.stdout
    assert wait_for(lambda: _healthy(sandbox, web2))
    assert metric(port, "demoapp_disk_used_percent") == 3
    assert metric(port, "demoapp_worker_up") == 1


def test_faults_refuse_unknown_hosts_and_faults(sandbox: SandboxInfo) -> None:
    done = faults_script(sandbox, "web9", "kill")
    assert done.returncode == 1
    assert "no sandbox host named 'web9'" in done.stderr
    done = faults_script(sandbox, "web1", "explode")
    assert done.returncode == 2
    assert "invalid choice" in done.stderr
    with pytest.raises(SandboxError, match="unknown fault"):
        inject(sandbox, "web1", "explode")


def test_lbctl_drains_and_enables_a_backend(sandbox: SandboxInfo, ops: Identity) -> None:
    port = sandbox.host("lb1").app_port
    key = 'demoapp_lb_backend_enabled{host="lb1",backend="web2"}'
    try:
        assert paramiko_run(sandbox, "lb1", ops, "lbctl drain web2") == (0, "web2 drained\n")
        assert metrics(port)[key] == 0
        assert paramiko_run(sandbox, "lb1", ops, "lbctl status web2") == (0, "web2 drained\n")
        rc, out = paramiko_run(sandbox, "lb1", ops, "lbctl drain web9 2>&1")
        assert (rc, "unknown backend" in out) == (2, True)
    finally:
        paramiko_run(sandbox, "lb1", ops, "lbctl enable web2")
    assert metrics(port)[key] == 1


# --- lifecycle -------------------------------------------------------------------------


def test_the_status_script_reports_the_session_world_up(sandbox: SandboxInfo) -> None:
    env = {**os.environ, "RUNBOOK_SANDBOX_DIR": str(sandbox.state_dir)}
    done = subprocess.run(
        [str(REPO / "sandbox" / "status")], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("sandbox up:")


def test_env_sh_exports_the_world_privately(sandbox: SandboxInfo) -> None:
    env_sh = sandbox.state_dir / "env.sh"
    assert env_sh.stat().st_mode & 0o077 == 0
    assert (sandbox.state_dir / "env.json").stat().st_mode & 0o077 == 0
    done = subprocess.run(
        ["bash", "-c", f". {env_sh} && echo $VAULT_ADDR $VAULT_ROLE_ID $RUNBOOK_INVENTORY"],
        capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.stdout.split() == [sandbox.vault_addr, sandbox.role_id, str(sandbox.inventory)]
    assert sandbox.secret_id not in repr(sandbox) and sandbox.admin_token not in repr(sandbox)


def test_the_ssh_command_logs_a_person_in_with_a_fresh_certificate(sandbox: SandboxInfo) -> None:
    env = {**os.environ, "RUNBOOK_SANDBOX_DIR": str(sandbox.state_dir)}
    done = subprocess.run(
        [str(REPO / ".venv" / "bin" / "python"), "-m", "executor.sandbox", "ssh", "db1",
         "id -un; sudo -n svc worker status"],
        capture_output=True, text=True, env=env, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == sandbox.host("db1").user
    assert "worker running" in done.stdout
    log = (sandbox.state_dir / "logs" / "sshd-db1.log").read_text()
    assert 'Accepted certificate ID "operator-' in log


def _world_processes(report: dict[str, Any]) -> dict[int, int | None]:
    """pid -> kernel start time of every process a status report names."""
    pids = [p["pid"] for p in report["processes"]]
    for h in report["hosts"]:
        pids += [h["demoapp_pid"], h["worker_pid"]]
    assert None not in pids, report
    return {pid: start_ticks(pid) for pid in pids}


def test_up_is_idempotent_rebuilds_a_half_dead_world_and_down_removes_everything(
    sandbox: SandboxInfo, tmp_path: Path
) -> None:
    """A second, small world beside the session's: the two must not meet."""
    state_dir = Path(tempfile.mkdtemp(prefix="runbook-sandbox-lifecycle-"))
    try:
        first = up(hosts=2, state_dir=state_dir)
        assert [h.name for h in first.hosts] == ["web1", "db1"]
        assert first.hosts[0].user != sandbox.host("web1").user
        assert first.sudoers_file != sandbox.sudoers_file

        started = time.monotonic()
        again = up(hosts=2, state_dir=state_dir)
        assert time.monotonic() - started < 1.0
        assert again.vault_addr == first.vault_addr

        sshd = next(p for p in status(state_dir)["processes"] if p["name"] == "sshd-db1")
        os.kill(sshd["pid"], 9)
        assert wait_for(lambda: status(state_dir)["state"] == "partial")
        rc, out = cli(state_dir, "status")
        assert (rc, "DEAD" in out) == (1, True)

        rebuilt = up(hosts=2, state_dir=state_dir)
        assert rebuilt.vault_addr != first.vault_addr
        report = status(state_dir)
        assert report["state"] == "up"
        processes = _world_processes(report)
        assert len(processes) == 1 + 2 + 2 * 2 and all(processes.values())

        down(state_dir)
        alive = [pid for pid, ticks in processes.items() if start_ticks(pid) == ticks]
        assert alive == []
        assert not rebuilt.sudoers_file.exists()
        assert not state_dir.exists()
        for h in rebuilt.hosts:
            with pytest.raises(KeyError):
                pwd.getpwnam(h.user)
        assert cli(state_dir, "status") == (3, f"sandbox down: {state_dir}\n")
        # the session's world did not notice
        assert status(sandbox.state_dir)["state"] == "up"
        assert sandbox.sudoers_file.exists()
    finally:
        down(state_dir)
        if state_dir.exists():
            state_dir.rmdir()


def test_a_failed_up_takes_down_what_it_started(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenBao configuration fails after every process has started: nothing may be left."""
    import executor.sandbox.vault as vault_module

    state_dir = Path(tempfile.mkdtemp(prefix="runbook-sandbox-failed-"))
    seen: dict[str, Any] = {}

    def broken_configure(addr: str, root_token: str) -> None:
        report = status(state_dir)
        seen["pids"] = {p["pid"]: start_ticks(p["pid"]) for p in report["processes"]}
        seen["users"] = [h["user"] for h in report["hosts"]]
        raise SandboxError("OpenBao refused the configuration (simulated)")

    monkeypatch.setattr(vault_module, "configure", broken_configure)
    try:
        with pytest.raises(SandboxError, match="simulated"):
            up(hosts=1, state_dir=state_dir)
        assert len(seen["pids"]) == 2  # vault and sshd-web1 had started
        assert [p for p, ticks in seen["pids"].items() if start_ticks(p) == ticks] == []
        for user in seen["users"]:
            with pytest.raises(KeyError):
                pwd.getpwnam(user)
        assert not state_dir.exists()
    finally:
        down(state_dir)
        if state_dir.exists():
            state_dir.rmdir()


def test_up_refuses_a_directory_that_is_not_a_sandbox(tmp_path: Path) -> None:
    (tmp_path / "thesis.tex").write_text("years of work")
    with pytest.raises(SandboxError, match="not a sandbox state directory"):
        up(hosts=1, state_dir=tmp_path)
    down(tmp_path)
    assert (tmp_path / "thesis.tex").read_text() == "years of work"
