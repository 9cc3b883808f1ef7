"""Start the real deja app on a real TCP port (127.0.0.1, port 0), in front of a real fake-OpenAI server.

Nothing of deja is mocked: ``start_deja`` runs ``create_app`` under the same ``AppRunner`` settings as
``deja serve`` (handler cancellation on, so a client going away cancels the upstream call).
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from providers.fake_openai import FakeOpenAI
from router.app import create_app
from router.config import Settings, load_settings
from router.http.wire import DejaRunner

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Deja:
    app: web.Application
    runner: web.AppRunner
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    async def close(self) -> None:
        await self.runner.cleanup()

    async def settled(self, timeout: float = 10.0) -> None:
        """Wait until post-response work (cache stores, limiter settlement) is done."""
        from router.appkeys import BACKGROUND

        tasks = list(self.app[BACKGROUND])
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)


async def start_deja(settings: Settings, *, db_schema: str | None = None) -> Deja:
    app = create_app(settings, db_schema=db_schema)
    runner = DejaRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return Deja(app, runner, port)


def upstream_models(*upstreams: FakeOpenAI, group: str = "gpt-4o-mini") -> list[dict[str, Any]]:
    """One model group with a deployment per fake upstream (in order: the first is tried first)."""
    return [{"model_name": group, "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": u.base_url,
                                                     "api_key": "sk-fake", "order": i + 1}}
            for i, u in enumerate(upstreams)]


def make_settings(tmp_path: Path, *upstreams: FakeOpenAI, config: dict[str, Any] | None = None,
                  **deja: Any) -> Settings:
    """Settings for a test: SQLite in ``tmp_path`` and in-memory cache/limits unless ``deja`` says otherwise."""
    import yaml

    raw: dict[str, Any] = dict(config or {})
    if upstreams and "model_list" not in raw:
        raw["model_list"] = upstream_models(*upstreams)
    raw.setdefault("router_settings", {"num_retries": 0, "retry_after": 0})
    section = {"database_url": f"sqlite:///{tmp_path / 'deja.db'}", "log_format": "json",
               "usage": {"flush_interval": 0.05, "spill_path": str(tmp_path / "spill.jsonl")}}
    for key, value in deja.items():
        if isinstance(value, dict) and isinstance(section.get(key), dict):
            section[key] = {**section[key], **value}
        else:
            section[key] = value
    raw["deja"] = {**section, **(raw.get("deja") or {})}
    path = tmp_path / "deja-test.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_settings(path, environ={})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A throwaway redis-server (nothing persisted) on a free port, that a test may kill, pause and restart."""

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or shutil.which("redis-server") or "redis-server"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(10)

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)  # the server hangs, connections stay open

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


def storage_section(request: Any, backend: str) -> dict[str, Any]:
    """The ``deja:`` settings for a test's usage store: ``{}`` for SQLite (``make_settings``' default), or the
    PostgreSQL database with a fresh schema of the test's own (created by deja's migrations, dropped by
    ``drop_storage``)."""
    if backend != "postgresql":
        return {}
    import uuid

    return {"database_url": request.getfixturevalue("database_url"),
            "database_schema": f"dejatest_{uuid.uuid4().hex[:12]}"}


async def drop_storage(section: dict[str, Any]) -> None:
    """Drop the schema ``storage_section`` chose, if it chose one."""
    if section:
        import asyncpg

        conn = await asyncpg.connect(section["database_url"])
        await conn.execute(f'DROP SCHEMA IF EXISTS "{section["database_schema"]}" CASCADE')
        await conn.close()
