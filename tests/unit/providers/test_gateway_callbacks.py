"""A closed Gateway leaves nothing on LiteLLM's process-wide callback lists (capped at 100 entries)."""

from __future__ import annotations

import litellm

from providers.gateway import Gateway

LISTS = ("success_callback", "_async_success_callback", "failure_callback", "_async_failure_callback")


def _count() -> int:
    return sum(len(getattr(litellm, name)) for name in LISTS)


async def test_closing_a_gateway_unregisters_its_router() -> None:
    before = _count()
    for _ in range(3):
        gateway = Gateway([{"model_name": "m", "litellm_params": {"model": "openai/x", "api_key": "k",
                                                                  "api_base": "http://127.0.0.1:1/v1"}}])
        assert _count() > before
        await gateway.close()
        assert _count() == before
