"""The typed values the request steps return, and ``Outcome``, built once from them when the request ends.

Each step of ``router.pipeline.chat`` returns one of these (frozen); the flow function keeps them in locals and
hands them to ``Outcome.build``. The usage row, the metrics and the access-log line are all read from the
``Outcome``: no step writes into another's value. ``Meter`` is the one mutable piece: the running count of an
answer being delivered (written only by the delivering step), so that a stream the client cut short is still
accounted for what it cost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from providers.interface import Served

if TYPE_CHECKING:
    from cache import LookupResult, Scope
    from router.auth.keys import Principal
    from router.http.errors import DejaError
    from router.http.tracing import TraceContext
    from router.limits.memory import Decision
    from router.pipeline.cache_debug import Explanation

CacheLabel = Literal["exact", "semantic", "miss", "bypass", "off"]


@dataclass(frozen=True)
class Call:
    """Who asked for what: known once the request is parsed and authenticated."""

    request_id: str
    route: str  # chat | embeddings
    principal: Principal
    model: str
    stream: bool = False
    end_user: str | None = None
    request_body: Any = None  # what is stored with the usage row (messages, or the embedding input)
    started: float = field(default_factory=time.perf_counter)
    ts: float = field(default_factory=time.time)
    tags: tuple[str, ...] = ()  # metadata.tags, x-litellm-tags, x-deja-tags
    metadata: dict[str, Any] | None = field(default=None, compare=False)  # the body's metadata, stored
    trace: TraceContext | None = None  # forwarded upstream with the request id

    @property
    def upstream_headers(self) -> dict[str, str]:
        """Headers the deployment gets with this request: the trace context and deja's request id."""
        if self.trace is None:
            return {"X-Request-Id": self.request_id}
        return self.trace.upstream_headers(self.request_id)


@dataclass(frozen=True)
class Compressed:
    """The body to send and deja's own token counts before and after compression."""

    body: dict[str, Any]
    tokens_original: int
    tokens_sent: int
    saved_usd: float = 0.0

    @property
    def saved_tokens(self) -> int:
        return max(0, self.tokens_original - self.tokens_sent)


@dataclass(frozen=True)
class Admission:
    """The limiter's decision (None for an unlimited key) and the headers it adds to the answer."""

    headers: dict[str, str]
    decision: Decision | None = None
    estimated_tokens: int = 0


@dataclass(frozen=True)
class Lookup:
    """What the cache said, and where a fresh answer would be stored (``scope`` None: not stored)."""

    label: CacheLabel
    result: LookupResult | None = None
    scope: Scope | None = None
    query: str | None = None
    store_ttl: float | None = None
    explanation: Explanation | None = None  # why it hit or missed (None: no lookup was made)

    @property
    def hit(self) -> bool:
        return self.result is not None and self.result.entry is not None


@dataclass(frozen=True)
class Delivery:
    """What answering cost: tokens, price, who served, timings; ``error`` when a stream failed in-band."""

    served: Served
    prompt_tokens: int | None = None  # as the upstream counted them; None: deja's own count
    completion_tokens: int = 0
    cost_usd: float = 0.0
    saved_cache_usd: float = 0.0
    similarity: float | None = None
    ttft: float | None = None
    upstream_seconds: float | None = None
    response: Any = None
    error: DejaError | None = None


class Meter:
    """The running account of an answer being delivered. Only the delivering step writes it; ``delivery()`` can
    be read at any moment, so a cancelled stream is still accounted."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.served = Served()
        self.ttft: float | None = None
        self.upstream_started: float | None = None
        self.upstream_seconds: float | None = None
        self.prompt_tokens: int | None = None
        self.completion_tokens = 0
        self.cost_usd = 0.0
        self.response: Any = None
        self.error: DejaError | None = None

    def first_token(self) -> None:
        if self.ttft is None:
            self.ttft = time.perf_counter() - self.started

    def upstream_begins(self) -> None:
        self.upstream_started = time.perf_counter()

    def upstream_ends(self) -> None:
        if self.upstream_started is not None and self.upstream_seconds is None:
            self.upstream_seconds = time.perf_counter() - self.upstream_started

    def delivery(self) -> Delivery:
        self.upstream_ends()
        return Delivery(served=self.served, prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens,
                        cost_usd=self.cost_usd, ttft=self.ttft, upstream_seconds=self.upstream_seconds,
                        response=self.response, error=self.error)


@dataclass(frozen=True)
class Outcome:
    """Everything known about one answered request; the single source of the usage row, metrics and log line."""

    call: Call
    status: int
    error: DejaError | None
    compressed: Compressed | None
    admission: Admission | None
    lookup: Lookup | None
    delivery: Delivery | None
    elapsed: float

    @classmethod
    def build(cls, call: Call, *, compressed: Compressed | None = None, admission: Admission | None = None,
              lookup: Lookup | None = None, delivery: Delivery | None = None,
              error: DejaError | None = None) -> Outcome:
        error = error or (delivery.error if delivery is not None else None)
        return cls(call=call, status=error.status if error is not None else 200, error=error, compressed=compressed,
                   admission=admission, lookup=lookup, delivery=delivery,
                   elapsed=time.perf_counter() - call.started)

    @property
    def cache(self) -> CacheLabel:
        return self.lookup.label if self.lookup is not None else "off"

    @property
    def hit(self) -> bool:
        return self.cache in ("exact", "semantic")

    @property
    def prompt_tokens_client(self) -> int:
        return self.compressed.tokens_original if self.compressed is not None else self.prompt_tokens_sent

    @property
    def prompt_tokens_sent(self) -> int:
        if self.delivery is not None and self.delivery.prompt_tokens is not None:
            return self.delivery.prompt_tokens
        return self.compressed.tokens_sent if self.compressed is not None else 0

    @property
    def completion_tokens(self) -> int:
        return self.delivery.completion_tokens if self.delivery is not None else 0

    @property
    def cost_usd(self) -> float:
        return self.delivery.cost_usd if self.delivery is not None else 0.0

    @property
    def deployment(self) -> str | None:
        return self.delivery.served.deployment if self.delivery is not None else None

    @property
    def similarity(self) -> float | None:
        """The served entry's similarity on a hit, else the best candidate's (None: nothing compared)."""
        explanation = self.lookup.explanation if self.lookup is not None else None
        return explanation.similarity if explanation is not None else None

    @property
    def cache_reason(self) -> str | None:
        explanation = self.lookup.explanation if self.lookup is not None else None
        return explanation.reason if explanation is not None else None

    @property
    def error_type(self) -> str | None:
        return None if self.error is None else (self.error.code or self.error.type)
