"""Compare a benchmark run with the stored baseline on machine-normalised costs.

Each benchmark's cost is ``extra_info["verifies_min"]``: its fastest round divided by a raw P-256 verify
measured right beside it (after it, on the same core; for CPU-accounted benchmarks, on the core that spent
the CPU). The verify is never taken from another moment of the session: on these shared machines it
drifts by more than the threshold within minutes. Fastest rounds are the least disturbed by other work.

    python -m bench.compare results/baselines/bench.json results/bench-latest.json [--threshold 0.15]

Prints a table; exits 1 when any benchmark got more than ``threshold`` slower or a baseline benchmark is
missing from the run, 2 when a benchmark carries no calibrated cost, 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

KEY = "verifies_min"


class Uncalibrated(ValueError):
    """A benchmark in the file has no cost measured against a verify beside it."""


def load(path: str | Path) -> dict[str, float]:
    data = json.loads(Path(path).read_text())
    out = {}
    for bench in data.get("benchmarks", []):
        cost = bench.get("extra_info", {}).get(KEY)
        if cost is None:
            raise Uncalibrated(
                f"{path}: {bench.get('fullname', '?')} has no extra_info['{KEY}'] (was the "
                f"run made with --benchmark-disable, or without the calibration fixture?)"
            )
        out[bench["fullname"]] = float(cost)
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
            rows.append((name, base, None, None, "MISSING"))
            regressed = True
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
    lines = [
        f"{'benchmark':<{width}}  {'baseline':>9}  {'current':>9}  {'change':>8}  status   (cost in raw verifies)",
        "-" * (width + 50),
    ]
    for name, base, cur, change, status in rows:
        ch = "-" if change is None else f"{change:+.1%}"
        lines.append(f"{name.split('::', 1)[-1]:<{width}}  {num(base):>9}  {num(cur):>9}  {ch:>8}  {status}")
    lines.append(f"threshold: {threshold:.0%} slower than the baseline; a missing benchmark fails")
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
    try:
        rows, regressed = compare(load(args.baseline), load(args.current), args.threshold)
    except Uncalibrated as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 2
    if not rows:
        print("compare: no benchmarks in either file", file=sys.stderr)
        return 2
    print(render(rows, args.threshold))
    return 1 if regressed else 0


if __name__ == "__main__":
    sys.exit(main())
