"""How much does validating a runbook cost over merely parsing its YAML?

Generates 1,000 runbooks of 20 steps (ssh, local, http and log actions, needs
chains, a ``when`` guard and an ``outputs`` template on every step, input names
that differ between runbooks so expression caches cannot hide the work), then
times, in one process, ``load_runbook`` on all of them against
``yaml.load(text, Loader=yaml.CSafeLoader)`` on the same files (median of 3
interleaved rounds; expression caches are cleared before every round, so every
expression is parsed cold). Target: the ratio is at most 5x.

    .venv/bin/python bench/bench_validate.py [--runbooks N] [--steps N] [--rounds N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from executor import expressions
from executor.validation import load_runbook

TARGET_RATIO = 5.0
ACTIONS = ("ssh", "local", "http", "log")


def _action(kind: str, n: int, r: int) -> list[str]:
    if kind == "ssh":
        return [
            "    ssh:",
            "      target: nodes",
            "      credential: ops_ssh",
            f'      command: "systemctl status svc{n} --no-pager -n {{{{ inputs.lines_{r} }}}}"',
        ]
    if kind == "local":
        command = f"kubectl -n {{{{ inputs.ns_{r} }}}} get pods -l app=a{n}"
        return [f'    local: {{command: "{command}"}}']
    if kind == "http":
        return [
            "    http:",
            f'      url: "http://{{{{ inputs.host_{r} }}}}:9090/api/v1/query?query=up{n}"',
            "      method: GET",
            "      expect_status: [200, 204]",
        ]
    message = f"step {n} of run {{{{ run.id }}}} on {{{{ inputs.host_{r} }}}}"
    return [f'    log: {{message: "{message}"}}']


def runbook_text(r: int, steps: int) -> str:
    """One valid runbook; ``r`` varies names so no two runbooks share expressions."""
    lines = [
        "apiVersion: runbook/v1",
        "kind: Runbook",
        "metadata:",
        f"  name: generated-{r}",
        f"  version: 1.{r % 7}.{r}",
        f"  title: Generated runbook {r}",
        "  owner: team-bench",
        "  severity: [SEV2, SEV3]",
        "inputs:",
        f"  host_{r}: {{type: string, pattern: '^[a-z0-9.-]+$', description: inventory host}}",
        f"  ns_{r}: {{type: string, default: prod}}",
        f"  lines_{r}: {{type: integer, default: 20, minimum: 1, maximum: 500}}",
        f"  limit_{r}: {{type: integer, default: 90, minimum: 1, maximum: 100}}",
        "targets:",
        f'  nodes: {{hosts: "{{{{ inputs.host_{r} }}}}"}}',
        "credentials:",
        "  ops_ssh: {vault_ssh: {role: responder, principals: [ops], ttl: 15m}}",
        "policy:",
        "  automation: approval",
        f'  concurrency: {{key: "{{{{ inputs.host_{r} }}}}", limit: 1}}',
        "  max_hosts: 5",
        "  timeout: 30m",
        "steps:",
    ]
    for n in range(steps):
        kind = ACTIONS[(n + r) % len(ACTIONS)]
        lines.append(f"  - id: s{n}")
        lines.append(f"    name: step {n} ({kind})")
        if n:
            parents = [f"s{n - 1}"] + ([f"s{n - 2}"] if n >= 2 and n % 3 == 0 else [])
            lines.append(f"    needs: [{', '.join(parents)}]")
            lines.append(f"    when: steps.s{n - 1}.outputs.v{n - 1} | int <= inputs.limit_{r}")
        else:
            lines.append(f"    when: inputs.limit_{r} > 0")
        lines.extend(_action(kind, n, r))
        if kind == "log":
            lines.append(f'    outputs: {{v{n}: "{{{{ inputs.limit_{r} - {n} }}}}"}}')
        else:
            lines.append(f'    outputs: {{v{n}: "{{{{ result.stdout | length + {r % 97} }}}}"}}')
        if kind in ("ssh", "local"):
            lines.append("    timeout: 2m")
            lines.append("    on_failure: abort")
    return "\n".join(lines) + "\n"


def _round(files: list[Path], work: object) -> float:
    expressions.analyze.cache_clear()
    start = time.perf_counter()
    for path in files:
        work(path)  # type: ignore[operator]
    return time.perf_counter() - start


def _validate(path: Path) -> None:
    load_runbook(path)


def _parse(path: Path) -> None:
    yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runbooks", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-validate-") as tmp:
        files = []
        for r in range(args.runbooks):
            path = Path(tmp) / f"generated-{r}.yaml"
            path.write_text(runbook_text(r, args.steps), encoding="utf-8")
            files.append(path)
        _validate(files[0])  # warm up: compile the schema validators once
        validate_times, parse_times = [], []
        for _ in range(args.rounds):  # interleaved, so a busy machine slows both alike
            validate_times.append(_round(files, _validate))
            parse_times.append(_round(files, _parse))
        validate = statistics.median(validate_times)
        parse = statistics.median(parse_times)
    count = len(files)
    ratio = validate / parse
    print(f"runbooks: {count} x {args.steps} steps, median of {args.rounds} rounds")
    print(f"load_runbook:        {validate * 1000 / count:7.2f} ms per runbook")
    print(f"yaml.load CSafeLoader: {parse * 1000 / count:5.2f} ms per runbook")
    verdict = "OK" if ratio <= TARGET_RATIO else "OVER TARGET"
    print(f"ratio: {ratio:.2f}x (target <= {TARGET_RATIO:.0f}x) {verdict}")
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    raise SystemExit(main())
