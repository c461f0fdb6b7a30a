"""Argument types for every certstorm command line (the hub's, the swarm's and the product's).

Each type checks one value and, when it is wrong, says what is allowed, so that argparse's error names the
argument and the allowed values on one line (``argument --port: must be an integer from 0 to 65535, got
'99999'``) instead of ``invalid <lambda> value``. It lives at the bottom of the import graph because the
hub, the swarm and the product all parse arguments.
"""

from __future__ import annotations

import argparse
import math
import re

__all__ = ["OneLineErrors", "checked", "duration", "integer", "integer_list", "number", "parse_duration"]

_DURATION = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h)?\s*")


def _int(text: str) -> int:
    """An integer, with ``,`` or ``_`` as thousands separators (``2,000,000``)."""
    return int(text.replace(",", "").replace("_", ""))


def integer(low: int, high: int | None = None):
    """An integer from ``low`` to ``high`` (inclusive; no upper bound when ``high`` is None)."""
    allowed = f"an integer from {low} to {high}" if high is not None else f"an integer of at least {low}"

    def parse(text: str) -> int:
        try:
            value = _int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}")
        return value

    return parse


def integer_list(low: int, high: int | None = None):
    """Comma-separated integers, each from ``low`` to ``high``: sorted, without repeats (``1,2``)."""
    one = integer(low, high)

    def parse(text: str) -> list[int]:
        try:
            values = {one(part) for part in text.split(",")}
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(f"{exc} (a comma-separated list, e.g. 1,2)") from None
        return sorted(values)

    return parse


def number(low: float, high: float = math.inf, *, low_open: bool = False):
    """A finite number from ``low`` to ``high``; ``low_open`` excludes ``low`` itself."""
    top = "" if math.isinf(high) else (f" and at most {high:g}" if low_open else f" to {high:g}")
    allowed = f"a number {'above' if low_open else 'from' if top else 'of at least'} {low:g}{top}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}") from None
        if not math.isfinite(value) or value < low or (low_open and value == low) or value > high:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}")
        return value

    return parse


def checked(parse):
    """An argument type from ``parse``, whose ValueError already says what was wrong and what is allowed."""

    def argtype(text: str):
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return argtype


def parse_duration(text: str) -> float:
    """Seconds in ``'10m'``, ``'90s'``, ``'1h'``, ``'500ms'`` or plain seconds; ValueError otherwise."""
    m = _DURATION.fullmatch(str(text))
    if not m:
        raise ValueError(f"not a duration: {text!r}")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2) or "s"]


def duration(text: str) -> float:
    """A positive duration such as ``90s``, ``10m``, ``1h``, ``500ms`` or plain seconds."""
    try:
        value = parse_duration(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive duration such as 90s, 10m, 1h or 500ms, got {text!r}")
    return value


class OneLineErrors(argparse.ArgumentParser):
    """An argument error is one line on stderr and exit status 2: the usage is left to ``--help``, where
    it does not bury the line that says what was wrong."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
