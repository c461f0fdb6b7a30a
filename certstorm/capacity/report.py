"""``certstorm report``: a run folder's ``summary.json``, ``report.md`` and self-contained ``report.html``,
built from its raw files (:mod:`certstorm.capacity.summary`), plots (:mod:`certstorm.capacity.plots`) and
sections (:mod:`certstorm.capacity.sections`), rendered by :mod:`certstorm.capacity.report_templates`.

The raw files a run writes under ``raw/``:

* ``config.json`` — what was asked for (devices, search, SLO, worker counts and their cores, storm, projection);
* ``floor.json`` — ``{"verify_us": …}``: one raw P-256 verify measured in this run;
* ``timeline.json`` — the per-second samples, and ``steps.json`` the measured steps, both described in
  :mod:`certstorm.capacity.analysis`; ``search.json`` — one entry per worker count searched;
* ``errors.json`` — failed authentications by error code, per search;
* ``storm.json`` — the reconnect storm: ``{"devices", "capacity", "backoff", "curve": [[t, admitted], …],
  "retries", "attempt_rate", "bound_s", "failures_by_code"}`` (optional).

``summary.json`` is strict JSON (no NaN or Infinity: a figure that does not exist is null, with a reason
beside it where one is needed); ``docs/summary.schema.json`` describes it.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

from certstorm.capacity.plots import draw_plots
from certstorm.capacity.report_templates import html_template, markdown_template
from certstorm.capacity.sections import sections
from certstorm.capacity.summary import summarise

__all__ = ["build_report", "link_latest", "report_command"]


def link_latest(out: Path, name: str, run_id: str) -> Path:
    """``out/name`` points at the run folder ``run_id`` (beside it), whatever was there before."""
    latest = out / name
    if latest.is_symlink() or latest.exists():
        latest.unlink() if latest.is_symlink() else shutil.rmtree(latest)
    latest.symlink_to(run_id)
    return latest


def build_report(run_dir) -> dict:
    run_dir = Path(run_dir)
    summary = summarise(run_dir)
    plots = draw_plots(run_dir, summary)
    content = sections(summary, plots)
    images = {name: "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode() for name, p in plots.items()}
    page = {
        "run_id": summary["run_id"],
        "headline": summary["first_line"],
        "notes": summary["notes"],
        "sections": content,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1, allow_nan=False) + "\n")
    (run_dir / "report.md").write_text(markdown_template.render(**page))
    (run_dir / "report.html").write_text(html_template.render(images=images, **page))
    return summary


def report_command(args) -> int:
    run_dir = Path(args.run)
    if not (run_dir / "raw").is_dir():
        print(f"error: {run_dir} has no raw/ folder; is it a certstorm run directory?")
        return 2
    summary = build_report(run_dir)
    print(summary["first_line"])
    print(f"report: {run_dir / 'report.html'}")
    return 0
