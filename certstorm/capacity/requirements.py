"""Thresholds a run must meet, as k6 has them: ``certstorm run --require knee>=2000/s --require p99<=50ms``.
A run that misses one exits non-zero and names it, so a CI pipeline can gate on it."""

from __future__ import annotations

import argparse
import operator
import re
from dataclasses import dataclass

# name: (unit suffixes accepted, how to read the measured value from summary.json, its unit for messages)
METRICS = {
    "knee": (("/s", ""), lambda s: (s.get("knee") or {}).get("achieved"), "/s"),
    "p99": (("ms", ""), lambda s: (s.get("knee") or {}).get("p99"), " ms"),
    "errors": (("%", ""), lambda s: None if not s.get("knee") else 100 * s["knee"]["error_rate"], "%"),
    "storm_admitted": (("%", ""), lambda s: None if not s.get("storm") else 100 * s["storm"]["admitted_fraction"], "%"),
    "target_us": (("us", "µs", ""), lambda s: (s.get("cost") or {}).get("target_us_per_auth"), " µs"),
    "hub_us": (("us", "µs", ""), lambda s: (s.get("cost") or {}).get("target_us_per_auth"), " µs"),  # the older name
    "ceiling": (
        ("/s", ""),
        lambda s: max((v["ceiling"]["achieved"] for v in s.get("per_segment", []) if v.get("ceiling")), default=None),
        "/s",
    ),
}
OPERATORS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
_FORM = re.compile(r"\s*([a-z_0-9]+)\s*(>=|<=|>|<)\s*([0-9]*\.?[0-9]+)\s*([a-zµ/%]*)\s*")


@dataclass(frozen=True)
class Requirement:
    text: str
    metric: str
    op: str
    value: float

    def check(self, summary: dict) -> str | None:
        """None when met; otherwise what was measured against what was required."""
        _, read, unit = METRICS[self.metric]
        measured = read(summary)
        if measured is None:
            return f"{self.text}: not measured in this run"
        if not OPERATORS[self.op](measured, self.value):
            return f"{self.text}: measured {measured:,.2f}{unit}"
        return None


def parse_requirement(text: str) -> Requirement:
    m = _FORM.fullmatch(text)
    if not m or m.group(1) not in METRICS or m.group(4) not in METRICS[m.group(1)][0]:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a requirement; write METRIC OP VALUE with METRIC one of {', '.join(METRICS)}, "
            "e.g. knee>=2000/s, p99<=50ms, errors<=0.1%, storm_admitted>=99%, hub_us<=600us"
        )
    return Requirement(text, m.group(1), m.group(2), float(m.group(3)))


def check_requirements(requirements, summary: dict) -> list[str]:
    return [msg for r in requirements if (msg := r.check(summary)) is not None]


__all__ = ["METRICS", "OPERATORS", "Requirement", "check_requirements", "parse_requirement"]
