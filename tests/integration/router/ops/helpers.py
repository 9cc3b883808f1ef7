"""Scraping and comparing ``/metrics``, and sending chat requests to a running deja."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

MASTER_KEY = "sk-master-ops-test-0123456789"
MODEL = "gpt-4o-mini"

SampleKey = tuple[str, frozenset[tuple[str, str]]]


@dataclass(frozen=True, repr=False)
class Scrape:
    """One ``/metrics`` scrape: sample values by (sample name, labels), and the metric families' types."""

    samples: dict[SampleKey, float]
    types: dict[str, str]  # family name -> counter | gauge | histogram | ...

    def value(self, name: str, **labels: str) -> float:
        """The sum over every sample of ``name`` whose labels include ``labels`` (0 when none)."""
        want = set(labels.items())
        return sum(v for (n, lab), v in self.samples.items() if n == name and want <= lab)

    def names(self) -> set[str]:
        """Every name a query could use: sample names, plus the series each declared family implies."""
        out = {name for name, _ in self.samples}
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                    "summary": ("_sum", "_count"), "gauge": ("",), "untyped": ("",)}
        for family, kind in self.types.items():
            out.update(family + s for s in suffixes.get(kind, ("",)))
        return out


def parse_metrics(text: str) -> Scrape:
    samples: dict[SampleKey, float] = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return Scrape(samples, types)


async def scrape(session: aiohttp.ClientSession, url: str, *, key: str | None = None) -> Scrape:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with session.get(url + "/metrics", headers=headers) as response:
        assert response.status == 200, await response.text()
        assert response.content_type == "text/plain"
        return parse_metrics(await response.text())


def delta(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    return after.value(name, **labels) - before.value(name, **labels)


async def eventually(check: Callable[[], Awaitable[bool]], *, timeout: float = 10.0, what: str = "") -> None:
    """Poll ``check`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.02)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any
    text: str


async def chat(session: aiohttp.ClientSession, url: str, content: str, *, key: str = MASTER_KEY,
               stream: bool = False, headers: dict[str, str] | None = None) -> Answer:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": content}]}
    if stream:
        body["stream"] = True
    sent = {"Authorization": f"Bearer {key}", **(headers or {})}
    async with session.post(url + "/v1/chat/completions", json=body, headers=sent) as response:
        text = await response.text()
        parsed: Any = None
        if response.content_type == "application/json":
            parsed = await response.json()
        return Answer(response.status, dict(response.headers), parsed, text)


async def create_key(session: aiohttp.ClientSession, url: str, **spec: Any) -> dict[str, Any]:
    async with session.post(url + "/admin/keys", json=spec,
                            headers={"Authorization": f"Bearer {MASTER_KEY}"}) as response:
        assert response.status == 201, await response.text()
        return await response.json()


async def cache_entries(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url + "/admin/cache/stats",
                           headers={"Authorization": f"Bearer {MASTER_KEY}"}) as response:
        assert response.status == 200, await response.text()
        return int((await response.json())["entries"])
