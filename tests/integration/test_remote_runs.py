"""Whole runs against the sandbox: real sshd hosts, real Ansible, real OpenBao.

These drive the `runbook` command as a responder would, then look on the
hosts (their home directories, since every sandbox host is a user on this
machine) for what really changed, and grep everything the executor wrote for
secrets.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import hvac
import pytest

from executor.sandbox import SandboxInfo

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

CHANGE_AND_VERIFY = """\
apiVersion: runbook/v1
kind: Runbook
metadata: {name: remote-change, version: 1.0.0, owner: sre}
inputs:
  value: {type: string}
  marker: {type: string, pattern: "^[a-z0-9-]+$"}
targets:
  webs: {hosts: "web"}
credentials:
  ops_ssh: {vault_ssh: {role: responder, principals: [ops], ttl: 5m}}
  api: {vault_kv: {path: runbooks/demo-app, key: api_key}}
policy: {automation: manual, timeout: 5m, max_hosts: 3}
steps:
  - id: write
    ssh:
      target: webs
      credential: ops_ssh
      command: "printf '%s' {{ inputs.value }} > ~/{{ inputs.marker }}.ssh"
    on_failure: abort
  - id: check_ssh
    needs: [write]
    ssh: {target: webs, credential: ops_ssh, command: "cat ~/{{ inputs.marker }}.ssh"}
    assert:
      that: ["result.hosts.values() | map(attribute='stdout') | unique | list == [inputs.value]"]
      message: ssh marker wrong
  - id: play
    needs: [check_ssh]
    ansible:
      target: webs
      credential: ops_ssh
      module: ansible.builtin.copy
      args: {dest: "~/{{ inputs.marker }}.ansible", content: "{{ inputs.value }}"}
    on_failure: abort
  - id: check_ansible
    needs: [play]
    ssh: {target: webs, credential: ops_ssh, command: "cat ~/{{ inputs.marker }}.ansible"}
    assert:
      that: ["result.hosts.values() | map(attribute='stdout') | unique | list == [inputs.value]"]
      message: ansible marker wrong
  - id: use_secret
    needs: [check_ansible]
    ssh:
      target: webs
      credential: ops_ssh
      command: "printf '%s' {{ secrets.api }} | base64; printf '%s' {{ secrets.api }}"
    on_failure: abort
"""


def _cli(
    args: list[str], env: dict[str, str], timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "executor.cli", *args],
        env=env,
        cwd=REPO,
        text=True,
        capture_output=True,
        timeout=timeout,
    )


@pytest.fixture
def world(sandbox: SandboxInfo, tmp_path: Path) -> dict[str, object]:
    home = tmp_path / "home"
    home.mkdir()
    env = {
        **os.environ,
        **sandbox.env(),
        "RUNBOOK_HOME": str(home),
        "RUNBOOK_CATALOG": "runbooks",
        "RUNBOOK_USER": "responder",
    }
    env.pop("VAULT_ADMIN_TOKEN", None)
    book = tmp_path / "remote-change.yaml"
    book.write_text(CHANGE_AND_VERIFY, encoding="utf-8")
    return {"env": env, "home": home, "book": book}


def _secret(sandbox: SandboxInfo) -> str:
    client = hvac.Client(url=sandbox.vault_addr, token=sandbox.admin_token)
    data = client.secrets.kv.v2.read_secret_version(
        path="runbooks/demo-app", mount_point="secret", raise_on_deleted_version=True
    )
    return str(data["data"]["data"]["api_key"])


def _files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_ssh_and_ansible_change_then_verify_on_three_hosts_and_leave_no_secret(
    sandbox: SandboxInfo, world: dict[str, object]
) -> None:
    env, home, book = world["env"], world["home"], world["book"]
    value = "it's $(touch /tmp/pwned-remote); `x` & done"
    done = _cli(
        ["run", str(book), "--yes", "-i", f"value={value}", "-i", "marker=m1", "--json"], env
    )  # type: ignore[arg-type]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    status = json.loads(done.stdout)
    assert status["status"] == "succeeded"
    for host in sandbox.group("web"):
        home_dir = Path(host.home)
        assert (home_dir / "m1.ssh").read_text() == value
        assert (home_dir / "m1.ansible").read_text() == value
    assert not Path("/tmp/pwned-remote").exists()

    secret = _secret(sandbox)
    encoded = base64.b64encode(secret.encode()).decode()
    written = _files_under(home)  # type: ignore[arg-type]
    assert any(p.name == "audit.jsonl" for p in written)
    for path in written:
        blob = path.read_bytes()
        assert secret.encode() not in blob, f"KV secret in {path}"
        assert encoded.encode() not in blob, f"base64 of the KV secret in {path}"
        assert b"PRIVATE KEY" not in blob, f"a private key in {path}"
        assert sandbox.secret_id.encode() not in blob, f"the AppRole secret id in {path}"
    assert secret not in done.stdout + done.stderr
    audit = (home / "audit.jsonl").read_text()  # type: ignore[operator]
    events = [json.loads(line)["event"] for line in audit.splitlines()]
    assert "credential.issued" in events and "credential.revoked" in events
    assert "ansible.task" in events
    verify = _cli(["audit", "verify"], env)  # type: ignore[arg-type]
    assert verify.returncode == 0, verify.stdout


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("how", ["denied", "down"])
def test_vault_refusing_or_down_fails_the_step_and_nothing_runs_on_any_host(
    sandbox: SandboxInfo, world: dict[str, object], how: str
) -> None:
    env = dict(world["env"])  # type: ignore[call-overload]
    book = world["book"]
    marker = f"m-{how}"
    if how == "denied":
        text = Path(book).read_text().replace("role: responder", "role: not-allowed")  # type: ignore[arg-type]
        Path(book).write_text(text)  # type: ignore[arg-type]
    else:
        env["VAULT_ADDR"] = f"http://127.0.0.1:{_closed_port()}"
    done = _cli(["run", str(book), "--yes", "-i", "value=x", "-i", f"marker={marker}"], env)
    assert done.returncode == 1, done.stdout + done.stderr
    output = done.stdout + done.stderr
    if how == "denied":
        assert "not-allowed" in output and "denied" in output.lower()
    else:
        assert env["VAULT_ADDR"] in output
    for host in sandbox.group("web"):
        assert not (Path(host.home) / f"{marker}.ssh").exists()
