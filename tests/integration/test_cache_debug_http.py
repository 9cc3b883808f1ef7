"""Explaining cache decisions live: ``X-Deja-Cache-Debug``, the usage row's similarity and reason, and
``deja_cache_rejections_total``, through the real app, embedder and verifier."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from providers.fake_openai import FakeOpenAI
from tests.integration.harness import Deja, make_settings, start_deja
from tests.integration.router.ops.helpers import MASTER_KEY, MODEL, eventually, scrape

pytestmark = pytest.mark.slow
DEBUG = {"X-Deja-Cache-Debug": "1"}


@pytest.fixture
async def deja(tmp_path: Path, upstream: FakeOpenAI) -> AsyncIterator[Deja]:
    server = await start_deja(make_settings(tmp_path, upstream, master_key=MASTER_KEY))
    yield server
    await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        yield s


async def ask(session: aiohttp.ClientSession, deja: Deja, text: str, *, key: str = MASTER_KEY,
              headers: dict[str, str] | None = None, **body: Any) -> dict[str, str]:
    payload = {"model": MODEL, "messages": [{"role": "user", "content": text}], **body}
    async with session.post(deja.base_url + "/chat/completions", json=payload,
                            headers={"Authorization": f"Bearer {key}", **(headers or {})}) as r:
        assert r.status == 200, await r.text()
        await r.read()
        await deja.settled()
        return dict(r.headers)


def fields(header: str) -> dict[str, str]:
    """The header's fields, without ``stage`` (which stage decided depends on whether the gate is configured)."""
    out = dict(part.split("=", 1) for part in header.split("; "))
    out.pop("stage", None)
    return out


async def test_every_decision_is_explained_in_the_header_the_usage_row_and_the_metric(
        deja: Deja, session: aiohttp.ClientSession) -> None:
    first = fields((await ask(session, deja, "What is the GATE 2017 cutoff for ECE?", headers=DEBUG))
                   ["X-Deja-Cache-Debug"])
    assert first == {"decision": "miss", "reason": "no-candidate", "floor": first["floor"], "candidates": "0"}
    swapped = fields((await ask(session, deja, "What is the GATE 2018 cutoff for ECE?",
                                headers={**DEBUG, "X-Deja-Cache-Threshold": "0.5"}))["X-Deja-Cache-Debug"])
    assert (swapped["decision"], swapped["reason"], swapped["floor"]) == ("miss", "number-mismatch", "0.5000")
    assert 0.5 <= float(swapped["similarity"]) < 1 and swapped["candidates"] == "1"
    far = fields((await ask(session, deja, "How do I bake sourdough bread?", headers=DEBUG))["X-Deja-Cache-Debug"])
    assert far["decision"] == "miss" and far["reason"] == "below-gate"  # decided by the cheap first stage
    assert float(far["similarity"]) < float(far["floor"])
    exact = fields((await ask(session, deja, "How do I bake sourdough bread?", headers=DEBUG))["X-Deja-Cache-Debug"])
    assert exact == {"decision": "hit-exact", "reason": "exact-match", "similarity": "1.0000", "candidates": "0"}
    await ask(session, deja, "How do I reverse a list in Python?")
    hit = fields((await ask(session, deja, "How can I reverse a Python list?", headers=DEBUG))["X-Deja-Cache-Debug"])
    assert hit["decision"] == "hit-semantic" and float(hit["similarity"]) >= float(hit["floor"])
    hot = await ask(session, deja, "What is the GATE 2019 cutoff?", headers=DEBUG, temperature=1.5)
    assert fields(hot["X-Deja-Cache-Debug"]) == {"decision": "miss", "reason": "not-semantic", "candidates": "0"}
    assert "X-Deja-Cache-Debug" not in await ask(session, deja, "What is the GATE 2020 cutoff?")  # not asked

    rows = await _rows(session, deja, 8)
    by_reason = {r["cache_reason"]: r for r in rows}
    assert by_reason["number-mismatch"]["similarity"] == pytest.approx(float(swapped["similarity"]), abs=1e-4)
    assert by_reason["below-gate"]["similarity"] == pytest.approx(float(far["similarity"]), abs=1e-4)
    assert by_reason["no-candidate"]["similarity"] is None and by_reason["not-semantic"]["similarity"] is None
    assert by_reason["exact-match"]["similarity"] == 1.0 and by_reason["exact-match"]["cache"] == "exact"
    metrics = await scrape(session, deja.url, key=MASTER_KEY)
    rejections = {r: metrics.value("deja_cache_rejections_total", reason=r)
                  for r in ("no-candidate", "number-mismatch", "below-gate")}
    assert rejections["number-mismatch"] == 1 and rejections["below-gate"] >= 1
    assert sum(rejections.values()) + metrics.value("deja_cache_rejections_total", reason="other") == \
        sum(1 for r in rows if r["cache"] == "miss" and r["cache_reason"] != "not-semantic")


async def _rows(session: aiohttp.ClientSession, deja: Deja, n: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    async def written() -> bool:
        async with session.get(deja.url + "/admin/requests?limit=50",
                               headers={"Authorization": f"Bearer {MASTER_KEY}"}) as r:
            rows[:] = (await r.json())["data"]
        return len(rows) >= n

    await eventually(written, what=f"{n} usage rows")
    return rows


async def _key(session: aiohttp.ClientSession, deja: Deja, metadata: dict[str, Any]) -> str:
    async with session.post(deja.url + "/admin/keys", json={"name": "k", "metadata": metadata},
                            headers={"Authorization": f"Bearer {MASTER_KEY}"}) as r:
        assert r.status == 201, await r.text()
        return str((await r.json())["key"])


async def test_only_keys_allowed_to_debug_get_the_explanation(deja: Deja, session: aiohttp.ClientSession) -> None:
    allowed = await _key(session, deja, {"cache_debug": True})
    plain = await _key(session, deja, {"cache_debug": "yes please"})
    assert "X-Deja-Cache-Debug" in await ask(session, deja, "Is tea healthy?", key=allowed, headers=DEBUG)
    refused = await ask(session, deja, "Is coffee healthy?", key=plain, headers=DEBUG)
    assert "X-Deja-Cache-Debug" not in refused and refused["X-Deja-Cache"] == "miss"


async def test_a_retyped_question_is_served_whatever_its_case_and_punctuation(
        session: aiohttp.ClientSession, deja: Deja) -> None:
    await ask(session, deja, "What is the boiling point of water?")
    retyped = fields((await ask(session, deja, "what is the boiling point of water",
                                headers=DEBUG))["X-Deja-Cache-Debug"])
    assert (retyped["decision"], retyped["reason"]) == ("hit-semantic", "identical")
    assert float(retyped["similarity"]) < float(retyped["floor"])  # MiniLM alone would have missed it
    other = fields((await ask(session, deja, "What is the boiling point of water in Denver?",
                              headers=DEBUG))["X-Deja-Cache-Debug"])
    assert other["decision"] == "miss"
