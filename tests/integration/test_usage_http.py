"""Every interaction persisted, through the running app: real PostgreSQL and real SQLite, outages, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from providers.fake_openai import Behaviour, FakeOpenAI
from router.appkeys import STORAGE
from router.storage import UsageFilter, open_storage
from tests.integration.harness import ROOT, Deja, drop_storage, make_settings, start_deja, storage_section
from tests.integration.router.storage.helpers import TcpProxy, wait_for

MASTER = "sk-master-test"
USAGE = {"prompt_tokens": 13, "completion_tokens": 7, "total_tokens": 20}


@pytest.fixture
async def upstream() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(default=Behaviour(usage=USAGE)) as up:
        yield up


@pytest.fixture(params=["sqlite", "postgresql"])
async def deja(request: pytest.FixtureRequest, tmp_path: Path, upstream: FakeOpenAI) -> AsyncIterator[Deja]:
    extra = storage_section(request, request.param)
    server = await start_deja(make_settings(tmp_path, upstream, master_key=MASTER, cache={"semantic": False},
                                            **extra))
    yield server
    await server.close()
    await drop_storage(extra)


async def chat(server: Deja, text: str, *, stream: bool = False, key: str = MASTER) -> int:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], "stream": stream,
            "user": "end-user-7"}
    async with aiohttp.ClientSession() as s, s.post(server.base_url + "/chat/completions", json=body,
                                                    headers={"Authorization": f"Bearer {key}"}) as r:
        await r.read()
        return r.status


async def get(server: Deja, path: str, key: str = MASTER) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.get(server.url + path,
                                                   headers={"Authorization": f"Bearer {key}"}) as r:
        return r.status, await r.json()


async def rows(server: Deja, expected: int) -> list[dict[str, Any]]:
    storage = server.app[STORAGE]

    async def enough() -> bool:
        found, _ = await storage.list_requests(UsageFilter(), limit=500)
        return len(found) >= expected

    await wait_for(enough, timeout=20)
    found, _ = await storage.list_requests(UsageFilter(), limit=500, include_bodies=True)
    return found


async def test_rows_for_every_kind_of_request(deja: Deja, upstream: FakeOpenAI) -> None:
    assert await chat(deja, "first question") == 200
    assert await chat(deja, "streamed question", stream=True) == 200
    await deja.settled()
    assert await chat(deja, "first question") == 200  # exact hit
    upstream.script(Behaviour(kind="error", status=500))
    assert await chat(deja, "failing question") == 502
    found = {json.loads(r["request_body"])[0]["content"] + ("/hit" if r["cache"] == "exact" else ""): r
             for r in await rows(deja, 4)}
    miss, streamed, hit, error = (found["first question"], found["streamed question"],
                                  found["first question/hit"], found["failing question"])
    for row in (miss, streamed):
        assert (row["prompt_tokens_sent"], row["completion_tokens"]) == (13, 7)
        assert row["status"] == 200 and row["cache"] == "miss" and row["cost_usd"] > 0
        assert row["deployment"] == "gpt-4o-mini#0" and row["end_user"] == "end-user-7"
    assert streamed["stream"] and streamed["ttft_ms"] is not None
    assert hit["cost_usd"] == 0 and hit["saved_cache_usd"] == pytest.approx(miss["cost_usd"], rel=0.5)
    assert hit["completion_tokens"] == 7
    assert error["status"] == 502 and error["error_type"] and error["completion_tokens"] == 0
    assert "Answer to: first question" in miss["response_body"]


async def test_usage_api_and_rollup(deja: Deja) -> None:
    for i in range(3):
        assert await chat(deja, f"question {i}") == 200
    await rows(deja, 3)
    status, body = await get(deja, "/admin/usage?group_by=model")
    assert status == 200
    (model_row,) = body["data"]
    assert model_row["group"] == "gpt-4o-mini" and model_row["requests"] == 3
    assert model_row["prompt_tokens"] > 0 and model_row["completion_tokens"] == 21
    status, page = await get(deja, "/admin/requests?limit=2")
    assert status == 200 and len(page["data"]) == 2 and page["next_cursor"]
    status, rest = await get(deja, f"/admin/requests?limit=2&cursor={page['next_cursor']}")
    assert len(rest["data"]) == 1
    ids = {r["request_id"] for r in page["data"] + rest["data"]}
    assert len(ids) == 3
    assert (await get(deja, "/admin/usage?group_by=planet"))[0] == 400


async def test_a_key_reads_only_its_own_usage(deja: Deja) -> None:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {MASTER}"}) as s, s.post(
            deja.url + "/admin/keys", json={"name": "reader", "tenant": "t1"}) as r:
        created = await r.json()
    assert await chat(deja, "mine", key=created["key"]) == 200
    assert await chat(deja, "master's") == 200
    await rows(deja, 2)
    status, body = await get(deja, "/admin/usage", key=created["key"])
    assert status == 200 and body["data"][0]["requests"] == 1
    status, _ = await get(deja, "/admin/usage?key=someone-else", key=created["key"])
    assert status == 403


async def test_postgres_outage_loses_no_row(tmp_path: Path, upstream: FakeOpenAI, database_url: str,
                                            pg_schema: str) -> None:
    from urllib.parse import urlparse

    parsed = urlparse(database_url)
    proxy = TcpProxy(parsed.hostname or "127.0.0.1", parsed.port or 5432)
    await proxy.start()
    via_proxy = database_url.replace(f"{parsed.hostname}:{parsed.port or 5432}", f"127.0.0.1:{proxy.port}")
    if via_proxy == database_url:
        via_proxy = database_url.replace(parsed.netloc, f"{parsed.username or 'postgres'}@127.0.0.1:{proxy.port}")
    server = await start_deja(make_settings(tmp_path, upstream, database_url=via_proxy, database_schema=pg_schema,
                                            cache={"enabled": False}))
    try:
        statuses = [await chat(server, f"before {i}") for i in range(10)]
        proxy.cut()
        statuses += [await chat(server, f"during {i}") for i in range(20)]
        proxy.restore()
        statuses += [await chat(server, f"after {i}") for i in range(10)]
        assert statuses == [200] * 40
    finally:
        await server.close()  # drains what is still waiting
        await proxy.close()
    storage = open_storage(database_url, schema=pg_schema)
    await storage.connect()
    try:
        summary = await storage.usage_summary(UsageFilter(), None)
        assert summary[0]["requests"] == 40
    finally:
        await storage.close()


async def test_sigterm_during_load_loses_no_row(tmp_path: Path, database_url: str, pg_schema: str) -> None:
    import yaml

    from benchmarks.procs import free_port, wait_port

    async with FakeOpenAI(default=Behaviour(usage=USAGE, delay=0.05)) as up:
        port = free_port()
        config = {"model_list": [{"model_name": "m", "litellm_params": {
            "model": "openai/gpt-4o-mini", "api_base": up.base_url, "api_key": "x"}}],
            "deja": {"database_url": database_url, "database_schema": pg_schema, "cache": {"enabled": False},
                     "usage": {"flush_interval": 5.0, "batch_size": 10_000}}}
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
        env = {k: v for k, v in os.environ.items() if not k.startswith("DEJA_")} | {"PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen([sys.executable, "-m", "router.cli.main", "serve", "--config", str(tmp_path / "c.yaml"),
                                 "--port", str(port)], cwd=tmp_path, env=env, stderr=subprocess.PIPE)
        try:
            await asyncio.to_thread(wait_port, port, proc)
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            ok = 0
            async with aiohttp.ClientSession() as s:
                async def one(i: int) -> int:
                    body = {"model": "m", "messages": [{"role": "user", "content": f"q{i}"}]}
                    try:
                        async with s.post(url, json=body) as r:
                            await r.read()
                            return r.status
                    except aiohttp.ClientError:
                        return 0

                first = await asyncio.gather(*(one(i) for i in range(60)))
                ok += first.count(200)
                burst = [asyncio.ensure_future(one(100 + i)) for i in range(40)]
                await asyncio.sleep(0.02)
                proc.send_signal(signal.SIGTERM)  # rows are still in the queue: the flush interval is 5 s
                ok += (await asyncio.gather(*burst)).count(200)
            assert await asyncio.to_thread(proc.wait, 60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    storage = open_storage(database_url, schema=pg_schema)
    await storage.connect()
    try:
        summary = await storage.usage_summary(UsageFilter(), None)
        ok_rows = [r for r in (await storage.list_requests(UsageFilter(), limit=500))[0] if r["status"] == 200]
        assert ok >= 60 and len(ok_rows) == ok
        assert summary[0]["requests"] >= ok
    finally:
        await storage.close()


async def test_cli_keys_and_usage_table(tmp_path: Path, upstream: FakeOpenAI) -> None:
    server = await start_deja(make_settings(tmp_path, upstream, database_url=f"sqlite:///{tmp_path}/u.db"))
    assert await chat(server, "counted once") == 200
    await server.close()  # drains the usage queue
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEJA_")}
    env |= {"PYTHONPATH": str(ROOT), "DEJA_DATABASE_URL": f"sqlite:///{tmp_path}/u.db"}
    created = subprocess.run([sys.executable, "-m", "router.cli.main", "keys", "create", "--name", "cli", "--tenant",
                              "acme", "--rpm", "10"], env=env, capture_output=True, timeout=120, cwd=tmp_path)
    assert created.returncode == 0, created.stderr.decode()
    key = json.loads(created.stdout)
    assert key["key"].startswith("sk-deja-") and key["tenant"] == "acme" and key["rpm"] == 10
    listed = subprocess.run([sys.executable, "-m", "router.cli.main", "keys", "list"], env=env, capture_output=True,
                            timeout=120, cwd=tmp_path)
    assert key["id"] in listed.stdout.decode() and key["key"] not in listed.stdout.decode()
    revoked = subprocess.run([sys.executable, "-m", "router.cli.main", "keys", "revoke", key["id"]], env=env,
                             capture_output=True, timeout=120, cwd=tmp_path)
    assert json.loads(revoked.stdout)["active"] is False
    usage = subprocess.run([sys.executable, "-m", "router.cli.main", "usage", "--group-by", "model"], env=env,
                           capture_output=True, timeout=120, cwd=tmp_path)
    table = usage.stdout.decode()
    assert usage.returncode == 0 and "requests" in table
    assert [line.split()[:2] for line in table.splitlines() if line.startswith("gpt")] == [["gpt-4o-mini", "1"]]
    migrate = subprocess.run([sys.executable, "-m", "router.cli.main", "db", "migrate"], env=env, capture_output=True,
                             timeout=120, cwd=tmp_path)
    assert migrate.returncode == 0 and "applied now: nothing" in migrate.stdout.decode()
    # the database from a config file given after the command, as `deja serve --config` takes it
    (tmp_path / "c.yaml").write_text(f"deja:\n  database_url: sqlite:///{tmp_path}/u.db\n")
    env.pop("DEJA_DATABASE_URL")
    listed = subprocess.run([sys.executable, "-m", "router.cli.main", "keys", "list", "--config", "c.yaml"], env=env,
                            capture_output=True, timeout=120, cwd=tmp_path)
    assert listed.returncode == 0 and key["id"] in listed.stdout.decode(), listed.stderr.decode()
