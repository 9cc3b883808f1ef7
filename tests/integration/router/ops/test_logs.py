"""Request logs: one JSON line per request with ids, model, cache result, status and latency; never a key
secret, never the prompt unless ``deja.log_prompts``; plain text on a terminal; level from the config."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from providers.fake_openai import Behaviour, FakeOpenAI
from router.ops.logs import setup_logging
from tests.integration.harness import Deja, free_port, make_settings, start_deja
from tests.integration.router.ops.helpers import MASTER_KEY, MODEL, chat, create_key, eventually

PROMPT = "zebra-crossing-7731 is my private question"
ROOT = Path(__file__).resolve().parents[4]
UPSTREAM_KEY = "sk-fake"  # the provider key in the harness's model list


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def capture() -> Iterator[Callable[..., io.StringIO]]:
    """``capture(level, fmt, tty=False)``: deja's logging on a buffer, the old set-up restored after."""
    root, deja_logger = logging.getLogger(), logging.getLogger("deja")
    saved = (root.handlers[:], root.level, deja_logger.level)

    def install(level: str = "info", fmt: str = "auto", tty: bool = False) -> io.StringIO:
        stream = Terminal() if tty else io.StringIO()
        setup_logging(level, fmt, stream=stream)
        return stream

    yield install
    root.handlers[:], root.level = saved[0], saved[1]
    deja_logger.setLevel(saved[2])


@pytest.fixture
async def deja_with_prompts(tmp_path: Path, upstream: FakeOpenAI) -> AsyncIterator[Deja]:
    server = await start_deja(make_settings(tmp_path, upstream, master_key=MASTER_KEY, log_prompts=True,
                                            cache={"semantic": False}))
    yield server
    await server.close()


def request_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    return [line for line in lines
            if line.get("logger") == "deja.access" and line.get("message") == "request"]


async def test_one_json_line_per_request_without_secrets_or_prompts(
        capture: Callable[..., io.StringIO], deja: Deja, upstream: FakeOpenAI,
        session: aiohttp.ClientSession) -> None:
    stream = capture("info", "auto")  # a buffer is not a terminal: JSON
    key = await create_key(session, deja.url, name="logged")
    ok = await chat(session, deja.url, PROMPT, key=key["key"])
    upstream.script(Behaviour(kind="error", status=500))
    failed = await chat(session, deja.url, PROMPT + " (again)", key=key["key"],
                        headers={"X-Request-Id": "ops-42"})
    refused = await chat(session, deja.url, PROMPT, key="sk-deja-wrong-secret-123456")
    assert (ok.status, failed.status, refused.status) == (200, 502, 401)
    text = stream.getvalue()
    every = request_lines(stream)
    assert [line["path"] for line in every] == ["/admin/keys"] + ["/v1/chat/completions"] * 3  # 4xx included
    lines = every[1:3]
    assert [line["request_id"] for line in lines] == [ok.headers["X-Deja-Request-Id"],
                                                      failed.headers["X-Deja-Request-Id"]]
    assert failed.headers["X-Deja-Request-Id"].startswith("ops-42.")
    refused_id = {k.lower(): v for k, v in refused.headers.items()}["x-request-id"]
    assert (every[3]["status"], every[3]["request_id"]) == (401, refused_id)
    first, second = lines
    assert first["key_id"] == key["id"] and first["tenant"] == "default"
    assert (first["model"], first["cache"], first["status"], first["route"]) == (MODEL, "miss", 200, "chat")
    assert isinstance(first["latency_ms"], float) and first["latency_ms"] > 0
    assert first["prompt_tokens"] > 0 and first["completion_tokens"] > 0
    assert (second["status"], second["key_id"]) == (502, key["id"]) and second["error_type"]
    for secret in (key["key"], MASTER_KEY, UPSTREAM_KEY, "sk-deja-wrong-secret-123456"):
        assert secret not in text
    assert "zebra-crossing-7731" not in text
    assert all(line["level"] == "info" and isinstance(line["ts"], float) for line in lines)


async def test_prompts_are_logged_only_when_configured(
        capture: Callable[..., io.StringIO], deja_with_prompts: Deja, session: aiohttp.ClientSession) -> None:
    stream = capture("info", "json")
    assert (await chat(session, deja_with_prompts.url, PROMPT)).status == 200
    [line] = request_lines(stream)
    assert line["prompt"] == [{"role": "user", "content": PROMPT}]
    assert MASTER_KEY not in stream.getvalue()


async def test_plain_text_on_a_terminal(capture: Callable[..., io.StringIO], deja: Deja,
                                        session: aiohttp.ClientSession) -> None:
    stream = capture("info", "auto", tty=True)
    answer = await chat(session, deja.url, PROMPT)
    [line] = [line for line in stream.getvalue().splitlines() if " request " in line]
    assert not line.startswith("{")
    assert f"request_id={answer.headers['X-Deja-Request-Id']}" in line
    assert f"model={MODEL}" in line and "status=200" in line and "cache=miss" in line
    assert "zebra-crossing-7731" not in stream.getvalue() and MASTER_KEY not in stream.getvalue()


async def test_deja_serve_takes_log_level_and_format_from_the_config(tmp_path: Path,
                                                                     session: aiohttp.ClientSession) -> None:
    """Real ``deja serve`` at level ``warning``: its start-up warning is logged, requests are not."""
    port = free_port()
    config = tmp_path / "deja.yaml"
    config.write_text(yaml.safe_dump({"deja": {
        "port": port, "log_level": "warning", "log_format": "auto", "database_url": f"sqlite:///{tmp_path}/d.db",
        "cache": {"semantic": False}, "sim": {"delay_ms": 0, "word_delay_ms": 0}}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEJA_")}
    stderr = (tmp_path / "stderr.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router.cli.main", "serve", "--config", str(config), cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)}, stdout=asyncio.subprocess.DEVNULL, stderr=stderr)
    try:
        url = f"http://127.0.0.1:{port}"

        async def up() -> bool:
            assert proc.returncode is None, (tmp_path / "stderr.log").read_text()
            try:
                async with session.get(url + "/health/live") as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False
        await eventually(up, timeout=90, what="deja serve to start")
        body = {"model": "sim", "messages": [{"role": "user", "content": PROMPT}]}
        async with session.post(url + "/v1/chat/completions", json=body) as r:
            assert r.status == 200
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
        stderr.close()
    lines = [json.loads(line) for line in (tmp_path / "stderr.log").read_text().splitlines() if line.strip()]
    assert any(line["level"] == "warning" and "OPEN" in line["message"] for line in lines)
    assert not [line for line in lines if line["level"] in ("info", "debug")]
