"""``python -m executor.sandbox up|down|status|fault|ssh``: the sandbox's own command line.

Kept apart from ``runbook sandbox`` (the CLI layer sits above this package and
may wrap these functions) so that ``sandbox/up`` works before anything else
of the executor does. Exit codes: 0 success (status: up), 1 error (status:
partial), 2 usage, 3 status: down.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from executor.sandbox.errors import SandboxError
from executor.sandbox.state import SandboxInfo, load_info

# Each command imports what it needs when it runs: `status`, `down` and `fault`
# then start without hvac and httpx.
FAULT_NAMES = ("kill", "fill-disk", "corrupt-config", "stick-queue", "bad-release", "repair-all")

STATUS_EXIT = {"up": 0, "partial": 1, "down": 3}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sandbox", description="A production-like world on 127.0.0.1 (DESIGN.md section 7)."
    )
    parser.add_argument(
        "--state-dir",
        help="where the world lives (default: $RUNBOOK_SANDBOX_DIR, else sandbox/.state)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="bring the world up (idempotent)")
    p_up.add_argument("--hosts", type=int, default=5, help="number of sshd hosts (default 5)")
    p_up.add_argument(
        "--no-alerting",
        action="store_true",
        help="without Prometheus and Alertmanager (they watch demoapp and page runbook serve)",
    )
    sub.add_parser("down", help="stop every process of the world and remove its state")
    p_status = sub.add_parser("status", help="what runs; exit 0 up, 1 partial, 3 down")
    p_status.add_argument("--json", action="store_true", help="print the report as JSON")
    p_fault = sub.add_parser("fault", help="break a host on purpose, or repair it")
    p_fault.add_argument("host", help="a host name, or 'all'")
    p_fault.add_argument("fault", choices=FAULT_NAMES)
    p_ssh = sub.add_parser("ssh", help="ssh to a host with a fresh 15-minute certificate")
    p_ssh.add_argument("host")
    p_ssh.add_argument("remote_command", nargs=argparse.REMAINDER)
    return parser


def _summary(info: SandboxInfo, seconds: float | None) -> str:
    took = f" in {seconds:.1f}s" if seconds is not None else ""
    lines = [f"sandbox up{took}: {info.state_dir}", f"  OpenBao  {info.vault_addr}"]
    for h in info.hosts:
        groups = ",".join(g for g in h.groups if g != "sandbox")
        lines.append(
            f"  {h.name:<6} ssh 127.0.0.1:{h.port:<5}  user {h.user:<14} "
            f"app :{h.app_port:<5}  {groups}"
        )
    lines += _alerting_lines(info)
    lines += [
        f"  inventory   {info.inventory}",
        f"  known_hosts {info.known_hosts}",
        f"  environment . {info.state_dir}/env.sh",
        "  try: python -m executor.sandbox ssh web1 appctl status",
    ]
    return "\n".join(lines)


def _alerting_lines(info: SandboxInfo) -> list[str]:
    from executor.sandbox.alerting import load_alerting

    try:
        alerting = load_alerting(info.state_dir)
    except SandboxError:
        return []
    return [
        f"  Prometheus   {alerting.prometheus_url}   Alertmanager {alerting.alertmanager_url}",
        f"  runbook serve --server-config {alerting.serve_config}  (port {alerting.serve_port})",
    ]


def _print_status(report: dict[str, Any]) -> None:
    print(f"sandbox {report['state']}: {report['state_dir']}")
    for p in report["processes"]:
        alive = "running" if p["alive"] else "DEAD"
        port = f"port {p['port']} " + ("listening" if p["listening"] else "NOT LISTENING")
        print(f"  {p['name']:<12} pid {p['pid']:<7} {alive:<8} {port if p['port'] else ''}")
    for h in report["hosts"]:
        app = f"demoapp pid {h['demoapp_pid']}" if h["demoapp_pid"] else "demoapp DOWN"
        worker = f"worker pid {h['worker_pid']}" if h["worker_pid"] else "worker DOWN"
        user = "" if h["user_exists"] else f"  user {h['user']} MISSING"
        print(f"  {h['name']:<12} {app:<20} {worker}{user}")
    if report["state"] != "down" and not report["sudoers"]:
        print("  sudoers drop-in MISSING")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except SandboxError as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return exc.exit_code


def _run(args: argparse.Namespace) -> int:
    if args.command == "up":
        from executor.sandbox.world import up

        started = time.monotonic()
        messages: list[str] = []
        info = up(args.hosts, args.state_dir, log=messages.append, alerting=not args.no_alerting)
        for message in messages:
            print(message)
        fresh = not any("already up" in m for m in messages)
        print(_summary(info, time.monotonic() - started if fresh else None))
        return 0
    if args.command == "down":
        from executor.sandbox.lifecycle import down

        down(args.state_dir, log=print)
        return 0
    if args.command == "status":
        from executor.sandbox.lifecycle import status

        report = status(args.state_dir)
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            _print_status(report)
        return STATUS_EXIT[report["state"]]
    if args.command == "fault":
        from executor.sandbox.faults import inject

        for line in inject(load_info(args.state_dir), args.host, args.fault):
            print(line)
        return 0
    if args.command == "ssh":
        from executor.sandbox.access import ssh_argv

        command = ssh_argv(load_info(args.state_dir), args.host, args.remote_command)
        sys.stdout.flush()
        os.execvp(command[0], command)
    return 2


if __name__ == "__main__":
    sys.exit(main())
