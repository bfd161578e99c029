"""The sandbox's alerting configs: loopback only, a token from a file, a server config
`runbook serve` accepts, rules on the metrics demoapp exports."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from executor.sandbox.alerting import (
    RULES,
    AlertingInfo,
    alertmanager_config,
    prepare,
    prometheus_config,
    serve_config,
)
from executor.sandbox.layout import APP_SOURCE_DIR, Layout
from executor.sandbox.state import HostInfo
from executor.server.auth import Forbidden, TokenBook
from executor.server.config import load_server_config

HOSTS = (
    HostInfo("web1", 2201, "rb-web1", ("web",), 8001, "/h/web1", ("ops",)),
    HostInfo("db1", 2202, "rb-db1", ("db",), 8002, "/h/db1", ("ops",)),
)


def test_prometheus_scrapes_every_host_with_its_name_and_alerts_alertmanager() -> None:
    config = prometheus_config(HOSTS, alertmanager=9093, serve=9099)
    (demoapp, runbook) = config["scrape_configs"]
    assert [t["labels"]["host"] for t in demoapp["static_configs"]] == ["web1", "db1"]
    assert demoapp["static_configs"][1]["targets"] == ["127.0.0.1:8002"]
    assert runbook["static_configs"][0]["targets"] == ["127.0.0.1:9099"]
    targets = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert targets == ["127.0.0.1:9093"]


def test_the_rules_read_only_metrics_demoapp_exports() -> None:
    exported = set(re.findall(r'"(demoapp_[a-z_]+)"', (APP_SOURCE_DIR / "demoapp.py").read_text()))
    rules = RULES["groups"][0]["rules"]
    assert {r["alert"] for r in rules} >= {"DemoappDown", "DemoappQueueStuck", "DemoappDiskFull"}
    for rule in rules:
        for metric in re.findall(r"demoapp_[a-z_]+", rule["expr"]):
            assert metric in exported, metric


def test_alertmanager_posts_everything_to_runbook_serve_with_a_token_file(tmp_path: Path) -> None:
    config = alertmanager_config(9099, tmp_path / "am.token")
    assert config["route"]["group_wait"] == "0s"
    (hook,) = config["receivers"][0]["webhook_configs"]
    assert hook["url"] == "http://127.0.0.1:9099/v1/alerts/alertmanager"
    assert hook["send_resolved"] is True
    assert hook["http_config"]["authorization"] == {
        "type": "Bearer",
        "credentials_file": str(tmp_path / "am.token"),
    }


def test_prepare_writes_configs_runbook_serve_accepts(tmp_path: Path) -> None:
    if not Path("/usr/bin/prometheus").exists():
        pytest.skip("prometheus is not installed (make deps)")
    layout = Layout.of(tmp_path / "world")
    info = prepare(layout, HOSTS, [9090, 9093, 9099])
    assert isinstance(info, AlertingInfo) and info.serve_port == 9099
    assert len(info.token("alertmanager")) >= 32
    assert oct(info.alertmanager_token_file.stat().st_mode & 0o777) == "0o600"
    config = load_server_config(info.serve_config)
    assert (config.host, config.port) == ("127.0.0.1", 9099)
    assert config.routes is not None and config.routes.name == "routes.yaml"
    book = TokenBook(config, {})
    alertmanager = book.authenticate(f"Bearer {info.token('alertmanager')}")
    book.authorize(alertmanager, "alerts")
    operator = book.authenticate(f"Bearer {info.token('operator')}")
    for permission in ("read", "approve", "run", "kill", "killswitch"):
        book.authorize(operator, permission)
    assert {"app-oncall", "storage-oncall"} <= operator.groups
    viewer = book.authenticate(f"Bearer {info.token('viewer')}")
    book.authorize(viewer, "read")
    with pytest.raises(Forbidden, match="may not run"):
        book.authorize(viewer, "run")
    rules = yaml.safe_load((tmp_path / "world" / "alerting" / "rules.yml").read_text())
    assert rules == RULES


def test_serve_config_never_listens_beyond_loopback() -> None:
    assert serve_config(9099)["listen"] == {"host": "127.0.0.1", "port": 9099}
