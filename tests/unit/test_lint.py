"""Lint: risky but valid runbooks get warnings with stable codes; careful ones get none."""

from __future__ import annotations

from pathlib import Path

import pytest

from executor.lint import lint_document
from executor.loader import load_document, parse_document
from executor.validation import runbook_from_document

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

CAREFUL = """\
apiVersion: runbook/v1
kind: Runbook
metadata: {name: careful, version: 1.0.0}
inputs:
  host: {type: string}
targets:
  web: {hosts: "{{ inputs.host }}"}
policy: {automation: auto, max_hosts: 3}
steps:
  - id: restart
    ssh: {target: web, command: "systemctl restart nginx"}
    rollback: {ssh: {target: web, command: "systemctl start nginx"}}
  - id: check
    needs: [restart]
    http: {url: "http://{{ inputs.host }}/healthz"}
"""


def edit(old: str, new: str, text: str = CAREFUL) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def warnings(text: str) -> list[str]:
    doc = parse_document(text, "rb.yaml")
    found = lint_document(doc, runbook_from_document(doc))
    assert all(i.severity == "warning" for i in found)
    return [f"{i.line}:{i.column}: {i.message} [{i.code}]" for i in found]


def test_a_careful_runbook_has_no_warning() -> None:
    assert warnings(CAREFUL) == []


def test_the_full_fixture_has_no_warning() -> None:
    doc = load_document(FIXTURES / "service-restart.yaml")
    assert lint_document(doc, runbook_from_document(doc)) == []


def test_a_mutation_with_no_rollback_and_no_on_failure() -> None:
    text = edit('    rollback: {ssh: {target: web, command: "systemctl start nginx"}}\n', "")
    assert warnings(text) == [
        "10:9: step 'restart' changes things (ssh) but has no rollback and no explicit "
        "on_failure; add a rollback, or write on_failure: abort if nothing can be undone "
        "[no-rollback]"
    ]


@pytest.mark.parametrize("choice", ["abort", "continue", "rollback"])
def test_an_explicit_on_failure_says_no_rollback_is_meant(choice: str) -> None:
    text = edit(
        '    rollback: {ssh: {target: web, command: "systemctl start nginx"}}\n',
        f"    on_failure: {choice}\n",
    )
    assert warnings(text) == []


def test_auto_automation_without_max_hosts() -> None:
    assert warnings(edit("max_hosts: 3", "cooldown: 5m")) == [
        "8:22: policy.automation is auto but policy.max_hosts is not set; an alert could run "
        "this on every host a target resolves to: set max_hosts [auto-without-max-hosts]"
    ]


@pytest.mark.parametrize("automation", ["manual", "approval"])
def test_attended_automation_needs_no_max_hosts(automation: str) -> None:
    assert warnings(edit("automation: auto, max_hosts: 3", f"automation: {automation}")) == []


def test_a_mutation_nobody_verifies() -> None:
    text = edit('http: {url: "http://{{ inputs.host }}/healthz"}', "log: {message: done}")
    assert warnings(text) == [
        "10:9: step 'restart' changes things (ssh) but no later step verifies it; add a step "
        "that needs it with an assert or an http check [unverified-mutation]"
    ]


def test_a_later_assert_or_the_steps_own_assert_verifies() -> None:
    later = edit(
        'http: {url: "http://{{ inputs.host }}/healthz"}',
        'log: {message: done}\n  - id: verify\n    needs: [check]\n    assert: {that: "true"}',
    )
    assert warnings(later) == []
    own = edit(
        'http: {url: "http://{{ inputs.host }}/healthz"}',
        "log: {message: done}",
        edit('start nginx"}}\n', 'start nginx"}}\n    assert: {that: "result.rc == 0"}\n'),
    )
    assert warnings(own) == []


def test_a_check_that_does_not_depend_on_the_change_does_not_verify_it() -> None:
    text = edit("    needs: [restart]\n", "")
    assert [w.rsplit("[", 1)[1] for w in warnings(text)] == ["unverified-mutation]"]


def test_an_unused_input() -> None:
    text = edit("  host: {type: string}\n", "  host: {type: string}\n  force: {type: boolean}\n")
    assert warnings(text) == [
        "6:3: input 'force' is declared but never used; remove it, or read it as inputs.force "
        "[unused-input]"
    ]


def test_reading_the_whole_inputs_mapping_uses_every_input() -> None:
    text = edit("  host: {type: string}\n", "  host: {type: string}\n  force: {type: boolean}\n")
    text = edit("/healthz", "/healthz?q={{ inputs | length }}", text)
    assert warnings(text) == []


@pytest.mark.parametrize("guard", ["false", "1 > 2", "[inputs.host, 'false']", "\"'a' == 'b'\""])
def test_a_constantly_false_guard_prunes_its_branch(guard: str) -> None:
    text = edit("    needs: [restart]\n", f"    needs: [restart]\n    when: {guard}\n")
    text += "  - id: after\n    needs: [check]\n    log: {message: done}\n"
    found = warnings(text)
    assert found == [
        "15:11: step 'check' never runs: its when guard is always false [unreachable-step]",
        "17:9: step 'after' never runs: it depends on step 'check', whose when guard is always "
        "false [unreachable-step]",
    ]


@pytest.mark.parametrize("guard", ["true", "inputs.host != ''", "1 < 2"])
def test_a_guard_that_may_be_true_is_fine(guard: str) -> None:
    assert (
        warnings(edit("    needs: [restart]\n", f"    needs: [restart]\n    when: {guard}\n")) == []
    )


def test_triggers_decide_what_a_dead_branch_takes_with_it() -> None:
    text = edit("    needs: [restart]\n", "    needs: [restart]\n    when: false\n") + (
        "  - id: other\n    needs: [restart]\n    log: {message: other}\n"
        "  - id: join\n    needs: [check, other]\n    trigger: any_succeeded\n"
        "    log: {message: j}\n"
        "  - id: cleanup\n    needs: [check]\n    trigger: always\n    log: {message: c}\n"
        "  - id: both\n    needs: [check, other]\n    log: {message: b}\n"
        "  - id: only-dead\n    needs: [check]\n    trigger: any_succeeded\n    log: {message: d}\n"
    )
    assert [w.split(" never runs")[0] for w in warnings(text)] == [
        "15:11: step 'check'",
        "28:9: step 'both'",
        "31:9: step 'only-dead'",
    ]


def test_warnings_are_sorted_by_position() -> None:
    text = edit("max_hosts: 3", "cooldown: 5m")
    text = edit('    rollback: {ssh: {target: web, command: "systemctl start nginx"}}\n', "", text)
    text = edit(
        "  host: {type: string}\n", "  host: {type: string}\n  spare: {type: string}\n", text
    )
    codes = [w.rsplit("[", 1)[1].rstrip("]") for w in warnings(text)]
    assert codes == ["unused-input", "auto-without-max-hosts", "no-rollback"]
