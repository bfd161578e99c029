"""The ssh action against the sandbox's real sshd hosts, with OpenBao-signed certificates.

Every remote command that could outlive its test carries a unique marker in
its arguments (``sleep 60.<random>``); an autouse fixture kills, by pid, any
process of a host user that still carries it, so a failing test cannot leave
processes behind. "Still running" is asked of ``pgrep`` with the zombie
state excluded: in this container PID 1 does not reap orphans, and a zombie
runs nothing.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import yaml

from executor.actions.inventory import AnsibleInventory
from executor.actions.ssh import SshLimits, SshRunner, remote_command
from executor.credentials.settings import VaultSettings
from executor.credentials.vault import VaultCredentialProvider
from executor.masking import Masker
from executor.model import CredentialSpec, SshAction
from executor.ports import ActionRequest, ActionResult, CancelToken, IssuedCredential
from executor.sandbox import SandboxInfo, sign_certificate
from executor.sandbox.keys import ed25519_keypair

pytestmark = pytest.mark.integration

WEB = ["web1", "web2", "web3"]
ALL = ["web1", "web2", "web3", "db1", "lb1"]


class Material:
    """A vault_ssh credential's material, signed through the sandbox API."""

    def __init__(self, private_openssh: str, certificate: str) -> None:
        self._key, self._cert = private_openssh, certificate

    def private_key_openssh(self) -> str:
        return self._key

    def certificate(self) -> str:
        return self._cert


MakeCredential = Callable[..., IssuedCredential]


@pytest.fixture(scope="module")
def make_credential(sandbox: SandboxInfo) -> MakeCredential:
    def make(
        principals: Sequence[str] = ("ops",), key_id: str = "run-ssh-test"
    ) -> IssuedCredential:
        pair = ed25519_keypair()
        cert = sign_certificate(sandbox, pair.public_openssh, principals, "15m", key_id=key_id)
        return IssuedCredential(
            name="ops_ssh",
            kind="vault_ssh",
            public={"principals": list(principals)},
            material=Material(pair.private_openssh, cert),
        )

    return make


@pytest.fixture(scope="module")
def ops(make_credential: MakeCredential) -> IssuedCredential:
    return make_credential(("ops",))


@pytest.fixture(scope="module")
def inventory(sandbox: SandboxInfo) -> AnsibleInventory:
    inventory = AnsibleInventory(sandbox.inventory)
    inventory.resolve("all")  # build it now, as the engine does when it resolves the target
    return inventory


@pytest.fixture
def runner(sandbox: SandboxInfo, inventory: AnsibleInventory) -> Iterator[SshRunner]:
    with SshRunner(inventory=inventory, known_hosts=sandbox.known_hosts, kill_grace=1.0) as r:
        yield r


@pytest.fixture
def marker(sandbox: SandboxInfo) -> Iterator[str]:
    """A unique ``sleep`` duration; whatever still carries it afterwards is killed."""
    value = f"60.{secrets.randbelow(10**9):09d}"
    yield value
    for pid in live(sandbox, value, ALL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def live(sandbox: SandboxInfo, pattern: str, hosts: Sequence[str]) -> list[int]:
    """Pids of non-zombie processes of the hosts' users whose command line has ``pattern``."""
    pids: list[int] = []
    for name in hosts:
        done = subprocess.run(
            ["pgrep", "-u", sandbox.host(name).user, "-r", "D,R,S,T", "-f", pattern],
            capture_output=True,
            text=True,
            check=False,
        )
        pids += [int(p) for p in done.stdout.split()]
    return pids


def run(
    runner: SshRunner,
    command: str,
    hosts: Sequence[str],
    credential: IssuedCredential | None,
    *,
    run_id: str = "run-ssh-test",
    cancel: CancelToken | None = None,
    **kwargs: object,
) -> ActionResult:
    sudo = bool(kwargs.pop("sudo", False))
    request = ActionRequest(
        run_id=run_id,
        step_id="step",
        action=SshAction(target="t", command=command, credential="ops_ssh", sudo=sudo),
        hosts=list(hosts),
        credential=credential,
        **kwargs,  # type: ignore[arg-type]
    )
    return runner.run(request, cancel or CancelToken())


def home(sandbox: SandboxInfo, name: str) -> Path:
    return Path(sandbox.host(name).home)


# --------------------------------------------------------------------------- running


def test_runs_on_three_hosts_in_parallel_with_per_host_results(
    runner: SshRunner, sandbox: SandboxInfo, ops: IssuedCredential
) -> None:
    start = time.monotonic()
    result = run(runner, 'sleep 1; echo "$USER"; echo "note from $USER" >&2', WEB, ops)
    elapsed = time.monotonic() - start
    assert result.ok, result.error
    assert result.rc == 0 and result.error is None
    assert elapsed < 2.5, f"3 hosts of 1 s each took {elapsed:.1f} s: not parallel"
    for name in WEB:
        host = result.hosts[name]
        user = sandbox.host(name).user
        assert (host.rc, host.ok, host.stdout) == (0, True, f"{user}\n")
        assert host.stderr == f"note from {user}\n"
        assert host.started is not None and host.finished is not None
        assert host.finished - host.started >= 1.0
    assert result.stdout == ""  # several hosts: per-host output only


def test_single_host_stdout_is_the_steps_stdout(runner: SshRunner, ops: IssuedCredential) -> None:
    result = run(runner, "diskusage", ["db1"], ops)
    assert result.ok, result.error
    assert result.stdout.strip().isdigit()
    assert result.stdout == result.hosts["db1"].stdout


def test_pipefail_and_a_failing_host_fails_the_step_and_is_named(
    runner: SshRunner, sandbox: SandboxInfo, ops: IssuedCredential
) -> None:
    web2 = sandbox.host("web2").user
    # pipefail: without it, `false | cat` would succeed and plain `exit` would exit 0
    command = f'if [ "$USER" = {web2} ]; then echo "disk on fire" >&2; false | cat; exit; fi'

    result = run(runner, command, WEB, ops)
    assert not result.ok
    assert result.rc == 1
    assert result.hosts["web2"].rc == 1 and not result.hosts["web2"].ok
    assert result.hosts["web1"].ok and result.hosts["web3"].ok
    assert result.error == (
        "1 of 3 host(s) failed: web2: command exited with status 1: disk on fire"
    )
    assert result.data["hosts_failed"] == ["web2"]


def test_unreachable_host_is_reported_per_host(
    sandbox: SandboxInfo, ops: IssuedCredential, tmp_path: Path
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    web1 = sandbox.host("web1")
    data = {
        "all": {
            "vars": {"ansible_host": "127.0.0.1"},
            "hosts": {
                "web1": {"ansible_port": web1.port, "ansible_user": web1.user},
                "web9": {"ansible_port": closed, "ansible_user": "rb-web9"},
            },
        }
    }
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(data))
    with SshRunner(inventory=AnsibleInventory(path), known_hosts=sandbox.known_hosts) as runner:
        result = run(runner, "echo up", ["web1", "web9"], ops)
    assert not result.ok
    assert result.hosts["web1"].ok and result.hosts["web1"].stdout == "up\n"
    web9 = result.hosts["web9"]
    assert web9.rc is None and not web9.ok
    assert web9.error is not None
    assert f"cannot connect to 127.0.0.1:{closed}: connection refused" in web9.error
    assert (result.error or "").startswith("1 of 2 host(s) failed: web9: cannot connect")


def test_dba_certificate_is_refused_on_web_hosts_and_nothing_runs_there(
    runner: SshRunner, sandbox: SandboxInfo, make_credential: MakeCredential
) -> None:
    dba = make_credential(("dba",))
    flag = f"dba-was-here-{secrets.token_hex(4)}"
    try:
        result = run(runner, f"touch {flag}", ["web1", "web2", "db1"], dba)
        assert not result.ok
        assert result.hosts["db1"].ok, result.hosts["db1"].error
        for name in ("web1", "web2"):
            user = sandbox.host(name).user
            assert result.hosts[name].error is not None
            assert result.hosts[name].error.startswith(
                f"authentication refused: the certificate's principals [dba] are not allowed "
                f"for {user}"
            )
            assert not (home(sandbox, name) / flag).exists()
        assert (home(sandbox, "db1") / flag).exists()
    finally:
        for name in ("web1", "web2", "db1"):
            (home(sandbox, name) / flag).unlink(missing_ok=True)


def test_unknown_and_changed_host_keys_are_refused(
    sandbox: SandboxInfo, inventory: AnsibleInventory, ops: IssuedCredential, tmp_path: Path
) -> None:
    web1, web2 = sandbox.host("web1"), sandbox.host("web2")
    impostor = ed25519_keypair().public_openssh
    lines = []
    for line in sandbox.known_hosts.read_text().splitlines():
        name = line.split()[0]
        if name in (f"[127.0.0.1]:{web2.port}", "web2"):
            continue  # web2: unknown
        if name == f"[127.0.0.1]:{web1.port}":
            line = f"{name} {impostor}"  # web1: changed
        lines.append(line)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("\n".join(lines) + "\n")
    flag = f"hostkey-{secrets.token_hex(4)}"
    try:
        with SshRunner(inventory=inventory, known_hosts=known_hosts) as runner:
            result = run(runner, f"touch {flag}", WEB, ops)
        assert not result.ok
        changed = result.hosts["web1"].error or ""
        assert changed.startswith(
            f"host key for web1 ([127.0.0.1]:{web1.port}) does not match the key pinned in "
            f"known_hosts {known_hosts}"
        )
        unknown = result.hosts["web2"].error or ""
        assert unknown.startswith(
            f"host key for web2 ([127.0.0.1]:{web2.port}) is not in known_hosts {known_hosts}"
        )
        assert "refusing to connect" in changed and "refusing to connect" in unknown
        assert result.hosts["web3"].ok
        assert not (home(sandbox, "web1") / flag).exists()
        assert not (home(sandbox, "web2") / flag).exists()
        assert (home(sandbox, "web3") / flag).exists()
    finally:
        for name in WEB:
            (home(sandbox, name) / flag).unlink(missing_ok=True)


# --------------------------------------------------------------------------- stopping


def _run_in_thread(
    runner: SshRunner,
    command: str,
    hosts: Sequence[str],
    credential: IssuedCredential,
    **kw: object,
) -> tuple[threading.Thread, list[ActionResult]]:
    box: list[ActionResult] = []
    thread = threading.Thread(
        target=lambda: box.append(run(runner, command, hosts, credential, **kw)), daemon=True
    )
    thread.start()
    return thread, box


def _wait_for(predicate: Callable[[], bool], seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_cancel_kills_the_remote_process_group_on_every_host(
    runner: SshRunner, sandbox: SandboxInfo, ops: IssuedCredential, marker: str
) -> None:
    cancel = CancelToken()
    command = f"sleep {marker} & sleep {marker}; echo never"
    thread, box = _run_in_thread(runner, command, ALL, ops, cancel=cancel)
    sleeps = f"^sleep {marker}$"  # the sleeps only, not the shells whose command has them
    assert _wait_for(lambda: len(live(sandbox, sleeps, ALL)) == 2 * len(ALL), 10)
    cancelled_at = time.monotonic()
    cancel.cancel("kill-switch engaged by alice")
    assert _wait_for(lambda: not live(sandbox, marker, ALL), 5.0), "remote sleeps survived"
    gone_after = time.monotonic() - cancelled_at
    thread.join(10)
    assert not thread.is_alive()
    result = box[0]
    assert not result.ok and result.cancelled and not result.timed_out
    assert sorted(result.data["hosts_cut_off"]) == sorted(ALL)
    for name in ALL:
        host = result.hosts[name]
        assert host.cut_off and not host.ok
        assert host.error is not None
        assert host.error.startswith(
            "cancelled: kill-switch engaged by alice; remote process group"
        )
        assert "never" not in host.stdout
    assert gone_after < 5.0


def test_timeout_kills_the_remote_process_group(
    runner: SshRunner, sandbox: SandboxInfo, ops: IssuedCredential, marker: str
) -> None:
    start = time.monotonic()
    result = run(runner, f"echo started; sleep {marker}", ["web1", "lb1"], ops, timeout=1.0)
    elapsed = time.monotonic() - start
    assert not result.ok and result.timed_out and not result.cancelled
    for name in ("web1", "lb1"):
        host = result.hosts[name]
        assert host.cut_off and host.stdout == "started\n"
        assert (host.error or "").startswith("timed out after 1s: remote process group")
        assert (host.error or "").endswith("terminated")
    assert elapsed < 5.0
    assert not live(sandbox, marker, ["web1", "lb1"])


def test_background_jobs_left_behind_are_terminated(
    runner: SshRunner, sandbox: SandboxInfo, ops: IssuedCredential, marker: str
) -> None:
    start = time.monotonic()
    result = run(runner, f"sleep {marker} & echo started", ["web3"], ops)
    assert result.ok and result.stdout == "started\n"
    assert time.monotonic() - start < 5.0
    assert _wait_for(lambda: not live(sandbox, marker, ["web3"]), 2.0)


def test_cancel_before_start_runs_nothing(runner: SshRunner, ops: IssuedCredential) -> None:
    cancel = CancelToken()
    cancel.cancel("kill-switch")
    result = run(runner, "echo hi", WEB, ops, cancel=cancel)
    assert not result.ok and result.cancelled
    assert all(h.error == "not started: cancelled: kill-switch" for h in result.hosts.values())
    assert result.data["connections"] == {"opened": 0, "reused": 0}


# --------------------------------------------------------------------------- sudo, masking, output


def test_sudo_runs_an_allowed_command_and_explains_a_refusal(
    runner: SshRunner, sandbox: SandboxInfo, ops: IssuedCredential
) -> None:
    allowed = run(runner, "svc demoapp status", ["web1"], ops, sudo=True)
    assert allowed.ok, allowed.error
    assert "demoapp" in allowed.stdout

    refused = run(runner, "id -u", ["web1"], ops, sudo=True)
    assert not refused.ok and refused.rc == 1
    user = sandbox.host("web1").user
    assert refused.hosts["web1"].error is not None
    assert refused.hosts["web1"].error.startswith(
        f"sudo refused to run the command without a password (sudo -n): {user} may not run it"
    )

    plain = run(runner, "id -u", ["web1"], ops)
    uid = subprocess.check_output(["id", "-u", user], text=True).strip()
    assert plain.ok and plain.stdout.strip() == uid


def test_output_is_masked(runner: SshRunner, ops: IssuedCredential) -> None:
    secret = "hunter2-" + secrets.token_hex(8)
    masker = Masker([secret])
    command = f"echo 'token={secret}'; printf %s '{secret}' | base64 >&2; exit 4"
    result = run(runner, command, ["web2"], ops, mask=masker.mask)
    host = result.hosts["web2"]
    assert host.rc == 4
    assert host.stdout == "token=***\n"
    assert secret not in host.stderr and "***" in host.stderr
    for text in (result.error or "", host.error or "", result.stdout, result.stderr):
        assert secret not in text


def test_output_is_bounded(
    sandbox: SandboxInfo, inventory: AnsibleInventory, ops: IssuedCredential
) -> None:
    with SshRunner(
        inventory=inventory, known_hosts=sandbox.known_hosts, limits=SshLimits(max_output=4096)
    ) as runner:
        result = run(runner, "head -c 200000 /dev/zero | tr '\\0' x; echo END", ["web1"], ops)
    assert result.ok, result.error
    assert len(result.stdout) < 4096 + 100
    assert "bytes of output dropped" in result.stdout
    assert result.stdout.endswith("END\n")


# --------------------------------------------------------------------------- connections


def test_second_step_reuses_connections_and_certificates_never_share_one(
    runner: SshRunner, make_credential: MakeCredential, ops: IssuedCredential
) -> None:
    run_id = f"reuse-{secrets.token_hex(4)}"
    start = time.monotonic()
    first = run(runner, "true", WEB, ops, run_id=run_id)
    cold = time.monotonic() - start
    transports = runner.pool.transports(run_id)
    start = time.monotonic()
    second = run(runner, "true", WEB, ops, run_id=run_id)
    warm = time.monotonic() - start
    assert first.ok and second.ok
    assert first.data["connections"] == {"opened": 3, "reused": 0}
    assert second.data["connections"] == {"opened": 0, "reused": 3}
    again = runner.pool.transports(run_id)
    assert again.keys() == transports.keys()
    assert all(again[k] is transports[k] for k in transports)
    assert warm < cold

    other = make_credential(("ops",))
    third = run(runner, "true", WEB, other, run_id=run_id)
    assert third.data["connections"] == {"opened": 3, "reused": 0}
    assert len(runner.pool.transports(run_id)) == 6

    other_run = run(runner, "true", ["web1"], ops, run_id=run_id + "-other")
    assert other_run.data["connections"] == {"opened": 1, "reused": 0}

    assert runner.close_run(run_id) == 6
    assert not any(t.is_active() for t in transports.values())
    assert runner.pool.transports(run_id) == {}
    assert runner.pool.open_count(run_id + "-other") == 1


def test_a_dropped_connection_is_replaced(runner: SshRunner, ops: IssuedCredential) -> None:
    run_id = f"drop-{secrets.token_hex(4)}"
    assert run(runner, "true", ["db1"], ops, run_id=run_id).ok
    for transport in runner.pool.transports(run_id).values():
        transport.close()
    result = run(runner, "echo back", ["db1"], ops, run_id=run_id)
    assert result.ok and result.stdout == "back\n"
    assert result.data["connections"] == {"opened": 1, "reused": 0}


def test_with_a_certificate_issued_by_the_vault_credential_provider(
    runner: SshRunner, sandbox: SandboxInfo
) -> None:
    settings = VaultSettings.from_env(sandbox.env())
    spec = CredentialSpec(
        name="ops_ssh", kind="vault_ssh", role="responder", principals=("ops",), ttl=600
    )
    with VaultCredentialProvider(settings, "run-vault-ssh", 600) as provider:
        credential = provider.issue(spec, run_id="run-vault-ssh", ttl=600)
        result = run(runner, "echo $USER", ["lb1", "db1"], credential, run_id="run-vault-ssh")
    assert result.ok, result.error
    assert result.hosts["lb1"].stdout == f"{sandbox.host('lb1').user}\n"
    log = (sandbox.state_dir / "logs" / "sshd-lb1.log").read_text()
    assert "run-vault-ssh" in log  # the key id (= run id) is in the host's log


# --------------------------------------------------------------------------- the wrapper itself


@pytest.mark.parametrize("login_shell", ["/bin/sh", "/bin/bash"])
def test_wrapper_works_from_any_posix_shell_and_makes_its_own_group(
    login_shell: str, tmp_path: Path
) -> None:
    """Run locally, from a shell that is NOT a group leader (unlike sshd's): the
    wrapper must re-execute itself under setsid, keep $0, and keep pipefail."""
    command = 'echo "$0"; read -r _ _ _ _ pg _ </proc/$BASHPID/stat; echo "$pg"; false | true'
    marker = f"runbook:local:probe:{secrets.token_hex(8)}"
    done = subprocess.run(
        [login_shell, "-c", remote_command(command, marker=marker, name="probe")],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=tmp_path,
        check=False,
    )
    lines = done.stdout.splitlines()
    assert lines[0] == "probe", done.stderr
    assert int(lines[1]) != os.getpgrp()
    assert done.returncode == 1  # pipefail: `false | true` fails
    assert list(tmp_path.iterdir()) == []  # nothing written on the host


def test_idle_runs_are_closed_but_not_while_a_step_runs(
    runner: SshRunner, sandbox: SandboxInfo, ops: IssuedCredential, marker: str
) -> None:
    idle_run, busy_run = f"idle-{secrets.token_hex(4)}", f"busy-{secrets.token_hex(4)}"
    assert run(runner, "true", ["web1"], ops, run_id=idle_run).ok
    idle_transports = runner.pool.transports(idle_run)
    cancel = CancelToken()
    thread, box = _run_in_thread(
        runner, f"sleep {marker}", ["web2"], ops, run_id=busy_run, cancel=cancel
    )
    assert _wait_for(lambda: bool(live(sandbox, f"^sleep {marker}$", ["web2"])), 10)
    later = time.monotonic() + runner.idle_close + 1
    assert runner.close_idle(now=later) == [idle_run]
    assert not any(t.is_active() for t in idle_transports.values())
    assert runner.pool.open_count(busy_run) == 1  # in flight: untouched
    cancel.cancel("test over")
    thread.join(10)
    assert box and box[0].cancelled
    assert busy_run in runner.close_idle(now=time.monotonic() + runner.idle_close + 1)
