"""The pure parts of the ``ansible`` action: events, results, data handling, refusals.

No process is started and no host touched: events are the dicts
ansible-runner hands to ``event_handler`` (shapes copied from real runs of
ansible-runner 2.4 with ansible-core 2.19), /proc is a fake tree under
tmp_path, and YAML is checked with ansible-core's own loader and templar.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from executor.actions.ansible import AnsibleRunner
from executor.actions.ansible_callback import REMOTE_VARIABLE, CallbackModule, _as_list
from executor.actions.ansible_events import (
    Ending,
    PlayRecord,
    TaskOutcome,
    build_result,
    stats_summary,
    task_outcome,
)
from executor.actions.ansible_job import (
    TAG_VARIABLE,
    check_variable_name,
    extravars_yaml,
    job_environment,
    job_tag,
    module_playbook,
    resolve_playbook,
    scrub_runner_env,
    ssh_args,
)
from executor.actions.ansible_procs import cmdline_has, environ_has, marked_pids
from executor.actions.remote_reaper import (
    HostReap,
    parse_report,
    reaper_command,
    summarize,
)
from executor.errors import ActionError
from executor.model import AnsibleAction, LocalAction
from executor.ports import ActionRequest, CancelToken, IssuedCredential

SECRET = "s3cr3t-value"


def mask(text: str) -> str:
    return text.replace(SECRET, "***")


def event(name: str, host: str, task: str = "restart app", **data: Any) -> dict[str, Any]:
    res = data.pop("res", None)
    event_data = {"host": host, "task": task, "task_action": "ansible.builtin.command", **data}
    if res is not None:
        event_data["res"] = res
    return {"event": name, "uuid": "u", "stdout": "", "event_data": event_data}


def stats(**counts: dict[str, int]) -> dict[str, Any]:
    data = {k: {} for k in ("ok", "changed", "failures", "dark", "skipped", "rescued", "ignored")}
    data.update(counts)
    data.setdefault("processed", {h: 1 for per in counts.values() for h in per})
    return {"event": "playbook_on_stats", "event_data": data}


# --------------------------------------------------------------------------- task events


def test_an_ok_event_becomes_a_masked_payload_without_the_raw_result() -> None:
    raw = event(
        "runner_on_ok",
        "web1",
        task=f"write {SECRET}",
        duration=1.23456,
        res={
            "changed": True,
            "rc": 0,
            "msg": f"wrote {SECRET}",
            "stdout": f"out {SECRET}",
            "invocation": {"module_args": {"content": SECRET, "password": "hunter2"}},
        },
    )
    outcome = task_outcome(raw, mask)
    assert outcome == TaskOutcome(
        host="web1",
        task="write ***",
        status="ok",
        changed=True,
        rc=0,
        duration=1.235,
        msg="wrote ***",
        stdout="out ***",
    )
    payload = outcome.audit_payload()
    assert set(payload) == {"host", "task", "status", "changed", "rc", "duration", "msg", "ignored"}
    assert "hunter2" not in repr(payload) and SECRET not in repr(payload)
    assert "stdout" not in payload


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("runner_on_failed", "failed"),
        ("runner_on_unreachable", "unreachable"),
        ("runner_on_skipped", "skipped"),
    ],
)
def test_each_task_end_event_maps_to_its_status(name: str, status: str) -> None:
    outcome = task_outcome(event(name, "web2", res={"msg": "why"}), mask)
    assert outcome is not None and outcome.status == status and outcome.host == "web2"


@pytest.mark.parametrize(
    "name", ["runner_on_start", "playbook_on_task_start", "verbose", "playbook_on_stats", ""]
)
def test_other_events_are_not_task_outcomes(name: str) -> None:
    assert task_outcome(event(name, "web1"), mask) is None


def test_a_failure_message_adds_the_last_stderr_line_and_stays_on_one_line() -> None:
    raw = event(
        "runner_on_failed",
        "web2",
        res={"msg": "non-zero return code", "rc": 3, "stderr": "warming up\nboom: disk full\n"},
    )
    outcome = task_outcome(raw, mask)
    assert outcome is not None
    assert outcome.msg == "non-zero return code: boom: disk full"
    assert outcome.rc == 3 and outcome.fails_host


def test_an_ignored_failure_does_not_fail_the_host() -> None:
    raw = event("runner_on_failed", "web2", ignore_errors=True, res={"msg": "nope", "rc": 1})
    outcome = task_outcome(raw, mask)
    assert outcome is not None and outcome.ignored and not outcome.fails_host
    assert outcome.audit_payload()["ignored"] is True


def test_odd_values_do_not_break_the_mapping() -> None:
    raw = event("runner_on_ok", "web1", res={"rc": True, "msg": ["a", "list"], "changed": 1})
    outcome = task_outcome(raw, mask)
    assert outcome is not None
    assert outcome.rc is None  # a bool is not an exit code
    assert outcome.msg == "['a', 'list']" and outcome.changed is True
    assert task_outcome({"event": "runner_on_ok", "event_data": None}, mask) is None
    omitted = task_outcome({"event": "runner_on_ok", "event_data": {"host": "web1"}}, mask)
    assert omitted is not None and omitted.msg == "" and omitted.task == "?"


def test_long_messages_are_clipped() -> None:
    raw = event("runner_on_failed", "web1", res={"msg": "x" * 5000})
    outcome = task_outcome(raw, mask)
    assert outcome is not None and len(outcome.msg) == 500 and outcome.msg.endswith("...")


# --------------------------------------------------------------------------- results


def play(*events: dict[str, Any]) -> PlayRecord:
    record = PlayRecord(mask=mask, clock=lambda: 100.0)
    for item in events:
        record.add(item)
    return record


SUCCESS = Ending(status="successful", rc=0)


def test_a_successful_play_gives_ok_hosts_with_the_last_output() -> None:
    record = play(
        event("runner_on_start", "web1"),
        event("runner_on_ok", "web1", res={"stdout": "hello", "changed": True}),
        event("runner_on_ok", "web1", task="check", res={"changed": False}),
        stats(ok={"web1": 2}, changed={"web1": 1}),
    )
    result = build_result(record, ["web1"], SUCCESS, data={"x": 1})
    assert result.ok and result.rc == 0 and result.error is None
    assert result.stdout == "hello"  # the only host's output
    host = result.hosts["web1"]
    assert host.ok and host.rc == 0 and host.stdout == "hello" and not host.cut_off
    assert result.data == {"x": 1}
    assert stats_summary(record, ["web1"])["web1"]["changed"] == 1


def test_failed_and_unreachable_hosts_are_named_in_the_error() -> None:
    record = play(
        event("runner_on_ok", "web1", res={}),
        event(
            "runner_on_failed",
            "web2",
            res={"msg": "non-zero return code", "rc": 3, "stderr": "service not found"},
        ),
        event(
            "runner_on_unreachable",
            "web3",
            res={"msg": "Failed to connect to the host via ssh: Connection refused"},
        ),
        stats(ok={"web1": 1}, failures={"web2": 1}, dark={"web3": 1}),
    )
    result = build_result(record, ["web1", "web2", "web3"], Ending(status="failed", rc=4))
    assert not result.ok and result.rc == 4
    assert result.error == (
        "failed on web2 (task 'restart app': non-zero return code: service not found); "
        "unreachable: web3 (Failed to connect to the host via ssh: Connection refused)"
    )
    assert result.hosts["web1"].ok  # it finished its play
    assert result.hosts["web2"].rc == 3 and not result.hosts["web2"].ok
    assert result.hosts["web3"].rc == 4 and result.hosts["web3"].error.startswith("unreachable")
    assert result.stdout == ""  # several hosts: no single output


def test_a_failure_without_rc_gets_ansibles_code_2() -> None:
    record = play(
        event("runner_on_failed", "web2", res={"msg": "assertion failed"}),
        stats(failures={"web2": 1}),
    )
    result = build_result(record, ["web2"], Ending(status="failed", rc=2))
    assert result.hosts["web2"].rc == 2
    assert result.error == "failed on web2 (task 'restart app': assertion failed)"


def test_a_rescued_failure_leaves_the_host_ok() -> None:
    record = play(
        event("runner_on_failed", "web1", res={"msg": "first try"}),
        event("runner_on_ok", "web1", task="rescue", res={}),
        stats(ok={"web1": 1}, rescued={"web1": 1}),
    )
    result = build_result(record, ["web1"], SUCCESS)
    assert result.ok and result.hosts["web1"].ok


def test_a_cancelled_play_cuts_off_every_host_and_says_what_was_stopped() -> None:
    record = play(
        event("runner_on_ok", "web1", task="prepare", res={}),
        event("runner_on_start", "web1", task="sleep"),
        event("runner_on_start", "web2", task="prepare"),
    )
    ending = Ending(
        status="canceled",
        rc=254,
        cancelled=True,
        reason="kill-switch engaged by alice",
        stop_report="3 local ansible process(es) stopped; remote processes stopped on web1",
    )
    result = build_result(record, ["web1", "web2", "web3"], ending)
    assert result.cancelled and not result.timed_out and not result.ok
    assert result.error == (
        "cancelled: kill-switch engaged by alice; 3 local ansible process(es) stopped; "
        "remote processes stopped on web1"
    )
    hosts = result.hosts
    assert all(h.cut_off and not h.ok and h.rc is None for h in hosts.values())
    assert hosts["web1"].error == "cut off during task 'sleep'"
    assert hosts["web2"].error == "cut off during task 'prepare'"
    assert hosts["web3"].error == "cut off before its first task"


def test_a_timeout_is_reported_as_such_not_as_a_cancel() -> None:
    record = play(event("runner_on_ok", "web1", task="prepare", res={}))
    ending = Ending(status="canceled", rc=254, timed_out=True, timeout=90, stop_report="done")
    result = build_result(record, ["web1"], ending)
    assert result.timed_out and not result.cancelled
    assert result.error == "timed out after 1m30s; done"
    assert result.hosts["web1"].error == "cut off after task 'prepare'"


def test_a_play_that_failed_before_any_task_explains_with_ansibles_error_lines() -> None:
    record = play(
        {"event": "verbose", "stdout": "Identity added: /tmp/x/ssh_key_data"},
        {"event": "verbose", "stdout": "\x1b[0;31m[ERROR]: couldn't resolve module 'nope'\x1b[0m"},
        {"event": "verbose", "stdout": f"Origin: /tmp/{SECRET}/play.yml:5:7"},
    )
    result = build_result(record, ["web1"], Ending(status="failed", rc=4))
    assert result.error == (
        "ansible failed: [ERROR]: couldn't resolve module 'nope' | Origin: /tmp/***/play.yml:5:7"
    )
    assert result.hosts["web1"].error == "the play did not complete"


def test_a_runner_crash_is_reported_first() -> None:
    ending = Ending(status="error", rc=None, failure="ansible-runner failed: boom", stop_report="x")
    result = build_result(play(), ["web1"], ending)
    assert result.error == "ansible-runner failed: boom; x"
    assert result.hosts["web1"].error == "the play did not complete"


def test_without_stats_failures_come_from_the_events() -> None:
    record = play(event("runner_on_failed", "web2", res={"msg": "no"}))
    result = build_result(record, ["web1", "web2"], Ending(status="failed", rc=2))
    assert result.hosts["web2"].error == "task 'restart app': no"
    assert result.hosts["web1"].error == "the play did not complete"


# --------------------------------------------------------------------------- data as data


def _ansible_value(tmp_path: Path, text: str, key: str) -> Any:
    """Load YAML as ansible-playbook loads ``-e @file`` and template one value."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar

    path = tmp_path / "vars.yml"
    path.write_text(text)
    loader = DataLoader()
    data = loader.load_from_file(str(path), trusted_as_template=True)
    return Templar(loader=loader, variables={}).template(data[key])


def test_extravars_are_never_templated_by_ansible(tmp_path: Path) -> None:
    value = "$(touch /tmp/pwned); x {{ lookup('pipe', 'id') }} {{ 7*6 }}"
    text = extravars_yaml({"value": value, "nested": {"list": ["{{ 7*6 }}", 3, None]}}, "s")
    assert _ansible_value(tmp_path, text, "value") == value
    assert _ansible_value(tmp_path, text, "nested") == {"list": ["{{ 7*6 }}", 3, None]}
    # The check can fail: the same value without the tag is templated.
    assert _ansible_value(tmp_path, "plain: '{{ 7*6 }}'\n", "plain") == 42


@pytest.mark.parametrize(
    "name",
    ["ansible_ssh_common_args", "ansible_host", "hostvars", "inventory_hostname", "1x", "a-b", ""],
)
def test_variable_names_that_would_redirect_ansible_are_refused(name: str) -> None:
    with pytest.raises(ActionError, match=r"step 'clean'"):
        check_variable_name(name, "clean")


def test_values_that_are_not_data_are_refused() -> None:
    with pytest.raises(ActionError, match=r"extravars\.when is a object"):
        extravars_yaml({"when": object()}, "s")
    with pytest.raises(ActionError, match="key 1 is not a string"):
        extravars_yaml({"m": {1: "x"}}, "s")


def test_a_module_step_becomes_a_one_task_playbook_with_untemplatable_args(
    tmp_path: Path,
) -> None:
    text = module_playbook("ansible.builtin.command", {"argv": ["echo", "{{ 7*6 }}"]}, "step-1")
    from ansible.parsing.dataloader import DataLoader

    path = tmp_path / "play.yml"
    path.write_text(text)
    (play_,) = DataLoader().load_from_file(str(path), trusted_as_template=True)
    assert play_["hosts"] == "all" and play_["gather_facts"] is False
    (task,) = play_["tasks"]
    assert task["ansible.builtin.command"] == {"argv": ["echo", "{{ 7*6 }}"]}
    assert "!unsafe '{{ 7*6 }}'" in text


@pytest.mark.parametrize("module", ["", "command; rm -rf /", "a..b", "ansible.builtin.", "-m"])
def test_module_names_are_checked(module: str) -> None:
    with pytest.raises(ActionError, match="is not an Ansible module name"):
        module_playbook(module, {}, "s")


def test_playbooks_must_stay_inside_the_playbook_dir(tmp_path: Path) -> None:
    books = tmp_path / "books"
    (books / "sub").mkdir(parents=True)
    (books / "sub" / "ok.yml").write_text("- hosts: all\n")
    (tmp_path / "outside.yml").write_text("- hosts: all\n")
    (books / "link.yml").symlink_to(tmp_path / "outside.yml")
    assert resolve_playbook(books, "sub/ok.yml", "s") == (books / "sub" / "ok.yml").resolve()
    for bad, why in [
        ("../outside.yml", "outside the playbook directory"),
        ("link.yml", "outside the playbook directory"),
        (str(tmp_path / "outside.yml"), "must be a path relative"),
        ("", "must be a path relative"),
        ("missing.yml", "does not exist"),
    ]:
        with pytest.raises(ActionError, match=why):
            resolve_playbook(books, bad, "s")


def test_job_tags_are_unique_and_safe() -> None:
    assert job_tag("run-42", "clean logs", "abc") == "run-42:clean_logs:abc"
    assert job_tag("r;$(x)", "s", "n") == "r_x_:s:n"
    assert job_tag("r", "s") != job_tag("r", "s")


# --------------------------------------------------------------------------- environment


def test_the_job_environment_is_an_allowlist(tmp_path: Path) -> None:
    parent = {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "VAULT_TOKEN": "hvs.x",
        "VAULT_SECRET_ID": "sid",
        "AWS_SECRET_ACCESS_KEY": "k",
        "RANDOM_THING": "1",
    }
    env = job_environment(
        private=tmp_path,
        callbacks=tmp_path / "cb",
        ssh="-o X=1",
        tag="r:s:n",
        pipelining=True,
        bin_dir=Path("/venv/bin"),
        parent=parent,
    )
    assert env["PATH"] == "/venv/bin:/usr/bin" and env["HOME"] == "/root"
    assert not {"VAULT_TOKEN", "VAULT_SECRET_ID", "AWS_SECRET_ACCESS_KEY", "RANDOM_THING"} & set(
        env
    )
    assert env[TAG_VARIABLE] == "r:s:n"
    assert env["ANSIBLE_HOST_KEY_CHECKING"] == "True"
    assert env["ANSIBLE_SSH_CONTROL_PATH_DIR"] == str(tmp_path / "cp")
    assert env["ANSIBLE_CALLBACKS_ENABLED"] == "runbook_tag"


def test_what_ansible_runner_copies_from_the_executor_is_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VAULT_SECRET_ID", "sid-123")
    monkeypatch.setenv("SOME_SETTING", "inherited")
    job = {"PATH": "/venv/bin:/usr/bin", TAG_VARIABLE: "t"}
    runner_env = {
        **job,
        "VAULT_SECRET_ID": "sid-123",  # copied from os.environ by ansible-runner
        "SOME_SETTING": "inherited",
        "ANSIBLE_STDOUT_CALLBACK": "awx_display",  # set by ansible-runner
        "MY_API_TOKEN": "set-by-someone",  # looks secret: dropped whatever its origin
    }
    assert scrub_runner_env(runner_env, job) == {
        **job,
        "ANSIBLE_STDOUT_CALLBACK": "awx_display",
    }


def test_ssh_options_pin_host_keys_and_offer_only_the_step_identity() -> None:
    text = ssh_args(
        identity=Path("/tmp/a dir/id.pub"),
        certificate=Path("/tmp/a dir/id-cert.pub"),
        known_hosts=Path("/etc/kh"),
    )
    argv = shlex.split(text)  # how ansible splits ssh_args
    assert "IdentityFile=/tmp/a dir/id.pub" in argv
    assert "CertificateFile=/tmp/a dir/id-cert.pub" in argv
    for option in (
        "IdentitiesOnly=yes",
        "StrictHostKeyChecking=yes",
        "UserKnownHostsFile=/etc/kh",
        "GlobalKnownHostsFile=/dev/null",
        "BatchMode=yes",
    ):
        assert option in argv
    assert argv[:2] == ["-F", "/dev/null"]


# --------------------------------------------------------------------------- local processes


def fake_proc(root: Path, pid: int, environ: list[str], cmdline: list[str]) -> None:
    entry = root / str(pid)
    entry.mkdir(parents=True)
    (entry / "environ").write_bytes(b"\0".join(e.encode() for e in environ) + b"\0")
    (entry / "cmdline").write_bytes(b"\0".join(c.encode() for c in cmdline) + b"\0")


def test_marked_processes_are_found_by_environment_or_command_line(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    fake_proc(proc, 10, ["A=1", f"{TAG_VARIABLE}=r:s:n"], ["ansible-playbook"])
    fake_proc(proc, 11, [f"{TAG_VARIABLE}=r:s:nn"], ["other"])  # a different tag
    fake_proc(proc, 12, [""] * 5, ["ssh: /tmp/runbook-ansible-x/cp/abc [mux]"])  # env overwritten
    fake_proc(proc, 13, [f"X={TAG_VARIABLE}=r:s:n"], ["x"])  # only a substring: no
    (proc / "self").mkdir()
    assert marked_pids(TAG_VARIABLE, "r:s:n", proc=proc) == [10]
    assert marked_pids(TAG_VARIABLE, "r:s:n", cmdline="/tmp/runbook-ansible-x/", proc=proc) == [
        10,
        12,
    ]
    assert environ_has(10, f"{TAG_VARIABLE}=r:s:n".encode(), proc)
    assert not environ_has(99, b"x", proc)
    assert cmdline_has(12, b"/runbook-ansible-x/", proc)


# --------------------------------------------------------------------------- remote reaper


def test_the_reaper_command_passes_the_tag_as_one_quoted_argument() -> None:
    tag = "run'1:$(reboot):n"
    argv = shlex.split(reaper_command(tag, 2.0))
    assert argv[0:2] == ["sh", "-c"]
    assert argv[3:] == ["runbook-reaper", f"RUNBOOK_RUN={tag}", "20"]
    assert shlex.split(reaper_command("t", 0.01))[-1] == "1"


def test_reaper_reports_are_parsed_and_summarized() -> None:
    assert parse_report("web1", "reaped found=3 killed=1 left=0\n") == HostReap("web1", 3, 1, 0)
    assert parse_report("web1", "noise\nreaped found=2 killed=0 left=      1") == HostReap(
        "web1", 2, 0, 1
    )
    broken = parse_report("web1", "sh: grep: not found")
    assert broken.error and "grep: not found" in broken.error and not broken.clean
    text = summarize(
        {
            "web1": HostReap("web1", found=2),
            "web2": HostReap("web2"),
            "web3": HostReap("web3", error="cannot connect"),
            "db1": HostReap("db1", found=1, killed=1, left=1),
        }
    )
    assert text == (
        "remote processes stopped on web1; nothing left running on web2; "
        "db1: 1 process(es) stopped (1 needed SIGKILL), 1 survived SIGKILL; "
        "web3: could not stop remote processes (cannot connect)"
    )


# --------------------------------------------------------------------------- the callback


def test_the_callback_tags_the_play_and_the_play_its_blocks_point_at() -> None:
    original = SimpleNamespace(_environment={"FOO": "bar"})
    block = SimpleNamespace(_play=original)
    copy = SimpleNamespace(
        _environment=None, pre_tasks=[], tasks=[block], post_tasks=[], handlers=[block]
    )
    plugin = CallbackModule()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RUNBOOK_ANSIBLE_TAG", "r:s:n")
        plugin.v2_playbook_on_play_start(copy)
    assert original._environment == [{"FOO": "bar"}, {REMOTE_VARIABLE: "r:s:n"}]
    assert copy._environment == [{REMOTE_VARIABLE: "r:s:n"}]
    assert _as_list("{{ env }}") == ["{{ env }}"] and _as_list([1]) == [1]


def test_the_callback_does_nothing_without_a_tag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNBOOK_ANSIBLE_TAG", raising=False)
    play_ = SimpleNamespace(_environment=None, pre_tasks=[], tasks=[], post_tasks=[], handlers=[])
    CallbackModule().v2_playbook_on_play_start(play_)
    assert play_._environment is None


# --------------------------------------------------------------------------- refusals


@pytest.fixture
def runner(tmp_path: Path) -> AnsibleRunner:
    books = tmp_path / "books"
    books.mkdir()
    (books / "site.yml").write_text("- hosts: all\n  tasks: []\n")
    return AnsibleRunner(
        inventory_path=tmp_path / "missing-inventory.yml",
        known_hosts=tmp_path / "known_hosts",
        playbook_dir=books,
    )


def ansible_request(action: AnsibleAction, **changes: Any) -> ActionRequest:
    fields: dict[str, Any] = {
        "run_id": "r1",
        "step_id": "clean",
        "action": action,
        "hosts": ("web1",),
        "mask": mask,
    }
    fields.update(changes)
    return ActionRequest(**fields)


def test_a_dry_run_without_credential_touches_nothing(runner: AnsibleRunner) -> None:
    action = AnsibleAction(target="web", playbook="site.yml", extravars={"a": 1})
    result = runner.run(ansible_request(action, dry_run=True), CancelToken())
    assert result.ok
    assert result.data == {
        "dry_run": True,
        "would_run": "ansible-playbook site.yml",
        "hosts": ["web1"],
    }


@pytest.mark.parametrize(
    ("action", "changes", "error"),
    [
        (AnsibleAction(target="web", playbook="site.yml"), {"hosts": ()}, "resolved to no host"),
        (AnsibleAction(target="web", playbook="site.yml"), {}, "needs a vault_ssh credential"),
        (AnsibleAction(target="web", playbook="../x.yml"), {}, "outside the playbook directory"),
        (
            AnsibleAction(target="web", playbook="site.yml", module="ansible.builtin.ping"),
            {},
            "exactly one of playbook and module",
        ),
        (AnsibleAction(target="web"), {}, "exactly one of playbook and module"),
        (
            AnsibleAction(target="web", module="ping", extravars={"ansible_host": "evil"}),
            {},
            "is reserved",
        ),
    ],
)
def test_bad_steps_are_refused_before_anything_runs(
    runner: AnsibleRunner, action: AnsibleAction, changes: dict[str, Any], error: str
) -> None:
    result = runner.run(ansible_request(action, **changes), CancelToken())
    assert not result.ok and error in (result.error or "")


def test_a_credential_without_ssh_material_is_refused(runner: AnsibleRunner) -> None:
    credential = IssuedCredential("api", "vault_kv", public={}, material={"api_key": SECRET})
    action = AnsibleAction(target="web", playbook="site.yml")
    result = runner.run(ansible_request(action, credential=credential), CancelToken())
    assert not result.ok and "holds no SSH key and certificate" in (result.error or "")
    assert SECRET not in (result.error or "")


def test_a_wrong_action_kind_is_a_wiring_bug(runner: AnsibleRunner) -> None:
    with pytest.raises(ActionError, match="the ansible runner got a 'local' action"):
        runner.run(ansible_request(LocalAction(command="true")), CancelToken())  # type: ignore[arg-type]


def ssh_credential(valid_for: float = 600) -> IssuedCredential:
    """A vault_ssh-shaped credential: an Ed25519 key and a certificate from a throwaway CA."""
    import time

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    ca, key = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    now = int(time.time())
    cert = (
        serialization.SSHCertificateBuilder()
        .public_key(key.public_key())
        .serial(7)
        .type(serialization.SSHCertificateType.USER)
        .key_id(b"r1")
        .valid_principals([b"ops"])
        .valid_after(now - 60)
        .valid_before(int(now + valid_for))
        .sign(ca)
    )
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    text = cert.public_bytes().decode()
    material = SimpleNamespace(private_key_openssh=lambda: private, certificate=lambda: text)
    return IssuedCredential("ops_ssh", "vault_ssh", public={}, material=material)


def test_a_step_cancelled_before_it_starts_runs_nothing(runner: AnsibleRunner) -> None:
    token = CancelToken()
    token.cancel("kill-switch engaged")
    action = AnsibleAction(target="web", playbook="site.yml")
    result = runner.run(ansible_request(action, credential=ssh_credential()), token)
    assert not result.ok and result.cancelled
    assert result.error == "cancelled before it started: kill-switch engaged; nothing was run"


def test_an_expired_certificate_is_refused_before_anything_runs(runner: AnsibleRunner) -> None:
    action = AnsibleAction(target="web", playbook="site.yml")
    request = ansible_request(action, credential=ssh_credential(valid_for=-30))
    result = runner.run(request, CancelToken())
    assert not result.ok and not result.cancelled
    assert "expired" in (result.error or "") and "nothing was run" in (result.error or "")
