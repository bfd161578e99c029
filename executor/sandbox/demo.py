"""`make demo`: one incident, end to end, against the sandbox.

Brings the sandbox up, fills web1's data disk with old logs (its /health turns
500), runs the shipped `disk-pressure` runbook through the real CLI as a
responder, lets a second person approve it from "another terminal", and shows
the fix, the audit timeline and `audit verify`. The sandbox is taken down
however the demo ends. Every command is printed before it runs, so the
output doubles as a walkthrough.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from executor.sandbox import down, inject, up

REPO = Path(__file__).resolve().parents[2]
RUNBOOK = [sys.executable, "-m", "executor.cli"]
HOST = "web1"
CONFIG = """\
user: responder
identities:
  responder: {groups: [app-oncall]}
  alice: {groups: [storage-oncall]}
"""


def _say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def _cli(
    args: list[str], env: dict[str, str], *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    print("$ runbook " + " ".join(shlex.quote(a) for a in args), flush=True)
    done = subprocess.run([*RUNBOOK, *args], env=env, cwd=REPO, text=True, capture_output=True)
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    if check and done.returncode != 0:
        raise SystemExit(f"demo: `runbook {' '.join(args)}` exited {done.returncode}")
    return done


def _wait_for_approval(env: dict[str, str], deadline: float) -> str:
    while time.monotonic() < deadline:
        listed = subprocess.run(
            [*RUNBOOK, "runs", "--json"], env=env, cwd=REPO, text=True, capture_output=True
        )
        runs = json.loads(listed.stdout or "[]") if listed.returncode == 0 else []
        if runs and runs[0]["status"] == "waiting":
            return str(runs[0]["id"])
        if runs and runs[0]["status"] in ("failed", "cancelled", "rolled_back", "succeeded"):
            raise SystemExit(f"demo: the run ended {runs[0]['status']} before asking for approval")
        time.sleep(0.3)
    raise SystemExit("demo: the run did not reach its approval within the time limit")


def main() -> int:
    home = Path(tempfile.mkdtemp(prefix="runbook-demo-"))
    _say("bring the sandbox up: sshd hosts trusting an OpenBao SSH CA, OpenBao, services")
    info = up()
    try:
        (home / "config.yaml").write_text(CONFIG, encoding="utf-8")
        env = {**os.environ, **info.env(), "RUNBOOK_HOME": str(home), "RUNBOOK_CATALOG": "runbooks"}
        env.pop("VAULT_ADMIN_TOKEN", None)  # the executor gets the AppRole only
        _say("the catalog validates and lints clean")
        _cli(["validate", "runbooks/"], env)
        _cli(["list"], env)
        _say(f"break something: fill {HOST}'s data disk with old logs")
        for line in inject(info, HOST, "fill-disk"):
            print(line)
        app_port = info.host(HOST).app_port
        print(f"$ curl http://127.0.0.1:{app_port}/health")
        print(_health(app_port))
        _say("a responder runs the disk-pressure runbook (it will wait for storage on-call)")
        print(f"$ runbook run disk-pressure --input host={HOST} --yes   # in the background")
        runner = subprocess.Popen(
            [*RUNBOOK, "run", "disk-pressure", "--input", f"host={HOST}", "--yes"],
            env=env,
            cwd=REPO,
            text=True,
        )
        try:
            run_id = _wait_for_approval(env, time.monotonic() + 120)
            _say("another terminal: alice (storage-oncall) reads the plan, then approves")
            _cli(["status", run_id], env)
            _cli(["approve", run_id, "approve", "--as", "alice", "--reason", "old logs only"], env)
            code = runner.wait(timeout=300)
        finally:
            if runner.poll() is None:
                runner.terminate()
        if code != 0:
            raise SystemExit(f"demo: the run exited {code}")
        print(f"$ curl http://127.0.0.1:{app_port}/health")
        print(_health(app_port))
        _say("the audit timeline of the run, and the hash chain checked")
        _cli(["audit", "show", run_id], env)
        _cli(["audit", "verify"], env)
        _say("done: the disk was cleaned after approval, verified, and every action audited")
        return 0
    finally:
        _say("take the sandbox down")
        down()
        print(f"(state of this demo kept in {home})")


def _health(port: int) -> str:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
            return f"{answer.status} {answer.read().decode().strip()}"
    except urllib.error.HTTPError as exc:
        return f"{exc.code} {exc.read().decode().strip()}"
    except OSError as exc:
        return f"unreachable: {exc}"


if __name__ == "__main__":
    raise SystemExit(main())
