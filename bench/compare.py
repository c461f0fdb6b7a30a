"""Compare a benchmark run with the stored baseline on machine-normalised costs.

Costs are in calibration verifies (``extra_info["verifies_min"]``: the fastest round divided by a raw
P-256 verify measured in the same session), so a baseline made on one machine judges a run on another.

    python -m bench.compare results/baselines/bench.json results/bench-latest.json [--threshold 0.15]

Prints a table and exits 1 when any benchmark got more than ``threshold`` slower, 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

KEY = "verifies_min"


def load(path: str | Path) -> dict[str, float]:
    data = json.loads(Path(path).read_text())
    out = {}
    for bench in data.get("benchmarks", []):
        cost = bench.get("extra_info", {}).get(KEY)
        if cost is not None:
            out[bench["fullname"]] = float(cost)
    return out


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
    parser.add_argument("current")
    parser.add_argument("--threshold", type=float, default=0.15, help="allowed slowdown, as a fraction (0.15)")
    args = parser.parse_args(argv)
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
