"""How long does ``runbook test`` take over 200 scenarios? Target: under 10 seconds.

Copies the shipped runbooks into a temporary catalog and replicates their
scenario files (``runbooks/tests/*.yaml``) until there are 200 scenarios in
all, each under a new name, so the mix of paths (approvals, retries, rollback
sagas, kill-switch) is the real one. Then times, median of 3 rounds:

* ``runbook test DIR`` as a user runs it: a fresh interpreter, imports and all;
* the suite in-process (``collect`` + ``run_suite``), i.e. without start-up.

    .venv/bin/python bench/bench_rehearsal.py [--scenarios N] [--rounds N]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from executor.rehearsal import collect, run_suite  # noqa: E402  (after the path is set)

TARGET_SECONDS = 10.0


def build_catalog(root: Path, wanted: int) -> int:
    """Runbooks plus scenario files holding ``wanted`` scenarios in all; returns the count."""
    for runbook in sorted((REPO / "runbooks").glob("*.yaml")):
        shutil.copy(runbook, root / runbook.name)
    tests = root / "tests"
    tests.mkdir()
    sources = sorted((REPO / "runbooks" / "tests").glob("*.yaml"))
    files = [yaml.safe_load(p.read_text(encoding="utf-8")) for p in sources]
    total = sum(len(f["scenarios"]) for f in files)
    rounds = -(-wanted // total)  # ceil
    written = 0
    for source, data in zip(sources, files, strict=True):
        scenarios = []
        for n in range(rounds):
            for scenario in data["scenarios"]:
                if written >= wanted:
                    break
                scenarios.append({**scenario, "name": f"{scenario['name']} (copy {n + 1})"})
                written += 1
        if scenarios:
            body = {**data, "scenarios": scenarios}
            (tests / source.name).write_text(yaml.safe_dump(body, sort_keys=False), "utf-8")
    return written


def time_cli(root: Path) -> tuple[float, str]:
    runbook = Path(sys.executable).with_name("runbook")
    began = time.perf_counter()
    done = subprocess.run(
        [str(runbook), "--catalog", str(root), "test", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    took = time.perf_counter() - began
    return took, done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr


def time_in_process(root: Path) -> tuple[float, int, int]:
    began = time.perf_counter()
    result = run_suite(collect([root]), catalog=root)
    return time.perf_counter() - began, result.passed, result.failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-rehearsal-") as tmp:
        root = Path(tmp)
        count = build_catalog(root, args.scenarios)
        cli, inproc = [], []
        closing = ""
        for _ in range(args.rounds):
            took, closing = time_cli(root)
            cli.append(took)
            seconds, passed, failed = time_in_process(root)
            inproc.append(seconds)
        cli_median, inproc_median = statistics.median(cli), statistics.median(inproc)
        print(f"scenarios: {count} ({passed} passed, {failed} failed in the suite)")
        print(f"runbook test (fresh process): median {cli_median:.2f}s over {args.rounds} rounds")
        print(f"  its closing line: {closing}")
        per = 1000 * inproc_median / count
        print(f"in-process suite: median {inproc_median:.2f}s ({per:.1f} ms per scenario)")
        verdict = "PASS" if cli_median < TARGET_SECONDS else "FAIL"
        print(f"{verdict}: target under {TARGET_SECONDS:.0f}s for {count} scenarios")
        return 0 if cli_median < TARGET_SECONDS else 1


if __name__ == "__main__":
    raise SystemExit(main())
