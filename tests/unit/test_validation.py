"""Validation: every rule's message and position, and no false alarm on valid runbooks."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from executor import validation
from executor.errors import ValidationFailed
from executor.loader import load_document, parse_document
from executor.model import Automation, OnFailure, Runbook, SshAction, Trigger
from executor.validation import load_runbook, validate_document, validate_path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

BASE = """\
apiVersion: runbook/v1
kind: Runbook
metadata:
  name: restart-web
  version: 1.0.0
inputs:
  host: {type: string, pattern: "^[a-z0-9.-]+$"}
targets:
  web: {hosts: "{{ inputs.host }}"}
credentials:
  ops_ssh: {vault_ssh: {role: responder, principals: [ops], ttl: 15m}}
  api: {vault_kv: {path: web/api, key: token}}
steps:
  - id: restart
    ssh: {target: web, credential: ops_ssh, command: "systemctl restart nginx"}
    outputs: {pid: "{{ result.stdout }}"}
  - id: check
    needs: [restart]
    http: {url: "http://{{ inputs.host }}/healthz"}
"""


def edit(old: str, new: str, text: str = BASE) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def issues(text: str) -> list[str]:
    """``line:col: message [code]`` for each issue, in the order validation gives them."""
    doc = parse_document(text, "rb.yaml")
    return [f"{i.line}:{i.column}: {i.message} [{i.code}]" for i in validate_document(doc)]


def codes(text: str) -> list[str]:
    return [i.code for i in validate_document(parse_document(text, "rb.yaml"))]


# --------------------------------------------------------------------------- valid files


def test_the_base_runbook_is_valid() -> None:
    assert issues(BASE) == []


@pytest.mark.parametrize("name", ["disk-pressure.yaml", "service-restart.yaml"])
def test_the_fixtures_are_valid(name: str) -> None:
    runbook, found = validate_path(FIXTURES / name)
    assert found == []
    assert isinstance(runbook, Runbook)


def test_load_runbook_builds_the_model_with_source_and_hash() -> None:
    path = FIXTURES / "disk-pressure.yaml"
    runbook = load_runbook(path)
    assert runbook.ref == "disk-pressure@1.3.0"
    assert runbook.source == str(path)
    assert runbook.sha256 == load_document(path).sha256
    assert runbook.step_ids == ("measure", "approve", "clean", "verify")
    clean = runbook.step("clean")
    assert clean.on_failure is OnFailure.ROLLBACK
    assert clean.rollback == (
        SshAction(target="node", credential="ops_ssh", command="systemctl restart rsyslog"),
    )
    assert runbook.policy.automation is Automation.APPROVAL
    assert runbook.inputs["threshold"].default == 90


def test_the_full_fixture_builds_every_shape() -> None:
    runbook = load_runbook(FIXTURES / "service-restart.yaml")
    assert runbook.step("drain").trigger is Trigger.ANY_SUCCEEDED
    assert len(runbook.step("drain").rollback) == 2
    assert runbook.step("approve").when is not None
    assert runbook.step("approve").needs == ("health-before",)
    assert runbook.credentials["api"].kind == "vault_kv"


def test_a_valid_file_never_runs_the_slow_validator(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> None:
        raise AssertionError("the full jsonschema walk ran for a valid file")

    monkeypatch.setattr(validation, "_full_validator", refuse)
    assert validate_path(FIXTURES / "service-restart.yaml")[1] == []


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("needs: [restart]", "needs: restart"),
        ("    needs: [restart]\n", "    needs: [restart]\n    when: true\n"),
        ("    needs: [restart]\n", "    needs: [restart]\n    when: [inputs.host != '', 'true']\n"),
        (
            "    needs: [restart]\n",
            "    needs: [restart]\n    when: steps.restart.outputs.pid != ''\n",
        ),
        (
            "    needs: [restart]\n",
            "    needs: [restart]\n    when: alert.labels.env == 'prod' and run.dry_run\n",
        ),
        (
            "    needs: [restart]\n",
            "    needs: [restart]\n    when: inputs | length > 0 and range(2) | list\n",
        ),
        ('/healthz"}', '/healthz"}\n    assert: {that: "result.status == 200"}'),
        ('/healthz"}', '/healthz", headers: {X-Token: "{{ secrets.api }}"}}'),
        ('/healthz"}', '/healthz"}\n    retries: {count: 2, until: "result.status < 500"}'),
        (
            '    outputs: {pid: "{{ result.stdout }}"}\n',
            "    on_failure: rollback\n    rollback: {log: {message: undo}}\n",
        ),
        (
            '    outputs: {pid: "{{ result.stdout }}"}\n',
            '    rollback: [{local: {command: "echo {{ targets.web }}"}}]\n',
        ),
        (
            'command: "systemctl restart nginx"',
            'command: "{% for s in [1, 2] %}{{ s }}{% endfor %}"',
        ),
    ],
)
def test_valid_variants_raise_no_false_alarm(old: str, new: str) -> None:
    assert issues(edit(old, new)) == []


def test_a_step_may_read_any_transitive_ancestor() -> None:
    text = (
        BASE
        + "  - id: report\n    needs: [check]\n"
        + '    log: {message: "{{ steps.restart.outputs.pid }}"}\n'
    )
    assert issues(text) == []


# --------------------------------------------------------------------------- loader refusals


def test_loader_refusals_come_back_as_issues(tmp_path: Path) -> None:
    path = tmp_path / "rb.yaml"
    path.write_text("a: 1\na: 2\n", encoding="utf-8")
    runbook, found = validate_path(path)
    assert runbook is None
    assert [(i.line, i.code) for i in found] == [(2, "duplicate-key")]
    with pytest.raises(ValidationFailed):
        load_runbook(path)


def test_load_runbook_raises_every_issue(tmp_path: Path) -> None:
    path = tmp_path / "rb.yaml"
    path.write_text(edit("needs: [restart]", "needs: [nope]\n    foo: 1"))
    with pytest.raises(ValidationFailed) as caught:
        load_runbook(path)
    assert [i.code for i in caught.value.issues] == ["unknown-need", "unknown-key"]
    assert str(caught.value).startswith("2 problem(s) found:\n" + str(path) + ":18:13: ")


# --------------------------------------------------------------------------- structure


def test_an_unknown_key_suggests_the_nearest_valid_one() -> None:
    assert issues(edit("needs:", "neeeds:")) == [
        "18:5: unknown key 'neeeds' in step 'check'; did you mean 'needs'? [unknown-key]"
    ]


def test_an_unknown_key_with_no_close_match_lists_the_allowed_ones() -> None:
    assert issues(edit("credential: ops_ssh, command", "credential: ops_ssh, zzz: 1, command")) == [
        "15:45: unknown key 'zzz' in 'ssh' of step 'restart' "
        "(allowed: target, credential, command, sudo) [unknown-key]"
    ]


def test_every_unknown_key_is_reported_at_its_own_line() -> None:
    text = edit("    needs: [restart]\n", "    needs: [restart]\n    nede: 1\n    whne: x\n")
    assert codes(text) == ["unknown-key", "unknown-key"]
    assert [i.split(":")[0] for i in issues(text)] == ["19", "20"]


def test_a_missing_key_points_at_its_mapping() -> None:
    assert issues(
        edit('http: {url: "http://{{ inputs.host }}/healthz"}', "http: {method: GET}")
    ) == ["19:5: missing required key 'url' in 'http' of step 'check' [missing-key]"]


def test_a_missing_step_id_names_the_step_by_number() -> None:
    assert issues(edit("  - id: check\n", "  - name: check\n")) == [
        "17:5: missing required key 'id' in step 2 [missing-key]"
    ]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "    needs: [restart]\n",
            "    needs: [restart]\n    retries: {count: two}\n",
            "19:22: 'retries.count' in step 'check' must be an integer, got 'two' [wrong-type]",
        ),
        (
            "    needs: [restart]\n",
            "    needs: [restart]\n    on_failure: retry\n",
            "19:17: 'on_failure' in step 'check' must be one of abort, continue, rollback; "
            "got 'retry' [bad-value]",
        ),
        (
            "kind: Runbook",
            "kind: runbook",
            "2:7: 'kind' must be Runbook, got 'runbook' [bad-value]",
        ),
        (
            "name: restart-web",
            "name: -web",
            "4:9: 'metadata.name' must be lowercase letters, digits and '-' (not starting or "
            "ending with '-'), got '-web' [bad-pattern]",
        ),
        (
            "version: 1.0.0",
            "version: 1.0.0.0",
            "5:12: 'metadata.version' must be a semantic version such as 1.2.0, "
            "got '1.0.0.0' [bad-pattern]",
        ),
        (
            "version: 1.0.0",
            "version: 1.0",
            "5:12: 'metadata.version' must be a string, got 1.0 [wrong-type]",
        ),
        (
            "name: restart-web",
            'name: "restart-web\\n"',
            "4:9: 'metadata.name' must be lowercase letters, digits and '-' (not starting or "
            "ending with '-'), got 'restart-web\\n' [bad-pattern]",
        ),
        (
            "- id: check",
            "- id: check me",
            "17:9: step id 'check me' must be a letter followed by letters, digits, '_' or '-' "
            "[bad-pattern]",
        ),
        (
            "ttl: 15m",
            "ttl: 15 min",
            "11:66: 'credentials.ops_ssh.vault_ssh.ttl' is not a duration: write e.g. 500ms, "
            "90s, 15m, 2h or 1d, or a number of seconds; got '15 min' [bad-duration]",
        ),
        (
            "ttl: 15m",
            "ttl: true",
            "11:66: 'credentials.ops_ssh.vault_ssh.ttl' must be a duration such as 90s, 15m or "
            "2h, or a number of seconds, got true [wrong-type]",
        ),
        (
            "ttl: 15m",
            "ttl: -3",
            "11:66: 'credentials.ops_ssh.vault_ssh.ttl' must be at least 0, got -3 [out-of-range]",
        ),
        (
            "principals: [ops]",
            "principals: [ops, ops]",
            "11:54: 'credentials.ops_ssh.vault_ssh.principals' lists the same value twice "
            "[duplicate-item]",
        ),
        (
            "principals: [ops]",
            "principals: []",
            "11:54: 'credentials.ops_ssh.vault_ssh.principals' must not be empty [too-few]",
        ),
        (
            "role: responder",
            "role: ''",
            "11:31: 'credentials.ops_ssh.vault_ssh.role' must not be empty [empty-string]",
        ),
        (
            "name: restart-web",
            "name: " + "a" * 64,
            "4:9: 'metadata.name' must be at most 63 characters long [too-long]",
        ),
        (
            "inputs:\n",
            "inputs:\n  9lives: {}\n",
            "7:3: input name '9lives' is not usable in expressions: use letters, digits and "
            "'_', not starting with a digit [bad-name]",
        ),
        (
            "    outputs: {pid:",
            "    outputs: {p-id:",
            "16:15: output name 'p-id' is not usable in expressions: use letters, digits and "
            "'_', not starting with a digit [bad-name]",
        ),
        (
            "    needs: [restart]\n",
            "    needs: [restart]\n    when: {x: 1}\n",
            "19:11: 'when' in step 'check' must be an expression, true or false, or a list of "
            "expressions, got a mapping [wrong-type]",
        ),
        (
            "    needs: [restart]\n",
            "    needs: [restart]\n    when: ''\n",
            "19:11: 'when' in step 'check' must not be empty [empty-string]",
        ),
        (
            "    needs: [restart]\n",
            "    needs: [restart]\n    when: [inputs.host, 1]\n",
            "19:25: 'when[1]' in step 'check' must be a string, got 1 [wrong-type]",
        ),
        (
            "    needs: [restart]\n",
            "    needs: [restart]\n    assert: {that: 5}\n",
            "19:20: 'assert.that' in step 'check' must be an expression or a list of "
            "expressions, got 5 [wrong-type]",
        ),
        (
            '    outputs: {pid: "{{ result.stdout }}"}\n',
            "    rollback: true\n",
            "16:15: 'rollback' in step 'restart' must be an action (a mapping such as "
            "'ssh: {...}') or a list of actions, got true [wrong-type]",
        ),
        (
            '    outputs: {pid: "{{ result.stdout }}"}\n',
            "    rollback: {ssh: {target: web}}\n",
            "16:16: missing required key 'command' in 'rollback.ssh' of step 'restart' "
            "[missing-key]",
        ),
        (
            "steps:\n",
            "policy: {budget: {hosts: 0, per: 1h}}\nsteps:\n",
            "13:26: 'policy.budget.hosts' must be at least 1, got 0 [out-of-range]",
        ),
        (
            "steps:\n",
            "policy: []\nsteps:\n",
            "13:9: 'policy' must be a mapping, got a list [wrong-type]",
        ),
        (
            "expect_status: [200]}" if False else '/healthz"}',
            '/healthz", expect_status: 200}',
            "19:68: 'http.expect_status' in step 'check' must be a list, got 200 [wrong-type]",
        ),
    ],
)
def test_schema_errors_in_words(old: str, new: str, expected: str) -> None:
    assert issues(edit(old, new)) == [expected]


def test_a_step_with_two_actions_is_one_issue_at_the_second_action() -> None:
    text = edit("    outputs:", "    log: {message: hi}\n    local: {command: x}\n    outputs:")
    assert issues(text) == [
        "16:5: step 'restart' has more than one action (ssh, log, local); a step runs exactly "
        "one: split it into separate steps [two-actions]"
    ]


def test_a_step_with_no_action_and_no_assert() -> None:
    assert issues(edit('    http: {url: "http://{{ inputs.host }}/healthz"}\n', "")) == [
        "17:5: step 'check' has no action; give it one of ssh, ansible, local, http, approval, "
        "wait, log, or an assert [no-action]"
    ]


def test_a_bare_assert_is_a_step() -> None:
    text = edit(
        '    http: {url: "http://{{ inputs.host }}/healthz"}\n',
        '    assert: {that: "steps.restart.outputs.pid | int > 1", message: no pid}\n',
    )
    assert issues(text) == []


def test_credentials_need_exactly_one_kind() -> None:
    text = edit(
        "  api: {vault_kv: {path: web/api, key: token}}\n",
        "  api: {}\n  both: {vault_kv: {path: x}, vault_ssh: {role: r}}\n",
    )
    assert issues(text) == [
        "12:3: credential 'api' must have vault_ssh or vault_kv [credential-kind]",
        "13:3: credential 'both' has both vault_ssh and vault_kv; keep exactly one "
        "[credential-kind]",
    ]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "{target: web, playbook: a.yml, module: ping}",
            "'ansible' in step 'restart' has both 'playbook' and 'module'; give exactly one "
            "[playbook-or-module]",
        ),
        (
            "{target: web}",
            "'ansible' in step 'restart' needs a 'playbook' or a 'module' [playbook-or-module]",
        ),
    ],
)
def test_ansible_needs_a_playbook_or_a_module(body: str, expected: str) -> None:
    text = edit(
        'ssh: {target: web, credential: ops_ssh, command: "systemctl restart nginx"}',
        f"ansible: {body}",
    )
    assert issues(text) == [f"15:5: {expected}"]


def test_ansible_args_go_with_a_module() -> None:
    text = edit(
        'ssh: {target: web, credential: ops_ssh, command: "systemctl restart nginx"}',
        "ansible: {target: web, playbook: a.yml, args: {x: 1}}",
    )
    assert issues(text) == [
        "15:45: 'ansible' in step 'restart' has 'args' but no 'module'; args are the arguments "
        "of a module (a playbook takes extravars) [args-without-module]"
    ]


def test_http_json_and_body_are_exclusive() -> None:
    assert issues(edit('/healthz"}', '/healthz", json: {}, body: x}')) == [
        "19:11: 'http' in step 'check' has both 'json' and 'body'; send only one of them "
        "[json-and-body]"
    ]


def test_approvals_need_a_group_and_a_positive_quorum() -> None:
    text = edit(
        '/healthz"}',
        '/healthz"}\n  - id: ok\n    needs: [check]\n'
        "    approval: {message: go?, approvers: [], quorum: 0}",
    )
    assert issues(text) == [
        "22:41: 'approval.approvers' in step 'ok' must name at least one approver group [too-few]",
        "22:53: 'approval.quorum' in step 'ok' must be at least 1, got 0 [out-of-range]",
    ]


def test_rollback_entries_hold_exactly_one_action() -> None:
    text = edit(
        '    outputs: {pid: "{{ result.stdout }}"}\n',
        "    rollback:\n      - {}\n      - {log: {message: a}, local: {command: b}}\n",
    )
    assert issues(text) == [
        "17:9: 'rollback[0]' in step 'restart' is empty; give it one action, e.g. 'ssh: {...}' "
        "[rollback-entry]",
        "18:9: 'rollback[1]' in step 'restart' has more than one action (log, local); give each "
        "action its own entry [rollback-entry]",
    ]


def test_a_runbook_needs_steps_and_its_required_keys() -> None:
    assert issues(
        "apiVersion: runbook/v1\nkind: Runbook\nmetadata: {name: x, version: 1.0.0}\nsteps: []\n"
    ) == ["4:8: 'steps' must list at least one step [too-few]"]
    assert issues("kind: Runbook\n") == [
        "1:1: missing required key 'apiVersion' at the top level [missing-key]",
        "1:1: missing required key 'metadata' at the top level [missing-key]",
        "1:1: missing required key 'steps' at the top level [missing-key]",
    ]


# --------------------------------------------------------------------------- graph


def test_duplicate_step_ids_name_both_lines() -> None:
    text = BASE + "  - id: restart\n    log: {message: again}\n"
    assert issues(text) == [
        "20:9: step id 'restart' is used twice (first at line 14); step ids must be unique "
        "[duplicate-step-id]"
    ]


def test_an_unknown_need_suggests_the_nearest_step() -> None:
    assert issues(edit("needs: [restart]", "needs: [restrat, zzz]")) == [
        "18:13: step 'check' needs 'restrat', which is not a step; did you mean 'restart'? "
        "[unknown-need]",
        "18:22: step 'check' needs 'zzz', which is not a step [unknown-need]",
    ]


def test_a_need_given_as_a_string_is_checked_too() -> None:
    assert codes(edit("needs: [restart]", "needs: nope")) == ["unknown-need"]


def test_a_cycle_is_named_in_execution_order() -> None:
    text = edit("  - id: restart\n", "  - id: restart\n    needs: [check]\n")
    assert issues(text) == [
        "15:13: the steps form a cycle: restart -> check -> restart; remove one of these needs "
        "[cycle]"
    ]


def test_every_separate_cycle_is_reported() -> None:
    text = edit("  - id: restart\n", "  - id: restart\n    needs: [restart]\n") + (
        "  - id: a\n    needs: [b]\n    log: {message: a}\n"
        "  - id: b\n    needs: [a]\n    log: {message: b}\n"
    )
    assert [i.split(" [")[0] for i in issues(text)] == [
        "15:13: the steps form a cycle: restart -> restart; remove one of these needs",
        "22:13: the steps form a cycle: a -> b -> a; remove one of these needs",
    ]


def test_steps_reading_a_cyclic_step_are_still_checked() -> None:
    text = edit("  - id: restart\n", "  - id: restart\n    needs: [check]\n") + (
        '  - id: late\n    log: {message: "{{ steps.check.status }}"}\n'
    )
    assert codes(text) == ["cycle", "not-an-ancestor"]


# --------------------------------------------------------------------------- expressions


def test_an_expression_that_does_not_compile() -> None:
    text = edit("    needs: [restart]\n", "    needs: [restart]\n    when: inputs.host ==\n")
    assert issues(text) == [
        "19:11: 'when' of step 'check' does not compile: unexpected end of the expression "
        "[expression-syntax]"
    ]


def test_a_syntax_error_in_a_block_expression_points_at_its_line() -> None:
    text = edit(
        "    needs: [restart]\n",
        "    needs: [restart]\n    when: |\n      inputs.host != '' and\n        (1 +\n",
    )
    assert [i.split(": '")[0] for i in issues(text)] == ["21:9"]


def test_a_template_that_does_not_compile() -> None:
    text = edit("systemctl restart nginx", "systemctl restart {{ inputs.host | nosuch }}")
    assert issues(text) == [
        "15:54: 'ssh.command' of step 'restart' does not compile: unknown filter 'nosuch' "
        "[expression-syntax]"
    ]


def test_undeclared_inputs_are_named_with_a_suggestion() -> None:
    assert issues(edit("{{ inputs.host }}/healthz", "{{ inputs.hots }}/healthz")) == [
        "19:17: 'http.url' of step 'check' reads inputs.hots, which is not declared under "
        "inputs; did you mean 'host'? [undeclared-input]"
    ]


def test_reading_a_step_that_may_not_have_run() -> None:
    text = edit("  - id: check\n    needs: [restart]\n", "  - id: check\n")
    text = edit('/healthz"}', '/healthz/{{ steps.restart.outputs.pid }}"}', text)
    assert issues(text) == [
        "18:17: step 'check' reads steps.restart, which may not have run yet: add 'restart' "
        "to its needs [not-an-ancestor]"
    ]


def test_a_rollback_reading_a_step_that_may_not_have_run() -> None:
    text = edit(
        '    outputs: {pid: "{{ result.stdout }}"}\n',
        '    rollback: {log: {message: "{{ steps.check.status }}"}}\n',
    )
    assert issues(text) == [
        "16:31: the rollback of step 'restart' reads steps.check, which may not have run yet: "
        "add 'check' to the needs of step 'restart' [not-an-ancestor]"
    ]


def test_reading_its_own_step() -> None:
    text = edit("{{ result.stdout }}", "{{ steps.restart.status }}")
    assert issues(text) == [
        "16:20: 'outputs.pid' of step 'restart' reads steps.restart, its own step; use result "
        "for the current action's result [self-reference]"
    ]


def test_reading_an_output_that_is_not_declared() -> None:
    assert issues(edit('/healthz"}', '/{{ steps.restart.outputs.pdi }}"}')) == [
        "19:17: 'http.url' of step 'check' reads steps.restart.outputs.pdi, but step 'restart' "
        "declares no output 'pdi'; did you mean 'pid'? [undeclared-output]"
    ]
    text = edit('    outputs: {pid: "{{ result.stdout }}"}\n', "")
    assert issues(edit('/healthz"}', '/{{ steps.restart.outputs.pid }}"}', text)) == [
        "18:17: 'http.url' of step 'check' reads steps.restart.outputs.pid, but step 'restart' "
        "declares no outputs [undeclared-output]"
    ]


def test_reading_an_unknown_step_or_step_field() -> None:
    text = edit('/healthz"}', '/{{ steps.restat.status }}{{ steps.restart.rc }}"}')
    assert issues(text) == [
        "19:17: 'http.url' of step 'check' reads steps.restart.rc; a step exposes only status, "
        "outputs and hosts [unknown-step-field]",
        "19:17: 'http.url' of step 'check' reads steps.restat, which is not a step; did you "
        "mean 'restart'? [unknown-step]",
    ]


def test_steps_with_dashes_are_read_by_subscript() -> None:
    text = edit("- id: restart", "- id: re-start").replace("needs: [restart]", "needs: [re-start]")
    text = edit('/healthz"}', "/{{ steps['re-start'].outputs.pid }}\"}", text)
    assert issues(text) == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "    needs: [restart]\n",
            "    needs: [restart]\n    when: result.rc == 0\n",
            "19:11: 'when' of step 'check' reads result, which exists only in outputs, assert "
            "and retries.until [result-not-here]",
        ),
        (
            "systemctl restart nginx",
            "kill {{ result.stdout }}",
            "15:54: 'ssh.command' of step 'restart' reads result, which exists only in outputs, "
            "assert and retries.until [result-not-here]",
        ),
        (
            'http: {url: "http://{{ inputs.host }}/healthz"}',
            'wait: {duration: 5s}\n    outputs: {x: "{{ result.rc }}"}',
            "20:18: 'outputs.x' of step 'check' reads result, but a wait step produces no "
            "result [result-without-action]",
        ),
        (
            'http: {url: "http://{{ inputs.host }}/healthz"}',
            "assert: {that: result.rc == 0}",
            "19:20: 'assert.that' of step 'check' reads result, but a step with no action "
            "produces no result [result-without-action]",
        ),
    ],
)
def test_result_is_read_only_where_it_exists(old: str, new: str, expected: str) -> None:
    assert issues(edit(old, new)) == [expected]


@pytest.mark.parametrize(
    ("secret", "expected"),
    [
        (
            "secrets.apy",
            "reads secrets.apy, which is not a vault_kv credential under credentials; did you "
            "mean 'api'? [unknown-secret]",
        ),
        (
            "secrets.ops_ssh",
            "reads secrets.ops_ssh, but credential 'ops_ssh' is a vault_ssh certificate; only "
            "vault_kv credentials can be read as secrets [wrong-credential-kind]",
        ),
    ],
)
def test_secrets_are_vault_kv_credentials(secret: str, expected: str) -> None:
    text = edit('/healthz"}', f'/healthz", headers: {{X: "{{{{ {secret} }}}}"}}}}')
    assert issues(text) == [f"19:66: 'http.headers.X' of step 'check' {expected}"]


def test_unknown_names_and_targets_in_expressions() -> None:
    text = edit('/healthz"}', '/{{ input.host }}/{{ targets.db }}/{{ targets.web }}"}')
    assert issues(text) == [
        "19:17: 'http.url' of step 'check' reads 'input', which is not defined; did you mean "
        "'inputs'? expressions can read inputs, steps, result, run, alert, secrets and targets "
        "[unknown-name]",
        "19:17: 'http.url' of step 'check' reads targets.db, which is not declared under "
        "targets [unknown-target]",
    ]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            'web: {hosts: "{{ inputs.host }}"}',
            'web: {hosts: "{{ steps.restart.outputs.pid }}"}',
            "9:16: 'hosts' of target 'web' may use only inputs, alert and run, but reads "
            "steps.restart.outputs.pid [plan-time-only]",
        ),
        (
            "steps:\n",
            'policy: {concurrency: {key: "{{ secrets.api }}"}}\nsteps:\n',
            "13:29: 'concurrency.key' of the policy may use only inputs, alert and run, but "
            "reads secrets.api [plan-time-only]",
        ),
        (
            'web: {hosts: "{{ inputs.host }}"}',
            'web: {hosts: "{{ inputs.hots }}"}',
            "9:16: 'hosts' of target 'web' reads inputs.hots, which is not declared under "
            "inputs; did you mean 'host'? [undeclared-input]",
        ),
    ],
)
def test_plan_time_templates_read_only_inputs_alert_and_run(
    old: str, new: str, expected: str
) -> None:
    assert issues(edit(old, new)) == [expected]


def test_templates_nested_in_data_are_checked() -> None:
    text = edit('/healthz"}', '/healthz", method: POST, json: {a: [1, {b: "{{ inputs.nope }}"}]}}')
    assert issues(text) == [
        "19:85: 'http.json.a[1].b' of step 'check' reads inputs.nope, which is not declared "
        "under inputs [undeclared-input]"
    ]


# --------------------------------------------------------------------------- actions


def test_targets_and_credentials_of_host_actions_must_exist() -> None:
    text = edit("ssh: {target: web, credential: ops_ssh,", "ssh: {target: wbe, credential: ops,")
    assert issues(text) == [
        "15:19: step 'restart' runs on target 'wbe', which is not declared under targets; did "
        "you mean 'web'? [unknown-target]",
        "15:36: step 'restart' uses credential 'ops', which is not declared under credentials; "
        "did you mean 'ops_ssh'? [unknown-credential]",
    ]


def test_a_kv_secret_is_not_an_ssh_credential() -> None:
    assert issues(edit("credential: ops_ssh,", "credential: api,")) == [
        "15:36: step 'restart' uses credential 'api' for ssh, but it is a vault_kv secret; ssh "
        "needs a vault_ssh credential [wrong-credential-kind]"
    ]


def test_rollbacks_are_checked_like_steps() -> None:
    text = edit(
        '    outputs: {pid: "{{ result.stdout }}"}\n',
        "    rollback:\n      - ssh: {target: nope, command: x}\n      - wait: {duration: 1s}\n",
    )
    assert issues(text) == [
        "17:23: the rollback of step 'restart' runs on target 'nope', which is not declared "
        "under targets [unknown-target]",
        "18:9: the rollback of step 'restart' uses wait, which cannot undo anything; a rollback "
        "runs ssh, ansible, local, http or log [rollback-not-action]",
    ]


# --------------------------------------------------------------------------- inputs


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("{type: integer, default: '5'}", "default '5' of input 'x' is not an integer"),
        ("{type: integer, default: true}", "default true of input 'x' is not an integer"),
        ("{type: number, default: abc}", "default 'abc' of input 'x' is not a number"),
        ("{type: boolean, default: 1}", "default 1 of input 'x' is not true or false"),
        ("{type: array, default: {}}", "default a mapping of input 'x' is not a list"),
        ("{default: 5}", "default 5 of input 'x' is not a string"),
        (
            "{enum: [a, b], default: c}",
            "default 'c' of input 'x' is not one of its enum values: a, b",
        ),
        (
            "{pattern: '^[a-z]+$', default: A1}",
            "default 'A1' of input 'x' does not match its pattern ^[a-z]+$",
        ),
        (
            "{minLength: 3, default: ab}",
            "default 'ab' of input 'x' is shorter than its minLength 3",
        ),
        ("{maxLength: 1, default: ab}", "default 'ab' of input 'x' is longer than its maxLength 1"),
        (
            "{type: number, minimum: 0.5, default: 0.1}",
            "default 0.1 of input 'x' is below its minimum 0.5",
        ),
        (
            "{type: integer, maximum: 9, default: 10}",
            "default 10 of input 'x' is above its maximum 9",
        ),
    ],
)
def test_input_defaults_obey_their_own_rules(spec: str, expected: str) -> None:
    text = edit("inputs:\n", f"inputs:\n  x: {spec}\n")
    found = issues(text)
    assert len(found) == 1
    assert found[0].split(": ", 1)[1] == f"{expected} [bad-default]"
    assert found[0].startswith("7:")


@pytest.mark.parametrize(
    "spec",
    [
        "{type: integer, default: 5, minimum: 5, maximum: 5}",
        "{type: number, default: 5}",
        "{type: boolean, default: false}",
        "{type: object, default: {a: 1}}",
        "{enum: [a, b], default: b}",
        "{pattern: '^[a-z]+$', default: abc, minLength: 3, maxLength: 3}",
    ],
)
def test_good_defaults_pass(spec: str) -> None:
    assert issues(edit("inputs:\n", f"inputs:\n  x: {spec}\n")) == []


def test_an_input_pattern_must_be_a_regular_expression() -> None:
    assert issues(edit('pattern: "^[a-z0-9.-]+$"', 'pattern: "(["')) == [
        "7:33: the pattern of input 'host' is not a valid regular expression: unterminated "
        "character set at position 1 [bad-regex]"
    ]


# --------------------------------------------------------------------------- all at once


def test_separate_mistakes_are_all_reported_sorted_by_line() -> None:
    text = (
        BASE.replace("version: 1.0.0", "version: one")
        .replace("needs: [restart]", "needs: [restrat]")
        .replace("{{ inputs.host }}/healthz", "{{ inputs.hots }}/healthz")
        .replace("ttl: 15m", "ttl: soon")
    )
    assert [i.split(":")[0] for i in issues(text)] == ["5", "11", "18", "19"]
    assert codes(text) == ["bad-pattern", "bad-duration", "unknown-need", "undeclared-input"]


def test_semantic_checks_run_even_when_the_structure_is_broken() -> None:
    text = edit("kind: Runbook\n", "").replace("needs: [restart]", "needs: [nope]")
    assert codes(text) == ["missing-key", "unknown-need"]


def test_garbage_in_odd_places_never_crashes() -> None:
    text = (
        "apiVersion: runbook/v1\nkind: Runbook\nmetadata: 5\ninputs: [1]\ntargets: x\n"
        "credentials: {a: 1}\npolicy: {concurrency: 3}\nsteps:\n  - 5\n  - {id: [x], needs: 3}\n"
        "  - {id: b, rollback: [1, {ssh: 2}], outputs: [], assert: 3, retries: 1}\n"
    )
    assert len(codes(text)) >= 8


# --------------------------------------------------------------------------- robustness

JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 300) | st.sampled_from(["", "x", "5m", "{{ x"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["id", "a"]), inner, max_size=2)
    ),
    max_leaves=6,
)


def paths_of(node: object, path: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    found = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            found += paths_of(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += paths_of(value, (*path, index))
    return found


FIXTURE_DATA = load_document(FIXTURES / "service-restart.yaml").data
FIXTURE_PATHS = [p for p in paths_of(FIXTURE_DATA) if p]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.sampled_from(FIXTURE_PATHS), st.sampled_from(["set", "drop"]), JSONISH),
        min_size=1,
        max_size=3,
    )
)
def test_any_mangled_runbook_gives_issues_or_a_model_never_a_crash(
    edits: list[tuple[tuple[object, ...], str, object]],
) -> None:
    data = copy.deepcopy(FIXTURE_DATA)
    for path, how, value in edits:
        parent = data
        for part in path[:-1]:
            if not isinstance(parent, dict | list):
                break
            try:
                parent = parent[part]  # type: ignore[index]
            except (KeyError, IndexError, TypeError):
                break
        else:
            last = path[-1]
            in_list = isinstance(parent, list) and isinstance(last, int) and last < len(parent)
            if isinstance(parent, dict) and how == "drop":
                parent.pop(last, None)
            elif isinstance(parent, dict) or in_list:
                parent[last] = value  # type: ignore[index]
    doc = parse_document(yaml.safe_dump(data, sort_keys=False), "mangled.yaml")
    found = validate_document(doc)
    assert all(i.line >= 1 and i.column >= 1 and i.message for i in found)
    if not found:
        assert Runbook.from_mapping(doc.data).steps
