"""Argument types for the command lines (``certstorm`` and ``python -m hubsim.service``).

Each type checks one value and, when it is wrong, says what is allowed, so that argparse's error names the
argument and the allowed values on one line (``argument --port: must be an integer from 0 to 65535, got
'99999'``) instead of ``invalid <lambda> value``.
"""

from __future__ import annotations

import argparse
import math


def integer(low: int, high: int | None = None):
    """An integer from ``low`` to ``high`` (inclusive; no upper bound when ``high`` is None)."""
    allowed = f"an integer from {low} to {high}" if high is not None else f"an integer of at least {low}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}")
        return value

    return parse


def number(low: float, high: float, *, low_open: bool = False):
    """A finite number from ``low`` to ``high``; ``low_open`` excludes ``low`` itself."""
    allowed = f"a number {'above' if low_open else 'from'} {low:g} {'and at most' if low_open else 'to'} {high:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}") from None
        if not math.isfinite(value) or value < low or (low_open and value == low) or value > high:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}")
        return value

    return parse


class OneLineErrors(argparse.ArgumentParser):
    """An argument error is one line on stderr and exit status 2: the usage is left to ``--help``, where
    it does not bury the line that says what was wrong."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


__all__ = ["OneLineErrors", "integer", "number"]
