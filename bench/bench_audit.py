"""Audit throughput with fsync: records/second for 1 and 4 writers, and verify speed.

    .venv/bin/python bench/bench_audit.py [--records 2000] [--dir /path/on/the/real/disk]

Every append is durable (fsync of the log, then of the head file), so the
figure is bounded by the disk's sync latency, not by Python.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import time
from pathlib import Path

from executor.audit import JsonlAudit, verify

DATA = {"command": "df --output=pcent / | tail -1", "rc": 0, "hosts": ["web1", "web2"]}


def _writer(path: str, count: int) -> None:
    sink = JsonlAudit(Path(path))
    for i in range(count):
        sink.append("step.outcome", run_id="bench", actor="bench", step=f"s{i}", data=DATA)


def _measure(path: Path, writers: int, total: int) -> float:
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_writer, args=(str(path), total // writers)) for _ in range(writers)
    ]
    began = time.perf_counter()
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    return total / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        figures: dict[str, float] = {}
        for writers in (1, 4):
            path = Path(scratch) / f"audit-{writers}.jsonl"
            figures[f"append_per_s_{writers}_writer(s)"] = round(
                _measure(path, writers, args.records)
            )
        began = time.perf_counter()
        report = verify(Path(scratch) / "audit-4.jsonl")
        figures["verify_records_per_s"] = round(report.count / (time.perf_counter() - began))
        assert report.ok, report.reason
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
