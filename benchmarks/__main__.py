"""`python -m benchmarks [NAME...]`: run the benchmarks (all by default), print a table, write results/latest.json."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from benchmarks import enqueue, latency, scale, throughput
from benchmarks.common import Row

BENCHMARKS: dict[str, Callable[[], list[Row]]] = {
    "bulk_enqueue": enqueue.bulk_enqueue,
    "cli_enqueue": enqueue.cli_enqueue,
    "throughput": throughput.throughput,
    "sleep_jobs": throughput.sleep_jobs,
    "pickup_latency": latency.pickup_latency,
    "retry_punctuality": latency.retry_punctuality,
    "scale": scale.scale,
}
RESULTS = Path(__file__).parent / "results"


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.3g}" if abs(x) < 10 else f"{x:.1f}"


def print_table(rows: list[Row]) -> None:
    header = ("benchmark", "metric", "measured", "baseline", "ratio", "target", "result")
    lines = [header]
    for r in rows:
        verdict = "info" if r.passed is None else ("PASS" if r.passed else "MISS")
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}x"
        baseline = "-" if r.baseline is None else f"{_fmt(r.baseline)} {r.unit} ({r.baseline_label})"
        lines.append((r.bench, r.metric, f"{_fmt(r.value)} {r.unit}", baseline, ratio,
                      r.target.text(r.unit) if r.target else "-", verdict))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for n, line in enumerate(lines):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


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
    report["load_avg_at_end"] = os.getloadavg()
    print_table(rows)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    misses = [r for r in rows if r.passed is False]
    print(f"\n{sum(r.passed is True for r in rows)} pass, {len(misses)} miss, {len(failed)} failed to run"
          f"{': ' + ', '.join(failed) if failed else ''}; results in {RESULTS / 'latest.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
