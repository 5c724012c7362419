"""`python -m benchmarks [NAME...]`: run the benchmarks (all by default), print a table, write results/latest.json."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable

from benchmarks import enqueue, latency, scale, sched, throughput
from benchmarks.common import Row, finish_report

BENCHMARKS: dict[str, Callable[[], list[Row]]] = {
    "bulk_enqueue": enqueue.bulk_enqueue,
    "cli_enqueue": enqueue.cli_enqueue,
    "throughput": throughput.throughput,
    "sleep_jobs": throughput.sleep_jobs,
    "pickup_latency": latency.pickup_latency,
    "retry_punctuality": latency.retry_punctuality,
    "scale": scale.scale,
    "dependency_pickup": sched.dependency_pickup,
    "resume_pickup": sched.resume_pickup,
    "cron_punctuality": sched.cron_punctuality,
    "dependency_cost": sched.dependency_cost,
}
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"any of: {', '.join(BENCHMARKS)}")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    rows: list[Row] = []
    report: dict[str, object] = {
        "started_at": time.time(), "python": sys.version.split()[0], "platform": platform.platform(),
        "cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg(), "benchmarks": {},
    }
    failed = []
    for name in args.names or BENCHMARKS:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            result = BENCHMARKS[name]()
        except Exception:
            traceback.print_exc()
            failed.append(name)
            result = []
        took = time.perf_counter() - start
        print(f"  {name}: {took:.1f}s", file=sys.stderr, flush=True)
        rows += result
        report["benchmarks"][name] = {"elapsed_s": took, "rows": [r.as_dict() for r in result],  # type: ignore[index]
                                      "error": name in failed}
    return finish_report(rows, report, failed, "latest.json")


if __name__ == "__main__":
    sys.exit(main())
