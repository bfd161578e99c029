"""The ``ansible`` action against the sandbox: real sshd hosts, a real OpenBao certificate.

Every result is checked from outside the runner too: files are read from
the hosts' home directories (all sandbox hosts live on this machine),
remote processes are listed with ``pgrep -u <host user>``, local ones by
reading /proc, and the private data dir is scanned byte by byte just before
it is deleted. The kill-switch and timeout cases start ``sleep 60`` on all
five hosts and require that, within 5 seconds of the stop, no ``sleep`` runs
on any host and no ansible worker, ssh client or ssh-agent of the job runs
here.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from executor.actions.ansible import AnsibleRunner
from executor.actions.ansible_job import TAG_VARIABLE
from executor.actions.ansible_procs import MarkedProcesses
from executor.actions.remote_reaper import _SCRIPT, REMOTE_VARIABLE, parse_report
from executor.credentials import VaultCredentialProvider, VaultSettings
from executor.errors import AuditWriteError
from executor.model import AnsibleAction, CredentialSpec
from executor.ports import ActionRequest, ActionResult, CancelToken, IssuedCredential
from executor.sandbox import SandboxInfo

pytestmark = pytest.mark.integration

STOP_BUDGET = 5.0  # seconds from cancel (or deadline) to a clean world

PLAYBOOKS = {
    "marker.yml": """
- hosts: all
  gather_facts: false
  tasks:
    - name: write the marker
      ansible.builtin.copy: {content: "{{ marker }}", dest: "~/app/marker"}
    - name: read it back
      ansible.builtin.slurp: {src: "~/app/marker"}
      register: back
    - name: verify the marker
      ansible.builtin.assert:
        that: (back.content | b64decode) == marker
        quiet: true
""",
    "restart.yml": """
- hosts: all
  gather_facts: false
  tasks:
    - name: restart app
      ansible.builtin.fail: {msg: "app.service did not come back"}
      when: inventory_hostname == "web2"
    - name: report
      ansible.builtin.command: "true"
""",
    "ping.yml": """
- hosts: all
  gather_facts: false
  tasks:
    - name: ping
      ansible.builtin.ping:
""",
    "sleep.yml": """
- hosts: all
  gather_facts: false
  tasks:
    - name: prepare
      ansible.builtin.command: "true"
    - name: sleep a while
      ansible.builtin.command: sleep 60
""",
    "secret.yml": """
- hosts: all
  gather_facts: false
  tasks:
    - name: install the api key
      ansible.builtin.copy: {content: "{{ api_key }}", dest: "~/app/api_key", mode: "0600"}
    - name: show it
      ansible.builtin.debug: {msg: "the key is {{ api_key }}"}
""",
    "check.yml": """
- hosts: all
  gather_facts: false
  tasks:
    - name: write a file
      ansible.builtin.copy: {content: "checked", dest: "~/app/check-marker"}
""",
}


# --------------------------------------------------------------------------- fixtures


LEFT_ON_HOSTS = ("marker", "api_key", "check-marker")


@pytest.fixture(scope="module", autouse=True)
def tidy_hosts(sandbox: SandboxInfo) -> Iterator[None]:
    """The world is shared by the session: remove what these plays write on the hosts."""
    yield
    for host in sandbox.hosts:
        for name in LEFT_ON_HOSTS:
            (Path(host.home) / "app" / name).unlink(missing_ok=True)


@pytest.fixture(scope="module")
def vault(sandbox: SandboxInfo) -> Iterator[VaultCredentialProvider]:
    settings = VaultSettings.from_env(
        {
            "VAULT_ADDR": sandbox.vault_addr,
            "VAULT_ROLE_ID": sandbox.role_id,
            "VAULT_SECRET_ID": sandbox.secret_id,
        }
    )
    provider = VaultCredentialProvider(settings, f"run-ansible-{secrets.token_hex(3)}", 1800)
    yield provider
    provider.revoke_all()


@pytest.fixture(scope="module")
def ssh_credential(vault: VaultCredentialProvider) -> IssuedCredential:
    spec = CredentialSpec(
        name="ops_ssh", kind="vault_ssh", role="responder", principals=("ops",), ttl=1800
    )
    return vault.issue(spec, run_id=vault.run_id, ttl=1800)


@pytest.fixture(scope="module")
def api_key(vault: VaultCredentialProvider) -> str:
    spec = CredentialSpec(name="api", kind="vault_kv", path="runbooks/demo-app", key="api_key")
    value = vault.issue(spec, run_id=vault.run_id, ttl=1800).material
    assert isinstance(value, str) and len(value) > 10
    return value


@pytest.fixture(scope="module")
def playbook_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("playbooks")
    for name, text in PLAYBOOKS.items():
        (directory / name).write_text(text.lstrip())
    return directory


@dataclass
class Disk:
    """What the runner left in its private data dirs, seen just before deletion."""

    dirs: list[Path] = field(default_factory=list)
    files: dict[Path, bytes] = field(default_factory=dict)
    fifos: list[Path] = field(default_factory=list)

    def inspect(self, directory: Path) -> None:
        self.dirs.append(directory)
        for path in directory.rglob("*"):
            if path.is_fifo():
                self.fifos.append(path)  # never opened: reading would take the data
            elif path.is_file() and not path.is_symlink():
                self.files[path] = path.read_bytes()

    def containing(self, needle: str) -> list[Path]:
        return [p for p, data in self.files.items() if needle.encode() in data]


@pytest.fixture
def disk() -> Disk:
    return Disk()


@pytest.fixture
def make_runner(
    sandbox: SandboxInfo, playbook_dir: Path, disk: Disk
) -> Callable[..., AnsibleRunner]:
    def make(**changes: Any) -> AnsibleRunner:
        settings: dict[str, Any] = {
            "inventory_path": sandbox.inventory,
            "known_hosts": sandbox.known_hosts,
            "playbook_dir": playbook_dir,
            "before_cleanup": disk.inspect,
        }
        settings.update(changes)
        return AnsibleRunner(**settings)

    return make


@dataclass
class Events:
    seen: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def __call__(self, event: str, data: Mapping[str, Any]) -> None:
        self.seen.append((event, dict(data)))

    def tasks(self, host: str | None = None) -> list[dict[str, Any]]:
        return [d for e, d in self.seen if e == "ansible.task" and host in (None, d["host"])]


def masker(*secret_values: str) -> Callable[[str], str]:
    def mask(text: str) -> str:
        for value in secret_values:
            text = text.replace(value, "***")
        return text

    return mask


def ansible_request(
    credential: IssuedCredential | None,
    hosts: list[str],
    *,
    events: Events | None = None,
    mask: Callable[[str], str] = str,
    step: str = "step",
    **action: Any,
) -> tuple[ActionRequest, Events]:
    timeout = action.pop("timeout", None)
    dry_run = action.pop("dry_run", False)
    events = events or Events()
    request = ActionRequest(
        run_id="run-it",
        step_id=step,
        action=AnsibleAction(target="web", credential="ops_ssh", **action),
        hosts=hosts,
        credential=credential,
        timeout=timeout,
        dry_run=dry_run,
        mask=mask,
        on_event=events,
    )
    return request, events


# --------------------------------------------------------------------------- helpers


def home(sandbox: SandboxInfo, host: str) -> Path:
    return Path(sandbox.host(host).home)


def sleeping(sandbox: SandboxInfo, host: str) -> list[int]:
    """Pids of ``sleep`` processes of the host's user (pgrep, zombies included)."""
    done = subprocess.run(
        ["pgrep", "-u", sandbox.host(host).user, "-x", "sleep"],
        capture_output=True,
        text=True,
        check=False,
    )
    return [int(p) for p in done.stdout.split()]


def local_job_processes(tag: str, private_dirs: list[Path]) -> list[str]:
    """Our processes that belong to the job: the tag in their environment, or its private
    dir in their command line (an independent scan of /proc)."""
    entry = f"{TAG_VARIABLE}={tag}".encode()
    fragments = [f"{d}/".encode() for d in private_dirs]
    found = []
    for item in Path("/proc").iterdir():
        if not item.name.isdigit() or int(item.name) == os.getpid():
            continue
        try:
            environ = (item / "environ").read_bytes().split(b"\0")
            cmdline = (item / "cmdline").read_bytes()
            state = (item / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            continue
        if entry in environ or any(f in cmdline for f in fragments):
            shown = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{item.name}: {shown}")
    return found


def wait_for(check: Callable[[], bool], deadline: float, step: float = 0.05) -> bool:
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


def pwned_path() -> Path:
    return Path(f"/tmp/pwned-{secrets.token_hex(4)}")


# --------------------------------------------------------------------------- running plays


def test_a_playbook_changes_a_file_on_three_hosts_and_extravars_arrive_literally(
    sandbox: SandboxInfo,
    make_runner: Callable[..., AnsibleRunner],
    ssh_credential: IssuedCredential,
    disk: Disk,
) -> None:
    pwned, templated = pwned_path(), pwned_path()
    value = f"$(touch {pwned}); x `touch {pwned}` {{{{ lookup('pipe', 'touch {templated}') }}}}"
    hosts = ["web1", "web2", "web3"]
    for host in hosts:
        (home(sandbox, host) / "app" / "marker").unlink(missing_ok=True)
    request, events = ansible_request(
        ssh_credential, hosts, playbook="marker.yml", extravars={"marker": value}
    )
    result = make_runner().run(request, CancelToken())

    assert result.ok, result.error
    assert result.rc == 0 and result.error is None
    for host in hosts:
        assert (home(sandbox, host) / "app" / "marker").read_text() == value
        assert result.hosts[host].ok and result.hosts[host].rc == 0
        statuses = [(t["task"], t["status"], t["changed"]) for t in events.tasks(host)]
        assert statuses == [
            ("write the marker", "ok", True),
            ("read it back", "ok", False),
            ("verify the marker", "ok", False),
        ]
    assert not pwned.exists() and not templated.exists()
    assert result.data["stats"]["web2"]["changed"] == 1
    assert (home(sandbox, "db1") / "app" / "marker").exists() is False  # not targeted
    # ControlPersist masters and ssh-agent do not outlive the step either.
    tag = result.data["tag"]
    assert wait_for(lambda: not local_job_processes(tag, disk.dirs), time.monotonic() + 5), (
        local_job_processes(tag, disk.dirs)
    )


def test_a_failing_task_names_the_host_and_the_task(
    make_runner: Callable[..., AnsibleRunner], ssh_credential: IssuedCredential
) -> None:
    request, events = ansible_request(
        ssh_credential, ["web1", "web2", "web3"], playbook="restart.yml"
    )
    result = make_runner().run(request, CancelToken())

    assert not result.ok and result.rc == 2
    assert result.error == "failed on web2 (task 'restart app': app.service did not come back)"
    assert not result.hosts["web2"].ok and result.hosts["web2"].rc == 2
    assert result.hosts["web1"].ok and result.hosts["web3"].ok
    failed = [t for t in events.tasks() if t["status"] == "failed"]
    assert [(t["host"], t["task"]) for t in failed] == [("web2", "restart app")]
    assert [t["task"] for t in events.tasks("web2")] == ["restart app"]  # it stopped there


@pytest.fixture
def ghost_inventory(sandbox: SandboxInfo, tmp_path: Path) -> Path:
    """The sandbox inventory plus ``ghost``: a host whose port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    data = yaml.safe_load(sandbox.inventory.read_text())
    web = data["all"]["children"]["sandbox"]["children"]["web"]["hosts"]
    web["ghost"] = {
        "ansible_host": "127.0.0.1",
        "ansible_port": closed_port,
        "ansible_user": sandbox.host("web1").user,
    }
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_an_unreachable_host_is_reported_and_the_others_still_run(
    make_runner: Callable[..., AnsibleRunner],
    ssh_credential: IssuedCredential,
    ghost_inventory: Path,
) -> None:
    request, events = ansible_request(ssh_credential, ["web1", "ghost"], playbook="ping.yml")
    result = make_runner(inventory_path=ghost_inventory).run(request, CancelToken())

    assert not result.ok and result.rc == 4
    assert result.error is not None and result.error.startswith("unreachable: ghost (")
    assert "Connection refused" in result.error
    ghost = result.hosts["ghost"]
    assert not ghost.ok and ghost.rc == 4 and ghost.error and ghost.error.startswith("unreachable")
    assert result.hosts["web1"].ok
    assert {(t["host"], t["status"]) for t in events.tasks()} == {
        ("web1", "ok"),
        ("ghost", "unreachable"),
    }


def test_a_module_step_runs_one_task_with_its_args_as_data(
    make_runner: Callable[..., AnsibleRunner], ssh_credential: IssuedCredential
) -> None:
    pwned = pwned_path()
    value = f"$(touch {pwned}); {{{{ 7*6 }}}} 'quoted' \"double\""
    request, events = ansible_request(
        ssh_credential,
        ["web1"],
        module="ansible.builtin.command",
        args={"argv": ["printf", "%s", value]},
    )
    result = make_runner().run(request, CancelToken())

    assert result.ok, result.error
    assert result.stdout == value and result.hosts["web1"].stdout == value
    assert not pwned.exists()
    (task,) = events.tasks()
    assert task["task"] == "ansible.builtin.command" and task["rc"] == 0


def test_every_remote_process_carries_the_step_tag(
    make_runner: Callable[..., AnsibleRunner], ssh_credential: IssuedCredential
) -> None:
    request, _ = ansible_request(
        ssh_credential,
        ["web3"],
        module="ansible.builtin.shell",
        args={"cmd": f'printf %s "${REMOTE_VARIABLE}"'},
    )
    result = make_runner().run(request, CancelToken())
    assert result.ok, result.error
    assert result.stdout == result.data["tag"]
    assert result.data["tag"].startswith("run-it:step:")


def test_check_mode_changes_nothing(
    sandbox: SandboxInfo,
    make_runner: Callable[..., AnsibleRunner],
    ssh_credential: IssuedCredential,
) -> None:
    target = home(sandbox, "lb1") / "app" / "check-marker"
    target.unlink(missing_ok=True)
    request, events = ansible_request(ssh_credential, ["lb1"], playbook="check.yml", dry_run=True)
    result = make_runner().run(request, CancelToken())

    assert result.ok, result.error
    assert result.data["check_mode"] is True
    (task,) = events.tasks()
    assert task["status"] == "ok" and task["changed"] is True  # it would change
    assert task["check_mode"] is True
    assert not target.exists()


# --------------------------------------------------------------------------- secrets


def test_no_key_or_secret_lands_on_disk_or_in_events(
    sandbox: SandboxInfo,
    make_runner: Callable[..., AnsibleRunner],
    ssh_credential: IssuedCredential,
    api_key: str,
    disk: Disk,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The executor's own secret sits in its environment, as in production.
    monkeypatch.setenv("VAULT_SECRET_ID", sandbox.secret_id)
    private_key = ssh_credential.material.private_key_openssh()
    key_lines = [line for line in private_key.splitlines() if len(line) > 20 and "--" not in line]
    assert key_lines
    mask = masker(api_key, private_key)
    request, events = ansible_request(
        ssh_credential,
        ["web1"],
        playbook="secret.yml",
        extravars={"api_key": api_key},
        mask=mask,
    )
    result = make_runner().run(request, CancelToken())

    assert result.ok, result.error
    # The secret did flow through the play (so the scan below can fail) ...
    assert (home(sandbox, "web1") / "app" / "api_key").read_text() == api_key
    shown = [t for t in events.tasks() if t["task"] == "show it"]
    assert shown and shown[0]["msg"] == "the key is ***"
    assert api_key not in repr(events.seen) and api_key not in repr(result)
    # ... but never onto the executor's disk.
    (directory,) = disk.dirs
    assert not directory.exists()  # removed after the scan
    assert any(p.name == "command" for p in disk.files), "the artifacts were not scanned"
    assert not [p for p in disk.files if "job_events" in p.parts], "events were written"
    for needle in [api_key, sandbox.secret_id, *key_lines]:
        assert disk.containing(needle) == [], f"found a secret in {disk.containing(needle)}"
    assert all(f.name in ("extravars.yml", "ssh_key_data") for f in disk.fifos)


# --------------------------------------------------------------------------- stopping


@dataclass
class SleepWatch:
    """Cancels ``token`` as soon as ``sleep`` runs on every host (or just watches)."""

    sandbox: SandboxInfo
    hosts: list[str]
    token: CancelToken | None = None
    all_sleeping_at: float | None = None
    stopped_at: float | None = None
    thread: threading.Thread | None = None

    def start(self) -> SleepWatch:
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _watch(self) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if all(sleeping(self.sandbox, h) for h in self.hosts):
                self.all_sleeping_at = time.monotonic()
                if self.token is not None:
                    self.stopped_at = time.monotonic()
                    self.token.cancel("kill-switch engaged by the test")
                return
            time.sleep(0.05)


def assert_clean_by(
    sandbox: SandboxInfo, hosts: list[str], result: ActionResult, disk: Disk, deadline: float
) -> None:
    tag = result.data["tag"]
    clean = wait_for(
        lambda: (
            not any(sleeping(sandbox, h) for h in hosts) and not local_job_processes(tag, disk.dirs)
        ),
        deadline,
    )
    left = {h: sleeping(sandbox, h) for h in hosts if sleeping(sandbox, h)}
    assert clean, f"left running: remote {left}, local {local_job_processes(tag, disk.dirs)}"


def test_cancel_during_sleep_on_five_hosts_leaves_nothing_running(
    sandbox: SandboxInfo,
    make_runner: Callable[..., AnsibleRunner],
    ssh_credential: IssuedCredential,
    disk: Disk,
) -> None:
    hosts = [h.name for h in sandbox.hosts]
    assert len(hosts) == 5
    token = CancelToken()
    watch = SleepWatch(sandbox, hosts, token).start()
    request, events = ansible_request(ssh_credential, hosts, playbook="sleep.yml")
    result = make_runner().run(request, token)
    returned = time.monotonic()

    assert watch.stopped_at is not None, f"sleep never ran on all hosts: {result.error}"
    assert returned - watch.stopped_at < STOP_BUDGET
    assert_clean_by(sandbox, hosts, result, disk, watch.stopped_at + STOP_BUDGET)
    assert result.cancelled and not result.timed_out and not result.ok
    assert result.error is not None
    assert result.error.startswith("cancelled: kill-switch engaged by the test; ")
    assert "remote processes stopped on db1, lb1, web1, web2, web3" in result.error
    for host in hosts:
        assert result.hosts[host].cut_off
        assert result.hosts[host].error == "cut off during task 'sleep a while'"
        assert result.data["stopped"]["remote"][host]["found"] >= 1
        assert [t["task"] for t in events.tasks(host)] == ["prepare"]


def test_a_timeout_stops_everything_the_same_way(
    sandbox: SandboxInfo,
    make_runner: Callable[..., AnsibleRunner],
    ssh_credential: IssuedCredential,
    disk: Disk,
) -> None:
    hosts = [h.name for h in sandbox.hosts]
    timeout = 20.0
    watch = SleepWatch(sandbox, hosts).start()
    request, _ = ansible_request(ssh_credential, hosts, playbook="sleep.yml", timeout=timeout)
    started = time.monotonic()
    result = make_runner().run(request, CancelToken())
    deadline = started + timeout

    assert watch.all_sleeping_at is not None and watch.all_sleeping_at < deadline, (
        "sleep did not start on every host before the timeout: the machine is too slow for "
        "this test to show anything"
    )
    assert time.monotonic() - deadline < STOP_BUDGET
    assert_clean_by(sandbox, hosts, result, disk, deadline + STOP_BUDGET)
    assert result.timed_out and not result.cancelled and not result.ok
    assert result.error is not None and result.error.startswith("timed out after 20s; ")
    assert all(h.cut_off for h in result.hosts.values())


def test_an_audit_failure_stops_the_play(
    sandbox: SandboxInfo,
    make_runner: Callable[..., AnsibleRunner],
    ssh_credential: IssuedCredential,
    disk: Disk,
) -> None:
    def failing_audit(event: str, data: Mapping[str, Any]) -> None:
        raise AuditWriteError("cannot write audit.jsonl: No space left on device")

    request, _ = ansible_request(ssh_credential, ["web1", "web2"], playbook="sleep.yml")
    request = ActionRequest(**{**request.__dict__, "on_event": failing_audit})
    started = time.monotonic()
    result = make_runner().run(request, CancelToken())

    assert time.monotonic() - started < 40  # not the 60 s of the sleep
    assert not result.ok and result.cancelled
    assert result.error is not None
    assert "the audit could not record an Ansible task" in result.error
    assert "No space left on device" in result.error
    assert_clean_by(sandbox, ["web1", "web2"], result, disk, time.monotonic() + STOP_BUDGET)


# --------------------------------------------------------------------------- the stoppers alone


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; all killed (by pid) and reaped at the end."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.returncode is None:  # not reaped yet: its group id is still ours
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def spawn(
    started: list[subprocess.Popen[bytes]], argv: list[str], env: dict[str, str]
) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        argv, env={"PATH": "/usr/bin:/bin", **env}, start_new_session=True, close_fds=True
    )
    started.append(process)
    return process


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_local_stop_finds_setsid_processes_by_tag_or_command_line(
    spawned: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    tag = f"t-{secrets.token_hex(4)}"
    fragment = f"{tmp_path}/"
    mine = {TAG_VARIABLE: tag}
    plain = spawn(spawned, ["sleep", "100"], mine)
    ignore_term = "import signal, time; signal.signal(15, signal.SIG_IGN); time.sleep(100)"
    stubborn = spawn(spawned, [sys.executable, "-c", ignore_term], mine)
    renamed = f"exec -a 'ssh: {fragment}cp/x [mux]' sleep 100"  # as ssh rewrites its title
    mux = spawn(spawned, ["/bin/bash", "-c", renamed], {})
    other = spawn(spawned, ["sleep", "100"], {TAG_VARIABLE: tag + "x"})
    time.sleep(0.3)  # let them exec

    processes = MarkedProcesses(TAG_VARIABLE, tag, cmdline=fragment)
    assert set(processes.pids()) == {plain.pid, stubborn.pid, mux.pid}
    report = processes.stop(grace=0.5)

    assert report.found == 3 and report.killed == 1 and not report.survivors
    assert not any(alive(p.pid) for p in (plain, stubborn, mux))
    assert alive(other.pid)  # another job's process is not ours to stop
    assert processes.pids() == []


def test_the_remote_stop_script_kills_children_first_so_no_zombie_is_left(
    spawned: list[subprocess.Popen[bytes]],
) -> None:
    tag = f"t-{secrets.token_hex(4)}"
    entry = f"{REMOTE_VARIABLE}={tag}"
    # What a module looks like on a host: sh -c -> python (waiting) -> sleep.
    python = f'{sys.executable} -c \'import subprocess; subprocess.run(["sleep", "100"])\''
    module = spawn(spawned, ["sh", "-c", python], {REMOTE_VARIABLE: tag})
    stubborn_script = "trap '' TERM; sleep 100; sleep 100"
    stubborn = spawn(spawned, ["sh", "-c", stubborn_script], {REMOTE_VARIABLE: tag})
    other = spawn(spawned, ["sleep", "100"], {REMOTE_VARIABLE: tag + "x"})
    time.sleep(0.5)
    listed = subprocess.run(
        ["pgrep", "-x", "-s", str(module.pid), "sleep"], capture_output=True, text=True, check=False
    )
    sleeps_before = listed.stdout.split()
    assert sleeps_before

    done = subprocess.run(
        ["sh", "-c", _SCRIPT, "runbook-reaper", entry, "5"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    report = parse_report("local", done.stdout)

    assert report.error is None, done.stdout + done.stderr
    assert report.found >= 4 and report.left == 0 and report.killed >= 1
    module.wait(timeout=5)
    stubborn.wait(timeout=5)
    for pid in sleeps_before:  # reaped by its parent, not left as a zombie for init
        assert not Path(f"/proc/{pid}").exists()
    assert alive(other.pid)
