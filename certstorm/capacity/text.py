"""The report's building blocks: numbers as text, and the text, table and image blocks both renderings take."""

from __future__ import annotations

import math
from pathlib import Path

__all__ = ["fmt", "image", "table", "text"]


def fmt(x, unit="", digits=0, missing="not measured"):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return missing
    return f"{x:,.{digits}f}{unit}"


def text(text):
    return {"kind": "text", "text": text}


def table(title, header, rows):
    return {"kind": "table", "title": title, "header": list(header), "rows": [list(r) for r in rows]}


def image(name: str, alt: str, plots: dict[str, Path]) -> list[dict]:
    return [{"kind": "image", "name": name, "alt": alt}] if name in plots else []
