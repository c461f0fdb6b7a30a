"""Compare a benchmark run with the stored baseline on machine-normalised costs.

Costs are in calibration verifies: each benchmark's fastest round divided by the fastest raw P-256 verify
(``test_calibration_raw_verify``) of the same run, so a baseline made on one machine judges a run on
another. Fastest rounds are the least disturbed by other work on a shared machine; medians move with it.

    python -m bench.compare results/baselines/bench.json results/bench-latest.json [--threshold 0.15]

Prints a table and exits 1 when any benchmark got more than ``threshold`` slower, 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

KEY = "verifies_min"
CALIBRATION = "test_calibration_raw_verify"


def load(path: str | Path) -> dict[str, float]:
    data = json.loads(Path(path).read_text())
    benches = data.get("benchmarks", [])
    unit = next((b["stats"]["min"] for b in benches if b.get("name") == CALIBRATION and b.get("stats")), None)
    out = {}
    for bench in benches:
        extra = bench.get("extra_info", {})
        per = extra.get("operations_per_round", 1)
        if unit and "cpu_seconds_per_operation" in extra:  # measured from CPU accounting, not wall time
            # in verifies timed on the core that spent the CPU, where the benchmark recorded them
            out[bench["fullname"]] = extra["cpu_seconds_per_operation"] / extra.get("cpu_verify_seconds", unit)
        elif unit and bench.get("stats"):
            out[bench["fullname"]] = bench["stats"]["min"] / per / unit
        elif bench.get("extra_info", {}).get(KEY) is not None:  # a file without the calibration benchmark
            out[bench["fullname"]] = float(bench["extra_info"][KEY])
    return out


def slim(path: str | Path) -> None:
    """Drop per-round raw timings from a pytest-benchmark JSON, keeping the statistics (for baselines)."""
    path = Path(path)
    data = json.loads(path.read_text())
    for bench in data.get("benchmarks", []):
        (bench.get("stats") or {}).pop("data", None)
    path.write_text(json.dumps(data, indent=1))


def compare(baseline: dict[str, float], current: dict[str, float], threshold: float) -> tuple[list[tuple], bool]:
    rows, regressed = [], False
    for name in sorted(set(baseline) | set(current)):
        base, cur = baseline.get(name), current.get(name)
        if base is None:
            rows.append((name, None, cur, None, "new"))
        elif cur is None:
            rows.append((name, base, None, None, "missing"))
        else:
            change = cur / base - 1.0
            status = "REGRESSED" if change > threshold else ("faster" if change < -threshold else "ok")
            regressed |= status == "REGRESSED"
            rows.append((name, base, cur, change, status))
    return rows, regressed


def render(rows: list[tuple], threshold: float) -> str:
    def num(x):
        return "-" if x is None else f"{x:.3f}"

    width = max([len(r[0].split("::", 1)[-1]) for r in rows] + [9])
    lines = [f"{'benchmark':<{width}}  {'baseline':>9}  {'current':>9}  {'change':>8}  status   (cost in raw verifies)",
             "-" * (width + 50)]
    for name, base, cur, change, status in rows:
        ch = "-" if change is None else f"{change:+.1%}"
        lines.append(f"{name.split('::', 1)[-1]:<{width}}  {num(base):>9}  {num(cur):>9}  {ch:>8}  {status}")
    lines.append(f"threshold: {threshold:.0%} slower than the baseline")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline")
    parser.add_argument("current", nargs="?")
    parser.add_argument("--slim", action="store_true", help="only strip raw timings from BASELINE, in place")
    parser.add_argument("--threshold", type=float, default=0.15, help="allowed slowdown, as a fraction (0.15)")
    args = parser.parse_args(argv)
    if args.slim:
        slim(args.baseline)
        return 0
    if args.current is None:
        parser.error("give the current run's JSON")
    if args.threshold < 0:
        parser.error("--threshold must be positive")
    rows, regressed = compare(load(args.baseline), load(args.current), args.threshold)
    if not rows:
        print("no comparable benchmarks: both files need extra_info['verifies_min']", file=sys.stderr)
        return 2
    print(render(rows, args.threshold))
    return 1 if regressed else 0


if __name__ == "__main__":
    sys.exit(main())
