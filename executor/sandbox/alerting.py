"""Prometheus and Alertmanager for the sandbox: they watch demoapp and page `runbook serve`.

Prometheus scrapes every host's demoapp once a second and evaluates the
rules below once a second; Alertmanager groups by alert and host, waits for
nothing (``group_wait: 0s``) and posts to the port reserved for
``runbook serve`` with a bearer token from a file. Both come from Debian
packages, listen on 127.0.0.1 only (Alertmanager's cluster port is turned
off: it would bind 0.0.0.0:9094), and keep their data in the world's state
directory.

``alerting/serve.yaml`` is a ready server config for that port, with three
tokens: ``alertmanager`` (may only post alerts), ``operator`` (may do
everything, is in every approver group of the shipped runbooks) and
``viewer`` (may only read). ``sandbox/up`` starts them (``up(alerting=True)``
from Python, or ``ensure(info)`` for a world that is already up). Start the
server against the world with:

    . sandbox/.state/env.sh
    runbook --catalog runbooks serve --server-config sandbox/.state/alerting/serve.yaml
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from executor.sandbox.errors import SandboxError
from executor.sandbox.layout import REPO_ROOT, Layout
from executor.sandbox.procs import (
    ProcessRecord,
    Registry,
    free_ports,
    terminate,
    wait_listening,
)
from executor.sandbox.state import HostInfo, SandboxInfo

PROMETHEUS = "/usr/bin/prometheus"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
DIRECTORY = "alerting"
INFO_FILE = "alerting.json"
ROUTES = REPO_ROOT / "runbooks" / "routes.yaml"
OPERATOR_GROUPS = (
    "operators",
    "app-oncall",
    "storage-oncall",
    "release-managers",
    "security-oncall",
)

RULES: dict[str, Any] = {
    "groups": [
        {
            "name": "demoapp",
            "interval": "1s",
            "rules": [
                {
                    "alert": "DemoappDown",
                    "expr": 'up{job="demoapp"} == 0',
                    "for": "2s",
                    "labels": {"severity": "critical"},
                    "annotations": {"summary": "demoapp on {{ $labels.host }} does not answer"},
                },
                {
                    "alert": "DemoappConfigInvalid",
                    "expr": "demoapp_config_valid == 0",
                    "for": "2s",
                    "labels": {"severity": "critical"},
                    "annotations": {"summary": "demoapp on {{ $labels.host }} has a bad config"},
                },
                {
                    "alert": "DemoappDiskFull",
                    "expr": "demoapp_disk_used_percent >= 90",
                    "for": "2s",
                    "labels": {"severity": "warning"},
                    "annotations": {
                        "summary": "data disk of {{ $labels.host }} {{ $value }}% full"
                    },
                },
                {
                    "alert": "DemoappQueueStuck",
                    "expr": "demoapp_queue_depth > 0 and demoapp_worker_up == 0",
                    "for": "3s",
                    "labels": {"severity": "warning"},
                    "annotations": {"summary": "queue of {{ $labels.host }} stuck at {{ $value }}"},
                },
                {
                    "alert": "DemoappBrokenRelease",
                    "expr": "demoapp_release_broken == 1",
                    "for": "2s",
                    "labels": {"severity": "critical"},
                    "annotations": {"summary": "{{ $labels.host }} runs a broken release"},
                },
            ],
        }
    ]
}


@dataclass(frozen=True)
class AlertingInfo:
    """Where Prometheus, Alertmanager and the reserved `runbook serve` port are."""

    prometheus_url: str
    alertmanager_url: str
    serve_url: str
    serve_port: int
    serve_config: Path
    alertmanager_token_file: Path
    operator_token_file: Path
    viewer_token_file: Path

    def token(self, who: str = "operator") -> str:
        path = {
            "operator": self.operator_token_file,
            "alertmanager": self.alertmanager_token_file,
            "viewer": self.viewer_token_file,
        }[who]
        return path.read_text().strip()

    def to_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlertingInfo:
        paths = {k for k, v in cls.__dataclass_fields__.items() if v.type in ("Path", Path)}
        return cls(**{k: Path(v) if k in paths else v for k, v in data.items()})


def directory(layout: Layout) -> Path:
    return layout.root / DIRECTORY


def load_alerting(state_dir: Path | str | None = None) -> AlertingInfo:
    """The alerting part of a running world; SandboxError if it has none."""
    path = directory(Layout.of(state_dir)) / INFO_FILE
    try:
        return AlertingInfo.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise SandboxError(
            f"the sandbox in {path.parent.parent} runs no Prometheus/Alertmanager",
            hint="bring it up again with `sandbox/up`",
        ) from None


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.write_text(text)
    path.chmod(mode)


def _token(path: Path) -> None:
    _write(path, secrets.token_urlsafe(32) + "\n", 0o600)


def prometheus_config(hosts: tuple[HostInfo, ...], alertmanager: int, serve: int) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
        "rule_files": ["rules.yml"],
        "alerting": {
            "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager}"]}]}]
        },
        "scrape_configs": [
            {
                "job_name": "demoapp",
                "honor_labels": True,
                "static_configs": [
                    {"targets": [f"127.0.0.1:{h.app_port}"], "labels": {"host": h.name}}
                    for h in hosts
                ],
            },
            {"job_name": "runbook", "static_configs": [{"targets": [f"127.0.0.1:{serve}"]}]},
        ],
    }


def alertmanager_config(serve: int, token_file: Path) -> dict[str, Any]:
    return {
        "route": {
            "receiver": "runbook",
            "group_by": ["alertname", "host"],
            "group_wait": "0s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [
            {
                "name": "runbook",
                "webhook_configs": [
                    {
                        "url": f"http://127.0.0.1:{serve}/v1/alerts/alertmanager",
                        "send_resolved": True,
                        "max_alerts": 0,
                        "http_config": {
                            "authorization": {"type": "Bearer", "credentials_file": str(token_file)}
                        },
                    }
                ],
            }
        ],
    }


def serve_config(serve: int) -> dict[str, Any]:
    everyone = ["operators", "viewers"]
    return {
        "listen": {"host": "127.0.0.1", "port": serve},
        "routes": str(ROUTES),
        "workers": 4,
        "shutdown_grace": "20s",
        "poll_interval": "1s",
        "tokens": [
            {
                "identity": "alertmanager",
                "groups": ["alertmanager"],
                "token_file": "alertmanager.token",
            },
            {
                "identity": "operator",
                "groups": list(OPERATOR_GROUPS),
                "token_file": "operator.token",
            },
            {"identity": "viewer", "groups": ["viewers"], "token_file": "viewer.token"},
        ],
        "permissions": {
            "read": everyone,
            "alerts": ["alertmanager"],
            "approve": ["operators"],
            "run": ["operators"],
            "kill": ["operators"],
            "killswitch": ["operators"],
        },
    }


def prepare(layout: Layout, hosts: tuple[HostInfo, ...], ports: list[int]) -> AlertingInfo:
    """Write the configs and tokens; ``ports`` are Prometheus, Alertmanager, `runbook serve`."""
    for tool in (PROMETHEUS, ALERTMANAGER):
        if not Path(tool).exists():
            raise SandboxError(
                f"{tool} is missing", hint="run `bash sandbox/install-system-deps` (or `make deps`)"
            )
    prom, am, serve = ports
    base = directory(layout)
    for sub in ("prometheus-data", "alertmanager-data"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for name in ("alertmanager", "operator", "viewer"):
        _token(base / f"{name}.token")
    dump = lambda data: yaml.safe_dump(data, sort_keys=False)  # noqa: E731
    _write(base / "prometheus.yml", dump(prometheus_config(hosts, am, serve)))
    _write(base / "rules.yml", dump(RULES))
    _write(base / "alertmanager.yml", dump(alertmanager_config(serve, base / "alertmanager.token")))
    _write(base / "serve.yaml", dump(serve_config(serve)), 0o600)
    info = AlertingInfo(
        prometheus_url=f"http://127.0.0.1:{prom}",
        alertmanager_url=f"http://127.0.0.1:{am}",
        serve_url=f"http://127.0.0.1:{serve}",
        serve_port=serve,
        serve_config=base / "serve.yaml",
        alertmanager_token_file=base / "alertmanager.token",
        operator_token_file=base / "operator.token",
        viewer_token_file=base / "viewer.token",
    )
    _write(base / INFO_FILE, json.dumps(info.to_dict(), indent=2) + "\n", 0o600)
    return info


def ensure(world: SandboxInfo) -> AlertingInfo:
    """Prometheus and Alertmanager for ``world``: started unless they already run.

    They join the world's process registry, so ``status`` counts them and
    ``down`` stops them like every other process of the world.
    """
    layout = Layout.of(world.state_dir)
    registry = Registry(layout.run_dir, layout.log_dir)
    running = [registry.get(name) for name in ("prometheus", "alertmanager")]
    if all(r is not None and r.alive() for r in running):
        return load_alerting(world.state_dir)
    for record in running:
        if record is not None and record.alive():
            terminate({record.pid: record.start_ticks})
    info = prepare(layout, world.hosts, free_ports(3))
    for record in start(registry, layout, info):
        wait_listening(record)
    return info


def start(registry: Registry, layout: Layout, info: AlertingInfo) -> list[ProcessRecord]:
    """Start Prometheus and Alertmanager on 127.0.0.1 (recorded, so `down` stops them)."""
    base = directory(layout)
    prom_port = int(info.prometheus_url.rsplit(":", 1)[1])
    am_port = int(info.alertmanager_url.rsplit(":", 1)[1])
    prometheus = registry.spawn(
        "prometheus",
        [
            PROMETHEUS,
            f"--config.file={base / 'prometheus.yml'}",
            f"--storage.tsdb.path={base / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
            "--storage.tsdb.retention.time=1d",
            "--rules.alert.resend-delay=1s",
        ],
        port=prom_port,
        cwd=base,
    )
    alertmanager = registry.spawn(
        "alertmanager",
        [
            ALERTMANAGER,
            f"--config.file={base / 'alertmanager.yml'}",
            f"--storage.path={base / 'alertmanager-data'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",
        ],
        port=am_port,
        cwd=base,
    )
    return [prometheus, alertmanager]
