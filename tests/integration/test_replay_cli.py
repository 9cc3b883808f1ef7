"""``deja cache replay`` as a user runs it: a real process reading the usage rows a real deja wrote (SQLite and
PostgreSQL), or a JSONL file, and an HTML report that headless Chromium renders without a network."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from providers.fake_openai import FakeOpenAI
from tests.integration.harness import ROOT, make_settings, start_deja
from tests.integration.router.ops.helpers import MASTER_KEY, MODEL, eventually
from tests.integration.router.ops.test_status_page import ById, chromium, run_chromium

pytestmark = pytest.mark.slow
TRAFFIC = ["How do I reverse a list in Python?", "What is the capital of France?",
           "How do I reverse a list in Python?", "How can I reverse a Python list?", "Is tea healthy?"]


async def replay_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DEJA_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router.cli.main", "cache", "replay", *args, cwd=ROOT,
        env={**base, "PYTHONPATH": str(ROOT), **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 240)
    return proc.returncode or 0, out.decode(), err.decode()


async def _serve_traffic(settings: Any, db_schema: str | None) -> list[dict[str, Any]]:
    """Send TRAFFIC through a deja without a cache; return its usage rows, oldest first."""
    server = await start_deja(settings, db_schema=db_schema)
    auth = {"Authorization": f"Bearer {MASTER_KEY}"}
    rows: list[dict[str, Any]] = []
    try:
        async with aiohttp.ClientSession() as session:
            for text in TRAFFIC:
                body = {"model": MODEL, "messages": [{"role": "user", "content": text}]}
                async with session.post(server.base_url + "/chat/completions", json=body, headers=auth) as r:
                    assert r.status == 200 and r.headers["X-Deja-Cache"] == "bypass"

            async def written() -> bool:
                async with session.get(server.url + "/admin/requests?limit=50", headers=auth) as r:
                    rows[:] = (await r.json())["data"]
                return len(rows) == len(TRAFFIC)

            await eventually(written, what="usage rows")
    finally:
        await server.close()
    return sorted(rows, key=lambda r: r["ts"])


@pytest.fixture(params=["sqlite", "postgresql"])
def store_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The environment pointing deja at a SQLite file in tmp_path, or at a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return {"DEJA_DATABASE_URL": f"sqlite:///{tmp_path / 'deja.db'}"}
    return {"DEJA_DATABASE_URL": request.getfixturevalue("database_url"),
            "DEJA_DATABASE_SCHEMA": request.getfixturevalue("pg_schema")}


async def test_replays_the_usage_store_deja_wrote(store_env: dict[str, str], tmp_path: Path,
                                                  upstream: FakeOpenAI) -> None:
    env, schema = store_env, store_env.get("DEJA_DATABASE_SCHEMA")
    settings = make_settings(tmp_path, upstream, master_key=MASTER_KEY, cache={"enabled": False},
                             database_url=env["DEJA_DATABASE_URL"])
    rows = await _serve_traffic(settings, schema)
    out = tmp_path / "report.json"
    code, stdout, stderr = await replay_cli("--json", str(out), "--thresholds", "0.8,0.9", env=env)
    assert code == 0, stderr
    report = json.loads(out.read_text())
    assert report["requests"] == 5 and report["distinct_requests"] == 4 and report["source"]["kind"] == "usage store"
    by = {r["setting"]: r for r in report["rows"]}
    repeat = rows[2]
    live = by[f"verifier@{report['default']['threshold']:.3f}"]
    assert live["exact"] == 1 and live["usd_saved"] >= repeat["cost_usd"] > 0
    low = by["cosine@0.800"]
    assert low["semantic"] >= 1  # the paraphrase would be served from the first question's entry
    hits = [ex for band in report["samples"] for ex in band["hits"] + band["refused"]]
    assert any(ex["query"] == TRAFFIC[3] and ex["cached"] == TRAFFIC[0] for ex in hits)
    assert "replayed 5 requests" in stdout and "verifier" in stdout and "cosine" in stdout
    assert "100.0%" in stderr  # the progress bar reached its end


async def test_empty_store_and_bad_file_fail_clearly(tmp_path: Path) -> None:
    env = {"DEJA_DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}"}
    code, _, stderr = await replay_cli("-q", env=env)
    assert code == 1 and "nothing to replay" in stderr
    code, _, stderr = await replay_cli(str(tmp_path / "absent.jsonl"), env=env)
    assert code == 2 and "cannot read" in stderr


def _labelled(path: Path) -> Path:
    pairs = [("How do I learn Python?", "how do i learn python", "py"),
             ("What is the boiling point of water?", "What is the boiling point of water", "boil"),
             ("What is the GATE 2017 cutoff?", "What is the GATE 2018 cutoff?", None),
             ("How can I lose weight fast?", "How do I lose weight quickly?", "weight")]
    lines = []
    for n, (a, b, label) in enumerate(pairs):
        for k, text in enumerate((a, b, a)):
            lines.append({"ts": n * 10 + k, "label": label or text,
                          "request": {"model": MODEL, "messages": [{"role": "user", "content": text}]},
                          "response": {"choices": [{"message": {"content": "ok"}}],
                                       "usage": {"prompt_tokens": 12, "completion_tokens": 30}},
                          "latency_ms": 1500})
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


async def test_html_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    chromium()
    html = tmp_path / "replay.html"
    thresholds = "0.80:0.99:0.01"
    code, _, stderr = await replay_cli(str(_labelled(tmp_path / "t.jsonl")), "--html", str(html), "-q",
                                       "--thresholds", thresholds, "--cutoffs", "0.5")
    assert code == 0, stderr
    dom = await run_chromium(tmp_path, "--dump-dom", html.as_uri())
    page = ById()
    page.feed(dom)
    charts, series, drawn = page.text["render-check"].split(", ")
    assert (charts, series) == ("3 charts", "10 series")  # 3 modes: hit rate, wrong rate (+ target), savings
    assert int(drawn.split()[0]) > 1000  # the browser laid the lines out
    assert "%" in page.text["live-hit-rate"] and page.text["recommended"].strip() != ""
    sweep = [row for row in page.rows if len(row) == 10]
    assert len(sweep) == 3 * 20 and {row[1] for row in sweep} == {"verifier", "cosine", "verifier c=0.50"}
    samples = [row for row in page.rows if len(row) == 8]
    assert any(row[2] == "how do i learn python" and row[7] == "right" for row in samples)
    assert any(row[1] == "refused" and row[6] == "number-mismatch" and row[7] == "wrong" for row in samples)
    shot = tmp_path / "replay.png"
    await run_chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,1600", html.as_uri())
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("DEJA_KEEP_SCREENSHOT"):
        shot.replace(os.environ["DEJA_KEEP_SCREENSHOT"])
