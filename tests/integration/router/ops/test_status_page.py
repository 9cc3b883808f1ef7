"""The status page in a real headless Chromium: it renders the live figures of ``/status.json``.

Chromium is Debian's ``chromium`` package. Without it the test is skipped, except under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import aiohttp
import pytest

from providers.fake_openai import Behaviour, FakeOpenAI
from router.ops.status import REDACTED
from tests.integration.harness import Deja
from tests.integration.router.ops.helpers import MASTER_KEY, cache_entries, chat, eventually

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--virtual-time-budget=5000"]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("chromium is not installed (CI=true: apt-get install -y chromium)", pytrace=False)
        pytest.skip("chromium is not installed")
    return path


async def run_chromium(tmp_path: Path, *args: str) -> str:
    profile = tmp_path / "chromium-profile"
    proc = await asyncio.create_subprocess_exec(
        chromium(), *FLAGS, f"--user-data-dir={profile}", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 90)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


class ById(HTMLParser):
    """Text content of every element with an id, and the cells of each table row."""

    def __init__(self) -> None:
        super().__init__()
        self.text: dict[str, str] = {}
        self.classes: dict[str, str] = {}
        self.rows: list[list[str]] = []
        self._open: list[str | None] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in ("meta", "link", "input", "br", "img"):
            return
        ident = a.get("id")
        self._open.append(ident)
        if ident:
            self.text[ident] = ""
            self.classes[ident] = a.get("class") or ""
        if tag == "tr":
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("meta", "link", "input", "br", "img"):
            return
        if self._open:
            self._open.pop()
        if tag == "td" and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        for ident in self._open:
            if ident:
                self.text[ident] += data
        if self._cell is not None:
            self._cell.append(data)


async def _traffic(session: aiohttp.ClientSession, deja: Deja, upstream: FakeOpenAI) -> str:
    """Two misses, two hits, one upstream failure; returns the failed request's id."""
    for question in ("What is deja?", "What is a semantic cache?"):
        assert (await chat(session, deja.url, question)).status == 200

        async def stored(n: int = 1 + question.startswith("What is a")) -> bool:
            return await cache_entries(session, deja.url) >= n
        await eventually(stored, what="cache entry")
        assert (await chat(session, deja.url, question)).headers["X-Deja-Cache"] == "hit-exact"
    upstream.script(Behaviour(kind="error", status=500, error_message="provider melted"))
    failed = await chat(session, deja.url, "This one fails.")
    assert failed.status == 502
    return failed.headers["X-Deja-Request-Id"]


async def test_status_page_shows_live_figures(deja: Deja, upstream: FakeOpenAI,
                                              session: aiohttp.ClientSession, tmp_path: Path) -> None:
    chromium()
    failed_id = await _traffic(session, deja, upstream)
    async with session.get(deja.url + "/status.json") as r:
        figures = await r.json()
    dom = await run_chromium(tmp_path, "--dump-dom", deja.url + "/")
    page = ById()
    page.feed(dom)
    t = page.text
    assert t["state"].strip() == "live"
    assert t["rps"] != "–"  # a rate needs two polls: the page refreshed itself within the 5 s of virtual time
    assert (t["requests"], t["errors"]) == ("5", "1")
    assert (t["hit-rate"], t["cache-hits"], t["cache-lookups"]) == ("40.0%", "2", "5")
    assert t["error-rate"] == "20.0%" and "bad" in page.classes["errors"]
    assert t["tokens-saved"] == str(figures["tokens_saved"]) and figures["tokens_saved"] > 0
    assert t["cost-saved"] == f"${figures['cost_saved_usd']:.6f}" and figures["cost_saved_usd"] > 0
    assert t["cost"] == f"${figures['cost_usd']:.6f}"
    assert t["latency-p50"].endswith(("ms", " s")) and t["latency-p95"].endswith(("ms", " s"))
    assert t["cache-entries"] == "2" and t["inflight"] == "0"
    # the page is public: it shows when and what status, never another tenant's request id or message
    errors = [row for row in page.rows if REDACTED in row]
    assert len(errors) == 1 and errors[0][1:] == ["502", "-", REDACTED] and failed_id not in dom
    async with session.get(deja.url + "/status.json", headers={"Authorization": f"Bearer {MASTER_KEY}"}) as r:
        errors = (await r.json())["recent_errors"]
    assert len(errors) == 1 and errors[0]["request_id"] == failed_id and "provider melted" in errors[0]["message"]


async def test_dashboard_path_and_screenshot(deja: Deja, upstream: FakeOpenAI, session: aiohttp.ClientSession,
                                             tmp_path: Path) -> None:
    chromium()
    await _traffic(session, deja, upstream)
    shot = tmp_path / "status.png"
    await run_chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,900", "--hide-scrollbars",
                       deja.url + "/dashboard")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1280, 900)
    if os.environ.get("DEJA_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["DEJA_KEEP_SCREENSHOT"])
