"""W3C trace context (``traceparent``, ``tracestate``) and the request id, forwarded to the upstream.

A valid ``traceparent`` from the client is passed on unchanged (with its ``tracestate``); an invalid one is
ignored, as the W3C recommendation says, and deja starts a trace of its own, so that every usage row carries a
trace id. The upstream also gets deja's request id as ``X-Request-Id``.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_MAX_TRACESTATE = 512  # the W3C limit is 32 members; longer values are not forwarded


@dataclass(frozen=True)
class TraceContext:
    traceparent: str
    tracestate: str | None
    trace_id: str
    started_here: bool  # no valid traceparent came with the request

    def upstream_headers(self, request_id: str) -> dict[str, str]:
        headers = {"traceparent": self.traceparent, "X-Request-Id": request_id}
        if self.tracestate:
            headers["tracestate"] = self.tracestate
        return headers


def parse_traceparent(value: str | None) -> str | None:
    """The trace id of a valid ``traceparent``, else None."""
    match = _TRACEPARENT.match((value or "").strip())
    if match is None:
        return None
    version, trace_id, parent_id, _flags, rest = match.groups()
    if version == "ff" or trace_id == "0" * 32 or parent_id == "0" * 16 or (version == "00" and rest):
        return None
    return trace_id


def trace_context(headers: Mapping[str, str]) -> TraceContext:
    incoming = (headers.get("traceparent") or "").strip()
    trace_id = parse_traceparent(incoming)
    if trace_id is None:
        trace_id = secrets.token_hex(16)
        return TraceContext(f"00-{trace_id}-{secrets.token_hex(8)}-01", None, trace_id, True)
    state = (headers.get("tracestate") or "").strip()
    return TraceContext(incoming, state if state and len(state) <= _MAX_TRACESTATE else None, trace_id, False)
