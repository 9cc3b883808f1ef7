"""A closed Gateway leaves nothing behind in LiteLLM's process-wide callback lists (past 100, LiteLLM silently
stops adding a new Router's cooldown callback)."""

from __future__ import annotations

import litellm

from providers.gateway import Gateway

_LISTS = ("callbacks", "success_callback", "failure_callback", "_async_success_callback", "_async_failure_callback")


def _sizes() -> list[int]:
    return [len(getattr(litellm, name)) for name in _LISTS]


async def test_closing_a_gateway_unhooks_its_router() -> None:
    before = _sizes()
    gateway = Gateway([{"model_name": "m", "litellm_params": {"model": "openai/m", "api_base": "http://127.0.0.1:9/v1",
                                                              "api_key": "sk-x"}}])
    assert _sizes() != before
    await gateway.close()
    assert _sizes() == before
