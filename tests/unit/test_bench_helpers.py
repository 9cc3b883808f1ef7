"""Pure helpers of ``benchmarks/peers.py``, ``benchmarks/soak.py`` and ``benchmarks/procs.py``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from benchmarks.peers import Questions, fill_sources, markdown_table, spliced, surface_variants
from benchmarks.peers_client import pct, summary
from benchmarks.procs import cpu_seconds, memory_kib, pinned_version, process_tree
from benchmarks.soak import rss_growth, slope_per_minute, summarise_log, window_mean


def test_percentiles_are_nearest_rank_in_milliseconds() -> None:
    values = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    assert pct(values, 0.5) == 0.051
    assert pct(values, 0.99) == 0.1
    stats = summary(values)
    assert stats is not None
    assert stats["p50_ms"] == pytest.approx(51.0) and stats["p99_ms"] == pytest.approx(100.0)
    assert summary([]) is None


def _cell(p50: float, rps: float, stream: bool) -> dict[str, object]:
    cell: dict[str, object] = {"latency": {"p50_ms": p50, "p99_ms": 2 * p50}, "rps": rps, "cpu_ms_per_request": 1.5,
                               "added_latency": {"p50_ms": p50 - 1, "p99_ms": 2 * p50 - 2}}
    if stream:
        cell["added_ttfc"] = {"p50_ms": 0.5, "p99_ms": 1.0}
    return cell


def _phase(deja_p50: float) -> dict[str, object]:
    names = ("direct", "deja", "litellm_proxy", "portkey")
    misses = {key: {n: _cell(deja_p50 if n == "deja" else 3.0, 500.0, key.startswith("stream")) for n in names
                    if not (key.startswith("stream") and n == "portkey")}
              for key in ("nonstream_c1", "nonstream_c32", "stream_c1")}
    hit = {"latency": {"p50_ms": 1.0, "p99_ms": 2.0}, "hits_per_s": 900.0}
    return {"misses": misses, "exact_hits": {"c1": hit, "c32": hit}, "semantic_hits": {"c1": hit, "c32": None},
            "rss_mib": {n: 100.0 for n in names}}


def test_markdown_table_puts_both_phases_and_every_peer_side_by_side() -> None:
    lines = markdown_table({"empty": _phase(2.0), "full": _phase(4.0)}).splitlines()
    assert lines[0] == ("| | deja (empty) | litellm_proxy (empty) | portkey (empty) | deja (full) | "
                        "litellm_proxy (full) | portkey (full) |")
    assert "| miss, c=1: added p50 (ms) | 1.0 | 2.0 | 2.0 | 3.0 | 2.0 | 2.0 |" in lines
    assert "| stream miss, c=1: added TTFC p50 (ms) | 0.5 | 0.5 | – | 0.5 | 0.5 | – |" in lines
    assert "| exact hits, c=1: p50 / rate | 1.0 ms / 900 per s | n/a | n/a | 1.0 ms / 900 per s | n/a | n/a |" in lines
    assert "| semantic hits, c=32: p50 / rate | – | n/a | n/a | – | n/a | n/a |" in lines


def test_questions_are_handed_out_once() -> None:
    questions = Questions(["a", "b", "c"])
    assert questions.take(2) == ["a", "b"] and questions.rest() == ["c"]
    with pytest.raises(RuntimeError):
        questions.take(2)


def test_spliced_questions_are_unique_and_surface_variants_differ() -> None:
    sources = ["How do I learn Python fast?", "What is the capital of France today?",
               "Why is the sky blue during the day?"]
    texts = spliced(sources, 20)
    assert len(set(texts)) == 20 and not set(texts) & set(sources)
    assert all(len(t.split()) >= 4 and "#" not in t for t in texts)
    with pytest.raises(ValueError):
        spliced(sources[:1], 20)
    variants = surface_variants("How do I learn Python?")
    assert "How do I learn Python?" not in variants and len(set(variants)) == len(variants) == 4


def test_rss_growth_compares_the_window_after_warm_up_with_the_last_window() -> None:
    samples = [(float(t), 100.0 if t < 60 else 110.0) for t in range(0, 101)]  # a step at 60 s of a 100 s run
    growth = rss_growth(samples, 100.0)
    assert growth["baseline"] == pytest.approx(100.0)  # 20..30 s
    assert growth["end"] == pytest.approx(110.0)  # 90..100 s
    assert growth["growth"] == pytest.approx(0.10)
    assert window_mean(samples, 200, 300) is None
    assert rss_growth([], 100.0)["growth"] is None


def test_slope_per_minute() -> None:
    samples = [(float(t), 50.0 + t / 60) for t in range(0, 600, 10)]  # +1 per minute
    assert slope_per_minute(samples, after=120) == pytest.approx(1.0)
    assert slope_per_minute(samples[:2], after=0) is None


def test_proc_readers_see_this_process() -> None:
    assert os.getpid() in process_tree(os.getpid())
    assert memory_kib(os.getpid(), "VmRSS") > 1000
    assert memory_kib(os.getpid(), "VmHWM") >= memory_kib(os.getpid(), "VmRSS") - 1024
    assert cpu_seconds(os.getpid()) > 0


def test_pinned_version_reads_constraints(tmp_path: Path) -> None:
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("aiohttp==3.14.5\nlitellm==1.100.5  # the proxy's too\nlitellm-proxy-extras==0.1\n")
    assert pinned_version("litellm", "0", constraints) == "1.100.5"
    assert pinned_version("missing", "9.9", constraints) == "9.9"
    assert pinned_version("litellm", "9.9", tmp_path / "nowhere.txt") == "9.9"


def test_summarise_log_groups_warnings_and_errors() -> None:
    exc = "Traceback (most recent call last):\\n  ...\\nConnectionResetError: gone"
    lines = ['{"level": "info", "message": "started"}',
             '{"level": "error", "message": "unhandled error", "exc": "' + exc + '"}',
             '{"level": "error", "message": "unhandled error", "exc": "' + exc + '"}',
             '{"level": "warning", "message": "slow"}',
             "plain text ERROR something"]
    summary = summarise_log(lines)
    assert summary["lines"] == 5 and summary["warnings_and_errors"] == 4
    assert summary["by_kind"]["error: unhandled error (ConnectionResetError: gone)"] == 2
    assert summary["by_kind"]["warning: slow"] == 1


def test_fill_sources_leave_out_the_texts_the_hit_phases_ask(tmp_path: Path) -> None:
    data = tmp_path / "pairs.jsonl"
    rows = [{"text_a": f"Question {i} a?", "text_b": f"Question {i} b?", "label": i % 2} for i in range(4)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert fill_sources(data) == [f"Question {i} b?" for i in range(4)]
    assert fill_sources(data, {"Question 1 b?", "Question 1 a?"}) == ["Question 0 b?", "Question 2 b?", "Question 3 b?"]


def test_index_churn_runs_until_the_rebuild_ends_and_sees_the_one_go_stall_as_one_insert() -> None:
    import numpy as np

    from benchmarks.index_churn import churn
    from cache import ann

    if not ann.ann_available():
        pytest.skip("usearch is not installed")
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((600, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    before = ann.MOVE_PER_ADD
    gradual, at_once = churn(vectors, 300, 4), churn(vectors, 300, 10**9)
    assert ann.MOVE_PER_ADD == before  # the module's setting is restored
    # both went past the rebuild trigger (more evictions than live rows), and the gradual one kept moving after it
    assert at_once["inserts"] > 300 and gradual["inserts"] > at_once["inserts"]
    assert gradual["largest_graph_rows"] <= 2 * 300 + ann.MIN_DEAD_TO_REBUILD + 1


def test_static_vectors_switches_embed_all_to_the_gate_and_back(tmp_path: Path) -> None:
    import numpy as np

    from benchmarks import qqp
    from cache.gate import StaticEmbedder

    texts = ["How do I learn Python?", "What is the capital of France?"]
    gate = StaticEmbedder.load()
    with qqp.static_vectors():
        vectors = qqp.embed_all(texts, tmp_path / "static.npz")
    assert np.allclose(vectors, np.stack([gate.embed(t) for t in texts]), atol=1e-6)
    assert qqp._BACKEND["static"] is False  # restored on the way out


def test_gate_recall_counts_partners_the_graph_returns_first() -> None:
    import numpy as np

    from benchmarks.gate_recall import measure
    from cache import ann

    if not ann.ann_available():
        pytest.skip("usearch is not installed")
    rng = np.random.default_rng(2)
    stored = rng.normal(size=(300, 16)).astype(np.float32)
    stored /= np.linalg.norm(stored, axis=1, keepdims=True)
    partners = np.array([10, 20, 30, 40])
    queries = stored[partners] + 0.01 * rng.normal(size=(4, 16)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    eligible = np.array([True, True, True, False])  # the last is not counted, found or not
    got = measure(stored, queries, partners, eligible, {})
    assert got["partner_first"] == 3 and got["partner_in_top5"] == 3
    before = ann.EXPANSION_SEARCH
    wrong = measure(stored, queries, np.array([11, 21, 31, 41]), eligible, {"expansion_search": 128})
    assert wrong["partner_first"] == 0
    assert ann.EXPANSION_SEARCH == before  # the module's setting is restored


def test_embedder_gil_counts_the_encoder_thread_and_restores_the_switch_interval() -> None:
    from benchmarks.embedder_gil import encoder_rate

    seen: list[str] = []
    before = sys.getswitchinterval()
    rate, turns = encoder_rate(lambda texts: seen.extend(texts), ["a", "b", "c"], 0.05, busy=True, switch=0.0005)
    assert sys.getswitchinterval() == before
    assert rate > 0 and turns > 0 and seen[:4] == ["a", "b", "c", "a"]  # one text per call, cycling
    idle_rate, idle_turns = encoder_rate(lambda texts: None, ["a"], 0.05, busy=False, switch=before)
    assert idle_rate > 0 and idle_turns == 0
