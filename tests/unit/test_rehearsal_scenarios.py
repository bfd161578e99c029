"""Scenario files: found by convention, validated like runbooks, every problem at file:line:col."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from executor.errors import ValidationFailed
from executor.rehearsal import RunbookFinder, load_scenario_file, looks_like_scenarios
from executor.rehearsal.loading import scenario_files

RUNBOOK = """\
apiVersion: runbook/v1
kind: Runbook
metadata: {{name: demo, version: {version}}}
inputs:
  host: {{type: string, pattern: "^[a-z0-9]+$"}}
targets:
  node: {{hosts: "{{{{ inputs.host }}}}"}}
steps:
  - id: probe
    ssh: {{target: node, command: uptime}}
    outputs: {{load: "{{{{ result.stdout | int }}}}"}}
  - id: gate
    needs: [probe]
    approval: {{message: go?, approvers: [ops]}}
  - id: act
    needs: [gate]
    local: {{command: fix}}
    on_failure: rollback
    rollback: {{local: {{command: undo}}}}
  - id: note
    needs: [act]
    log: {{message: done}}
"""


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    (tmp_path / "demo.yaml").write_text(RUNBOOK.format(version="1.0.0"), encoding="utf-8")
    (tmp_path / "tests").mkdir()
    return tmp_path


def scenario_file(catalog: Path, body: str, *, head: bool = True) -> Path:
    """``tests/demo.yaml`` with the usual head (apiVersion, kind, runbook: demo) and ``body``."""
    path = catalog / "tests" / "demo.yaml"
    path.write_text((HEAD if head else "") + textwrap.dedent(body), encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ValidationFailed) as failed:
        load_scenario_file(path, RunbookFinder())
    return [str(i) for i in failed.value.issues]


HEAD = """\
apiVersion: runbook/v1
kind: Scenarios
runbook: demo
"""


def test_a_valid_file_builds_scenarios_with_the_defaults_merged(catalog: Path) -> None:
    path = scenario_file(
        catalog,
        """\
        defaults:
          inputs: {host: web1}
          steps: {probe: {stdout: "3"}}
        scenarios:
          - name: first
            expect: {status: succeeded}
          - name: second
            inputs: {host: web2}
            steps:
              act: [{rc: 1}, {}]
              gate: {approve_as: [ann, bob], deny_as: carl}
            rollbacks: {act: {fail: true}}
            expect: {path: [probe, gate, act], outputs: {probe.load: 3}}
        """,
    )
    loaded = load_scenario_file(path, RunbookFinder())
    assert loaded.runbook.ref == "demo@1.0.0"
    first, second = loaded.scenarios
    assert first.inputs == {"host": "web1"} and second.inputs == {"host": "web2"}
    assert second.result("probe", 1).outcome.stdout == "3"  # from the defaults
    assert second.result("act", 1).outcome.exit_code == 1
    assert second.result("act", 5).outcome.ok  # the last result repeats
    assert second.approvals["gate"].approve_as == ("ann", "bob")
    assert second.approvals["gate"].deny_as == ("carl",)
    assert second.rollback_result("act", 0).outcome.fail
    assert second.expect.path == ("probe", "gate", "act")
    assert (first.line, second.line) == (8, 10)
    assert second.where.endswith("tests/demo.yaml:10")


def test_the_runbook_is_found_by_name_version_or_path(catalog: Path) -> None:
    (catalog / "demo-2.yaml").write_text(RUNBOOK.format(version="2.0.0"), encoding="utf-8")
    body = "apiVersion: runbook/v1\nkind: Scenarios\nrunbook: {ref}\n" + (
        "scenarios: [{{name: a, inputs: {{host: w}}, expect: {{status: succeeded}}}}]\n"
    )
    for ref, version in [("demo", "2.0.0"), ("demo@1.0.0", "1.0.0"), ("../demo.yaml", "1.0.0")]:
        path = scenario_file(catalog, body.format(ref=ref), head=False)
        assert load_scenario_file(path, RunbookFinder()).runbook.version == version, ref


def test_an_unknown_runbook_is_named_with_a_suggestion(catalog: Path) -> None:
    body = HEAD.replace("demo", "dmeo") + "scenarios: [{name: a, expect: {status: failed}}]\n"
    path = scenario_file(catalog, body, head=False)
    (found,) = problems(path)
    assert found.startswith(f"{path}:3:10: no runbook 'dmeo'")
    assert "did you mean 'demo'?" in found


def test_an_invalid_runbook_is_refused_with_its_first_problem(catalog: Path) -> None:
    (catalog / "demo.yaml").write_text(
        RUNBOOK.format(version="1.0.0").replace("needs: [gate]", "needs: [gaet]"), encoding="utf-8"
    )
    path = scenario_file(catalog, "scenarios: [{name: a, expect: {status: failed}}]\n")
    (found,) = problems(path)
    assert "runbook 'demo' is not valid" in found and "gaet" in found


def test_structure_problems_are_sentences_at_their_line(catalog: Path) -> None:
    path = scenario_file(
        catalog,
        """\
        scenarios:
          - name: a
            inputs: {host: web1}
            colour: blue
            steps:
              probe: {stdot: "1"}
              act: [{rc: "x"}]
            expect: {status: fine}
          - inputs: {host: web1}
            expect: {}
        """,
    )
    found = problems(path)
    assert f"{path}:7:5: unknown key 'colour' in scenario 'a'" in found[0]
    assert any(
        p.startswith(f"{path}:9:15: unknown key 'stdot'") and "did you mean 'stdout'?" in p
        for p in found
    )
    assert f"{path}:10:18: 'steps.act[0].rc' in scenario 'a' must be an integer, got 'x'" in found
    assert any(
        p.startswith(f"{path}:11:22: 'expect.status' in scenario 'a' must be succeeded")
        for p in found
    )
    assert any(p.startswith(f"{path}:12:5: scenario 2 has no 'name'") for p in found)
    assert any("'expect' in scenario 2 must not be empty" in p for p in found)


def test_names_that_do_not_exist_in_the_runbook_are_named_with_suggestions(catalog: Path) -> None:
    path = scenario_file(
        catalog,
        """\
        scenarios:
          - name: a
            inputs: {host: web1, hots: x}
            hosts: {nod: [web1]}
            steps: {prob: {stdout: "1"}}
            rollbacks: {probe: {}}
            killswitch_before: atc
            expect:
              path: [probe, rollback:probe, nope]
              outputs: {probe.lod: 1}
              steps: {gat: waiting}
          - name: a
            expect: {status: failed}
        """,
    )
    text = "\n".join(problems(path))
    for expected in [
        "unknown input 'hots'; did you mean 'host'?",
        "has no target 'nod'; did you mean 'node'?",
        "has no step 'prob'; did you mean 'probe'?",
        "'rollbacks.probe' in scenario 'a': step 'probe' has no rollback actions",
        "has no step 'atc'; did you mean 'act'?",
        "'expect.path[1]' in scenario 'a': step 'probe' has no rollback actions",
        "has no step 'nope'",
        "step 'probe' has no output 'lod'; did you mean 'load'?",
        "has no step 'gat'; did you mean 'gate'?",
        "scenario name 'a' is used twice",
        "host: required",
    ]:
        assert expected in text, expected


def test_results_must_fit_the_kind_of_step(catalog: Path) -> None:
    path = scenario_file(
        catalog,
        """\
        defaults:
          inputs: {host: web1}
          hosts: {node: [web1]}
        scenarios:
          - name: a
            steps:
              gate: {stdout: "yes"}
              act: {approve_as: ann, unreachable: true}
              note: {stdout: "x"}
              probe: {hosts: {web9: {rc: 1}}, status: 200}
            rollbacks: {act: [{}, {}]}
            expect: {status: failed}
          - name: b
            steps:
              gate: {expire: true}
            expect: {status: failed}
        """,
    )
    text = "\n".join(problems(path))
    for expected in [
        "'gate' is an approval step; answer it with approve_as, deny_as or expire",
        "approve_as, deny_as and expire answer approval steps; 'act' is a local step",
        "'steps.note' in scenario 'a': remove it: a log step always succeeds",
        "host 'web9' is not one of the hosts of target 'node' (web1)",
        "status applies to http steps; 'probe' is an ssh step",
        "lists 2 results but step 'act' has 1 rollback action(s)",
        "approval 'gate' has no timeout, so it never expires",
    ]:
        assert expected in text, expected


def test_a_yaml_syntax_error_is_reported_at_its_place(catalog: Path) -> None:
    path = scenario_file(catalog, "scenarios:\n  - name: a\n    expect: {status: failed\n")
    (found,) = problems(path)
    assert found.startswith(f"{path}:7:1:") and "opened with '{' at line 6" in found


def test_scenario_files_are_recognised_by_their_kind(catalog: Path) -> None:
    scenario = scenario_file(catalog, "scenarios: []\n")
    other = catalog / "tests" / "notes.yaml"
    other.write_text("kind: Notes\n", encoding="utf-8")
    assert looks_like_scenarios(scenario) and not looks_like_scenarios(other)
    assert not looks_like_scenarios(catalog / "demo.yaml")
    assert list(scenario_files(catalog)) == [scenario]
