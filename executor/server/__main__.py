"""``python -m executor.server``: the process ``runbook serve`` becomes.

The CLI and the server are two faces that must not import each other (the
layer contract), so ``runbook serve`` checks its options and replaces itself
with this entry point. Exit codes are the CLI's (2 usage, 5 state or audit).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from executor.config import load_settings
from executor.errors import RunbookError
from executor.server.app import serve
from executor.server.config import load_server_config
from executor.server.runtime import Runtime
from executor.wiring import build_services


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runbook serve")
    parser.add_argument("--home", type=Path)
    parser.add_argument("--catalog", type=Path)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--server-config", type=Path)
    parser.add_argument("--routes", type=Path)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--log-level", default="info")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = load_settings(config_file=args.config, home=args.home, catalog=args.catalog)
        config = load_server_config(
            args.server_config,
            host=args.host,
            port=args.port,
            routes=args.routes,
            workers=args.workers,
        )
        runtime = Runtime(settings, config, build_services(settings))
    except RunbookError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if not len(runtime.tokens):
        print(
            "warning: no tokens configured: every /v1 call will be refused (401)", file=sys.stderr
        )
    serve(runtime, log_level=args.log_level)
    if runtime.unfinished:
        # Steps still executing after the grace stay "running" in the store (the next
        # server marks them unknown); waiting for their threads would hold the exit.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
