"""Readiness keeps a replica in rotation while any deployment can answer; the per-deployment health for
dashboards. Real app, two real fake upstreams (one stops answering), real SQLite."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from providers.fake_openai import FakeOpenAI
from tests.integration.harness import make_settings, start_deja


async def test_one_deployment_down_keeps_the_replica_ready(tmp_path: Path) -> None:
    async with FakeOpenAI() as first, FakeOpenAI() as second, FakeOpenAI() as other:
        models = [{"model_name": "a", "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": u.base_url,
                                                         "api_key": "sk-fake"}} for u in (first, second)]
        models.append({"model_name": "b", "litellm_params": {"model": "openai/gpt-4o-mini",
                                                             "api_base": other.base_url, "api_key": "sk-fake"}})
        server = await start_deja(make_settings(tmp_path, config={"model_list": models}, cache={"enabled": False}))
        try:
            async with aiohttp.ClientSession() as s:
                async with s.get(server.url + "/health/ready") as r:
                    body = await r.json()
                    assert r.status == 200 and body["models"] == {"a": True, "b": True}
                await other.close()  # model group b has no deployment left
                async with s.get(server.url + "/health/ready") as r:
                    body = await r.json()
                    assert r.status == 200 and body["status"] == "ok"
                    assert body["models"] == {"a": True, "b": False}
                    assert body["checks"]["upstream:b#2"] is False and body["checks"]["database"] is True
                await first.close()
                async with s.get(server.url + "/health/ready") as r:
                    assert r.status == 200 and (await r.json())["models"] == {"a": True, "b": False}
                await second.close()  # nothing can answer: out of rotation
                async with s.get(server.url + "/health/ready") as r:
                    body = await r.json()
                    assert r.status == 503 and body["status"] == "unavailable"
                    assert body["models"] == {"a": False, "b": False}
        finally:
            await server.close()


async def test_deployment_health_shows_a_cooled_down_deployment(tmp_path: Path) -> None:
    from providers.fake_openai import Behaviour
    from tests.integration.harness import upstream_models

    async with FakeOpenAI(default=Behaviour(kind="error", status=500)) as bad, FakeOpenAI() as good:
        server = await start_deja(make_settings(tmp_path, bad, good, config={
            "model_list": upstream_models(bad, good),
            "router_settings": {"num_retries": 1, "retry_after": 0, "allowed_fails": 0, "cooldown_time": 60}},
            cache={"enabled": False}))
        try:
            async with aiohttp.ClientSession() as s:
                body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
                async with s.post(server.base_url + "/chat/completions", json=body) as r:
                    assert r.status == 200  # the retry went to the good deployment
                async with s.get(server.url + "/health/deployments") as r:
                    health = await r.json()
        finally:
            await server.close()
    by_id = {d["deployment"]: d for d in health["data"]}
    assert by_id["gpt-4o-mini#0"]["cooling_down"] is True and by_id["gpt-4o-mini#0"]["healthy"] is False
    assert by_id["gpt-4o-mini#0"]["reachable"] is True  # it answers, with errors
    assert by_id["gpt-4o-mini#1"]["healthy"] is True and (health["healthy"], health["total"]) == (1, 2)
