"""The drill's parts that need no running world: hosts checked against the world before
anything breaks, what the audit keeps of the plan, the server config and its tokens, and
the command line refusing a bad plan or a missing sandbox."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml
from test_gameday_plan import ALERT_PLAN, CATALOG, DIRECT_PLAN, LOOKUPS

from executor.cli import main
from executor.gameday.drill import Drill, DrillSettings, plan_summary, world_issues
from executor.gameday.plan import Plan, parse_plan
from executor.gameday.serve import make_callers, server_config
from executor.gameday.world import Alerting


class Hosts:
    """A world that only knows its host names; nothing here may act on it."""

    def __init__(self, *names: str) -> None:
        self.names = names

    def host_names(self) -> Sequence[str]:
        return self.names

    def __getattr__(self, name: str) -> None:
        raise AssertionError(f"the drill must not call {name} here")


def plan_of(text: str) -> Plan:
    return parse_plan(textwrap.dedent(text), *LOOKUPS, path="plan.yaml")


def test_hosts_the_world_lacks_are_refused_at_their_place() -> None:
    plan = plan_of(ALERT_PLAN)
    assert world_issues(plan, Hosts("web1", "web2")) == []
    found = [str(i) for i in world_issues(plan, Hosts("web1", "db1"))]
    assert found == [
        "plan.yaml:4:15: the sandbox has no host 'web2' (hosts: db1, web1)",
        "plan.yaml:9:18: the sandbox has no host 'web2' (hosts: db1, web1)",
    ]


def test_a_drill_against_the_wrong_world_breaks_nothing(tmp_path: Path) -> None:
    drill = Drill(plan_of(ALERT_PLAN), Hosts("db1"), DrillSettings(tmp_path, CATALOG))  # type: ignore[arg-type]
    with pytest.raises(Exception, match="the sandbox has no host 'web2'"):
        drill.run()
    assert not any(tmp_path.iterdir())


def test_the_audit_keeps_enough_of_the_plan_to_rebuild_the_report() -> None:
    summary = plan_summary(plan_of(DIRECT_PLAN))
    assert json.loads(json.dumps(summary)) == summary
    assert summary["start"] == {
        "via": "direct",
        "runbook": "disk-pressure",
        "actor": "bob",
        "inputs": ["host"],
        "after": 0.0,
    }
    assert summary["approvals"] == [
        {"step": "approve", "by": "alice", "after": 5.0, "approve": True}
    ]
    assert summary["checks"] == [{"name": "health", "kind": "http"}]
    assert "detection" not in summary and summary["timeout"] == 120.0
    alert = plan_summary(plan_of(ALERT_PLAN))
    assert alert["detection"] == {"alert": "DemoappDown", "labels": {"host": "web2"}}
    assert alert["start"]["actor"] == "alertmanager"


def test_the_drills_identities_get_their_groups() -> None:
    drill = Drill(plan_of(DIRECT_PLAN), Hosts(), DrillSettings(Path("/x"), CATALOG))  # type: ignore[arg-type]
    assert drill._identities() == {
        "gameday": frozenset({"gameday"}),
        "bob": frozenset({"gameday"}),
        "alice": frozenset({"storage-oncall"}),
    }


def test_the_server_config_holds_digests_never_tokens(tmp_path: Path) -> None:
    callers = make_callers({"gameday": frozenset({"gameday"}), "alice": frozenset({"ops"})})
    assert callers["gameday"].token != callers["alice"].token
    assert callers["alice"].token not in repr(callers["alice"])
    alerting = Alerting("http://p", "http://a", 9099, tmp_path / "am.token")
    config = server_config(alerting, callers)
    text = yaml.safe_dump(config)
    assert not any(c.token in text for c in callers.values())
    assert config["listen"] == {"host": "127.0.0.1", "port": 9099}
    tokens = {t["identity"]: t for t in config["tokens"]}  # type: ignore[union-attr]
    assert tokens["alertmanager"]["token_file"] == str(tmp_path / "am.token")
    assert sorted(tokens["alice"]) == ["groups", "identity", "token_sha256"]
    assert config["permissions"]["run"] == ["gameday"]  # type: ignore[index]


def test_the_schema_is_a_valid_json_schema() -> None:
    import jsonschema

    from executor.gameday.schema import schema

    jsonschema.Draft202012Validator.check_schema(schema())


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as done:
        main(list(args))
    captured = capsys.readouterr()
    return int(done.value.code or 0), captured.out + captured.err


def test_the_command_refuses_a_bad_plan_with_its_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(ALERT_PLAN.replace("inject: kill", "inject: melt"))
    code, text = run_cli(
        capsys, "--home", str(tmp_path / "h"), "--catalog", str(CATALOG), "gameday", str(plan)
    )
    assert code == 1  # like an invalid runbook
    assert f"{plan}:4:29: 'fault.inject' must be one of kill" in text
    assert not (tmp_path / "h").exists()


def test_the_command_needs_a_sandbox(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(ALERT_PLAN)
    code, text = run_cli(
        capsys,
        "--catalog",
        str(CATALOG),
        "gameday",
        str(plan),
        "--sandbox-dir",
        str(tmp_path / "no-world"),
    )
    assert code == 1
    assert "no sandbox is up in" in text


def test_the_command_refuses_a_bad_time_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(ALERT_PLAN)
    code, text = run_cli(
        capsys, "--catalog", str(CATALOG), "gameday", str(plan), "--timeout", "forever"
    )
    assert code == 2 and "--timeout: not a duration" in text
