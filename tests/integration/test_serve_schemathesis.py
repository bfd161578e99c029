"""schemathesis against a real `runbook serve`: every endpoint of /openapi.json, with a
token allowed everything, must never answer a server error, and its answers must fit
the documented status codes, content types and schemas."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_serve_support import free_port, serve, token_entry

pytestmark = pytest.mark.integration

TOKEN = "schemathesis-admin-token-0123456789"
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    )
)

RUNBOOK = """\
apiVersion: runbook/v1
kind: Runbook
metadata: {name: echo-host, version: 1.0.0}
inputs:
  host: {type: string, pattern: "^[a-z0-9.-]+$"}
policy:
  automation: auto
  concurrency: {key: "{{ inputs.host }}", limit: 1}
  cooldown: 1m
steps:
  - id: say
    log: {message: "hello {{ inputs.host }}"}
"""
ROUTES = """\
apiVersion: runbook/v1
kind: Routes
rate: {runs: 20, per: 1h}
routes:
  - name: echo
    match: ['alertname =~ ".+"']
    runbook: echo-host
    inputs: {host: "{{ alert.labels.host }}"}
"""


def test_schemathesis_finds_no_server_error(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    (catalog / "echo-host.yaml").write_text(RUNBOOK)
    (catalog / "routes.yaml").write_text(ROUTES)
    everything = ("read", "approve", "run", "kill", "killswitch", "alerts")
    config = {
        # The fuzzer posts bodies of thousands of alerts; a full backlog answers 503 (by
        # design: Alertmanager retries only on 5xx), which is tested in test_serve_storm.
        "max_queue": 1_000_000,
        "tokens": [token_entry("fuzzer", TOKEN, ["operators"])],
        "permissions": {name: ["operators"] for name in everything},
    }
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(config))
    port = free_port()
    with serve(tmp_path / "home", catalog, tmp_path / "serve.yaml", port=port) as server:
        done = subprocess.run(
            [
                str(SCHEMATHESIS),
                "run",
                f"{server.url}/openapi.json",
                "--header",
                f"Authorization: Bearer {TOKEN}",
                "--checks",
                CHECKS,
                "--max-examples",
                "25",
                "--seed",
                "20261122",
                "--no-color",
                "--request-timeout",
                "30",
                "--generation-database",
                "none",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )
        alive = server.call("GET", "/healthz").status_code == 200
    (tmp_path / "schemathesis.txt").write_text(done.stdout + done.stderr)
    failures = done.stdout.find("FAILURES")
    report = done.stdout[failures : failures + 3000] + done.stdout[-1500:] + done.stderr[-1000:]
    assert done.returncode == 0, report
    assert "Tested: 16" in done.stdout, report  # every endpoint
    assert alive
