"""The report's content, section by section, once for both renderings (``report.html`` and ``report.md``):
each section is a list of text, table, list and image blocks built from ``summary.json``."""

from __future__ import annotations

from pathlib import Path

from certstorm.capacity import analysis
from certstorm.capacity.text import fmt, image, table, text

__all__ = ["SECTIONS", "sections"]


def _pct(x: float | None) -> str:
    return fmt(None if x is None else 100 * x, "%", 0, "unknown")


def _rate(step: dict) -> str:
    return "closed loop" if step["target"] is None else fmt(step["target"])


def _where(v: dict) -> str:
    return f"{v['workers']} hub worker(s)" if v.get("workers") else "the target"


def _side(side: str, noun: str) -> str:
    return noun if side == "target" else side


def _measured(target: dict) -> str:
    if target.get("cpu"):
        return f"Measured: {target['name']} (CPU from {target['cpu']})"
    if not target.get("cost_known", True):
        return f"Measured: {target['name']} (its CPU not measured: its cost is unknown)"
    return f"Measured: {target['name']}"


def _verdict(summary: dict, plots: dict) -> list[dict]:
    slo, per, noun = summary["slo_p99_ms"], summary["per_segment"], summary["target"]["noun"]
    limit = _side(summary["limit"], noun)
    limited = summary["limit"] in ("target", "generator")
    items = [_measured(summary["target"]), f"Overall: {limit}-limited" if limited else f"Overall: {limit}"]
    for v in per:
        broke = v["broke"]
        if broke:
            line = f"{_where(v)}: {_side(v['side'], noun)} at {_rate(broke)}/s ({', '.join(broke['reasons'])})"
        else:
            line = f"{_where(v)}: {_side(v['side'], noun)}, every step up to {fmt(v['highest_target'])}/s held"
        items.append(
            f"{line}; searched {fmt(v['seconds'], ' s')} of {fmt(v['bound_s'], ' s')}, stopped because {v['stopped']}"
        )
    tm = summary["time"]
    if tm["search_s"]:
        items.append(
            f"Time: {fmt(tm['in_windows_s'], ' s')} of the {fmt(tm['search_s'], ' s')} of search were measurement "
            f"windows and {fmt(tm.get('settle_s') or 0, ' s')} settling after steps that broke (no new arrivals "
            f"while their queues drained); {_pct(tm['outside_share'])} was in neither. Every step is whole seconds "
            "at one rate, none of a start-up, a change of rate, a broken step's queue or the stop; start-up before "
            f"the first step took {fmt(tm['startup_s'], ' s', 1)}."
        )
    items.append(
        f"A step holds when p99 ≤ {slo:g} ms, errors ≤ 0.1%, at least 90% of its intended rate is admitted (or "
        "the shortfall is within two standard deviations of its Poisson arrival count), and "
        f"neither the {noun} nor any generator process reaches {analysis.CPU_LIMIT:.0%} CPU. The knee is the step "
        "that holds with the highest admitted rate."
    )
    return [{"kind": "list", "items": items}]


def _step_verdict(step: dict, slo: float, kept: set[int]) -> str:
    """A step's verdict in the step table; a step of the other kind of work (the fleet ran out) is not judged."""
    if id(step) not in kept:
        return "not judged: " + ("reconnects" if analysis.reconnects(step) else "first connections")
    if step["stage"] == "ceiling":
        return "ceiling"
    return "holds" if analysis.holds(step, slo) else ", ".join(analysis.reasons(step, slo))


def _knee(summary: dict, plots: dict) -> list[dict]:
    k, slo, noun = summary["knee"], summary["slo_p99_ms"], summary["target"]["noun"]
    kept = set()
    for segment in {s["segment"] for s in summary["steps"]}:
        ss = [s for s in summary["steps"] if s["segment"] == segment]
        kept |= {id(s) for s in [*analysis.judged(ss), analysis.ceiling(ss)] if s is not None}
    rows = [
        (
            s["segment"],
            s["stage"],
            _rate(s),
            fmt(s["achieved"]),
            s["seconds"],
            f"{s['error_rate']:.2%}",
            _pct(s["target_cpu"]),
            f"{s['gen_cpu']:.0%}",
            _pct(s.get("machine_cpu")),
            fmt(s["p50"], "", 2),
            fmt(s["p99"], "", 1),
            _step_verdict(s, slo, kept),
            ", ".join(map(str, s.get("workers_missing") or [])) or "none",
        )
        for s in summary["steps"]
    ]
    out = [
        text(
            f"{fmt(k['achieved'])} authentications/s ({k['stage']} step at {_rate(k)}/s): "
            f"p99 {fmt(k['p99'], ' ms', 1)}, "
            f"errors {k['error_rate']:.3%}, {noun} CPU {_pct(k['target_cpu'])}, busiest generator {k['gen_cpu']:.0%}."
            if k
            else "No step held."
        )
    ]
    for v in summary["per_segment"]:
        top = v.get("ceiling")
        if top:
            share = f"; the knee is {v['knee_of_ceiling']:.0%} of it" if v.get("knee_of_ceiling") else ""
            out.append(
                text(
                    f"Ceiling with {_where(v)}: {fmt(top['achieved'])}/s closed-loop over {top['seconds']} s "
                    f"({summary['config'].get('search', {}).get('ceiling_s', top['seconds'])} s asked), {noun} CPU "
                    f"{_pct(top['target_cpu'])}, busiest generator {top['gen_cpu']:.0%}{share}. The knee's rule "
                    "(85% CPU, the SLO, 90% delivered) leaves the rest in reserve."
                )
            )
    out.append(
        table(
            "Every step, in the order run: whole seconds at one rate (latency: the swarm's µs histogram of those "
            "seconds)",
            (
                "search",
                "stage",
                "intended/s",
                "admitted/s",
                "seconds",
                "errors",
                f"{noun} CPU",
                "busiest gen CPU",
                "machine CPU",
                "p50 ms",
                "p99 ms",
                "verdict",
                "workers missing",
            ),
            rows,
        )
    )
    return out


def _share(step: dict) -> str:
    return fmt(None if step.get("reconnect_share") is None else 100 * step["reconnect_share"], "%")


def _slope_text(name: str, cost: dict | None) -> str:
    if not cost:
        return f"The {name}'s cost could not be fitted (fewer than three steps at two rates, or its CPU unknown)."
    return (
        f"The {name}'s marginal CPU per authentication is {fmt(cost['slope_us'], ' µs')} (the slope of its CPU "
        f"against the admitted rate over {cost['steps']} steps, R² {cost['r2']:.2f}), on top of "
        f"{cost['fixed_cores']:.2f} core(s) busy at no load."
    )


def _cost(summary: dict, plots: dict) -> list[dict]:
    k, c, noun = summary["knee"], summary["cost"], summary["target"]["noun"]
    rows = [
        (
            s["segment"],
            fmt(s["achieved"]),
            _share(s),
            _pct(s["target_cpu"]),
            fmt(s["target_us_per_auth"]),
            fmt(s["gen_us_per_auth"]),
        )
        for s in sorted(analysis.paced(summary["steps"]), key=lambda s: (s["segment"], s["achieved"]))
    ]
    mix = (
        ""
        if not k or k.get("reconnect_share") is None
        else f" At the knee {k['reconnect_share']:.0%} of the admissions were reconnects of devices the hub had "
        "admitted before (its device cache), the rest first connections."
    )
    return [
        text(
            f"At the knee the {noun} spent {fmt(c['target_us_per_auth'], ' µs', 0, 'an unknown amount')} of CPU per "
            f"authentication on average and the generator {fmt(c['gen_us_per_auth'], ' µs')}; the crypto floor (two "
            f"raw P-256 verifies, measured in this run) is {fmt(c['floor_us'], ' µs')}, so the {noun} spends "
            f"{fmt(c['floor_multiple'], '×', 2)} the floor." + mix
        ),
        text(
            _slope_text(noun, c.get("slope"))
            + " "
            + _slope_text("generator", c.get("generator_slope"))
            + " An average at one rate spreads the fixed part over that rate's authentications, so it overstates "
            "the cost at low rates; projections use the slope plus the fixed part."
        ),
        table(
            "CPU per authentication by load",
            ("search", "admitted/s", "reconnects", f"{noun} CPU", f"{noun} µs/auth", "generator µs/auth"),
            rows,
        ),
    ]


def _generators(summary: dict, plots: dict) -> list[dict]:
    out = []
    for v in summary["per_segment"]:
        gens = v.get("generators") or {}
        names = sorted(gens, key=int)
        if not names:
            continue
        rows = [
            (
                s["stage"],
                _rate(s),
                *(_pct(s["gen_cpu_by_worker"].get(w)) if w in s["gen_cpu_by_worker"] else "lost" for w in names),
            )
            for s in summary["steps"]
            if s["segment"] == v["segment"]
        ]
        hosts = ", ".join(f"{w} on {gens[w].get('host') or '?'} (pid {gens[w].get('pid') or '?'})" for w in names)
        out.append(
            text(
                f"Generator processes with {_where(v)}: {hosts}. A step is generator-limited when the "
                f"busiest of them reaches {analysis.CPU_LIMIT:.0%} of its core."
            )
        )
        out.append(
            table(
                "Each generator process's CPU per step",
                ("stage", "intended/s", *(f"generator {w}" for w in names)),
                rows,
            )
        )
        for w, at in (v.get("workers_lost") or {}).items():
            out.append(
                text(
                    f"Generator {w} was lost {float(at):.0f} s into the run: every step after it was judged "
                    "on the generators that still reported, and says so in the step table."
                )
            )
    return out or [text("No generator reported.")]


def _latency(summary: dict, plots: dict) -> list[dict]:
    k = summary["knee"]
    out = []
    if k:
        out.append(
            table(
                f"At the knee ({k['stage']} step at {_rate(k)}/s): whole authentication, µs histogram",
                ("p50 ms", "p90 ms", "p99 ms", "p99.9 ms"),
                [(fmt(k["p50"], "", 2), fmt(k["p90"], "", 2), fmt(k["p99"], "", 2), fmt(k["p999"], "", 2))],
            )
        )
    out += image("latency", "latency and cost against admitted rate", plots)
    return out or [text("No step completed an authentication.")]


def _errors(summary: dict, plots: dict) -> list[dict]:
    rows = [(seg, code, f"{n:,}") for seg, codes in summary["errors"].items() for code, n in codes.items()]
    if summary["storm"]:
        rows += [("reconnect storm", code, f"{n:,}") for code, n in summary["storm"]["failures_by_code"].items()]
    if not rows:
        return [text("No authentication failed.")]
    return [table("Failed authentications by search and error code", ("run", "code", "count"), rows)]


def _over_time(summary: dict, plots: dict) -> list[dict]:
    return image("timeline", "rates, CPU and p99 over time", plots) or [text("No samples.")]


def _storm(summary: dict, plots: dict) -> list[dict]:
    st = summary["storm"]
    if not st:
        return [text("No storm in this run.")]
    against = f"{fmt(st['capacity'])} admissions/s" if st["capacity"] else "the target's own pace"
    devices = (
        f" ({st['profile']['text']}, over {'MQTT with mutual TLS' if st.get('transport') == 'mqtts' else 'HTTP'})"
        if st.get("profile")
        else ""
    )
    return [
        text(
            f"{st['devices']:,} devices{devices} reconnecting at once against {against}, backoff {st['backoff']}: "
            f"{st['admitted']:,} admitted ({st['admitted_fraction']:.1%}) in {fmt(st['duration_s'], ' s', 1)}, "
            f"{fmt(st['retries'])} refused attempts. The storm ran until every device was admitted or "
            f"{fmt(st['bound_s'], ' s')} (twice the simulated time to admit all, at least 20 s, capped by "
            "--storm-timeout)."
        ),
        table(
            "Time to admit, measured beside simulated (simulation: the capacity, the backoff, and the swarm's "
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
        *_in_flight(st),
        *image("storm", "storm admission curve", plots),
    ]


def _in_flight(st: dict) -> list[dict]:
    """Little's law against measurement during the storm, and what the hub's memory held."""
    fl = st.get("in_flight")
    if not fl:
        return []
    dev, hub, mem = fl["device"], fl["hub"], fl["memory"]

    def sim(side: dict, key: str) -> str:
        return fmt((side.get("simulated") or {}).get(key), "", 1, "not simulated")

    rows = [
        (
            "device side: authentications under way",
            fmt(dev["mean"], "", 1),
            fmt(dev["peak"], "", 0),
            fmt(dev["little_measured"], "", 1),
            fmt(dev["little_profile"], "", 1),
            sim(dev, "mean"),
            sim(dev, "peak"),
        ),
        (
            f"hub side: {hub['what']}",
            fmt(hub["mean"], "", 1, "not read"),
            fmt(hub["peak"], "", 0, "not read"),
            "no hold times read",
            fmt(hub["little_profile"], "", 1),
            sim(hub, "mean"),
            sim(hub, "peak"),
        ),
    ]
    out = [
        table(
            f"Attempts in flight until the last admission ({fmt(fl['window_s'], ' s', 1)}): L = λW with λ = "
            f"{fmt(fl['attempt_rate'], '', 0)} attempts/s, W measured {fmt(fl['mean_attempt_s'], ' s', 3)} per attempt "
            f"or added by the profile {fmt(fl['profile_attempt_s'], ' s', 3)}",
            (
                "in flight",
                "measured mean",
                "measured peak",
                "λW measured",
                "λW profile",
                "simulated mean",
                "simulated peak",
            ),
            rows,
        )
    ]
    if mem["kib_per_handshake"] is not None:
        peak = fmt(mem["peak_handshakes_mib"], " MiB", 1, "unknown")
        out.append(
            text(
                f"The hub held {fmt(mem['kib_per_handshake'], ' KiB', 0)} of resident memory per TLS handshake "
                f"waiting for its device (measured before the storm with stalled handshakes, R² "
                f"{fmt(mem['r2'], '', 3)}): {peak} for the measured peak of handshakes in flight; the hub's "
                f"resident memory peaked at {fmt(mem['hub_rss_peak_mib'], ' MiB', 0, 'an unknown size')}."
            )
        )
    elif mem.get("reason"):
        out.append(text(f"Hub memory per attempt in flight: none measured ({mem['reason']})."))
    return out


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
            f"{pr['p99_ms']:g} ms ({fmt(pr['rate'])} admissions/s): {fmt(pr['cores'], ' core(s)', 0, 'unknown')} "
            f"like the ones measured ({fmt(pr['per_core'])}/s per core at the margin, from {pr['basis']}). For all of "
            f"them reconnecting at once with an SDK's backoff, ask certstorm plan --devices {pr['devices']} --window "
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
    ("Generators", _generators),
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
