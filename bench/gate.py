"""The CI gate for gross regressions: a few benchmarks, timed, judged against the stored baseline at 1.5x.

`make bench-compare` judges every benchmark at 15% and takes minutes; CI cannot afford it and a shared CI
machine is too noisy for 15%. This gate times only the costs a slower hot path shows first (the warm
in-process authentication, the reconnect, the hub's CPU per authentication over HTTP and per admission
over mutual TLS) in their usual benchmarks, so each cost is the fastest round divided by a raw verify
measured beside it, exactly as in the baseline.
Noise only adds time, so a benchmark over the limit is timed again, up to ``--attempts`` runs in all, and
judged on the best of them.

    python -m bench.gate [--baseline results/baselines/bench.json] [--limit 1.5] [--attempts 3]

Exits 1 when a benchmark's best cost passes ``limit`` times its baseline or it did not run, 2 when the
baseline lacks one of them, 0 otherwise.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import compare

GATED = (
    "bench/bench_engine.py::test_in_process_authentication[warm]",
    "bench/bench_engine.py::test_reconnect_authentication",
    "bench/bench_hub.py::test_hub_cpu_per_authentication[cn-only]",
    "bench/bench_hub.py::test_hub_cpu_per_authentication[reconnect]",
    "bench/bench_tls.py::test_mtls_admission_against_c_servers_and_a_c_client",
)
ROOT = Path(__file__).resolve().parent.parent


def run_benchmarks(names: list[str]) -> dict[str, float]:
    """Time ``names`` once in a fresh pytest process; their costs in raw verifies."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run.json"
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            *names,
            "--benchmark-only",
            f"--benchmark-json={out}",
            "--benchmark-columns=min,rounds",
        ]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0 or not out.exists():
            sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
            return {}
        return compare.load(out)


def best_of(baseline: dict[str, float], limit: float, attempts: int, runner=None) -> dict[str, float]:
    """Best cost of each gated benchmark over at most ``attempts`` runs; only those over the limit run again."""
    runner = runner or run_benchmarks
    best: dict[str, float] = {}
    pending = list(GATED)
    for attempt in range(1, attempts + 1):
        for name, cost in runner(pending).items():
            if name in pending:
                best[name] = min(cost, best.get(name, cost))
        pending = [n for n in GATED if n not in best or best[n] > limit * baseline[n]]
        print(
            f"gate: attempt {attempt}: "
            + ", ".join(
                f"{n.split('::')[-1]} {best[n] / baseline[n]:.2f}x" if n in best else f"{n.split('::')[-1]} did not run"
                for n in GATED
            ),
            flush=True,
        )
        if not pending:
            break
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=str(ROOT / "results/baselines/bench.json"))
    parser.add_argument("--limit", type=float, default=1.5, help="allowed cost as a multiple of the baseline (1.5)")
    parser.add_argument("--attempts", type=int, default=3, help="runs at most, for a benchmark over the limit (3)")
    args = parser.parse_args(argv)
    if args.limit <= 1:
        parser.error("--limit must be above 1 (a multiple of the baseline cost)")
    if args.attempts < 1:
        parser.error("--attempts must be at least 1")
    try:
        stored = compare.load(args.baseline)
    except (OSError, ValueError) as exc:
        print(f"gate: cannot read the baseline: {exc}", file=sys.stderr)
        return 2
    absent = [n for n in GATED if n not in stored]
    if absent:
        print(f"gate: the baseline {args.baseline} has no cost for {', '.join(absent)}", file=sys.stderr)
        return 2
    baseline = {n: stored[n] for n in GATED}
    best = best_of(baseline, args.limit, args.attempts)
    rows, _ = compare.compare(baseline, best, args.limit - 1)
    print(compare.render(rows, args.limit - 1))
    failed = [n for n in GATED if n not in best or best[n] > args.limit * baseline[n]]
    print(
        f"gate: {'FAILED' if failed else 'ok'}: best of at most {args.attempts} runs, "
        f"limit {args.limit:g}x the baseline cost"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
