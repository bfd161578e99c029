"""The http action against a real HTTP server on 127.0.0.1 (stdlib, in a thread)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from executor.actions.http import HttpRunner
from executor.errors import ActionError
from executor.model import HttpAction, WaitAction
from executor.ports import ActionRequest, ActionResult, CancelToken

SECRET = "hunter2"


def mask(text: str) -> str:
    return text.replace(SECRET, "***")


@dataclass
class Server:
    base: str
    requests: list[str] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server: _TestServer

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        self._route()

    def do_POST(self) -> None:
        self._route()

    def _route(self) -> None:
        self.server.seen.append(f"{self.command} {self.path}")
        path = self.path
        if path == "/health":
            self._send(200, {"status": "up", "token": SECRET, "pin": 4242, "n": 3})
        elif path.startswith("/status/"):
            self._send(
                int(path.rsplit("/", 1)[1]), "service unavailable\nsecond line", "text/plain"
            )
        elif path == "/echo":
            length = int(self.headers.get("content-length", 0))
            body = self.rfile.read(length).decode()
            self._send(
                200, {"method": self.command, "x_test": self.headers.get("x-test"), "body": body}
            )
        elif path == "/big":
            self._send(200, "x" * (3 * 1024 * 1024), "text/plain")
        elif path == "/badjson":
            self._send(200, "{not json", "application/json", raw=True)
        elif path == "/slow":
            self.server.stopping.wait(30)  # answers only when the fixture shuts down
        else:
            self._send(404, "no such path", "text/plain")

    def _send(
        self, status: int, payload: Any, content_type: str = "application/json", raw: bool = False
    ) -> None:
        text = payload if raw or content_type != "application/json" else json.dumps(payload)
        body = text.encode()
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.send_header("x-secret-echo", SECRET)
        self.end_headers()
        self.wfile.write(body)


class _TestServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    stopping: threading.Event
    seen: list[str]


@pytest.fixture
def server() -> Iterator[Server]:
    httpd = _TestServer(("127.0.0.1", 0), _Handler)
    httpd.stopping = threading.Event()
    httpd.seen = []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield Server(base=f"http://127.0.0.1:{httpd.server_address[1]}", requests=httpd.seen)
    finally:
        httpd.stopping.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def runner() -> HttpRunner:
    return HttpRunner(trust_env=False)


def call(
    runner: HttpRunner,
    url: str,
    cancel: CancelToken | None = None,
    *,
    timeout: float | None = 5.0,
    dry_run: bool = False,
    **fields: Any,
) -> ActionResult:
    action = HttpAction(url=url, **fields)
    request = ActionRequest(
        run_id="run-1", step_id="probe", action=action, timeout=timeout, dry_run=dry_run, mask=mask
    )
    return runner.run(request, cancel or CancelToken())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_expected_status_passes_and_json_is_parsed_and_masked(
    runner: HttpRunner, server: Server
) -> None:
    result = call(runner, f"{server.base}/health")
    assert result.ok and result.error is None
    assert result.data["status"] == 200
    assert result.data["json"] == {"status": "up", "token": "***", "pin": 4242, "n": 3}
    assert SECRET not in result.stdout and result.stdout == result.data["body"]
    assert result.data["headers"]["content-type"] == "application/json"
    assert result.data["headers"]["x-secret-echo"] == "***"
    assert result.as_context()["json"]["status"] == "up"  # what assert/outputs will read


def test_unexpected_status_fails_with_a_useful_message(runner: HttpRunner, server: Server) -> None:
    result = call(runner, f"{server.base}/status/503")
    assert not result.ok and result.data["status"] == 503
    assert result.error == (
        f"GET {server.base}/status/503 answered 503, expected 200: service unavailable"
    )
    assert result.data["json"] is None


def test_expect_status_accepts_listed_codes(runner: HttpRunner, server: Server) -> None:
    assert call(runner, f"{server.base}/status/503", expect_status=(200, 503)).ok
    assert not call(runner, f"{server.base}/status/204", expect_status=(200,)).ok


def test_post_sends_json_and_headers(runner: HttpRunner, server: Server) -> None:
    result = call(
        runner, f"{server.base}/echo", method="POST", json={"a": 1}, headers={"X-Test": "yes"}
    )
    assert result.ok
    assert result.data["json"] == {"method": "POST", "x_test": "yes", "body": '{"a":1}'}


def test_post_sends_a_raw_body(runner: HttpRunner, server: Server) -> None:
    result = call(runner, f"{server.base}/echo", method="POST", body="plain text")
    assert result.data["json"]["body"] == "plain text"


def test_secret_in_a_numeric_json_value_is_masked(server: Server) -> None:
    request = ActionRequest(
        run_id="r",
        step_id="s",
        action=HttpAction(url=f"{server.base}/health"),
        timeout=5,
        mask=lambda t: t.replace("4242", "***"),
    )
    result = HttpRunner(trust_env=False).run(request, CancelToken())
    assert result.data["json"]["pin"] == "***"


def test_invalid_json_body_gives_none(runner: HttpRunner, server: Server) -> None:
    result = call(runner, f"{server.base}/badjson")
    assert result.ok and result.data["json"] is None and result.stdout == "{not json"


def test_body_is_bounded(server: Server) -> None:
    runner = HttpRunner(trust_env=False, max_body=1024)
    result = call(runner, f"{server.base}/big")
    assert result.ok
    assert result.stdout.startswith("x" * 1024)
    assert result.stdout.endswith("[... body truncated after 1024 bytes ...]")
    assert len(result.stdout) < 1200


def test_connection_refused_names_the_url(runner: HttpRunner) -> None:
    url = f"http://127.0.0.1:{free_port()}/health"
    result = call(runner, url)
    assert not result.ok and not result.timed_out
    assert (result.error or "").startswith(f"cannot connect to {url}: ")
    assert "check that the service is up" in (result.error or "")


def test_unsupported_scheme_is_a_failure_not_a_crash(runner: HttpRunner) -> None:
    result = call(runner, "ftp://127.0.0.1/file")
    assert not result.ok and "GET ftp://127.0.0.1/file failed" in (result.error or "")


def test_timeout_bounds_the_whole_exchange(runner: HttpRunner, server: Server) -> None:
    started = time.monotonic()
    result = call(runner, f"{server.base}/slow", timeout=0.5)
    assert time.monotonic() - started < 1.5
    assert result.timed_out and not result.ok
    assert result.error == f"timed out after 500ms waiting for GET {server.base}/slow"


def test_cancel_abandons_the_request_promptly(runner: HttpRunner, server: Server) -> None:
    cancel = CancelToken()
    timer = threading.Timer(0.3, cancel.cancel, ["kill-switch engaged by alice"])
    timer.start()
    try:
        started = time.monotonic()
        result = call(runner, f"{server.base}/slow", cancel, timeout=30)
        elapsed = time.monotonic() - started
    finally:
        timer.cancel()
    assert elapsed < 0.3 + 0.5
    assert result.cancelled and not result.ok
    assert (
        result.error == f"cancelled: kill-switch engaged by alice; GET {server.base}/slow abandoned"
    )


def test_dry_run_sends_nothing(runner: HttpRunner, server: Server) -> None:
    result = call(runner, f"{server.base}/health?key={SECRET}", dry_run=True, method="POST")
    assert result.ok
    assert result.data == {"dry_run": True, "would_run": f"POST {server.base}/health?key=***"}
    assert server.requests == []
    call(runner, f"{server.base}/health")
    assert server.requests == ["GET /health"]  # the server does count real requests


def test_works_when_called_from_inside_an_event_loop(runner: HttpRunner, server: Server) -> None:
    async def inside() -> ActionResult:
        return call(runner, f"{server.base}/health")

    assert asyncio.run(inside()).ok


def test_wrong_action_kind_is_a_wiring_error(runner: HttpRunner) -> None:
    request = ActionRequest(run_id="r", step_id="s", action=WaitAction(1.0))
    with pytest.raises(ActionError, match="http runner got a 'wait' action"):
        runner.run(request, CancelToken())
