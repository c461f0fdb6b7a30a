"""The hub's batched histograms against prometheus-client's own ``observe``.

``hubsim/service/metrics.py`` adds whole batches to a histogram through prometheus-client's private
``_upper_bounds``, ``_buckets`` and ``_sum``. These tests read the result only through public API (the
text exposition, parsed with ``prometheus_client.parser``), so a release that renames or reshapes those
attributes fails here rather than in a running hub."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from hubsim.service.metrics import LATENCY_BUCKETS, BatchedHistogram

VALUES = [10e-6, 50e-6, 50.1e-6, 420e-6, 1e-3, 7.5e-4, 0.3, 1.0, 2.5, 40.0]


def _samples(registry, name: str) -> dict:
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        if family.name == name:
            for s in family.samples:
                key = s.labels.get("le", "")
                out[(s.name.removeprefix(name), s.labels.get("endpoint", ""), key)] = s.value
    return out


def test_a_flushed_batch_reads_as_the_same_values_observed_one_by_one():
    registry = CollectorRegistry()
    batched = Histogram("batched_seconds", "batched", buckets=LATENCY_BUCKETS, registry=registry)
    plain = Histogram("plain_seconds", "plain", buckets=LATENCY_BUCKETS, registry=registry)
    local = BatchedHistogram(batched)
    for value in VALUES:
        local.observe(value)
        plain.observe(value)
    assert _samples(registry, "batched_seconds")[("_count", "", "")] == 0  # nothing before the flush
    local.flush()
    local.flush()  # a second flush adds nothing
    got, want = _samples(registry, "batched_seconds"), _samples(registry, "plain_seconds")
    assert got == want
    assert got[("_count", "", "")] == len(VALUES) and got[("_bucket", "", "5e-05")] == 2


def test_a_labelled_child_is_batched_like_a_plain_histogram():
    registry = CollectorRegistry()
    batched = Histogram("req_seconds", "batched", ["endpoint"], buckets=LATENCY_BUCKETS, registry=registry)
    plain = Histogram("ref_seconds", "plain", ["endpoint"], buckets=LATENCY_BUCKETS, registry=registry)
    children = {e: BatchedHistogram(batched.labels(e)) for e in ("challenge", "proof")}
    for i, value in enumerate(VALUES):
        endpoint = ("challenge", "proof")[i % 2]
        children[endpoint].observe(value)
        plain.labels(endpoint).observe(value)
    for child in children.values():
        child.flush()
    assert _samples(registry, "req_seconds") == _samples(registry, "ref_seconds")
