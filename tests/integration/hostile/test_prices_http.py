"""Prices set on a deployment (``input_cost_per_token``/``output_cost_per_token`` in ``litellm_params`` or
``model_info``) are what a request costs, and what a key's budget is charged."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from providers.fake_openai import FakeOpenAI
from tests.integration.harness import Deja, make_settings, start_deja
from tests.integration.hostile.conftest import MASTER, usage_rows
from tests.integration.hostile.helpers import raw_request

JSON = (b"Content-Type", b"application/json")
BODY = b'{"model": "priced", "messages": [{"role": "user", "content": "hi"}]}'


def priced(upstream: FakeOpenAI, where: str) -> dict[str, Any]:
    prices = {"input_cost_per_token": 0.001, "output_cost_per_token": 0.002}
    params: dict[str, Any] = {"model": "openai/a-model-litellm-has-no-price-for", "api_base": upstream.base_url,
                              "api_key": "sk-fake"}
    entry: dict[str, Any] = {"model_name": "priced", "litellm_params": params}
    if where == "litellm_params":
        params.update(prices)
    else:
        entry["model_info"] = dict(prices)
    return entry


@pytest.fixture(params=["litellm_params", "model_info"])
async def deja(request: pytest.FixtureRequest, tmp_path: Path, upstream: FakeOpenAI) -> AsyncIterator[Deja]:
    config = {"model_list": [priced(upstream, request.param)]}
    server = await start_deja(make_settings(tmp_path, upstream, config=config, master_key=MASTER,
                                            cache={"semantic": False}))
    yield server
    await server.close()


async def test_deployment_prices_make_the_cost_and_spend_the_budget(deja: Deja) -> None:
    auth = (b"Authorization", b"Bearer " + MASTER.encode())
    created = await raw_request(deja.port, "POST", "/admin/keys", headers=[auth, JSON],
                                body=b'{"name": "tiny", "budget_usd": 0.00001, "budget_period": "daily"}')
    assert created.status == 201
    key = (b"Authorization", b"Bearer " + created.json()["key"].encode())
    first = await raw_request(deja.port, "POST", "/v1/chat/completions", headers=[key, JSON], body=BODY)
    assert first.status == 200
    (row,) = await usage_rows(deja, 1)
    assert row["cost_usd"] == pytest.approx(13 * 0.001 + 7 * 0.002)  # the fake upstream's 13 + 7 tokens
    statuses = []
    for _ in range(5):
        r = await raw_request(deja.port, "POST", "/v1/chat/completions", headers=[key, JSON], body=BODY)
        statuses.append(r.status)
        await deja.settled()
    assert statuses == [429] * 5
