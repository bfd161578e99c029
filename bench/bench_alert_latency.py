"""From an alert arriving at `runbook serve` to the first remote command starting on the host.

Brings up a sandbox of 2 hosts in a temporary directory (always taken down),
starts `runbook serve` against it with a one-step runbook whose SSH command
writes the host's clock (``date +%s.%N``) to a file in the host's home, and
posts alerts to the webhook one at a time, each for a new fingerprint. The
latency of an alert is the host's timestamp minus the wall-clock time just
before the webhook request was sent (same machine, same clock). Everything
the executor does is inside: authentication, validation, the durable write
of the alert (audit and store), routing, deduplication, budget, the run's
start-time guards, state and audit records, a Vault child token and a signed
SSH certificate, and the SSH login itself.

The floor is one cold paramiko login and command with the same kind of
certificate (ed25519 key, OpenBao-signed for principal ``ops``), measured in
the same run, interleaved with the alerts. Target: p99 of the alert latency
under 1.5x the median floor, i.e. everything but the login costs less than
half a login.

    .venv/bin/python bench/bench_alert_latency.py [--alerts 200] [--gap 0.05]
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import paramiko

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from executor.sandbox import HostInfo, SandboxInfo, down, sign_certificate, up  # noqa: E402
from executor.sandbox.alerting import load_alerting  # noqa: E402
from executor.sandbox.keys import ed25519_keypair  # noqa: E402

TARGET_RATIO = 1.5
STAMPS = "bench-latency.log"

RUNBOOK = """\
apiVersion: runbook/v1
kind: Runbook
metadata: {name: bench-first-command, version: 1.0.0}
inputs:
  host: {type: string, pattern: "^[a-z0-9]+$"}
  n: {type: integer, minimum: 0}
targets:
  node: {hosts: "{{ inputs.host }}"}
credentials:
  ops_ssh: {vault_ssh: {role: responder, principals: [ops], ttl: 10m}}
policy:
  automation: auto
  max_hosts: 1
  timeout: 5m
steps:
  - id: stamp
    ssh:
      target: node
      credential: ops_ssh
      command: "echo {{ inputs.n }} $(date +%s.%N) >> ~/bench-latency.log"
    timeout: 30s
"""
ROUTES = """\
apiVersion: runbook/v1
kind: Routes
routes:
  - name: bench
    match: ['alertname = BenchLatency']
    runbook: bench-first-command
    inputs: {host: "{{ alert.labels.host }}", n: "{{ alert.labels.n }}"}
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def cold_login(info: SandboxInfo, host: HostInfo) -> float:
    """One cold paramiko connect + certificate auth + command to its exit; seconds."""
    pair = ed25519_keypair()
    cert = sign_certificate(info, pair.public_openssh, ["ops"], "10m", key_id="bench-floor")
    key = paramiko.Ed25519Key(file_obj=io.StringIO(pair.private_openssh))
    key.load_certificate(cert)
    pinned = paramiko.HostKeys(str(info.known_hosts))
    name = f"[{host.address}]:{host.port}"
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    for key_type, host_key in (pinned.lookup(name) or {}).items():
        client.get_host_keys().add(name, key_type, host_key)
    start = time.perf_counter()
    try:
        client.connect(
            host.address,
            port=host.port,
            username=host.user,
            pkey=key,
            look_for_keys=False,
            allow_agent=False,
            timeout=10,
        )
        _, stdout, _ = client.exec_command("date +%s.%N")
        stdout.channel.recv_exit_status()
        return time.perf_counter() - start
    finally:
        client.close()


def payload(n: int, host: str) -> bytes:
    alert = {
        "status": "firing",
        "labels": {"alertname": "BenchLatency", "host": host, "n": str(n)},
        "annotations": {},
        "startsAt": "2026-01-01T00:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": f"{n:016x}",
    }
    body = {"version": "4", "status": "firing", "receiver": "r", "groupKey": "g", "alerts": [alert]}
    return json.dumps(body).encode()


def run(args: argparse.Namespace) -> bool:
    state_dir = Path(tempfile.mkdtemp(prefix="runbook-bench-alerts-", dir="/tmp"))
    work = Path(tempfile.mkdtemp(prefix="runbook-bench-serve-"))
    server = None
    finished = False
    try:
        info = up(hosts=2, state_dir=state_dir, alerting=True)
        alerting = load_alerting(state_dir)
        host = info.hosts[0]
        catalog = work / "catalog"
        catalog.mkdir()
        (catalog / "bench.yaml").write_text(RUNBOOK)
        (catalog / "routes.yaml").write_text(ROUTES)
        env = {**os.environ, **info.env(), "PYTHONPATH": str(REPO)}
        log = (work / "serve.log").open("wb")
        server = subprocess.Popen(
            [sys.executable, "-m", "executor.cli", "--home", str(work / "home"), "--catalog",
             str(catalog), "serve", "--server-config", str(alerting.serve_config),
             "--routes", str(catalog / "routes.yaml"), "--log-level", "warning"],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
        )  # fmt: skip
        url = alerting.serve_url
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(f"runbook serve did not start; see {work / 'serve.log'}")
            time.sleep(0.05)
        token = alerting.token("alertmanager")
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        stamps = Path(host.home) / STAMPS
        sent: dict[int, float] = {}
        floors: list[float] = []
        with httpx.Client(timeout=30) as http:
            for n in range(args.warmup + args.alerts):
                body = payload(n, host.name)
                sent[n] = time.time()
                answer = http.post(url + "/v1/alerts/alertmanager", content=body, headers=headers)
                if answer.status_code != 200:
                    raise SystemExit(f"alert {n} refused: {answer.status_code} {answer.text}")
                _wait_for_stamp(stamps, n)
                if n % args.floor_every == 0:
                    floors.append(cold_login(info, host))
                time.sleep(args.gap)
        written = {}
        for line in stamps.read_text().splitlines():
            number, stamp = line.split()
            written[int(number)] = float(stamp)
        latencies = [written[n] - sent[n] for n in sorted(sent) if n >= args.warmup]
        counted = {n: sent[n] for n in sent if n >= args.warmup}
        breakdown(work / "home" / "audit.jsonl", counted, written)
        finished = True
        return report(latencies, floors)
    finally:
        if server is not None and server.poll() is None:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
        down(state_dir)
        if state_dir.exists():
            state_dir.rmdir()
        if finished:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept the server's state and log for a look: {work}")


def _wait_for_stamp(stamps: Path, n: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    marker = f"{n} "
    while time.monotonic() < deadline:
        try:
            if any(line.startswith(marker) for line in stamps.read_text().splitlines()[-3:]):
                return
        except FileNotFoundError:
            pass
        time.sleep(0.002)
    raise SystemExit(f"alert {n}: no command reached the host within {timeout:.0f}s")


STAGES = (
    ("webhook stored", "alerts.received"),
    ("run recorded", "run.requested"),
    ("step intent", "step.intent"),
    ("certificate issued", "credential.issued"),
    ("ssh connecting", "ssh.host.started"),
)


def breakdown(audit: Path, sent: dict[int, float], written: dict[int, float]) -> None:
    """Median time between the stages of an alert's path, from the audit log's timestamps."""
    from executor.audit import iter_records

    marks: dict[int, dict[str, float]] = {n: {} for n in sent}
    run_of: dict[str, int] = {}
    for record in iter_records(audit):
        stamp = datetime.strptime(record.ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        at = stamp.timestamp()
        if record.event == "alerts.received":
            for alert in record.data["alerts"]:
                n = int(alert["labels"]["n"])
                if n in marks:
                    marks[n]["alerts.received"] = at
        elif record.event == "run.requested":
            n = int(record.data["alert"]["labels"]["n"])
            run_of[record.run_id or ""] = n
            if n in marks:
                marks[n]["run.requested"] = at
        elif record.run_id in run_of and run_of[record.run_id] in marks:
            marks[run_of[record.run_id]].setdefault(record.event, at)
    previous = "request sent"
    print("median time from the previous stage (audit timestamps):")
    for label, event in STAGES:
        gaps = []
        for n, when in sent.items():
            before = when if previous == "request sent" else marks[n].get(previous)
            if before is not None and event in marks[n]:
                gaps.append(marks[n][event] - before)
        if gaps:
            print(f"  {label:<22} {statistics.median(gaps) * 1000:7.1f} ms")
        previous = event
    tail = [written[n] - marks[n][previous] for n in sent if previous in marks[n]]
    if tail:
        print(f"  {'command on the host':<22} {statistics.median(tail) * 1000:7.1f} ms")
    worst = sorted(sent, key=lambda n: written[n] - sent[n])[-3:]
    for n in reversed(worst):
        points = [sent[n]] + [marks[n].get(e, float("nan")) for _, e in STAGES] + [written[n]]
        gaps = " ".join(f"{(b - a) * 1000:6.1f}" for a, b in itertools.pairwise(points))
        print(f"  slow alert {n:>3}: {(written[n] - sent[n]) * 1000:6.1f} ms = {gaps}")


def report(latencies: list[float], floors: list[float]) -> bool:
    floor = statistics.median(floors)
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{len(latencies)} alerts, one at a time; load average {load}")
    print(f"alert -> first remote command   p50 {p50 * 1000:7.1f} ms   p99 {p99 * 1000:7.1f} ms"
          f"   max {max(latencies) * 1000:7.1f} ms")  # fmt: skip
    print(f"cold paramiko login + command   median {floor * 1000:6.1f} ms over {len(floors)} "
          f"(min {min(floors) * 1000:.1f}, max {max(floors) * 1000:.1f})")  # fmt: skip
    ratio = p99 / floor
    ok = ratio < TARGET_RATIO
    print(f"p50 / floor {p50 / floor:.2f}x; target p99 < {TARGET_RATIO}x floor: {ratio:.2f}x "
          f"{'met' if ok else 'NOT MET'}")  # fmt: skip
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alerts", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=5, help="alerts not counted (first runs)")
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between alerts")
    parser.add_argument("--floor-every", type=int, default=5, help="a floor login every N alerts")
    return 0 if run(parser.parse_args()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
