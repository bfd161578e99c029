"""The pure parts of the ssh action: scripts, certificates, host addresses, results, refusals.

No sshd here (tests/integration/test_ssh_action.py has the real hosts);
certificates are built in memory with ``cryptography``'s SSHCertificateBuilder,
so nothing touches the disk except a known_hosts file in tmp_path.
"""

from __future__ import annotations

import shlex
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from paramiko.ssh_exception import NoValidConnectionsError

from executor.actions.ssh import (
    SshRunner,
    aggregate,
    command_error,
    command_marker,
    kill_command,
    remote_command,
)
from executor.actions.sshconn import (
    FOREVER,
    CertificateInfo,
    ClientIdentity,
    ConnectionPool,
    HostAddress,
    HostKeyRefused,
    PinnedHostKeys,
    RefuseUnknownHostKey,
    explain_connect_error,
    host_address,
    identity_from_credential,
    parse_certificate,
)
from executor.errors import ActionError
from executor.model import LocalAction, SshAction
from executor.ports import UNKNOWN_RC, ActionRequest, CancelToken, HostResult, IssuedCredential

# --------------------------------------------------------------------------- helpers


def _openssh_private(key: ed25519.Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()


def make_cert(
    key: ed25519.Ed25519PrivateKey,
    *,
    principals: tuple[str, ...] = ("ops",),
    serial: int = 42,
    key_id: str = "run-1",
    valid_after: int | None = None,
    valid_before: int | None = None,
) -> str:
    """An OpenSSH user certificate for ``key``, signed by a throwaway CA."""
    now = int(time.time())
    ca = ed25519.Ed25519PrivateKey.generate()
    builder = (
        serialization.SSHCertificateBuilder()
        .public_key(key.public_key())
        .serial(serial)
        .type(serialization.SSHCertificateType.USER)
        .key_id(key_id.encode())
        .valid_principals([p.encode() for p in principals])
        .valid_after(now - 60 if valid_after is None else valid_after)
        .valid_before(now + 900 if valid_before is None else valid_before)
    )
    return builder.sign(ca).public_bytes().decode()


class Material:
    def __init__(self, private: str, cert: str) -> None:
        self._private, self._cert = private, cert

    def private_key_openssh(self) -> str:
        return self._private

    def certificate(self) -> str:
        return self._cert + "\n"


def credential(**cert_options: Any) -> IssuedCredential:
    key = ed25519.Ed25519PrivateKey.generate()
    material = Material(_openssh_private(key), make_cert(key, **cert_options))
    return IssuedCredential(name="ops_ssh", kind="vault_ssh", public={}, material=material)


class ExplodingInventory:
    """Any use is a test failure: the paths under test must not reach the inventory."""

    def host_vars(self, name: str) -> Mapping[str, Any]:
        raise AssertionError(f"the inventory was consulted for {name}")


def request(**kwargs: Any) -> ActionRequest:
    defaults: dict[str, Any] = {
        "run_id": "run-1",
        "step_id": "restart",
        "action": SshAction(target="web", command="systemctl restart app", credential="ops_ssh"),
        "hosts": ("web1", "web2"),
        "credential": credential(),
    }
    defaults.update(kwargs)
    return ActionRequest(**defaults)


@pytest.fixture
def known_hosts(tmp_path: Path) -> Path:
    path = tmp_path / "known_hosts"
    path.write_text("")
    return path


@pytest.fixture
def runner(known_hosts: Path) -> SshRunner:
    return SshRunner(inventory=ExplodingInventory(), known_hosts=known_hosts)


# --------------------------------------------------------------------------- remote scripts


def tokens(command: str) -> list[str]:
    """The words a POSIX shell sees, with ``;`` as a word of its own."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=";")
    lexer.whitespace_split = True
    return list(lexer)


def test_remote_command_keeps_the_command_one_word_whatever_it_contains() -> None:
    nasty = "echo 'a b' \"$HOME\" $(id -u); rm -rf /tmp/x && echo done | tr a b # '\"`"
    words = tokens(remote_command(nasty, marker="runbook:r:s:00ff", name="restart"))
    assert words[:6] == ["set", "--", "runbook:r:s:00ff", nasty, "restart", ";"]
    assert words[6].startswith("__rb_wrapper=") and words[7] == ";"
    assert words[8:11] == ["if", "[", "-n"]  # the rest is the literal launcher


def test_sudo_prefixes_the_command_like_fabric_sudo() -> None:
    assert tokens(remote_command("svc demoapp status", marker="m", sudo=True))[3] == (
        "sudo -n svc demoapp status"
    )
    assert tokens(remote_command("id", marker="m"))[3] == "id"


def test_wrapper_runs_the_command_with_pipefail_in_a_subshell_of_a_group_leader() -> None:
    script = tokens(remote_command("true", marker="m"))[6].removeprefix("__rb_wrapper=")
    assert "set -o pipefail" in script
    assert 'eval "$__rb"' in script
    assert "exec setsid -w" in script  # only when not already a group leader
    assert "kill -TERM 0" in script  # what the command left behind


def test_markers_are_unique_and_safe_words() -> None:
    first = command_marker("run 1;rm -rf /", "step$(x)")
    second = command_marker("run 1;rm -rf /", "step$(x)")
    assert first != second
    assert first.startswith("runbook:run_1_rm_-rf_:step_x_:")
    assert shlex.quote(first) == first
    assert command_marker("r", "s", nonce="abc") == "runbook:r:s:abc"


def test_kill_command_never_carries_the_whole_marker() -> None:
    marker = command_marker("run-1", "step", nonce="0123456789abcdef")
    command = kill_command(marker, grace=2.0)
    assert marker not in command  # else the killer would find and kill itself
    words = shlex.split(command)
    assert words[-3] + words[-2] == marker
    assert words[-1] == "20"
    assert shlex.split(kill_command(marker, grace=0.01))[-1] == "1"


# --------------------------------------------------------------------------- results


def host(name: str, rc: int | None, ok: bool | None = None, **kwargs: Any) -> HostResult:
    return HostResult(host=name, rc=rc, ok=(rc == 0) if ok is None else ok, **kwargs)


def test_aggregate_all_ok() -> None:
    result = aggregate([host("web1", 0, stdout="a"), host("web2", 0, stdout="b")])
    assert result.ok and result.rc == 0 and result.error is None
    assert result.stdout == ""  # several hosts: read result.hosts
    assert set(result.hosts) == {"web1", "web2"}
    assert result.data["hosts_failed"] == []


def test_aggregate_single_host_gives_its_output() -> None:
    result = aggregate([host("web1", 0, stdout="93\n", stderr="warn")])
    assert (result.stdout, result.stderr) == ("93\n", "warn")


def test_aggregate_fails_on_one_host_and_names_it_with_the_worst_rc() -> None:
    result = aggregate(
        [
            host("web1", 0),
            host("web2", 3, error="command exited with status 3: boom"),
            host("web3", 1, error="command exited with status 1"),
        ]
    )
    assert not result.ok
    assert result.rc == 3
    assert result.error is not None
    assert result.error.startswith("2 of 3 host(s) failed: web2: command exited with status 3")
    assert "web3" in result.error and "web1" not in result.error
    assert result.data["hosts_failed"] == ["web2", "web3"]


def test_aggregate_host_without_status_gives_unknown_rc() -> None:
    result = aggregate([host("web1", 0), host("web9", None, error="cannot connect")])
    assert result.rc == UNKNOWN_RC and not result.ok


def test_aggregate_cut_off_hosts_and_many_failures() -> None:
    results = [host(f"web{i}", None, error="x", cut_off=True) for i in range(15)]
    result = aggregate(results, cancelled=True)
    assert result.cancelled and "and 5 more" in (result.error or "")
    assert len(result.data["hosts_cut_off"]) == 15


def test_aggregate_of_nothing_is_not_ok() -> None:
    assert not aggregate([]).ok


def test_command_error_explains_sudo_password_prompts() -> None:
    text = command_error(1, "sudo: a password is required\n", sudo=True, user="rb-web1")
    assert "sudo refused" in text and "rb-web1" in text and "NOPASSWD" in text
    # the same stderr without sudo: true is just the command's own failure
    assert command_error(1, "sudo: a password is required", sudo=False, user="u").startswith(
        "command exited with status 1"
    )
    assert command_error(2, "", sudo=False, user="u") == "command exited with status 2"
    assert command_error(2, "one\ntwo\n\n", sudo=False, user="u").endswith(": two")


# --------------------------------------------------------------------------- certificates


def test_parse_certificate_reads_what_the_ca_signed() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    text = make_cert(key, principals=("dba", "ops"), serial=7, key_id="run-9", valid_before=FOREVER)
    info = parse_certificate(text + "  comment\n")
    assert info.key_type == "ssh-ed25519-cert-v01@openssh.com"
    assert (info.serial, info.key_id, info.principals) == (7, "run-9", ("dba", "ops"))
    assert info.principals_text() == "[dba, ops]"
    assert info.fingerprint.startswith("SHA256:")
    assert not info.expired(time.time() + 10**9)


@pytest.mark.parametrize(
    "text",
    ["", "not a certificate", "ssh-ed25519-cert-v01@openssh.com AAAAnotbase64!!", "ssh-ed25519"],
)
def test_parse_certificate_refuses_garbage(text: str) -> None:
    with pytest.raises(ActionError, match="certificate"):
        parse_certificate(text)


def test_parse_certificate_refuses_a_plain_public_key() -> None:
    public = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    with pytest.raises(ActionError, match="plain public key"):
        parse_certificate(public)


def test_two_certificates_with_the_same_serial_differ_by_fingerprint() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    a = parse_certificate(make_cert(key, serial=1))
    b = parse_certificate(make_cert(key, serial=1))
    assert a.serial == b.serial and a.fingerprint != b.fingerprint


def test_validity_window() -> None:
    now = 1_000_000
    info = CertificateInfo("t", 1, "k", ("ops",), now - 10, now + 10, "SHA256:x")
    identity = ClientIdentity(key=paramiko.Ed25519Key.__new__(paramiko.Ed25519Key), cert=info)
    assert identity.check_valid(now) is None
    expired = identity.check_valid(now + 10)
    assert expired is not None and "expired" in expired and "nothing was run" in expired
    early = identity.check_valid(now - 11)
    assert early is not None and "clock" in early


def test_identity_from_credential_loads_the_certificate_onto_a_fresh_key() -> None:
    cred = credential(principals=("web",))
    identity = identity_from_credential(cred)
    assert identity.key.public_blob is not None
    assert identity.key.public_blob.key_type == "ssh-ed25519-cert-v01@openssh.com"
    assert identity.cert.principals == ("web",)
    assert "PRIVATE" not in repr(identity)


def test_identity_refuses_material_without_key_and_certificate() -> None:
    kv = IssuedCredential(name="db_password", kind="vault_kv", public={}, material="s3cret")
    with pytest.raises(ActionError, match=r"'db_password'.*holds no SSH key") as caught:
        identity_from_credential(kv)
    assert "s3cret" not in str(caught.value)


def test_identity_refuses_a_certificate_for_another_key() -> None:
    key, other = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    mixed = IssuedCredential(
        name="ops_ssh",
        kind="vault_ssh",
        public={},
        material=Material(_openssh_private(key), make_cert(other)),
    )
    with pytest.raises(ActionError, match="does not belong to the private key"):
        identity_from_credential(mixed)


# --------------------------------------------------------------------------- hosts


def test_host_address_from_ansible_vars() -> None:
    target = host_address(
        "web1", {"ansible_host": "127.0.0.1", "ansible_port": 2201, "ansible_user": "rb-web1"}
    )
    assert target == HostAddress("web1", "127.0.0.1", 2201, "rb-web1")
    assert target.lookup_name == "[127.0.0.1]:2201"
    assert str(target) == "rb-web1@127.0.0.1:2201"


def test_host_address_defaults_and_old_aliases() -> None:
    target = host_address("db1", {"ansible_ssh_user": "ops", "ansible_ssh_port": "2222"})
    assert (target.address, target.port, target.user) == ("db1", 2222, "ops")
    assert host_address("db1", {"ansible_user": "ops"}).lookup_name == "db1"


@pytest.mark.parametrize("port", ["ssh", 0, 70000, -1])
def test_host_address_refuses_bad_ports(port: object) -> None:
    with pytest.raises(ActionError, match="invalid ansible_port"):
        host_address("web1", {"ansible_port": port, "ansible_user": "u"})


def test_host_address_requires_a_login_user() -> None:
    with pytest.raises(ActionError, match="no ansible_user") as caught:
        host_address("web1", {"ansible_host": "10.0.0.1"})
    assert "principals" in (caught.value.hint or "")


def test_pinned_host_keys_reload_when_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    keys = PinnedHostKeys(path)
    assert keys.missing() is not None and "does not exist" in keys.missing()  # type: ignore[operator]
    assert keys.lookup("[127.0.0.1]:2201") == {}
    first = ed25519.Ed25519PrivateKey.generate().public_key()
    line = first.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    path.write_text(f"[127.0.0.1]:2201 {line.decode()}\n")
    assert keys.missing() is None
    found = keys.lookup("[127.0.0.1]:2201")
    assert list(found) == ["ssh-ed25519"]
    path.write_text("")
    assert keys.lookup("[127.0.0.1]:2201") == {}


# --------------------------------------------------------------------------- explanations


TARGET = HostAddress("web2", "127.0.0.1", 2202, "rb-web2")
CERT = CertificateInfo("t", 5, "run-1", ("dba",), 0, FOREVER, "SHA256:x")
KNOWN = Path("/state/known_hosts")


def _pkey() -> paramiko.PKey:
    from io import StringIO

    return paramiko.Ed25519Key(
        file_obj=StringIO(_openssh_private(ed25519.Ed25519PrivateKey.generate()))
    )


def test_explains_auth_refusal_with_principals_and_user() -> None:
    text = explain_connect_error(paramiko.AuthenticationException("x"), TARGET, CERT, KNOWN)
    assert text.startswith(
        "authentication refused: the certificate's principals [dba] are not allowed for rb-web2"
    )
    assert "nothing was run" in text


def test_explains_unknown_and_changed_host_keys() -> None:
    policy = RefuseUnknownHostKey(TARGET, KNOWN)
    offered = _pkey()
    with pytest.raises(HostKeyRefused) as caught:
        policy.missing_host_key(None, TARGET.lookup_name, offered)
    text = explain_connect_error(caught.value, TARGET, CERT, KNOWN)
    assert text.startswith(
        "host key for web2 ([127.0.0.1]:2202) is not in known_hosts /state/known_hosts"
    )
    assert offered.fingerprint in text and "refusing to connect" in text

    expected = _pkey()
    bad = paramiko.BadHostKeyException(TARGET.lookup_name, offered, expected)
    text = explain_connect_error(bad, TARGET, CERT, KNOWN)
    assert "does not match the key pinned" in text
    assert offered.fingerprint in text and expected.fingerprint in text


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ConnectionRefusedError(111, "Connection refused"), "connection refused"),
        (NoValidConnectionsError({("127.0.0.1", 2202): OSError(111, "x")}), "connection refused"),
        (TimeoutError("timed out"), "no answer from 127.0.0.1:2202"),
        (socket.gaierror(-2, "Name or service not known"), "cannot resolve"),
        (paramiko.SSHException("Error reading SSH protocol banner"), "SSH handshake with web2"),
        (OSError(113, "No route to host"), "No route to host"),
    ],
)
def test_explains_network_failures(exc: BaseException, expected: str) -> None:
    text = explain_connect_error(exc, TARGET, CERT, KNOWN)
    assert expected in text


# --------------------------------------------------------------------------- refusals


def test_dry_run_connects_nothing_and_says_what_would_run(tmp_path: Path) -> None:
    runner = SshRunner(inventory=ExplodingInventory(), known_hosts=tmp_path / "absent")
    action = SshAction(target="web", command="svc demoapp restart", sudo=True)
    result = runner.run(
        request(
            action=action, dry_run=True, credential=None, mask=lambda s: s.replace("demoapp", "***")
        ),
        CancelToken(),
    )
    assert result.ok
    assert result.data == {
        "dry_run": True,
        "would_run": "sudo -n svc *** restart",
        "hosts": ["web1", "web2"],
    }
    assert runner.pool.open_count() == 0


def test_missing_credential_fails_before_anything_runs(runner: SshRunner) -> None:
    result = runner.run(request(credential=None), CancelToken())
    assert not result.ok
    assert result.error is not None
    assert "needs a credential" in result.error and "nothing was run on web1, web2" in result.error


def test_no_hosts_is_a_failure_not_a_silent_success(runner: SshRunner) -> None:
    result = runner.run(request(hosts=()), CancelToken())
    assert not result.ok and "no host" in (result.error or "")


def test_missing_known_hosts_refuses_every_host(tmp_path: Path) -> None:
    runner = SshRunner(inventory=ExplodingInventory(), known_hosts=tmp_path / "absent")
    result = runner.run(request(), CancelToken())
    assert not result.ok and "does not exist" in (result.error or "")


def test_expired_certificate_fails_before_connecting(runner: SshRunner) -> None:
    now = int(time.time())
    cred = credential(valid_after=now - 3600, valid_before=now - 60)
    result = runner.run(request(credential=cred), CancelToken())
    assert not result.ok and "expired at" in (result.error or "")


def test_a_kv_credential_is_refused_and_masked(runner: SshRunner) -> None:
    kv = IssuedCredential(name="api", kind="vault_kv", public={}, material="s3cret")
    result = runner.run(
        request(credential=kv, mask=lambda s: s.replace("api", "***")), CancelToken()
    )
    assert not result.ok and "holds no SSH key" in (result.error or "")
    assert "'api'" not in (result.error or "")


def test_wrong_action_kind_is_a_wiring_bug(runner: SshRunner) -> None:
    with pytest.raises(ActionError, match="wiring bug"):
        runner.run(request(action=LocalAction("true")), CancelToken())


def test_forks_must_be_positive(known_hosts: Path) -> None:
    with pytest.raises(ActionError, match="forks"):
        SshRunner(inventory=ExplodingInventory(), known_hosts=known_hosts, forks=0)


def test_closing_an_unknown_run_is_harmless(runner: SshRunner) -> None:
    assert runner.close_run("never-ran") == 0
    assert isinstance(runner.pool, ConnectionPool)
    runner.close()
