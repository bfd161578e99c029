"""The runbooks that ship in runbooks/: valid, lint-clean, safe by construction, and right.

Four layers, cheapest first:

- the catalog: every file validates and lints clean, names and policies follow
  the house rules (blast radius, concurrency on the host, input patterns that
  refuse shell and host-pattern characters), secrets never reach a shell
  string and reach Ansible only base64-encoded;
- the playbooks: every one an ansible step names exists, passes
  ``ansible-playbook --syntax-check``, targets ``hosts: all`` and uses only
  ``ansible.builtin`` modules, with ``no_log`` wherever a secret is handled;
- the shell: the read-and-decide commands run for real under bash against a
  fake host home in tmp_path (the sandbox's own control scripts), including
  what must be refused;
- the graph: each runbook is rehearsed through the real conductor with
  scripted results, so guards, escalations, ``trigger: always`` restores and
  rollback sagas take the paths an on-call engineer expects.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from executor import conductor as cd
from executor import expressions
from executor.catalog import Catalog, looks_like_runbook
from executor.graph import Graph
from executor.lint import lint_document
from executor.loader import load_document
from executor.model import MUTATING_KINDS, RESULT_KINDS, AnsibleAction, Runbook, RunStatus
from executor.validation import runbook_from_document, validate_document

REPO = Path(__file__).resolve().parents[2]
CATALOG = REPO / "runbooks"
PLAYBOOKS = CATALOG / "playbooks"
SANDBOX_APP = REPO / "sandbox" / "app"
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")

REQUIRED = {
    "disk-pressure",
    "restart-crashlooping-service",
    "rollback-bad-deploy",
    "drain-host",
    "clear-stuck-queue",
    "rotate-leaked-credential",
}
FILES = sorted(p for p in CATALOG.glob("*.yaml") if looks_like_runbook(p))
IDS = [p.stem for p in FILES]


def _load(path: Path) -> tuple[Any, Runbook]:
    doc = load_document(path)
    return doc, runbook_from_document(doc)


BOOKS: dict[str, tuple[Any, Runbook]] = {p.stem: _load(p) for p in FILES}


def book(name: str) -> Runbook:
    return BOOKS[name][1]


def raw(name: str) -> Mapping[str, Any]:
    return BOOKS[name][0].data


# --------------------------------------------------------------------------- catalog


def test_the_catalog_ships_the_six_incident_runbooks() -> None:
    assert len(FILES) >= 6
    assert set(IDS) >= REQUIRED


def test_the_catalog_has_no_conflict_and_matches_its_lock() -> None:
    catalog = Catalog.load(CATALOG)
    assert [str(i) for i in catalog.catalog_issues()] == []
    assert sorted(catalog.names()) == sorted(IDS)


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_validates_with_no_issue(path: Path) -> None:
    doc = load_document(path)
    assert [str(i) for i in validate_document(doc)] == []


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_lints_clean(path: Path) -> None:
    doc, runbook = _load(path)
    assert [str(i) for i in lint_document(doc, runbook)] == []


@pytest.mark.parametrize("name", IDS)
def test_metadata_names_an_owner_and_who_to_call(name: str) -> None:
    meta = book(name).metadata
    assert meta.name == name, "the file is named after the runbook"
    assert meta.version == "1.0.0"
    assert meta.owner and meta.title and meta.description
    assert meta.severity and all(re.fullmatch(r"SEV[1-5]", s) for s in meta.severity)
    assert meta.contacts


@pytest.mark.parametrize("name", IDS)
def test_policy_bounds_the_blast_radius(name: str) -> None:
    policy = book(name).policy
    assert policy.max_hosts is not None and policy.max_hosts >= 1
    assert policy.concurrency is not None
    assert ("inputs", "host") in expressions.analyze(
        policy.concurrency.key, kind="template"
    ).references
    assert policy.cooldown and policy.timeout
    assert policy.timeout <= 3600


def test_at_least_two_runbooks_remediate_unattended_within_a_budget() -> None:
    auto = [
        name
        for name in IDS
        if book(name).policy.automation.value == "auto"
        and book(name).policy.budget is not None
        and book(name).policy.max_hosts is not None
    ]
    assert len(auto) >= 2
    assert {"restart-crashlooping-service", "clear-stuck-queue"} <= set(auto)
    for name in auto:
        assert book(name).policy.max_hosts == 1, "unattended remediation touches one host per run"
        assert not any(s.is_approval for s in book(name).steps), "nobody answers at 3 a.m."


HOSTILE_HOSTS = [
    "web1;id",
    "web1 && id",
    "$(id)",
    "`id`",
    "web1|id",
    "web1 web2",
    "web1\nid",
    "*",
    "all",
    "web:&db",
    "web1,web2",
    "!web1",
    "~web.*",
    "web[0:2]",
    "../etc",
    "-oProxyCommand=id",
    "",
    "Web1",
    "x" * 64,
]
FRIENDLY_HOSTS = ["web1", "db1", "lb1", "web", "app-7.eu-west"]


@pytest.mark.parametrize("name", IDS)
def test_host_input_refuses_shell_and_host_pattern_characters(name: str) -> None:
    spec = book(name).inputs["host"]
    assert spec.type == "string" and spec.pattern
    pattern = re.compile(spec.pattern)
    for value in HOSTILE_HOSTS:
        if value == "all":
            continue  # a group name like any other: max_hosts refuses a wide target
        assert not pattern.search(value), f"{name}: host input accepts {value!r}"
    for value in FRIENDLY_HOSTS:
        assert pattern.search(value), f"{name}: host input refuses {value!r}"


@pytest.mark.parametrize("name", IDS)
def test_every_string_input_is_constrained(name: str) -> None:
    for spec in book(name).inputs.values():
        if spec.type == "string":
            assert spec.pattern or spec.enum, f"{name}: input {spec.name} accepts anything"
            assert spec.pattern is None or (
                spec.pattern.startswith("^") and spec.pattern.endswith("$")
            )


@pytest.mark.parametrize("name", IDS)
def test_every_target_resolves_through_the_host_input_or_a_fixed_group(name: str) -> None:
    for target in book(name).targets.values():
        refs = expressions.analyze(target.hosts, kind="template").references
        assert refs <= {("inputs", "host")}, f"{name}: target {target.name} reads {refs}"


@pytest.mark.parametrize("name", IDS)
def test_every_mutating_step_has_a_rollback_or_an_explicit_on_failure(name: str) -> None:
    for index, step in enumerate(book(name).steps):
        if step.mutating:
            written = raw(name)["steps"][index]
            assert step.rollback or "on_failure" in written, f"{name}: step {step.id}"


@pytest.mark.parametrize("name", IDS)
def test_every_mutation_is_verified_later(name: str) -> None:
    runbook = book(name)
    graph = Graph.of(runbook)
    for step in runbook.steps:
        if not step.mutating:
            continue
        checks = [step, *(runbook.step(s) for s in graph.descendants(step.id))]
        assert any(s.assertion is not None or s.kind == "http" for s in checks), step.id


def _actions(runbook: Runbook) -> Iterator[tuple[str, Any]]:
    for step in runbook.steps:
        if step.action is not None:
            yield step.id, step.action
        for action in step.rollback:
            yield f"{step.id} (rollback)", action


def _templates(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _templates(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _templates(item)


@pytest.mark.parametrize("name", IDS)
def test_secrets_never_reach_a_shell_command_or_a_message(name: str) -> None:
    for where, action in _actions(book(name)):
        if action.kind in ("ssh", "local"):
            texts = [action.command]
        elif action.kind in ("approval", "log"):
            texts = [action.message]
        else:
            continue
        for text in texts:
            refs = expressions.analyze(text, kind="template").references
            assert not any(r[0] == "secrets" for r in refs), f"{name}: {where}"


def test_secrets_reach_ansible_base64_encoded_so_it_never_templates_them() -> None:
    runbook = book("rotate-leaked-credential")
    secret = "{{ lookup('pipe', 'touch /tmp/pwned') }}"
    context = {"secrets": {"db_password": secret}, "run": {"id": "r-1"}, "inputs": {}}
    seen = 0
    for _where, action in _actions(runbook):
        if not isinstance(action, AnsibleAction):
            continue
        for key, value in action.extravars.items():
            refs = expressions.analyze(value, kind="template").references
            if any(r[0] == "secrets" for r in refs):
                seen += 1
                assert key.endswith("_b64") and "| b64encode" in value
                rendered = expressions.render(value, context)
                assert "{" not in rendered and secret not in rendered
    assert seen >= 3


# --------------------------------------------------------------------------- playbooks


def _playbook_refs() -> dict[Path, set[str]]:
    refs: dict[Path, set[str]] = {}
    for path in FILES:
        for where, action in _actions(_load(path)[1]):
            if isinstance(action, AnsibleAction) and action.playbook:
                refs.setdefault((path.parent / action.playbook).resolve(), set()).add(
                    f"{path.stem}:{where}"
                )
    return refs


def test_every_playbook_an_ansible_step_names_exists() -> None:
    refs = _playbook_refs()
    assert refs
    missing = {str(p): users for p, users in refs.items() if not p.is_file()}
    assert missing == {}


def test_every_shipped_playbook_is_used() -> None:
    assert set(PLAYBOOKS.glob("*.yml")) == set(_playbook_refs())


def test_playbooks_pass_ansible_syntax_check(tmp_path: Path) -> None:
    playbooks = sorted(str(p) for p in PLAYBOOKS.glob("*.yml"))
    env = {
        "PATH": f"{ANSIBLE_PLAYBOOK.parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"),
        "ANSIBLE_NOCOLOR": "1",
    }
    done = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "--syntax-check", "-i", "localhost,", *playbooks],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _tasks(play: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for section in ("pre_tasks", "tasks", "post_tasks", "handlers"):
        yield from play.get(section) or ()


TASK_KEYWORDS = {
    "name",
    "register",
    "loop",
    "loop_control",
    "when",
    "vars",
    "no_log",
    "check_mode",
    "changed_when",
    "failed_when",
    "until",
    "retries",
    "delay",
    "tags",
    "become",
    "diff",
}


@pytest.mark.parametrize("path", sorted(PLAYBOOKS.glob("*.yml")), ids=lambda p: p.name)
def test_playbook_targets_the_executor_limit_with_builtin_modules(path: Path) -> None:
    plays = yaml.safe_load(path.read_text())
    assert isinstance(plays, list) and plays
    for play in plays:
        assert play["hosts"] == "all", "the executor narrows the play with --limit"
        assert play.get("gather_facts") is False, "facts are not needed and cost a round trip"
        for task in _tasks(play):
            assert task.get("name"), f"{path.name}: every task says what it does"
            modules = [k for k in task if k not in TASK_KEYWORDS]
            assert len(modules) == 1 and modules[0].startswith("ansible.builtin."), task["name"]


WRITERS = {"ansible.builtin.copy", "ansible.builtin.lineinfile", "ansible.builtin.template"}


@pytest.mark.parametrize("path", sorted(PLAYBOOKS.glob("*.yml")), ids=lambda p: p.name)
def test_playbook_tasks_that_hold_a_secret_log_nothing(path: Path) -> None:
    for play in yaml.safe_load(path.read_text()):
        holds_credentials = "config_files" in (play.get("vars") or {})
        for task in _tasks(play):
            module = next(k for k in task if k not in TASK_KEYWORDS)
            body = yaml.safe_dump({k: v for k, v in task.items() if k != "name"})
            handles_secret = module == "ansible.builtin.slurp" or (
                "new_secret" in body and module != "ansible.builtin.assert"
            )
            if handles_secret:
                assert task.get("no_log") is True, f"{path.name}: {task['name']}"
            if module == "ansible.builtin.assert":
                assert "new_secret" not in str(task.get("fail_msg", "")), task["name"]
            if holds_credentials and module in WRITERS:
                assert task.get("diff") is False, f"{path.name}: {task['name']} would print a diff"


# --------------------------------------------------------------------------- the shell


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A host's home as the sandbox lays it out (sandbox/app holds the real scripts)."""
    home = tmp_path / "home"
    for sub in ("bin", "app/releases", "data/logs", "queue/incoming", "run", "log", "lb"):
        (home / sub).mkdir(parents=True)
    for name in ("appctl", "workerctl", "diskusage", "lbctl"):
        shutil.copy(SANDBOX_APP / name, home / "bin" / name)
        (home / "bin" / name).chmod(0o755)
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        (home / "app" / "releases" / version).mkdir()
        (home / "app" / "releases" / version / "VERSION").write_text(version + "\n")
    (home / "app" / "current").symlink_to("releases/1.2.0")
    (home / "app" / "env").write_text(f"HOST_NAME=web1\nAPP_PORT=1\nPYTHON={sys.executable}\n")
    (home / "app" / "disk.conf").write_text("capacity_mb = 64\n")
    return home


def _step_command(name: str, step_id: str, rollback: int | None = None) -> str:
    step = book(name).step(step_id)
    action = step.action if rollback is None else step.rollback[rollback]
    return action.command  # type: ignore[union-attr]


def run_remote(
    home: Path, name: str, step_id: str, context: Mapping[str, Any], rollback: int | None = None
) -> subprocess.CompletedProcess[str]:
    """Render a step's command as the engine does and run it as the ssh action does.

    The action runs it with ``bash --noprofile --norc -o pipefail -c`` on the host.
    """
    command = expressions.render_command(_step_command(name, step_id, rollback), context)
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-o", "pipefail", "-c", command],
        cwd=home,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def outputs_of(name: str, step_id: str, stdout: str, context: Mapping[str, Any]) -> dict[str, Any]:
    ctx = {**context, "result": {"ok": True, "rc": 0, "stdout": stdout, "stderr": ""}}
    step = book(name).step(step_id)
    if step.assertion is not None:
        for expr in step.assertion.that:
            assert expressions.evaluate(expr, ctx), f"{step_id}: {expr} on {stdout!r}"
    return {k: expressions.render(v, ctx) for k, v in step.outputs.items()}


def _ctx(**inputs: Any) -> dict[str, Any]:
    return {"inputs": inputs, "steps": {}, "run": {"id": "r-test"}, "alert": {}}


def test_rollback_finds_the_release_before_the_current_one(home: Path) -> None:
    (home / "app" / "releases" / "1.2.0" / "BROKEN").write_text("smoke test failed\n")
    done = run_remote(home, "rollback-bad-deploy", "releases", _ctx(host="web1", to_version=""))
    assert done.returncode == 0, done.stderr
    found = outputs_of("rollback-bad-deploy", "releases", done.stdout, _ctx())
    assert found == {"current": "1.2.0", "target": "1.1.0"}


def test_rollback_goes_to_the_release_asked_for(home: Path) -> None:
    done = run_remote(home, "rollback-bad-deploy", "releases", _ctx(to_version="1.0.0"))
    assert (done.returncode, done.stdout) == (0, "1.2.0 1.0.0\n")


@pytest.mark.parametrize(
    ("setup", "to_version", "refusal"),
    [
        ("", "9.9.9", "release 9.9.9 is not installed"),
        ("1.1.0/BROKEN", "", "release 1.1.0 is marked broken: bad"),
        ("current=1.0.0", "", "no installed release is older than 1.0.0"),
        ("", "1.2.0", "1.2.0 is already the running release"),
    ],
)
def test_rollback_refuses_a_target_it_cannot_use(
    home: Path, setup: str, to_version: str, refusal: str
) -> None:
    if setup.startswith("current="):
        (home / "app" / "current").unlink()
        (home / "app" / "current").symlink_to(f"releases/{setup.split('=')[1]}")
    elif setup:
        (home / "app" / "releases" / setup).write_text("bad\n")
    done = run_remote(home, "rollback-bad-deploy", "releases", _ctx(to_version=to_version))
    assert done.returncode != 0
    assert refusal in done.stderr


def test_rollback_input_cannot_inject_into_the_release_command(home: Path) -> None:
    evil = "$(touch pwned)"
    done = run_remote(home, "rollback-bad-deploy", "releases", _ctx(to_version=evil))
    assert done.returncode != 0
    assert not (home / "app" / "pwned").exists() and not (home / "pwned").exists()
    assert f"release {evil} is not installed" in done.stderr


def test_switch_is_atomic_and_its_rollback_switches_back(home: Path) -> None:
    context = _ctx(host="web1")
    context["steps"] = {"releases": {"outputs": {"current": "1.2.0", "target": "1.1.0"}}}
    done = run_remote(home, "rollback-bad-deploy", "switch", context)
    assert (done.returncode, done.stdout) == (0, "releases/1.1.0\n"), done.stderr
    link = home / "app" / "current"
    assert link.is_symlink() and os.readlink(link) == "releases/1.1.0"
    assert not (home / "app" / "current.new").exists() and not link.joinpath("current.new").exists()
    back = run_remote(home, "rollback-bad-deploy", "switch", context, rollback=0)
    assert (back.returncode, back.stdout) == (0, "releases/1.2.0\n"), back.stderr
    assert os.readlink(link) == "releases/1.2.0"


def test_switch_refuses_a_release_that_vanished(home: Path) -> None:
    context = _ctx(host="web1")
    context["steps"] = {"releases": {"outputs": {"current": "1.2.0", "target": "0.9.0"}}}
    done = run_remote(home, "rollback-bad-deploy", "switch", context)
    assert done.returncode != 0
    assert os.readlink(home / "app" / "current") == "releases/1.2.0"


def _queue(home: Path, messages: int, lock: str | None) -> None:
    for n in range(messages):
        (home / "queue" / "incoming" / f"msg-{n}.json").write_text("{}\n")
    if lock is not None:
        (home / "queue" / "worker.lock").write_text(lock + "\n")


def _dead_pid() -> int:
    pid = 999_999
    while Path(f"/proc/{pid}").exists():
        pid -= 1
    return pid


@pytest.fixture
def live_worker() -> Iterator[int]:
    """A process whose command line names worker.py, as a running worker's does."""
    proc = subprocess.Popen(["bash", "-c", "exec -a worker.py sleep 60"])
    deadline = time.monotonic() + 5
    while b"worker.py" not in Path(f"/proc/{proc.pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    yield proc.pid
    proc.kill()
    proc.wait(timeout=5)


def test_queue_inspection_sees_a_stale_lock_and_a_dead_worker(home: Path) -> None:
    pid = _dead_pid()
    _queue(home, 3, str(pid))
    done = run_remote(home, "clear-stuck-queue", "inspect", _ctx(host="web1"))
    assert done.returncode == 0, done.stderr
    found = outputs_of("clear-stuck-queue", "inspect", done.stdout, _ctx())
    assert found == {"depth": 3, "lock": "stale", "holder": str(pid), "worker": "down"}


def test_queue_inspection_without_a_lock(home: Path) -> None:
    _queue(home, 0, None)
    done = run_remote(home, "clear-stuck-queue", "inspect", _ctx(host="web1"))
    found = outputs_of("clear-stuck-queue", "inspect", done.stdout, _ctx())
    assert found == {"depth": 0, "lock": "none", "holder": "", "worker": "down"}


def test_a_garbled_lock_counts_as_stale(home: Path) -> None:
    _queue(home, 1, "not a pid; $(id)")
    done = run_remote(home, "clear-stuck-queue", "inspect", _ctx(host="web1"))
    found = outputs_of("clear-stuck-queue", "inspect", done.stdout, _ctx())
    assert (found["lock"], found["holder"]) == ("stale", "")


def test_a_live_workers_lock_is_seen_and_never_removed(home: Path, live_worker: int) -> None:
    _queue(home, 2, str(live_worker))
    done = run_remote(home, "clear-stuck-queue", "inspect", _ctx(host="web1"))
    found = outputs_of("clear-stuck-queue", "inspect", done.stdout, _ctx())
    assert (found["lock"], found["holder"]) == ("live", str(live_worker))
    removed = run_remote(home, "clear-stuck-queue", "remove_lock", _ctx(host="web1"))
    assert removed.returncode == 1
    assert f"held by a running worker (pid {live_worker})" in removed.stderr
    assert (home / "queue" / "worker.lock").exists()


def test_a_stale_lock_is_removed(home: Path) -> None:
    _queue(home, 2, str(_dead_pid()))
    done = run_remote(home, "clear-stuck-queue", "remove_lock", _ctx(host="web1"))
    assert done.returncode == 0, done.stderr
    assert not (home / "queue" / "worker.lock").exists()
    again = run_remote(home, "clear-stuck-queue", "remove_lock", _ctx(host="web1"))
    assert (again.returncode, again.stdout) == (0, "the lock is gone already\n")


def _log(home: Path, name: str, size: int, age_days: float) -> Path:
    path = home / "data" / "logs" / name
    with open(path, "wb") as f:
        f.truncate(size)
    then = time.time() - age_days * 86400
    os.utime(path, (then, then))
    return path


def test_disk_candidates_are_only_old_rotated_logs(home: Path) -> None:
    mib = 1024 * 1024
    _log(home, "app.log", 30 * mib, 30)  # the live log, however old: never
    _log(home, "app.log.1", 8 * mib, 10)
    _log(home, "app.log.2.gz", 4 * mib, 9)
    _log(home, "app.log.3", 8 * mib, 2)  # too young
    _log(home, "dump.bin", 8 * mib, 30)  # not a log
    (home / "data" / "logs" / "old").mkdir()
    _log(home, "old/app.log.9", 8 * mib, 30)  # below a subdirectory
    done = run_remote(home, "disk-pressure", "candidates", _ctx(host="web1", days=7))
    assert done.returncode == 0, done.stderr
    found = outputs_of("disk-pressure", "candidates", done.stdout, _ctx(days=7))
    assert found == {"files": 2, "mib": 12}


def test_disk_candidates_refuse_when_no_log_is_old_enough(home: Path) -> None:
    _log(home, "app.log.1", 1024, 1)
    done = run_remote(home, "disk-pressure", "candidates", _ctx(host="web1", days=7))
    ctx = {**_ctx(days=7), "result": {"stdout": done.stdout}}
    expr = book("disk-pressure").step("candidates").assertion.that[0]  # type: ignore[union-attr]
    assert expressions.evaluate(expr, ctx) is False


def test_disk_measure_reads_the_sandbox_disk_budget(home: Path) -> None:
    _log(home, "app.log.1", 48 * 1024 * 1024, 10)
    done = run_remote(home, "disk-pressure", "measure", _ctx(host="web1"))
    assert outputs_of("disk-pressure", "measure", done.stdout, _ctx()) == {"percent": 75}


@pytest.fixture
def lb_home(home: Path) -> Path:
    (home / "lb" / "backends").write_text(
        "web1 127.0.0.1:1 enabled\nweb2 127.0.0.1:2 enabled\nweb3 127.0.0.1:3 drained\n"
    )
    return home


@pytest.mark.parametrize(
    ("host", "state", "others"), [("web1", "enabled", 1), ("web3", "drained", 2)]
)
def test_drain_reads_membership_and_the_rest_of_the_pool(
    lb_home: Path, host: str, state: str, others: int
) -> None:
    done = run_remote(lb_home, "drain-host", "membership", _ctx(host=host))
    assert done.returncode == 0, done.stderr
    found = outputs_of("drain-host", "membership", done.stdout, _ctx(host=host))
    assert found == {"state": state, "others_enabled": others}


def test_drain_membership_of_an_unknown_backend_fails_its_assert(lb_home: Path) -> None:
    done = run_remote(lb_home, "drain-host", "membership", _ctx(host="db1"))
    if done.returncode == 0:
        ctx = {**_ctx(host="db1"), "result": {"stdout": done.stdout}}
        expr = book("drain-host").step("membership").assertion.that[0]  # type: ignore[union-attr]
        assert expressions.evaluate(expr, ctx) is False


def test_drain_and_its_rollback_flip_the_membership(lb_home: Path) -> None:
    done = run_remote(lb_home, "drain-host", "drain", _ctx(host="web2"))
    assert done.returncode == 0, done.stderr
    assert "web2 127.0.0.1:2 drained" in (lb_home / "lb" / "backends").read_text()
    back = run_remote(lb_home, "drain-host", "drain", _ctx(host="web2"), rollback=0)
    assert back.returncode == 0, back.stderr
    assert "web2 127.0.0.1:2 enabled" in (lb_home / "lb" / "backends").read_text()


# --------------------------------------------------------------------------- the graph


@dataclass(frozen=True)
class R:
    """A scripted action result: what the host printed and its exit code."""

    stdout: str = ""
    rc: int = 0


@dataclass
class Rehearsal:
    status: RunStatus
    steps: dict[str, str]
    started: list[str] = field(default_factory=list)
    rollbacks: list[tuple[str, int]] = field(default_factory=list)
    attempts: Counter[str] = field(default_factory=Counter)

    def ran(self, *step_ids: str) -> bool:
        return all(self.steps[s] == "succeeded" for s in step_ids)

    def skipped(self, *step_ids: str) -> bool:
        return all(self.steps[s] == "skipped" for s in step_ids)


def _guard(step: Any, context: Mapping[str, Any]) -> bool:
    return bool(expressions.evaluate(step.when, context))


def rehearse(
    name: str,
    inputs: Mapping[str, Any],
    script: Mapping[str, R | str | list[R | str]],
    *,
    deny: tuple[str, ...] = (),
) -> Rehearsal:
    """Drive the real conductor with scripted results, the way the engine evaluates them.

    Outputs, ``assert`` and ``until`` are evaluated only when the action
    succeeded; approvals get their quorum of distinct approvers unless denied;
    every rollback action succeeds. Unscripted result steps print nothing.
    """
    runbook = book(name)
    values = {n: inputs.get(n, spec.default) for n, spec in runbook.inputs.items()}
    scope = {
        "inputs": values,
        "run": {"id": "r-test", "actor": "alice", "trigger": "cli", "dry_run": False},
        "alert": {},
        "secrets": {
            n: "s3cret-0123456789" for n, c in runbook.credentials.items() if c.kind == "vault_kv"
        },
    }
    cond = cd.Conductor(runbook)
    clock = iter(range(1, 10_000))
    cond.handle(cd.RunStarted(at=0))
    out = Rehearsal(status=RunStatus.PENDING, steps={})

    def finish(step_id: str) -> None:
        step = runbook.step(step_id)
        out.attempts[step_id] += 1
        out.started.append(step_id)
        cond.handle(cd.StepStarted(step_id, out.attempts[step_id], at=next(clock)))
        scripted = script.get(step_id, R())
        if isinstance(scripted, list):
            scripted = scripted[min(out.attempts[step_id], len(scripted)) - 1]
        result = R(scripted) if isinstance(scripted, str) else scripted
        ok, error, outputs = result.rc == 0, None, {}
        ctx = {
            **cond.context(**scope),
            "result": {"ok": ok, "rc": result.rc, "stdout": result.stdout},
        }
        if ok or step.kind not in RESULT_KINDS:
            outputs = {k: expressions.render(v, ctx) for k, v in step.outputs.items()}
            if step.assertion and not all(
                expressions.evaluate(e, ctx) for e in step.assertion.that
            ):
                ok, error = False, step.assertion.message or "assertion failed"
            if ok and step.retries and step.retries.until:
                ok = bool(expressions.evaluate(step.retries.until, ctx))
        cond.handle(
            cd.StepFinished(
                step_id,
                ok=ok,
                outputs=outputs,
                error=error,
                at=next(clock),
                result={"rc": result.rc, "stdout": result.stdout},
            )
        )

    for _ in range(1000):
        decision = cond.next(_guard, **scope)
        if decision.done:
            break
        acted = False
        for step_id in decision.approvals:
            approval = runbook.step(step_id).action
            approve = step_id not in deny
            for n in range(approval.quorum if approve else 1):  # type: ignore[union-attr]
                cond.handle(cd.ApprovalDecision(step_id, f"approver{n}", approve, at=next(clock)))
            acted = True
        for step_id in (*decision.start, *(s for s, _ in decision.retry)):
            if cond.startable(step_id):
                finish(step_id)
                acted = True
        for step_id, index in decision.rollback:
            out.rollbacks.append((step_id, index))
            cond.handle(cd.RollbackFinished(step_id, index, ok=True, at=next(clock)))
            acted = True
        assert acted, f"rehearsal of {name} is stuck: {decision}"
    out.status = cond.run_status
    out.steps = {sid: rec.status.value for sid, rec in cond.state.steps.items()}
    return out


OK = "ok\n\n"  # what `appctl health` prints: curl's body "ok\n", then -w '\n'


def test_disk_below_threshold_touches_nothing() -> None:
    run = rehearse("disk-pressure", {"host": "web1"}, {"measure": "42\n"})
    assert run.status is RunStatus.SUCCEEDED
    assert run.ran("measure", "below_threshold")
    assert run.skipped("candidates", "approve", "clean", "verify", "health", "done", "escalate")


def test_disk_above_threshold_cleans_after_approval_and_verifies() -> None:
    script = {
        "measure": "97",
        "candidates": '{"files": 5, "mib": 40}',
        "verify": "12",
        "health": OK,
    }
    run = rehearse("disk-pressure", {"host": "web1"}, script)
    assert run.status is RunStatus.SUCCEEDED
    assert run.ran("candidates", "approve", "clean", "verify", "health", "done")
    assert run.skipped("below_threshold", "escalate")


def test_disk_still_full_after_cleaning_escalates() -> None:
    script = {"measure": "97", "candidates": '{"files": 1, "mib": 1}', "verify": "96"}
    run = rehearse("disk-pressure", {"host": "web1"}, script)
    assert run.status is RunStatus.FAILED
    assert run.steps["verify"] == "failed" and run.ran("escalate")


def test_disk_full_of_something_else_escalates_without_asking_to_delete() -> None:
    script = {"measure": "97", "candidates": '{"files": 0, "mib": 0}'}
    run = rehearse("disk-pressure", {"host": "web1"}, script)
    assert run.status is RunStatus.FAILED
    assert run.ran("escalate") and run.skipped("approve", "clean")


def test_disk_deletion_refused_by_the_approver_deletes_nothing() -> None:
    script = {"measure": "97", "candidates": '{"files": 1, "mib": 1}'}
    run = rehearse("disk-pressure", {"host": "web1"}, script, deny=("approve",))
    assert run.status is RunStatus.FAILED
    assert "clean" not in run.started


HEALTHY = "healthy\nprocess: demoapp running (pid 10, port 1)\nhealth: ok"
DEAD = "unhealthy\nprocess: demoapp dead\nhealth: curl: (7) Failed to connect"


def test_restart_leaves_a_healthy_service_alone() -> None:
    run = rehearse("restart-crashlooping-service", {"host": "web1"}, {"check": HEALTHY})
    assert run.status is RunStatus.SUCCEEDED
    assert run.ran("already_healthy")
    assert "restart" not in run.started and run.skipped("escalate")


def test_restart_recovers_a_dead_service() -> None:
    up = "demoapp running (pid 42, port 1)\nok\n\n"
    script = {"check": DEAD, "verify": [R(rc=7), up], "still_up": up}
    run = rehearse("restart-crashlooping-service", {"host": "web1"}, script)
    assert run.status is RunStatus.SUCCEEDED
    assert run.ran("capture_logs", "restart", "verify", "soak", "still_up", "same_process")
    assert run.attempts["verify"] == 2 and run.skipped("escalate", "already_healthy")


def test_restart_escalates_a_crash_loop() -> None:
    script = {
        "check": DEAD,
        "verify": "demoapp running (pid 42, port 1)\nok\n\n",
        "still_up": "demoapp running (pid 57, port 1)\nok\n\n",
    }
    run = rehearse("restart-crashlooping-service", {"host": "web1"}, script)
    assert run.status is RunStatus.FAILED
    assert run.steps["same_process"] == "failed" and run.ran("escalate")


def test_restart_that_never_gets_healthy_escalates_after_its_retries() -> None:
    bad = "demoapp running (pid 42, port 1)\nconfig invalid"
    run = rehearse("restart-crashlooping-service", {"host": "web1"}, {"check": DEAD, "verify": bad})
    assert run.status is RunStatus.FAILED
    assert run.attempts["verify"] == 11 and run.ran("escalate")


def test_restart_escalates_when_the_host_cannot_be_reached() -> None:
    run = rehearse("restart-crashlooping-service", {"host": "web1"}, {"check": R(rc=255)})
    assert run.status is RunStatus.FAILED
    assert run.ran("escalate") and "restart" not in run.started


def test_rollback_deploy_happy_path() -> None:
    script = {
        "releases": "1.2.0 1.1.0",
        "switch": "releases/1.1.0",
        "verify_health": OK,
        "verify_release": 'demoapp_release_info{host="web2",version="1.1.0"} 1',
    }
    run = rehearse("rollback-bad-deploy", {"host": "web2"}, script)
    assert run.status is RunStatus.SUCCEEDED
    assert run.ran("approve", "switch", "restart", "verify_health", "verify_release", "report")


def test_rollback_deploy_that_does_not_help_switches_back() -> None:
    script = {"releases": "1.2.0 1.1.0", "switch": "releases/1.1.0", "verify_health": R(rc=22)}
    run = rehearse("rollback-bad-deploy", {"host": "web2"}, script)
    assert run.status is RunStatus.ROLLED_BACK
    assert run.rollbacks == [("switch", 0), ("switch", 1)]


def test_rollback_deploy_running_the_wrong_release_switches_back() -> None:
    script = {
        "releases": "1.2.0 1.1.0",
        "switch": "releases/1.1.0",
        "verify_health": OK,
        "verify_release": 'demoapp_release_info{version="1.2.0"} 1',
    }
    run = rehearse("rollback-bad-deploy", {"host": "web2"}, script)
    assert run.status is RunStatus.ROLLED_BACK
    assert run.steps["verify_release"] == "failed"


def test_drain_happy_path_puts_the_host_back() -> None:
    script = {
        "membership": '{"state": "enabled", "others_enabled": 2}',
        "confirm_drained": "web2 drained",
        "health": OK,
        "verify_member": "web2 enabled",
    }
    run = rehearse("drain-host", {"host": "web2"}, script)
    assert run.status is RunStatus.SUCCEEDED
    assert run.ran("drain", "settle", "maintain", "health", "enable", "verify_member", "report")


def test_drain_failed_maintenance_still_reenables_the_host() -> None:
    script = {
        "membership": '{"state": "enabled", "others_enabled": 2}',
        "confirm_drained": "web2 drained",
        "maintain": R(rc=1),
        "verify_member": "web2 enabled",
    }
    run = rehearse("drain-host", {"host": "web2"}, script)
    assert run.status is RunStatus.FAILED
    assert run.steps["maintain"] == "failed"
    assert run.ran("enable", "verify_member")
    assert run.started.index("enable") > run.started.index("maintain")


def test_drain_without_restart_skips_only_the_maintenance() -> None:
    script = {
        "membership": '{"state": "enabled", "others_enabled": 1}',
        "confirm_drained": "web2 drained",
        "health": OK,
        "verify_member": "web2 enabled",
    }
    run = rehearse("drain-host", {"host": "web2", "restart": False}, script)
    assert run.status is RunStatus.SUCCEEDED
    assert run.skipped("maintain") and run.ran("health", "enable", "verify_member")


@pytest.mark.parametrize(
    "membership",
    ['{"state": "drained", "others_enabled": 2}', '{"state": "enabled", "others_enabled": 0}'],
)
def test_drain_refuses_a_drained_host_or_the_last_one_enabled(membership: str) -> None:
    run = rehearse("drain-host", {"host": "web2"}, {"membership": membership})
    assert run.status is RunStatus.FAILED
    assert run.steps["preflight"] == "failed"
    assert "drain" not in run.started and "enable" not in run.started


def test_drain_that_never_settles_is_rolled_back_and_reenabled() -> None:
    script = {
        "membership": '{"state": "enabled", "others_enabled": 2}',
        "confirm_drained": "web2 enabled",
        "verify_member": "web2 enabled",
    }
    run = rehearse("drain-host", {"host": "web2"}, script)
    assert run.status is RunStatus.ROLLED_BACK
    assert run.rollbacks == [("drain", 0)]
    assert "maintain" not in run.started


STUCK = '{"depth": 40, "lock": "stale", "holder": "4242", "worker": "down"}'


def test_queue_unstuck_and_draining() -> None:
    script = {
        "inspect": STUCK,
        "verify_worker": "worker running (pid 7), queue depth 30",
        "verify_draining": ["35", "0"],
    }
    run = rehearse("clear-stuck-queue", {"host": "db1"}, script)
    assert run.status is RunStatus.SUCCEEDED
    assert run.ran("remove_lock", "start_worker", "verify_worker", "verify_draining", "report")
    assert run.skipped("healthy")


def test_queue_that_never_drains_fails_without_touching_more() -> None:
    script = {"inspect": STUCK, "verify_worker": "worker running (pid 7)", "verify_draining": "40"}
    run = rehearse("clear-stuck-queue", {"host": "db1"}, script)
    assert run.status is RunStatus.FAILED
    assert run.attempts["verify_draining"] == 16 and run.rollbacks == []


def test_queue_with_a_stopped_worker_and_no_lock_just_starts_it() -> None:
    script = {
        "inspect": '{"depth": 3, "lock": "none", "holder": "", "worker": "down"}',
        "verify_worker": "worker running (pid 7)",
        "verify_draining": "0",
    }
    run = rehearse("clear-stuck-queue", {"host": "db1"}, script)
    assert run.status is RunStatus.SUCCEEDED
    assert run.skipped("remove_lock") and run.ran("start_worker", "verify_draining")


def test_queue_with_a_running_worker_is_left_alone() -> None:
    script = {"inspect": '{"depth": 3, "lock": "live", "holder": "7", "worker": "running"}'}
    run = rehearse("clear-stuck-queue", {"host": "db1"}, script)
    assert run.status is RunStatus.SUCCEEDED
    assert run.ran("healthy") and run.started == ["inspect", "healthy"]


def test_queue_worker_that_will_not_start_is_stopped_again() -> None:
    script = {"inspect": STUCK, "verify_worker": R("worker stuck", rc=1)}
    run = rehearse("clear-stuck-queue", {"host": "db1"}, script)
    assert run.status is RunStatus.ROLLED_BACK
    assert run.rollbacks == [("start_worker", 0)]


def test_rotation_needs_two_approvers_and_verifies() -> None:
    approval = book("rotate-leaked-credential").step("approve").action
    assert approval.quorum == 2  # type: ignore[union-attr]
    assert book("rotate-leaked-credential").policy.self_approval is False
    run = rehearse(
        "rotate-leaked-credential", {"host": "web"}, {"confirm": "copies left: 0\nok\n\n"}
    )
    assert run.status is RunStatus.SUCCEEDED
    assert run.ran(
        "preflight",
        "approve",
        "deploy",
        "restart",
        "verify_config",
        "verify_health",
        "cleanup",
        "confirm",
        "report",
    )


def test_rotation_unhealthy_after_deploy_restores_the_old_config() -> None:
    run = rehearse("rotate-leaked-credential", {"host": "web"}, {"verify_health": R(rc=22)})
    assert run.status is RunStatus.ROLLED_BACK
    assert run.rollbacks == [("deploy", 0), ("deploy", 1)]
    playbooks = [a.playbook for a in book("rotate-leaked-credential").step("deploy").rollback]
    assert playbooks == ["playbooks/restore_credential.yml", "playbooks/rolling_restart.yml"]


def test_rotation_refused_by_preflight_changes_nothing() -> None:
    run = rehearse("rotate-leaked-credential", {"host": "web1"}, {"preflight": R(rc=2)})
    assert run.status is RunStatus.FAILED
    assert run.started == ["preflight"]


def test_rotation_with_a_failed_cleanup_still_says_what_is_left() -> None:
    script = {"cleanup": R(rc=2), "confirm": R("copies left: 2", rc=1)}
    run = rehearse("rotate-leaked-credential", {"host": "web"}, script)
    assert run.steps["cleanup"] == "failed" and run.steps["confirm"] == "failed"
    assert run.status is RunStatus.FAILED


@pytest.mark.parametrize("name", IDS)
def test_every_mutating_kind_is_one_the_model_knows(name: str) -> None:
    kinds = {s.kind for s in book(name).steps}
    assert kinds & MUTATING_KINDS
    assert kinds <= {"ssh", "ansible", "local", "http", "approval", "wait", "log", "assert"}


def test_config_diagnosis_names_the_cause_without_printing_the_files(home: Path) -> None:
    app = home / "app"
    (app / "config.ini").write_text("[app\nworkers = four\npassword = hunter2-secret\n")
    (app / "config.ini.good").write_text("[app]\nworkers = 4\npassword = hunter2-secret\n")
    done = run_remote(home, "restore-known-good-config", "diagnose", _ctx(host="web1"))
    assert done.returncode == 0, done.stderr
    assert "hunter2" not in done.stdout + done.stderr
    found = outputs_of("restore-known-good-config", "diagnose", done.stdout, _ctx())
    assert (found["health"], found["good"], found["differs"]) == ("failing", "present", True)
    assert found["reason"]  # demoapp is not running here: curl's own error


def test_config_diagnosis_sees_a_missing_or_identical_good_copy(home: Path) -> None:
    (home / "app" / "config.ini").write_text("[app]\n")
    done = run_remote(home, "restore-known-good-config", "diagnose", _ctx(host="web1"))
    found = outputs_of("restore-known-good-config", "diagnose", done.stdout, _ctx())
    assert (found["good"], found["differs"]) == ("missing", True)
    shutil.copy(home / "app" / "config.ini", home / "app" / "config.ini.good")
    done = run_remote(home, "restore-known-good-config", "diagnose", _ctx(host="web1"))
    found = outputs_of("restore-known-good-config", "diagnose", done.stdout, _ctx())
    assert (found["good"], found["differs"]) == ("present", False)


def _diagnosis(health: str, reason: str, good: str = "present", differs: str = "yes") -> str:
    return f"health={health}\ngood={good}\ndiffers={differs}\nreason={reason}\n"


def test_config_restore_after_approval_when_the_config_is_the_cause() -> None:
    script = {"diagnose": _diagnosis("failing", "500 config invalid: no section"), "verify": OK}
    run = rehearse("restore-known-good-config", {"host": "web2"}, script)
    assert run.status is RunStatus.SUCCEEDED
    assert run.ran("config_is_the_cause", "approve", "restore", "restart", "verify", "report")
    assert run.skipped("healthy")


@pytest.mark.parametrize(
    "diagnosis",
    [
        _diagnosis("failing", "500 disk full: 97% of the data disk used"),
        _diagnosis("failing", "500 config invalid", good="missing"),
        _diagnosis("failing", "500 config invalid", differs="no"),
    ],
)
def test_config_restore_refuses_when_it_would_not_help(diagnosis: str) -> None:
    run = rehearse("restore-known-good-config", {"host": "web2"}, {"diagnose": diagnosis})
    assert run.status is RunStatus.FAILED
    assert run.steps["config_is_the_cause"] == "failed"
    assert "restore" not in run.started and "approve" not in run.started


def test_config_restore_leaves_a_healthy_host_alone() -> None:
    script = {"diagnose": _diagnosis("ok", "", differs="no")}
    run = rehearse("restore-known-good-config", {"host": "web2"}, script)
    assert run.status is RunStatus.SUCCEEDED
    assert run.started == ["diagnose", "healthy"]
