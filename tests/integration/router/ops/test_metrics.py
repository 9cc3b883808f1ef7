"""``/metrics`` against the running app: every counter moves by exactly what a mix of traffic implies.

The mix: two misses (one streamed), two exact hits of those (one streamed), one upstream failure (502), one
request on a rate-limited virtual key that passes and one that is refused (429). Before/after scrapes are
compared sample by sample; expected token counts come from the response headers and the scripted upstream
usage, expected money from LiteLLM's bundled price table.
"""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp  # noqa: E402
import litellm  # noqa: E402
import pytest  # noqa: E402

from compression import count_tokens  # noqa: E402
from providers.fake_openai import Behaviour, FakeOpenAI  # noqa: E402
from tests.integration.harness import Deja, make_settings, start_deja  # noqa: E402
from tests.integration.router.ops.helpers import (  # noqa: E402
    MASTER_KEY,
    MODEL,
    Scrape,
    cache_entries,
    chat,
    create_key,
    delta,
    eventually,
    parse_metrics,
    scrape,
)

PRICE_IN = litellm.model_cost[MODEL]["input_cost_per_token"]
PRICE_OUT = litellm.model_cost[MODEL]["output_cost_per_token"]
CHAT = {"route": "chat", "model": MODEL}


def usage_for(content: str, completion: int) -> dict[str, int]:
    """Upstream usage as OpenAI would count it (the same tokenizer deja counts with)."""
    prompt = count_tokens([{"role": "user", "content": content}], MODEL)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def _wait_entries(session: aiohttp.ClientSession, deja: Deja, n: int) -> None:
    async def stored() -> bool:
        return await cache_entries(session, deja.url) >= n
    await eventually(stored, what=f"{n} cache entries")


async def _traffic(session: aiohttp.ClientSession, deja: Deja, upstream: FakeOpenAI) -> dict[str, int]:
    """Send the mix; return the figures the expectations need."""
    a, b, c = "What is the capital of France?", "Name three primary colours.", "How tall is Mont Blanc?"
    ua, ub, uc = usage_for(a, 4), usage_for(b, 6), usage_for(c, 5)
    upstream.script(Behaviour(content="Paris is the capital.", usage=ua))
    miss_a = await chat(session, deja.url, a)
    assert (miss_a.status, miss_a.headers["X-Deja-Cache"]) == (200, "miss")
    await _wait_entries(session, deja, 1)
    hit_a = await chat(session, deja.url, a)
    assert (hit_a.status, hit_a.headers["X-Deja-Cache"]) == (200, "hit-exact")
    upstream.script(Behaviour(content="Red, green and blue.", usage=ub))
    miss_b = await chat(session, deja.url, b, stream=True)
    assert (miss_b.status, miss_b.headers["X-Deja-Cache"]) == (200, "miss") and "[DONE]" in miss_b.text
    await _wait_entries(session, deja, 2)
    hit_b = await chat(session, deja.url, b, stream=True)
    assert (hit_b.status, hit_b.headers["X-Deja-Cache"]) == (200, "hit-exact") and "[DONE]" in hit_b.text
    upstream.script(Behaviour(kind="error", status=500))
    failed = await chat(session, deja.url, "This one fails upstream.")
    assert failed.status == 502, failed.text
    key = await create_key(session, deja.url, name="limited", rpm=1)
    upstream.script(Behaviour(content="About 4800 metres.", usage=uc))
    passed = await chat(session, deja.url, c, key=key["key"])
    assert passed.status == 200, passed.text
    refused = await chat(session, deja.url, "One request too many.", key=key["key"])
    assert refused.status == 429, refused.text
    sent = "X-Deja-Prompt-Tokens-Sent"
    hit_prompt = int(hit_a.headers[sent]) + int(hit_b.headers[sent])
    assert hit_prompt == ua["prompt_tokens"] + ub["prompt_tokens"]
    return {"upstream_prompt": ua["prompt_tokens"] + ub["prompt_tokens"] + uc["prompt_tokens"],
            "upstream_completion": 4 + 6 + 5, "hit_prompt": hit_prompt, "hit_completion": 4 + 6}


async def test_counters_move_by_exactly_the_traffic(deja: Deja, upstream: FakeOpenAI,
                                                    session: aiohttp.ClientSession) -> None:
    before = await scrape(session, deja.url)
    figures = await _traffic(session, deja, upstream)

    async def written() -> bool:
        after = await scrape(session, deja.url)
        return delta(before, after, "deja_usage_rows_written_total") >= 7
    await eventually(written, what="7 usage rows written")
    after = await scrape(session, deja.url)

    def d(name: str, **labels: str) -> float:
        return delta(before, after, name, **labels)

    assert d("deja_requests_total", **CHAT, status="200") == 5
    assert d("deja_requests_total", **CHAT, status="502") == 1
    assert d("deja_requests_total", **CHAT, status="429") == 1
    assert d("deja_requests_total") == 7
    assert d("deja_request_duration_seconds_count", **CHAT, cache="miss") == 4
    assert d("deja_request_duration_seconds_count", **CHAT, cache="exact") == 2
    assert d("deja_request_duration_seconds_count") == 7  # the refused request is timed too (cache "off")
    assert d("deja_time_to_first_token_seconds_count", model=MODEL, cache="miss") == 1
    assert d("deja_time_to_first_token_seconds_count", model=MODEL, cache="exact") == 1
    assert d("deja_cache_lookups_total", result="miss") == 4
    assert d("deja_cache_lookups_total", result="exact") == 2
    assert d("deja_cache_lookups_total") == 6  # the refused request never reaches the cache
    assert d("deja_cache_similarity_count") == 2  # exact hits observe similarity 1.0
    assert d("deja_cache_similarity_bucket", le="0.98") == 0
    assert after.value("deja_cache_entries") == 3
    assert d("deja_upstream_requests_total", status="200") == 3
    assert d("deja_upstream_duration_seconds_count") == d("deja_upstream_requests_total")
    assert d("deja_tokens_total", kind="prompt", source="upstream") == figures["upstream_prompt"]
    assert d("deja_tokens_total", kind="completion", source="upstream") == figures["upstream_completion"]
    assert d("deja_tokens_total", kind="prompt", source="cache") == figures["hit_prompt"]
    assert d("deja_tokens_total", kind="completion", source="cache") == figures["hit_completion"]
    assert d("deja_tokens_saved_total", by="cache") == figures["hit_prompt"] + figures["hit_completion"]
    assert d("deja_tokens_saved_total", by="compression") == 0  # lossless found nothing to remove
    assert d("deja_cost_usd_total") == pytest.approx(
        figures["upstream_prompt"] * PRICE_IN + figures["upstream_completion"] * PRICE_OUT, rel=1e-9)
    assert d("deja_cost_saved_usd_total", by="cache") == pytest.approx(
        figures["hit_prompt"] * PRICE_IN + figures["hit_completion"] * PRICE_OUT, rel=1e-9)
    assert d("deja_cost_saved_usd_total", by="compression") == 0
    assert d("deja_ratelimit_rejections_total") == 1
    assert d("deja_ratelimit_rejections_total", limit="requests") == 1
    assert d("deja_usage_rows_written_total") == 7
    assert d("deja_usage_write_errors_total") == 0
    assert d("deja_cache_errors_total") == 0
    assert after.value("deja_inflight_requests") == 0
    assert after.value("deja_usage_queue_depth") == 0


async def test_scrape_is_valid_prometheus_text_with_every_required_family(
        deja: Deja, session: aiohttp.ClientSession) -> None:
    async with session.get(deja.url + "/metrics") as response:
        assert response.status == 200
        assert response.content_type == "text/plain"  # Prometheus 3 refuses a scrape without a known type
        text = await response.text()
    scraped = parse_metrics(text)  # prometheus-client's own parser; raises on malformed text
    required = {
        "deja_requests": "counter", "deja_request_duration_seconds": "histogram",
        "deja_time_to_first_token_seconds": "histogram", "deja_upstream_requests": "counter",
        "deja_upstream_duration_seconds": "histogram", "deja_cache_lookups": "counter",
        "deja_cache_entries": "gauge", "deja_cache_similarity": "histogram", "deja_tokens": "counter",
        "deja_tokens_saved": "counter", "deja_cost_usd": "counter", "deja_cost_saved_usd": "counter",
        "deja_ratelimit_rejections": "counter", "deja_inflight_requests": "gauge",
        "deja_usage_queue_depth": "gauge", "deja_usage_rows_written": "counter",
        "deja_embedding_batch_size": "histogram", "deja_embedding_duration_seconds": "histogram",
    }
    assert {name: scraped.types.get(name) for name in required} == required
    assert all(name.startswith("deja_") or name.startswith(("python_", "process_")) for name in scraped.types)


async def test_label_values_stay_bounded(deja: Deja, upstream: FakeOpenAI,
                                         session: aiohttp.ClientSession) -> None:
    """Unknown models, odd paths and many distinct prompts add no new label values beyond the known sets."""
    for i in range(5):
        await chat(session, deja.url, f"distinct prompt number {i}", headers={"Cache-Control": "no-store"})
    async with session.post(deja.url + "/v1/chat/completions", json={"model": "no-such-model-1", "messages": [
            {"role": "user", "content": "x"}]}, headers={"Authorization": f"Bearer {MASTER_KEY}"}) as r:
        assert r.status == 404
    async with session.get(deja.url + "/some/random/path/abc123") as r:
        assert r.status == 404
    scraped = await scrape(session, deja.url)
    labels = _label_values(scraped)
    assert labels["route"] <= {"chat", "embeddings"}
    assert labels["model"] <= {MODEL, "-"}  # a model outside the configured groups is never a label value
    assert labels["cache"] <= {"exact", "semantic", "miss", "bypass", "off"}
    assert labels["deployment"] <= {f"{MODEL}#0"}
    assert all(value.isdigit() and len(value) == 3 for value in labels["status"])


def _label_values(scraped: Scrape) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {k: set() for k in ("route", "model", "cache", "deployment", "status")}
    for name, labels in scraped.samples:
        if not name.startswith("deja_"):
            continue
        for key, value in labels:
            if key in out:
                out[key].add(value)
    return out


async def test_metrics_and_status_can_require_the_master_key(tmp_path: Path, upstream: FakeOpenAI,
                                                             session: aiohttp.ClientSession) -> None:
    server = await start_deja(make_settings(tmp_path, upstream, master_key=MASTER_KEY,
                                            cache={"semantic": False}, metrics={"require_master_key": True}))
    try:
        for path in ("/metrics", "/status.json"):
            async with session.get(server.url + path) as r:
                assert r.status == 401
            key = await create_key(session, server.url, name="not-admin")
            async with session.get(server.url + path, headers={"Authorization": f"Bearer {key['key']}"}) as r:
                assert r.status == 403
            async with session.get(server.url + path, headers={"Authorization": f"Bearer {MASTER_KEY}"}) as r:
                assert r.status == 200
        async with session.get(server.url + "/") as r:  # the page itself is static; its figures are guarded
            assert r.status == 200 and "status.json" in await r.text()
    finally:
        await server.close()


async def test_failed_upstream_calls_are_counted_per_deployment(deja: Deja, upstream: FakeOpenAI,
                                                                session: aiohttp.ClientSession) -> None:
    before = await scrape(session, deja.url)
    upstream.script(Behaviour(kind="error", status=500))
    assert (await chat(session, deja.url, "fails upstream")).status == 502
    after = await scrape(session, deja.url)
    calls = delta(before, after, "deja_upstream_requests_total", deployment=f"{MODEL}#0")
    ok = delta(before, after, "deja_upstream_requests_total", deployment=f"{MODEL}#0", status="200")
    assert (calls, ok) == (1, 0)  # one failed call (labelled 500 or 502) for the deployment


async def test_compression_savings_do_not_depend_on_the_upstream_token_count(
        deja: Deja, upstream: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    before = await scrape(session, deja.url)
    content = "Explain in one sentence why the sky is blue."
    counted = count_tokens([{"role": "user", "content": content}], MODEL)
    upstream.script(Behaviour(usage={"prompt_tokens": counted - 5, "completion_tokens": 3,
                                     "total_tokens": counted - 2}))  # another tokenizer: 5 tokens fewer
    answer = await chat(session, deja.url, content)
    assert answer.headers["X-Deja-Prompt-Tokens-Original"] == answer.headers["X-Deja-Prompt-Tokens-Sent"]
    after = await scrape(session, deja.url)
    assert delta(before, after, "deja_tokens_saved_total", by="compression") == 0


_WORKER = """
import sys
from router.ops.metrics import Metrics
m = Metrics()
m.requests.labels(route="chat", model="gpt-4o-mini", status="200").inc(int(sys.argv[1]))
m.duration.labels(route="chat", model="gpt-4o-mini", cache="miss").observe(0.2)
m.cache_entries.set(int(sys.argv[1]))
if sys.argv[2] == "render":
    sys.stdout.write(m.render().decode())
"""


def test_multiprocess_mode_aggregates_every_worker(tmp_path: Path) -> None:
    """With PROMETHEUS_MULTIPROC_DIR, one worker's /metrics shows the sum over all workers."""
    import subprocess
    import sys

    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(Path(__file__).parents[4])}
    for count in ("2", "5"):
        subprocess.run([sys.executable, "-c", _WORKER, count, "quiet"], env=env, check=True, timeout=60)
    out = subprocess.run([sys.executable, "-c", _WORKER, "3", "render"], env=env, check=True, timeout=60,
                         capture_output=True, text=True).stdout
    scraped = parse_metrics(out)
    assert scraped.value("deja_requests_total", route="chat", status="200") == 10
    assert scraped.value("deja_request_duration_seconds_count", cache="miss") == 3
    assert scraped.value("deja_cache_entries") == 5  # multiprocess_mode="max"
