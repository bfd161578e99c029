#!/usr/bin/env python3
"""demoapp: the small service every sandbox host runs, so there is something to break.

Standard library only: it runs as the host's login user with whatever python3
that user can execute. It serves

  GET /health   200 "ok", or 500 with the reason (broken release, invalid
                config, full disk)
  GET /metrics  Prometheus text format

and re-reads its config, disk and queue on every request, so a fault shows up
at once and a repair does too. The release it reports is the one it was
started from (the directory this file lives in): switching ``~/app/current``
takes effect on restart, as with a real deploy.

Environment: APP_PORT (required), HOST_NAME, HOME.
"""

from __future__ import annotations

import configparser
import contextlib
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HOME = Path(os.environ.get("HOME", "."))
RELEASE_DIR = Path(__file__).resolve().parent
CONFIG = HOME / "app" / "config.ini"
DISK_CONF = HOME / "app" / "disk.conf"
DATA = HOME / "data"
QUEUE = HOME / "queue" / "incoming"
WORKER_PID = HOME / "run" / "worker.pid"
LB_BACKENDS = HOME / "lb" / "backends"
DISK_FULL_PERCENT = 95
LOG_LEVELS = ("debug", "info", "warning", "error")


def release() -> tuple[str, str | None]:
    """(version, broken reason or None) of the release this process runs."""
    version = (RELEASE_DIR / "VERSION").read_text().strip()
    broken = RELEASE_DIR / "BROKEN"
    return version, (broken.read_text().strip() or "marked broken") if broken.exists() else None


def config_problem() -> str | None:
    parser = configparser.ConfigParser()
    try:
        if not parser.read(CONFIG):
            return f"{CONFIG} is missing"
        app = parser["app"]
        workers = int(app["workers"])
        timeout = int(app["timeout_seconds"])
        level = app["log_level"]
    except (configparser.Error, KeyError, ValueError) as exc:
        return f"{CONFIG}: {type(exc).__name__}: {exc}".replace("\n", " ")
    if not 1 <= workers <= 64:
        return f"{CONFIG}: workers must be 1..64, not {workers}"
    if not 1 <= timeout <= 3600:
        return f"{CONFIG}: timeout_seconds must be 1..3600, not {timeout}"
    if level not in LOG_LEVELS:
        return f"{CONFIG}: log_level must be one of {', '.join(LOG_LEVELS)}, not {level!r}"
    return None


def disk_used_percent() -> int:
    """Used share of the simulated disk: apparent sizes under ~/data against disk.conf."""
    parser = configparser.ConfigParser()
    parser.read_string("[disk]\n" + DISK_CONF.read_text())
    capacity = int(parser["disk"]["capacity_mb"]) * 1024 * 1024
    used = 0
    for root, _dirs, files in os.walk(DATA):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                used += os.lstat(os.path.join(root, name)).st_size
    return used * 100 // capacity


def queue_depth() -> int:
    try:
        return sum(1 for _ in QUEUE.iterdir())
    except FileNotFoundError:
        return 0


def running(pid: int) -> bool:
    """The process exists and is not a zombie (which still answers kill -0)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = next((line.split()[1] for line in status.splitlines() if line.startswith("State:")), "")
    return state not in ("", "Z", "X")


def worker_up() -> int:
    try:
        return int(running(int(WORKER_PID.read_text().strip())))
    except (FileNotFoundError, ValueError):
        return 0


def lb_backends() -> list[tuple[str, str]]:
    """(backend, state) pairs from the load balancer membership file, on lb hosts."""
    try:
        lines = LB_BACKENDS.read_text().splitlines()
    except FileNotFoundError:
        return []
    pairs = []
    for line in lines:
        fields = line.split()
        if len(fields) == 3 and not line.startswith("#"):
            pairs.append((fields[0], fields[2]))
    return pairs


def health() -> tuple[int, str]:
    version, broken = release()
    if broken:
        return 500, f"release {version} is broken: {broken}"
    problem = config_problem()
    if problem:
        return 500, f"config invalid: {problem}"
    used = disk_used_percent()
    if used >= DISK_FULL_PERCENT:
        return 500, f"disk full: {used}% of the data disk used"
    return 200, "ok"


def metrics() -> str:
    version, broken = release()
    host = os.environ.get("HOST_NAME", "unknown")
    gauges = [
        ("demoapp_up", "1 while the process serves requests", "", 1),
        ("demoapp_config_valid", "1 if config.ini is valid", "", int(config_problem() is None)),
        ("demoapp_disk_used_percent", "used share of the data disk", "", disk_used_percent()),
        ("demoapp_queue_depth", "messages waiting in the queue", "", queue_depth()),
        ("demoapp_worker_up", "1 if the queue worker runs", "", worker_up()),
        ("demoapp_release_info", "the running release", f'version="{version}"', 1),
        ("demoapp_release_broken", "1 if the running release is broken", "", int(bool(broken))),
    ]
    lines = []
    for name, help_text, labels, value in gauges:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        label_text = f'host="{host}"' + (f",{labels}" if labels else "")
        lines.append(f"{name}{{{label_text}}} {value}")
    backends = lb_backends()
    if backends:
        name = "demoapp_lb_backend_enabled"
        lines += [f"# HELP {name} 1 if the backend takes traffic", f"# TYPE {name} gauge"]
        for backend, state in backends:
            lines.append(f'{name}{{host="{host}",backend="{backend}"}} {int(state == "enabled")}')
    return "\n".join(lines) + "\n"


class Handler(BaseHTTPRequestHandler):
    server_version = "demoapp"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/health":
            status, body = health()
            self._reply(status, body + "\n", "text/plain; charset=utf-8")
        elif path == "/metrics":
            self._reply(200, metrics(), "text/plain; version=0.0.4; charset=utf-8")
        else:
            self._reply(404, "try /health or /metrics\n", "text/plain; charset=utf-8")

    def _reply(self, status: int, body: str, content_type: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """Requests are not logged: Prometheus scrapes would drown the log."""


def main() -> int:
    port = int(os.environ["APP_PORT"])
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True

    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    version, _ = release()
    print(f"demoapp {version} listening on 127.0.0.1:{port} (pid {os.getpid()})", flush=True)
    server.serve_forever(poll_interval=0.2)
    print("demoapp stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
