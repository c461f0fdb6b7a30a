"""Open a report in real headless Chromium and read back what a person would see: whether every image
loaded, and the page's visible text and table cells."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images].map(i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0}));
  const cells = [...document.querySelectorAll("td")].map(c => c.innerText.trim());
  const text = document.body.innerText;
  const out = document.createElement("pre");
  out.id = "certstorm-probe";
  out.textContent = JSON.stringify({images, cells, text});
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str:
    """The browser's path; skips where it is absent, but never in CI, where .ci/run installs it."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing in CI: .ci/run installs Debian's chromium")
        pytest.skip("Chromium is not installed (apt-get install chromium): the report cannot be checked in a browser")
    return found


def render(page: Path) -> dict:
    """{"images": [{"alt", "ok"}], "cells": [...], "text": ...} as Chromium rendered ``page``."""
    probe = page.with_name(page.stem + ".probe.html")
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    out = subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--virtual-time-budget=10000",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    probe.unlink()
    m = re.search(r'<pre id="certstorm-probe">(.*?)</pre>', out.stdout, re.S)
    assert m, f"Chromium did not render the page: {out.stderr[-2000:]}"
    import html

    return json.loads(html.unescape(m.group(1)))


BAD_WORDS = re.compile(r"\b(NaN|Infinity|None|undefined|null)\b")


def visible_problems(seen: dict) -> list[str]:
    """What a reader should never see: broken images, NaN/Infinity/None, empty or dashed figures."""
    out = [f"image {i['alt']!r} did not load" for i in seen["images"] if not i["ok"]]
    out += [f"{m.group(0)!r} in the visible text" for m in BAD_WORDS.finditer(seen["text"])]
    out += [f"an empty figure in a table cell (cell {n})" for n, c in enumerate(seen["cells"]) if c in ("", "—", "-")]
    return out
