"""A real `runbook serve` process for integration tests, always stopped afterwards.

Imported by the ``test_serve_*`` modules (it holds no tests). The server runs
as its own process on a free 127.0.0.1 port, exactly as a person starts it
(`runbook ... serve`), and is stopped with SIGTERM (SIGKILL if it hangs).
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
RUNBOOK = [sys.executable, "-m", "executor.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def token_entry(identity: str, token: str, groups: list[str]) -> dict[str, Any]:
    return {
        "identity": identity,
        "groups": groups,
        "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
    }


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    home: Path
    log: Path

    def call(
        self, method: str, path: str, token: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.request(method, self.url + path, headers=headers, timeout=30, **kwargs)

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited ({self.proc.returncode}):\n{self.tail()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"the server was not ready within {timeout}s:\n{self.tail()}")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then SIGKILL if it does not exit within ``timeout``; its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


@contextmanager
def serve(
    home: Path,
    catalog: Path,
    server_config: Path,
    *,
    port: int,
    env: Mapping[str, str] | None = None,
    ready: bool = True,
) -> Iterator[Server]:
    """Start `runbook serve` and always stop it (SIGTERM, then SIGKILL)."""
    home.mkdir(parents=True, exist_ok=True)
    log = home / f"serve-{port}-{time.monotonic_ns()}.log"
    argv = [
        *RUNBOOK,
        "--home",
        str(home),
        "--catalog",
        str(catalog),
        "serve",
        "--server-config",
        str(server_config),
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    full_env = {**os.environ, **(env or {}), "PYTHONPATH": str(REPO)}
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=full_env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    server = Server(proc, f"http://127.0.0.1:{port}", home, log)
    try:
        if ready:
            server.wait_ready()
        yield server
    finally:
        server.stop()


def wait_for(predicate: Any, timeout: float, what: str, server: Server | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    detail = f"\nserver log:\n{server.tail()}" if server else ""
    raise AssertionError(f"{what} did not happen within {timeout}s{detail}")
