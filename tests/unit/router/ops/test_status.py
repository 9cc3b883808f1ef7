"""The status page's latency figures interpolate inside histogram buckets, as PromQL's histogram_quantile does."""

from __future__ import annotations

from router.ops.metrics import Metrics
from router.ops.status import _quantile


def test_quantile_interpolates_within_the_bucket() -> None:
    metrics = Metrics()
    for seconds in (0.06, 0.07, 0.08, 0.09):  # all in the (0.05, 0.1] bucket
        metrics.duration.labels(route="chat", model="m", cache="miss").observe(seconds)
    assert _quantile(metrics, 0.5) == 0.05 + 0.05 * 0.5
    assert _quantile(metrics, 1.0) == 0.1


def test_quantile_without_traffic_is_none() -> None:
    assert _quantile(Metrics(), 0.5) is None
