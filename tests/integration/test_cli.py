"""``deja serve`` as a user runs it: a real process, no config, answering through the offline ``sim`` model."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import openai
import pytest

from tests.integration.harness import ROOT, free_port


async def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"deja exited early with {proc.returncode}: {proc.stderr.read().decode()}")
            try:
                async with s.get(url + "/health/live") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError("deja did not start in time")


async def _wait_for_log(proc: subprocess.Popen[bytes], text: bytes, timeout: float = 90.0) -> list[bytes]:
    """Read ``proc``'s stderr up to the first line holding ``text``; the lines read so far."""
    assert proc.stderr is not None
    seen: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stderr.readline), deadline - time.monotonic())
        if not line:
            raise AssertionError(f"deja exited before logging {text!r}: {b''.join(seen).decode()[-2000:]}")
        seen.append(line)
        if text in line:
            return seen
    raise AssertionError(f"deja did not log {text!r} in time")


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEJA_")}
    env.update({"DEJA_DATABASE_URL": f"sqlite:///{tmp_path}/deja.db", "DEJA_SIM__DELAY_MS": "50",
                "DEJA_LOG_FORMAT": "json"})
    return env


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
async def test_serve_without_config_answers_through_sim(tmp_path: Path, loop: str) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "router.cli.main", "serve", "--port", str(port)], cwd=tmp_path,
                            env={**_env(tmp_path), "PYTHONPATH": str(ROOT), "DEJA_EVENT_LOOP": loop},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        await _wait_ready(url, proc)
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="anything", max_retries=0)
        assert [m.id for m in (await client.models.list()).data] == ["sim"]
        question = [{"role": "user", "content": "What is the capital of France?"}]
        first = await client.chat.completions.create(model="sim", messages=question)
        again = await client.chat.completions.create(model="sim", messages=question,
                                                     extra_headers={"Cache-Control": "no-cache"})
        assert first.choices[0].message.content == again.choices[0].message.content  # deterministic
        assert "capital of France" in first.choices[0].message.content
        assert first.usage.completion_tokens > 0
        stream = await client.chat.completions.create(model="sim", messages=question, stream=True,
                                                      stream_options={"include_usage": True},
                                                      extra_headers={"Cache-Control": "no-store"})
        chunks = [c async for c in stream]
        words = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
        assert "".join(words) == first.choices[0].message.content and len(words) > 3
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == len(words)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert b"OPEN: no master key" in err
    assert f"{loop} event loop".encode() in err


def test_refuses_open_bind_beyond_loopback(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "router.cli.main", "serve", "--host", "0.0.0.0", "--port", "0"],
                            cwd=tmp_path, env={**_env(tmp_path), "PYTHONPATH": str(ROOT)}, capture_output=True,
                            timeout=120)
    assert result.returncode == 2
    assert b"deja.host" in result.stderr and b"master key" in result.stderr


def test_invalid_config_stops_startup_naming_the_field(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("deja:\n  cache:\n    capacity: zero\n")
    result = subprocess.run([sys.executable, "-m", "router.cli.main", "serve", "--config", str(config)], cwd=tmp_path,
                            env={**_env(tmp_path), "PYTHONPATH": str(ROOT)}, capture_output=True, timeout=120)
    assert result.returncode == 2
    assert b"deja.cache.capacity" in result.stderr


@pytest.mark.slow
async def test_workers_share_port_cache_and_metrics(tmp_path: Path, redis_url: str, redis_prefix: str) -> None:
    port = free_port()
    env = {**_env(tmp_path), "PYTHONPATH": str(ROOT), "DEJA_REDIS_URL": redis_url, "DEJA_REDIS_PREFIX": redis_prefix,
           "DEJA_CACHE__SEMANTIC": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "router.cli.main", "serve", "--port", str(port), "--workers", "2"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        await _wait_ready(url, proc)
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        answers = await asyncio.gather(*(client.chat.completions.create(
            model="sim", messages=[{"role": "user", "content": f"question {i % 5}"}]) for i in range(20)))
        assert len({a.choices[0].message.content for a in answers}) == 5
        async with aiohttp.ClientSession() as s, s.get(url + "/metrics") as r:
            text = await r.text()
        total = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                    if line.startswith("deja_requests_total{") and 'route="chat"' in line)
        assert total >= 20  # both workers' counts, aggregated (the readiness probe may add none: not a chat)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()[-2000:]


def test_workers_need_redis(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "router.cli.main", "serve", "--workers", "2", "--port", "0"],
                            cwd=tmp_path, env={**_env(tmp_path), "PYTHONPATH": str(ROOT)}, capture_output=True,
                            timeout=120)
    assert result.returncode == 2 and b"redis_url" in result.stderr


@pytest.mark.slow
async def test_open_bind_needs_the_explicit_flag(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "router.cli.main", "serve", "--host", "0.0.0.0", "--port", str(port),
                             "--allow-open-bind"], cwd=tmp_path, env={**_env(tmp_path), "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        await _wait_ready(f"http://127.0.0.1:{port}", proc)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert b"OPEN: no master key" in err


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_during_start_up_stops_cleanly(tmp_path: Path, redis_url: str, redis_prefix: str,
                                                     workers: int) -> None:
    env = {**_env(tmp_path), "PYTHONPATH": str(ROOT), "DEJA_REDIS_URL": redis_url, "DEJA_REDIS_PREFIX": redis_prefix}
    proc = subprocess.Popen([sys.executable, "-m", "router.cli.main", "serve", "--port", str(free_port()),
                             "--workers", str(workers)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        seen = await _wait_for_log(proc, b"deja starting")  # a worker is in start-up: storage, models, Redis
        proc.terminate()
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = b"".join(seen) + err
    assert proc.returncode == 0, log.decode()[-2000:]
    assert b"Traceback" not in log
