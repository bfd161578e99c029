"""Run every bench/bench_*.py in turn, each in its own interpreter, and show its output.

Each benchmark is a separate process so one's caches and imports cannot flatter
another's figures. Name benchmarks to run only those (``run.py validate`` runs
``bench_validate.py``). Exit status is non-zero if any benchmark failed.

    .venv/bin/python bench/run.py [NAME ...]
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def select(names: list[str]) -> list[Path]:
    """The benchmark scripts to run, in name order; unknown names are an error."""
    found = sorted(HERE.glob("bench_*.py"))
    if not names:
        return found
    wanted = {name.removeprefix("bench_").removesuffix(".py") for name in names}
    known = {path.stem.removeprefix("bench_") for path in found}
    unknown = sorted(wanted - known)
    if unknown:
        raise SystemExit(
            f"no benchmark named {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return [path for path in found if path.stem.removeprefix("bench_") in wanted]


def main(argv: list[str]) -> int:
    failed = []
    for script in select(argv):
        print(f"== {script.name}", flush=True)
        done = subprocess.run([sys.executable, str(script)], cwd=HERE.parent, check=False)
        if done.returncode != 0:
            failed.append(script.name)
            print(f"!! {script.name} exited with {done.returncode}", flush=True)
    if failed:
        print(f"{len(failed)} benchmark(s) failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
