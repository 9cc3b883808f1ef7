"""LiteLLM users' configs and code, unchanged: model_group_alias, wildcard deployments, /v1/models, embeddings on
the offline model. The official ``openai`` SDK is the client; the upstream is the real fake OpenAI server."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiohttp
import openai
import pytest
import redis.asyncio as aioredis
import yaml

from providers.fake_openai import FakeOpenAI
from router.appkeys import STORAGE
from router.config import ConfigError, load_settings
from router.storage import UsageFilter
from tests.integration.harness import ROOT, Deja, make_settings, start_deja
from tests.integration.router.storage.helpers import wait_for

NO_STORE = {"Cache-Control": "no-store"}


def litellm_config(upstream: FakeOpenAI) -> dict[str, Any]:
    """Written as LiteLLM's docs write it: a group, a provider wildcard, a catch-all wildcard, aliases."""
    key = {"api_base": upstream.base_url, "api_key": "sk-fake"}
    return {
        "model_list": [
            {"model_name": "gpt-4o-mini", "litellm_params": {"model": "openai/gpt-4o-mini", **key}},
            {"model_name": "openai/*", "litellm_params": {"model": "openai/*", **key}},
            {"model_name": "*", "litellm_params": {"model": "openai/*", **key}},
            {"model_name": "sim", "litellm_params": {"model": "sim/sim", "sim_delay_ms": 0, "sim_word_delay_ms": 0}},
        ],
        "router_settings": {"num_retries": 0, "model_group_alias": {
            "gpt-4": "gpt-4o-mini", "secret-alias": {"model": "gpt-4o-mini", "hidden": True}}},
    }


@pytest.fixture
async def deja(tmp_path: Path, upstream: FakeOpenAI) -> AsyncIterator[Deja]:
    server = await start_deja(make_settings(tmp_path, config=litellm_config(upstream), cache={"semantic": False}))
    yield server
    await server.close()


@pytest.fixture
def client(deja: Deja) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=deja.base_url, api_key="unused", max_retries=0)


async def test_alias_routes_to_its_group(client: openai.AsyncOpenAI, upstream: FakeOpenAI) -> None:
    for alias in ("gpt-4", "secret-alias"):
        answer = await client.chat.completions.create(
            model=alias, messages=[{"role": "user", "content": "hello"}], extra_headers=NO_STORE)
        assert answer.choices[0].message.content == "Answer to: hello"
        assert upstream.received[-1].body["model"] == "gpt-4o-mini"


async def test_wildcards_route_the_requested_name(client: openai.AsyncOpenAI, upstream: FakeOpenAI) -> None:
    answer = await client.chat.completions.create(
        model="anything-wild", messages=[{"role": "user", "content": "hi"}], extra_headers=NO_STORE)
    assert answer.choices[0].message.content == "Answer to: hi"
    assert upstream.received[-1].body["model"] == "anything-wild"
    stream = await client.chat.completions.create(
        model="openai/o3-mini", messages=[{"role": "user", "content": "hey"}], stream=True, extra_headers=NO_STORE)
    assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == "Answer to: hey"
    assert upstream.received[-1].body["model"] == "o3-mini"


async def test_models_lists_groups_and_visible_aliases(client: openai.AsyncOpenAI) -> None:
    listed = [m.id async for m in client.models.list()]
    assert listed == ["gpt-4", "gpt-4o-mini", "sim"]  # no pattern, no hidden alias
    assert (await client.models.retrieve("secret-alias")).id == "secret-alias"
    assert (await client.models.retrieve("openai/gpt-4.1")).id == "openai/gpt-4.1"


async def test_embeddings_on_sim_is_a_clear_400(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.embeddings.create(model="sim", input="hello")
    assert caught.value.status_code == 400
    assert caught.value.body["message"] == "model sim does not support embeddings"  # type: ignore[index]
    assert caught.value.body["param"] == "model"  # type: ignore[index]


async def test_alias_to_nothing_stops_start_up(tmp_path: Path, upstream: FakeOpenAI) -> None:
    config = litellm_config(upstream)
    config["router_settings"]["model_group_alias"] = {"gpt-5": "no-such-group"}
    config["model_list"] = config["model_list"][:1]
    with pytest.raises(ConfigError, match=r"model_group_alias\.gpt-5: 'no-such-group' is not a model group"):
        server = await start_deja(make_settings(tmp_path, config=config))
        await server.close()


async def test_docs_config_uses_its_database_and_redis_cache(tmp_path: Path, upstream: FakeOpenAI, database_url: str,
                                                              pg_schema: str, redis_url: str,
                                                              redis_prefix: str) -> None:
    """The issue's config: environment_variables feed os.environ/ references in cache_params; usage rows go to
    general_settings.database_url (not SQLite); repeated requests are answered from Redis."""
    redis = urlparse(redis_url)
    config = litellm_config(upstream)
    config.update({
        "environment_variables": {"COMPAT_REDIS_HOST": redis.hostname, "COMPAT_REDIS_PORT": str(redis.port or 6379)},
        "litellm_settings": {"cache": True, "cache_params": {"type": "redis", "host": "os.environ/COMPAT_REDIS_HOST",
                                                             "port": "os.environ/COMPAT_REDIS_PORT", "ttl": 600}},
        "general_settings": {"database_url": database_url, "master_key": "sk-compat-master"},
        "deja": {"database_schema": pg_schema, "redis_prefix": redis_prefix, "cache": {"semantic": False},
                 "usage": {"flush_interval": 0.05, "spill_path": str(tmp_path / "spill.jsonl")}},
    })
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    settings = load_settings(path, environ={})
    assert not (tmp_path / "deja.db").exists()
    server = await start_deja(settings)
    try:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-compat-master", max_retries=0)
        for _ in range(2):
            raw = await client.chat.completions.with_raw_response.create(
                model="gpt-4", messages=[{"role": "user", "content": "cached?"}])
            await server.settled()
        assert raw.headers["X-Deja-Cache"] == "hit-exact" and len(upstream.received) == 1
        storage = server.app[STORAGE]
        assert storage.backend == "postgresql"

        async def two_rows() -> bool:
            found, _ = await storage.list_requests(UsageFilter(), limit=10)
            return len(found) == 2

        await wait_for(two_rows, timeout=20)
    finally:
        await server.close()
    client_redis = aioredis.from_url(redis_url)
    try:
        assert [k async for k in client_redis.scan_iter(match=redis_prefix + "cache:*", count=500)]
    finally:
        await client_redis.aclose()


async def ask(client: openai.AsyncOpenAI, deja: Deja, model: str = "gpt-4o-mini", text: str = "remember me",
              cache: dict[str, Any] | None = None) -> str:
    raw = await client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}],
        extra_body={"cache": cache} if cache is not None else None)
    await deja.settled()
    return raw.headers["X-Deja-Cache"]


async def test_litellm_body_cache_object_means_the_headers(client: openai.AsyncOpenAI, deja: Deja,
                                                           upstream: FakeOpenAI) -> None:
    assert await ask(client, deja, cache={"no-store": True}) == "bypass"
    assert await ask(client, deja, cache={"no-store": True}) == "bypass"
    assert await ask(client, deja) == "miss"  # no-store stored nothing
    assert all("cache" not in r.body for r in upstream.received)  # never sent upstream
    assert await ask(client, deja, cache={"no-cache": True}) == "bypass"
    assert len(upstream.received) == 4
    assert await ask(client, deja, cache={"ttl": 600}) == "hit-exact"  # the cache object is not in the scope
    assert await ask(client, deja, cache={"namespace": "team-b"}) == "miss"
    assert await ask(client, deja, cache={"namespace": "team-b"}) == "hit-exact"
    assert await ask(client, deja, cache={"s-maxage": 3600}) == "hit-exact"
    assert await ask(client, deja, cache={"s-maxage": 0}) == "miss"  # stored earlier than the client accepts
    with pytest.raises(openai.BadRequestError) as caught:
        await ask(client, deja, cache={"no_cache": True})
    assert caught.value.body["param"] == "cache.no_cache"  # type: ignore[index]


async def test_alias_and_group_share_one_cache_scope(client: openai.AsyncOpenAI, deja: Deja,
                                                     upstream: FakeOpenAI) -> None:
    assert await ask(client, deja, model="gpt-4o-mini", text="shared") == "miss"
    assert await ask(client, deja, model="gpt-4", text="shared") == "hit-exact"
    assert await ask(client, deja, model="anything-wild", text="shared") == "miss"  # another model entirely
    assert len(upstream.received) == 2


async def test_allowed_models_admit_an_alias_of_an_allowed_group(tmp_path: Path, upstream: FakeOpenAI) -> None:
    server = await start_deja(make_settings(tmp_path, config=litellm_config(upstream), master_key="sk-m",
                                            cache={"semantic": False}))
    try:
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer sk-m"}) as session, session.post(
                server.url + "/admin/keys", json={"name": "k", "allowed_models": ["gpt-4o-mini"]}) as r:
            secret = (await r.json())["key"]
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key=secret, max_retries=0)
        answer = await client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "a"}])
        assert answer.choices[0].message.content == "Answer to: a"
        assert [m.id async for m in client.models.list()] == ["gpt-4", "gpt-4o-mini"]
        with pytest.raises(openai.PermissionDeniedError):
            await client.chat.completions.create(model="anything-wild", messages=[{"role": "user", "content": "a"}])
    finally:
        await server.close()


@pytest.mark.slow
def test_cli_logs_ignored_keys_and_refuses_the_rest(tmp_path: Path) -> None:
    """``deja`` names each ignored LiteLLM key in a start-up warning, and stops (exit 2) on a refused one."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEJA_")}
    env.update({"PYTHONPATH": str(ROOT), "DEJA_LOG_FORMAT": "text"})
    ok = tmp_path / "ok.yaml"
    ok.write_text(f"litellm_settings:\n  success_callback: [langfuse]\ngeneral_settings:\n  alerting: [slack]\n"
                  f"  database_url: sqlite:///{tmp_path}/usage.db\n")
    run = subprocess.run([sys.executable, "-m", "router.cli.main", "usage", "--config", str(ok)], cwd=tmp_path,
                         env=env, capture_output=True, timeout=120)
    assert run.returncode == 0, run.stderr.decode()
    assert b"litellm_settings.success_callback: ignored" in run.stderr
    assert b"general_settings.alerting: ignored" in run.stderr
    assert (tmp_path / "usage.db").exists()  # general_settings.database_url was used
    refused = tmp_path / "refused.yaml"
    refused.write_text("litellm_settings:\n  max_budget: 100\n")
    run = subprocess.run([sys.executable, "-m", "router.cli.main", "usage", "--config", str(refused)],
                         cwd=tmp_path, env=env, capture_output=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.decode().startswith("deja: litellm_settings.max_budget: not supported by deja")
