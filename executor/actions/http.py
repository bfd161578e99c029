"""The ``http`` action: health checks, Prometheus queries, webhooks (httpx).

The request runs on a private asyncio loop so that it can be abandoned at
once: the kill-switch cancels the task, which closes the connection, rather
than waiting for a socket timeout. The step timeout bounds the whole
exchange (connect, send, headers and body), not each read.

The body is read up to a bound and masked before anyone sees it; a JSON
body is parsed from the raw text and masked value by value, so a secret
echoed inside a JSON string is hidden even when the text form escapes it.
Nothing is sent in a dry run, not even a GET: a health endpoint may have
side effects, and "touch nothing" has no exceptions.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from executor.actions import expect_action
from executor.actions.process import MIB
from executor.model import HttpAction, format_duration
from executor.ports import ActionRequest, ActionResult, CancelToken

T = TypeVar("T")
Mask = Callable[[str], str]

DEFAULT_TIMEOUT = 30.0


class _Cancelled(Exception):
    pass


class _TimedOut(Exception):
    pass


@dataclass(frozen=True)
class _Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    truncated: bool
    encoding: str
    content_type: str


class HttpRunner:
    """Sends one request; ``expect_status`` decides ``ok``.

    ``default_timeout`` applies when the step has none. ``verify``,
    ``trust_env`` (proxies and CA bundle from the environment) and
    ``follow_redirects`` are passed to httpx; redirects are not followed by
    default, as with curl, so a health check does not pass by landing on a
    login page.
    """

    kind = "http"

    def __init__(
        self,
        *,
        default_timeout: float = DEFAULT_TIMEOUT,
        max_body: int = MIB,
        verify: bool | str = True,
        trust_env: bool = True,
        follow_redirects: bool = False,
        tick: float = 0.05,
    ) -> None:
        self.default_timeout = default_timeout
        self.max_body = max_body
        self.verify = verify
        self.trust_env = trust_env
        self.follow_redirects = follow_redirects
        self.tick = tick
        self._ssl: ssl.SSLContext | None = None

    def _ssl_context(self) -> ssl.SSLContext:
        """Built once: loading the CA bundle costs more than a loopback request."""
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context(verify=self.verify, trust_env=self.trust_env)
        return self._ssl

    def run(self, request: ActionRequest, cancel: CancelToken) -> ActionResult:
        action = expect_action(request, HttpAction, self.kind)
        mask = request.mask
        target = f"{action.method} {action.url}"
        if request.dry_run:
            return ActionResult(ok=True, data={"dry_run": True, "would_run": mask(target)})
        timeout = request.timeout if request.timeout is not None else self.default_timeout
        started = time.monotonic()
        try:
            reply = _run_coroutine(self._exchange(action, timeout, cancel))
        except _Cancelled:
            reason = cancel.reason or "no reason given"
            return ActionResult(
                ok=False, cancelled=True, error=mask(f"cancelled: {reason}; {target} abandoned")
            )
        except (_TimedOut, httpx.TimeoutException):
            return ActionResult(
                ok=False,
                timed_out=True,
                error=mask(f"timed out after {format_duration(timeout)} waiting for {target}"),
            )
        except httpx.ConnectError as exc:
            return ActionResult(
                ok=False,
                error=mask(
                    f"cannot connect to {action.url}: {exc or type(exc).__name__}; "
                    "check that the service is up and the address and port are right"
                ),
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return ActionResult(
                ok=False, error=mask(f"{target} failed: {exc or type(exc).__name__}")
            )
        return _result(reply, action, mask, time.monotonic() - started)

    async def _exchange(self, action: HttpAction, timeout: float, cancel: CancelToken) -> _Reply:
        """Race the request against the deadline and the cancel token."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            verify=self._ssl_context(),
            trust_env=self.trust_env,
            follow_redirects=self.follow_redirects,
        ) as client:
            task = asyncio.ensure_future(self._send(client, action))
            try:
                while True:
                    if cancel.cancelled:
                        raise _Cancelled
                    left = deadline - loop.time()
                    if left <= 0:
                        raise _TimedOut
                    done, _ = await asyncio.wait({task}, timeout=min(self.tick, left))
                    if done:
                        return task.result()
            finally:
                if not task.done():
                    task.cancel()
                    await asyncio.wait({task}, timeout=1.0)  # let it close its connection

    async def _send(self, client: httpx.AsyncClient, action: HttpAction) -> _Reply:
        payload: dict[str, Any] = {}
        if action.json is not None:
            payload["json"] = action.json
        elif action.body is not None:
            payload["content"] = action.body.encode()
        headers = {str(k): str(v) for k, v in action.headers.items()}
        async with client.stream(action.method, action.url, headers=headers, **payload) as response:
            body = bytearray()
            truncated = False
            async for chunk in response.aiter_bytes():
                room = self.max_body - len(body)
                body += chunk[:room]
                if len(chunk) > room:
                    truncated = True
                    break
            return _Reply(
                status=response.status_code,
                headers=dict(response.headers.items()),
                body=bytes(body),
                truncated=truncated,
                encoding=response.charset_encoding or "utf-8",
                content_type=response.headers.get("content-type", ""),
            )


def _result(reply: _Reply, action: HttpAction, mask: Mask, elapsed: float) -> ActionResult:
    raw = _decode(reply.body, reply.encoding)
    text = mask(raw)
    if reply.truncated:
        text += f"\n[... body truncated after {len(reply.body)} bytes ...]"
    parsed = None
    if not reply.truncated and "json" in reply.content_type.lower():
        try:
            parsed = _mask_json(json.loads(raw), mask)
        except ValueError:
            parsed = None
    expected = action.expect_status or (200,)
    ok = reply.status in expected
    error = None
    if not ok:
        wanted = ", ".join(str(s) for s in expected)
        error = f"{action.method} {action.url} answered {reply.status}, expected {wanted}"
        first = text.strip().splitlines()[0][:200] if text.strip() else ""
        error = mask(f"{error}: {first}" if first else error)
    return ActionResult(
        ok=ok,
        stdout=text,
        error=error,
        data={
            "status": reply.status,
            "json": parsed,
            "body": text,
            "headers": {k: mask(v) for k, v in reply.headers.items()},
            "elapsed": round(elapsed, 3),
        },
    )


def _decode(body: bytes, encoding: str) -> str:
    try:
        return body.decode(encoding, errors="replace")
    except LookupError:  # the server named a charset Python does not know
        return body.decode("utf-8", errors="replace")


def _mask_json(value: Any, mask: Mask) -> Any:
    """Mask every string, key and number of a parsed JSON document."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, list):
        return [_mask_json(item, mask) for item in value]
    if isinstance(value, dict):
        return {mask(str(k)): _mask_json(v, mask) for k, v in value.items()}
    if isinstance(value, int | float) and not isinstance(value, bool):
        shown = mask(str(value))
        return value if shown == str(value) else shown  # a numeric secret (a PIN) stays hidden
    return value


def _run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run``, also from a thread that already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()
