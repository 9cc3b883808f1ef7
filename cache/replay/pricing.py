"""What each replayed request cost upstream: tokens (the answer's usage, else counted), dollars, latency.

Prices come from LiteLLM's bundled price map (``litellm.cost_per_token``; ``LITELLM_LOCAL_MODEL_COST_MAP``
keeps it offline). A known cost in the log (deja's own ``cost_usd``) wins over the price map. A model the map
does not know costs 0 and is listed in ``Costs.unpriced``. Token counts without usage come from compression's
counter (tiktoken for OpenAI models, cl100k otherwise); a request without usage or answer text counts 0
completion tokens.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cache.replay.records import ReplayRequest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@dataclass
class Costs:
    prompt_tokens: np.ndarray  # (n,) int64
    completion_tokens: np.ndarray  # (n,) int64
    usd: np.ndarray  # (n,) float64
    latency_ms: np.ndarray  # (n,) float64, NaN when unknown
    counted: int = 0  # requests whose prompt tokens were counted here (no usage in the log)
    unpriced: set[str] = field(default_factory=set)

    @property
    def tokens(self) -> np.ndarray:
        return self.prompt_tokens + self.completion_tokens


def rates(model: str, cache: dict[str, tuple[float, float] | None]) -> tuple[float, float] | None:
    """USD per prompt token and per completion token, or None when the price map does not know the model."""
    if model not in cache:
        import litellm

        try:
            prompt, _ = litellm.cost_per_token(model=model, prompt_tokens=1_000_000, completion_tokens=0)
            _, completion = litellm.cost_per_token(model=model, prompt_tokens=0, completion_tokens=1_000_000)
            cache[model] = (float(prompt) / 1_000_000, float(completion) / 1_000_000)
        except Exception:  # noqa: BLE001 - LiteLLM raises bare Exceptions for unknown models
            cache[model] = None
    return cache[model]


def price(requests: Sequence[ReplayRequest], *, price_as: str | None = None) -> Costs:
    """Per-request tokens, dollars and latency; ``price_as`` prices every request as that model."""
    from compression import count_text_tokens, count_tokens

    n = len(requests)
    costs = Costs(np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n), np.full(n, np.nan))
    known: dict[str, tuple[float, float] | None] = {}
    for i, request in enumerate(requests):
        model = price_as or request.model
        prompt = request.prompt_tokens
        if prompt is None:
            prompt = count_tokens(request.body["messages"], request.model)
            costs.counted += 1
        completion = request.completion_tokens
        if completion is None:
            completion = count_text_tokens(request.answer_text, request.model) if request.answer_text else 0
        costs.prompt_tokens[i], costs.completion_tokens[i] = prompt, completion
        if request.cost_usd is not None and price_as is None:
            costs.usd[i] = request.cost_usd
        else:
            rate = rates(model, known)
            if rate is None:
                costs.unpriced.add(model)
            else:
                costs.usd[i] = prompt * rate[0] + completion * rate[1]
        if request.latency_ms is not None:
            costs.latency_ms[i] = request.latency_ms
    return costs
