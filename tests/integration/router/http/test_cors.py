"""CORS through the real app and a fake upstream: preflights, allowed and refused origins, exposed headers on
JSON answers, streams and errors; nothing at all without configured origins."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from providers.fake_openai import FakeOpenAI
from router.app import create_app
from router.http import cors
from tests.integration.harness import Deja, make_settings

MASTER = "sk-master-test"
APP = "https://app.example.com"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def start(tmp_path: Path, upstream: FakeOpenAI) -> AsyncIterator[Callable[..., Any]]:
    runners: list[web.AppRunner] = []

    async def run(**cors_settings: Any) -> Deja:
        settings = make_settings(tmp_path, upstream, master_key=MASTER, cache={"enabled": False},
                                 **({"cors": cors_settings} if cors_settings else {}))
        app = create_app(settings)
        cors.setup(app, settings.deja.cors)  # a no-op once create_app installs it
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return Deja(app, runner, site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    yield run
    for runner in runners:
        await runner.cleanup()


def preflight(origin: str) -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, x-deja-cache-namespace"}


async def test_preflight_and_answers_for_an_allowed_origin(start: Callable[..., Any]) -> None:
    server = await start(allow_origins=[APP, "https://*.partner.example"], max_age=120)
    async with aiohttp.ClientSession() as s:
        async with s.options(server.base_url + "/chat/completions", headers=preflight(APP)) as r:
            assert r.status == 204
            assert r.headers["Access-Control-Allow-Origin"] == APP
            assert "POST" in r.headers["Access-Control-Allow-Methods"]
            assert r.headers["Access-Control-Allow-Headers"] == "authorization, content-type, x-deja-cache-namespace"
            assert r.headers["Access-Control-Max-Age"] == "120"
        async with s.options(server.base_url + "/chat/completions",
                             headers=preflight("https://eu.partner.example")) as r:
            assert r.status == 204 and r.headers["Access-Control-Allow-Origin"] == "https://eu.partner.example"
        auth = {"Authorization": f"Bearer {MASTER}", "Origin": APP}
        async with s.post(server.base_url + "/chat/completions", json=CHAT, headers=auth) as r:
            assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == APP
            exposed = {h.strip().lower() for h in r.headers["Access-Control-Expose-Headers"].split(",")}
            assert {"x-deja-request-id", "x-request-id", "x-deja-cache", "x-litellm-response-cost",
                    "x-ratelimit-remaining-requests"} <= exposed
            assert "Origin" in r.headers["Vary"]
        async with s.post(server.base_url + "/chat/completions", json={**CHAT, "stream": True}, headers=auth) as r:
            assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == APP
            assert (await r.read()).rstrip().endswith(b"data: [DONE]")
        async with s.post(server.base_url + "/chat/completions", json=CHAT, headers={"Origin": APP}) as r:
            assert r.status == 401 and r.headers["Access-Control-Allow-Origin"] == APP  # the browser sees why


async def test_other_origins_get_no_cors(start: Callable[..., Any]) -> None:
    server = await start(allow_origins=[APP])
    async with aiohttp.ClientSession() as s:
        async with s.options(server.base_url + "/chat/completions", headers=preflight("https://evil.example")) as r:
            assert r.status == 403 and "Access-Control-Allow-Origin" not in r.headers
            assert (await r.json())["error"]["code"] == "origin_not_allowed"
        async with s.post(server.base_url + "/chat/completions", json=CHAT,
                          headers={"Authorization": f"Bearer {MASTER}", "Origin": "https://evil.example"}) as r:
            assert r.status == 200 and "Access-Control-Allow-Origin" not in r.headers


async def test_wildcard_and_credentials(start: Callable[..., Any]) -> None:
    anyone = await start(allow_origins=["*"])
    async with aiohttp.ClientSession() as s, s.options(anyone.url + "/v1/models", headers=preflight(APP)) as r:
        assert r.status == 204 and r.headers["Access-Control-Allow-Origin"] == "*"
    with_cookies = await start(allow_origins=["*"], allow_credentials=True)
    async with aiohttp.ClientSession() as s, s.get(with_cookies.url + "/v1/models",
                                                   headers={"Origin": APP, "Authorization": f"Bearer {MASTER}"}) as r:
        assert r.headers["Access-Control-Allow-Origin"] == APP  # never "*" with credentials
        assert r.headers["Access-Control-Allow-Credentials"] == "true"


async def test_no_origins_configured_means_no_cors(start: Callable[..., Any]) -> None:
    server = await start()
    async with aiohttp.ClientSession() as s:
        async with s.options(server.base_url + "/chat/completions", headers=preflight(APP)) as r:
            assert r.status == 405 and "Access-Control-Allow-Origin" not in r.headers
        async with s.post(server.base_url + "/chat/completions", json=CHAT,
                          headers={"Authorization": f"Bearer {MASTER}", "Origin": APP}) as r:
            assert r.status == 200 and "Access-Control-Allow-Origin" not in r.headers
