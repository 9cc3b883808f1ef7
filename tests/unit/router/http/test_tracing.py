"""Trace context: a valid traceparent is kept, an invalid one replaced by a fresh trace."""

from __future__ import annotations

import pytest

from router.http.tracing import parse_traceparent, trace_context

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_valid_traceparent_and_its_state_are_forwarded() -> None:
    ctx = trace_context({"traceparent": VALID, "tracestate": "congo=t61rcWkgMzE"})
    assert (ctx.trace_id, ctx.started_here) == ("4bf92f3577b34da6a3ce929d0e0e4736", False)
    assert ctx.upstream_headers("req_1") == {"traceparent": VALID, "tracestate": "congo=t61rcWkgMzE",
                                             "X-Request-Id": "req_1"}


@pytest.mark.parametrize("bad", [
    "", "garbage", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
])
def test_an_invalid_traceparent_starts_a_new_trace(bad: str) -> None:
    assert parse_traceparent(bad) is None
    ctx = trace_context({"traceparent": bad, "tracestate": "a=b"})
    assert ctx.started_here and ctx.tracestate is None
    assert parse_traceparent(ctx.traceparent) == ctx.trace_id and len(ctx.trace_id) == 32


def test_a_future_version_may_carry_more_fields() -> None:
    assert parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more") == \
        "4bf92f3577b34da6a3ce929d0e0e4736"
