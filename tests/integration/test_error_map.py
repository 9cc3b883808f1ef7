"""One error map: for each upstream failure and each kind of request, the client's status, the usage row, the
``deja_requests_total`` label and the access-log line agree (real app, real fake-OpenAI upstream over HTTP)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from providers.fake_openai import Behaviour, FakeOpenAI
from router.appkeys import METRICS, STORAGE, USAGE
from router.storage import UsageFilter
from tests.integration.harness import Deja, free_port, make_settings, start_deja

MODEL = "gpt-4o-mini"
# upstream behaviour → (status the client sees, OpenAI error type)
CASES: dict[str, tuple[Behaviour | None, int, str]] = {
    "400": (Behaviour(kind="error", status=400, error_message="bad field"), 400, "invalid_request_error"),
    "401": (Behaviour(kind="error", status=401, error_message="Incorrect API key provided: sk-up-123456"), 502,
            "upstream_error"),
    "404": (Behaviour(kind="error", status=404), 502, "upstream_error"),
    "408": (Behaviour(kind="error", status=408), 504, "timeout"),
    "429": (Behaviour(kind="error", status=429, headers={"Retry-After": "7"}), 429, "rate_limit_error"),
    "500": (Behaviour(kind="error", status=500), 502, "upstream_error"),
    "503": (Behaviour(kind="error", status=503), 502, "upstream_error"),
    "timeout": (Behaviour(kind="hang"), 504, "timeout"),
    "refused": (None, 502, "upstream_error"),
}
KINDS = ("chat", "stream", "embeddings")


@pytest.fixture
async def deja_for(tmp_path: Path, upstream: FakeOpenAI) -> AsyncIterator[Any]:
    started: list[Deja] = []

    async def start(refused: bool, timeout: float = 5.0) -> Deja:
        base = f"http://127.0.0.1:{free_port()}/v1" if refused else upstream.base_url
        models = [{"model_name": MODEL, "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": base,
                                                           "api_key": "sk-fake", "timeout": timeout}}]
        config = {"model_list": models, "router_settings": {"num_retries": 0, "retry_after": 0,
                                                            "disable_cooldowns": True}}
        deja = await start_deja(make_settings(tmp_path, config=config, cache={"semantic": False}))
        started.append(deja)
        return deja

    yield start
    for deja in started:
        await deja.close()


async def _send(deja: Deja, kind: str) -> tuple[int, dict[str, Any], str]:
    """(status the client saw — an in-band error's status for a stream cut after its headers —, error, id)."""
    path, body = ("/v1/embeddings", {"model": MODEL, "input": "hello"}) if kind == "embeddings" else (
        "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "hello"}],
                                 "stream": kind == "stream"})
    async with aiohttp.ClientSession() as session, session.post(deja.url + path, json=body) as response:
        rid = response.headers["X-Request-Id"]
        if response.content_type == "text/event-stream":
            events = [line[6:] for line in (await response.text()).splitlines() if line.startswith("data: ")]
            assert events[-1] == "[DONE]"
            error = json.loads(events[-2])["error"]
            return response.status, {**error, "retry_after": response.headers.get("Retry-After")}, rid
        error = (await response.json())["error"]
        return response.status, {**error, "retry_after": response.headers.get("Retry-After")}, rid


def _metric_statuses(deja: Deja, route: str) -> list[str]:
    out = []
    for line in deja.app[METRICS].render().decode().splitlines():
        if line.startswith("deja_requests_total{") and f'route="{route}"' in line and not line.endswith(" 0.0"):
            out.append(line.split('status="')[1].split('"')[0])
    return out


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", sorted(CASES))
async def test_every_upstream_failure_has_one_status(case: str, kind: str, deja_for: Any, upstream: FakeOpenAI,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    behaviour, status, error_type = CASES[case]
    caplog.set_level(logging.INFO, "deja.access")
    deja = await deja_for(refused=behaviour is None, timeout=0.5 if case == "timeout" else 5.0)
    if behaviour is not None:
        upstream.script(behaviour)
    seen, error, rid = await _send(deja, kind)
    assert seen == status and error["type"] == error_type
    if case == "429":
        assert error["retry_after"] == "7"
    assert "sk-up-123456" not in error["message"]
    await deja.app[USAGE].flush()
    [row], _ = await deja.app[STORAGE].list_requests(UsageFilter(), limit=10)
    assert (row["request_id"], row["status"]) == (rid, status)
    assert _metric_statuses(deja, "embeddings" if kind == "embeddings" else "chat") == [str(status)]
    [line] = [r.event for r in caplog.records if r.name == "deja.access" and r.event["request_id"] == rid]
    assert line["status"] == status


async def test_a_stream_cut_midway_is_one_status_in_band(deja_for: Any, upstream: FakeOpenAI,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "deja.access")
    deja = await deja_for(refused=False)
    upstream.script(Behaviour(kind="cut", cut_after=2, content="one two three four five six seven"))
    status, error, rid = await _send(deja, "stream")
    assert status == 200 and error["type"] == "upstream_error"  # the headers had gone: the error is in-band
    await deja.app[USAGE].flush()
    [row], _ = await deja.app[STORAGE].list_requests(UsageFilter(), limit=10)
    assert (row["status"], row["stream"]) == (502, True) and row["completion_tokens"] > 0
    assert _metric_statuses(deja, "chat") == ["502"]
    [line] = [r.event for r in caplog.records if r.name == "deja.access" and r.event["request_id"] == rid]
    assert line["status"] == 502
