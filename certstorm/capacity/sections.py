"""The report's content, section by section, once for both renderings (``report.html`` and ``report.md``):
each section is a list of text, table, list and image blocks built from ``summary.json``."""

from __future__ import annotations

from pathlib import Path

from certstorm.capacity import analysis
from certstorm.capacity.text import fmt, image, table, text

__all__ = ["SECTIONS", "sections"]


def _verdict(summary: dict, plots: dict) -> list[dict]:
    slo, per = summary["slo_p99_ms"], summary["per_workers"]
    overall = (
        f"Overall: {summary['limit']}-limited"
        if summary["limit"] in ("hub", "generator")
        else f"Overall: {summary['limit']}"
    )
    per_workers = [
        f"{v['workers']} hub worker(s): {v['side']}"
        + (
            f" at {v['broke']['target']:,.0f}/s ({', '.join(v['broke']['reasons'])})"
            if v["broke"]
            else f", every step up to {fmt(v['highest_target'])}/s held"
        )
        + f"; searched {fmt(v['seconds'], ' s')} of {fmt(v['bound_s'], ' s')}"
        for v in per
    ]
    rule = (
        f"A step holds when p99 ≤ {slo:g} ms, errors ≤ 0.1%, at least 90% of its intended rate is admitted, "
        f"and neither the hub nor the generator reaches {analysis.CPU_LIMIT:.0%} CPU."
    )
    return [{"kind": "list", "items": [overall, *per_workers, rule]}]


def _knee(summary: dict, plots: dict) -> list[dict]:
    k, slo = summary["knee"], summary["slo_p99_ms"]
    rows = [
        (
            s["workers"],
            s["stage"],
            fmt(s["target"]),
            fmt(s["achieved"]),
            f"{s['error_rate']:.2%}",
            f"{s['hub_cpu']:.0%}",
            f"{s['gen_cpu']:.0%}",
            fmt(100 * s["machine_cpu"] if s.get("machine_cpu") is not None else None, "%"),
            fmt(s["p50"], "", 2),
            fmt(s["p99"], "", 1),
            "holds" if analysis.holds(s, slo) else ", ".join(analysis.reasons(s, slo)),
        )
        for s in summary["steps"]
    ]
    return [
        text(
            f"{fmt(k['achieved'])} authentications/s with {k['workers']} hub worker(s) ({k['stage']} step at "
            f"{fmt(k['target'])}/s): p99 {fmt(k['p99'], ' ms', 1)}, errors {k['error_rate']:.3%}, hub CPU "
            f"{k['hub_cpu']:.0%}, generator CPU {k['gen_cpu']:.0%}."
            if k
            else "No step held."
        ),
        table(
            "Every step of the knee search, in the order run (latency: whole authentication, the swarm's µs "
            "histogram of that step)",
            (
                "workers",
                "stage",
                "intended/s",
                "admitted/s",
                "errors",
                "hub CPU",
                "gen CPU",
                "machine CPU",
                "p50 ms",
                "p99 ms",
                "verdict",
            ),
            rows,
        ),
    ]


def _share(step: dict) -> str:
    return fmt(None if step.get("reconnect_share") is None else 100 * step["reconnect_share"], "%")


def _cost(summary: dict, plots: dict) -> list[dict]:
    k, c = summary["knee"], summary["cost"]
    rows = [
        (
            s["workers"],
            fmt(s["achieved"]),
            _share(s),
            f"{s['hub_cpu']:.0%}",
            fmt(s["hub_us_per_auth"]),
            fmt(s["gen_us_per_auth"]),
        )
        for s in sorted(summary["steps"], key=lambda s: (s["workers"], s["achieved"]))
    ]
    mix = (
        ""
        if not k or k.get("reconnect_share") is None
        else f" At the knee {k['reconnect_share']:.0%} of the admissions were reconnects of devices the hub had "
        "admitted before (its device cache: a hash, a lookup and the proof's verify), the rest first connections "
        "(a full device judgement and a registry insert); a fleet larger than the devices a step admits "
        "measures first connections only (--devices)."
    )
    return [
        text(
            f"At the knee the hub spent {fmt(c['hub_us_per_auth'], ' µs')} of CPU per authentication (both "
            f"requests) and the generator {fmt(c['gen_us_per_auth'], ' µs')}; the crypto floor (two raw P-256 "
            f"verifies, measured in this run) is {fmt(c['floor_us'], ' µs')}, so the hub spends "
            f"{fmt(c['floor_multiple'], '×', 2)} the floor. The table shows how the cost moves with load; "
            "projections use the cost at the knee, where the hub's fixed per-second work is spread over the most "
            "authentications." + mix
        ),
        table(
            "CPU per authentication by load",
            ("workers", "admitted/s", "reconnects", "hub CPU", "hub µs/auth", "generator µs/auth"),
            rows,
        ),
    ]


def _latency(summary: dict, plots: dict) -> list[dict]:
    k = summary["knee"]
    out = []
    if k:
        out.append(
            table(
                f"At the knee ({k['workers']} worker(s), {k['stage']} step at {fmt(k['target'])}/s): whole "
                "authentication, µs histogram",
                ("p50 ms", "p90 ms", "p99 ms", "p99.9 ms"),
                [(fmt(k["p50"], "", 2), fmt(k["p90"], "", 2), fmt(k["p99"], "", 2), fmt(k["p999"], "", 2))],
            )
        )
    out += image("latency", "latency and cost against admitted rate", plots)
    return out or [text("No step completed an authentication.")]


def _errors(summary: dict, plots: dict) -> list[dict]:
    rows = [(seg, code, f"{n:,}") for seg, codes in summary["errors"].items() for code, n in codes.items()]
    if summary["storm"]:
        rows += [
            ("reconnect storm (throttled on purpose)", code, f"{n:,}")
            for code, n in summary["storm"]["failures_by_code"].items()
        ]
    if not rows:
        return [text("No authentication failed.")]
    return [table("Failed authentications by step and error code, per run", ("run", "code", "count"), rows)]


def _over_time(summary: dict, plots: dict) -> list[dict]:
    return image("timeline", "rates, CPU and p99 over time", plots) or [text("No samples.")]


def _storm(summary: dict, plots: dict) -> list[dict]:
    st = summary["storm"]
    if not st:
        return [text("No storm in this run.")]
    return [
        text(
            f"{st['devices']:,} devices reconnecting at once against {fmt(st['capacity'])} admissions/s, backoff "
            f"{st['backoff']}: {st['admitted']:,} admitted ({st['admitted_fraction']:.1%}) in "
            f"{fmt(st['duration_s'], ' s', 1)}, {fmt(st['retries'])} refused attempts. The storm ran until every "
            f"device was admitted or {fmt(st['bound_s'], ' s')} (twice the simulated time to admit all, at least "
            "20 s, capped by --storm-timeout)."
        ),
        table(
            "Time to admit, measured beside simulated (simulation: the quota, the backoff, and the swarm's "
            f"measured attempt rate of {fmt(st['attempt_rate'])}/s)",
            ("admitted", "measured", "simulated"),
            [
                (
                    f"{m['fraction']:.0%}",
                    fmt(m["measured_s"], " s", 1, m["reason"] or ""),
                    fmt(m["simulated_s"], " s", 1, "not within the simulated horizon"),
                )
                for m in st["milestones"]
            ],
        ),
        *image("storm", "storm admission curve", plots),
    ]


def _scaling(summary: dict, plots: dict) -> list[dict]:
    sc = summary["scaling"]
    out = [text(sc["note"] + ".")]
    if sc["points"]:
        out.append(
            text("Hub-limited knee by workers: " + ", ".join(f"{w}: {fmt(v)}/s" for w, v in sc["points"].items()))
        )
    if sc["usl"]:
        u = sc["usl"]
        out.append(
            text(
                f"USL: γ = {u['gamma']:,.0f}/s, α = {u['alpha']:.4f}, β = {u['beta']:.5f}; peak at "
                f"{fmt(sc['peak_workers'], ' workers', 1, 'no peak (no coherency cost)')}."
            )
        )
    pf = sc["predicted_from_fewer"]
    if pf:
        out.append(
            text(
                f"Throughput at {pf['workers']} workers predicted from fewer: {fmt(pf['predicted'])}/s, "
                f"measured {fmt(pf['measured'])}/s: error {100 * pf['error']:.1f}%."
            )
        )
    return out + image("scaling", "USL fit", plots)


def _projections(summary: dict, plots: dict) -> list[dict]:
    pr = summary["projection"]
    return [
        text(
            f"To admit {pr['devices']:,} devices arriving evenly over {pr['window_s'] / 60:g} min at p99 ≤ "
            f"{pr['p99_ms']:g} ms ({fmt(pr['rate'])} admissions/s): {fmt(pr['cores'], ' hub core(s)', 0, 'unknown')} "
            f"of this machine ({fmt(pr['per_core'])}/s per core, from {pr['basis']}). For all of them reconnecting "
            f"at once with an SDK's backoff, ask certstorm plan --devices {pr['devices']} --window "
            f"{pr['window_s']:g}s --backoff azure-c: it simulates the storm for each core count."
        ),
        table(
            "Managed services at the same rate",
            ("reference", "units needed", "possible", "throttle"),
            [
                (r["service"], fmt(r["units"], "", 0, "n/a"), "yes" if r["possible"] else "no", r["note"])
                for r in pr["references"]
            ],
        ),
    ]


_BUILDERS = (
    ("Verdict", _verdict),
    ("Saturation knee", _knee),
    ("Cost per authentication", _cost),
    ("Latency", _latency),
    ("Errors", _errors),
    ("Over time", _over_time),
    ("Reconnect storm", _storm),
    ("Scaling", _scaling),
    ("Projections", _projections),
)
SECTIONS = tuple(title for title, _ in _BUILDERS)


def sections(summary: dict, plots: dict[str, Path]) -> list[dict]:
    """The report's sections: ``[{"title", "id", "blocks"}]``, in order."""
    return [
        {"title": title, "id": title.lower().replace(" ", "-"), "blocks": build(summary, plots)}
        for title, build in _BUILDERS
    ]
