"""Pure helpers of ``benchmarks/peers.py``, ``benchmarks/soak.py`` and ``benchmarks/procs.py``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.peers import markdown_table, pct, rps_at_p99_bound, summary
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


def test_rps_at_p99_bound_picks_the_fastest_level_within_the_bound() -> None:
    points = {"c1": {"rps": 100.0, "latency": {"p99_ms": 5.0}},
              "c8": {"rps": 400.0, "latency": {"p99_ms": 49.0}},
              "c32": {"rps": 600.0, "latency": {"p99_ms": 120.0}},
              "c128": {"rps": 650.0, "latency": None}}
    assert rps_at_p99_bound(points) == {"rps": 400.0, "concurrency": 8, "p99_ms": 49.0}
    assert rps_at_p99_bound(points, bound_ms=1.0) is None


def _cell(p50: float, rps: float, stream: bool) -> dict[str, object]:
    cell: dict[str, object] = {"latency": {"p50_ms": p50, "p99_ms": 2 * p50}, "rps": rps, "cpu_ms_per_request": 1.5,
                               "added_latency": {"p50_ms": p50 - 1, "p99_ms": 2 * p50 - 2}}
    if stream:
        cell["added_ttfc"] = {"p50_ms": 0.5, "p99_ms": 1.0}
    return cell


def test_markdown_table_renders_every_point_and_the_summary() -> None:
    load = {mode: {"c1": {"direct": _cell(1.0, 900.0, False), "deja": _cell(5.0, 200.0, mode == "stream"),
                          "litellm_proxy": _cell(9.0, 100.0, mode == "stream")}}
            for mode in ("nonstream", "stream")}
    hit = {"latency": {"p50_ms": 1.0, "p99_ms": 2.0}, "hits_per_s": 900.0}
    result = {"load": load,
              "rps_at_p99_50ms": {m: {"direct": {"rps": 900.0, "concurrency": 1, "p99_ms": 2.0},
                                      "deja": {"rps": 200.0, "concurrency": 1, "p99_ms": 10.0},
                                      "litellm_proxy": None} for m in load},
              "peak_rss_mib": {"deja": 250.0, "litellm_proxy": 330.0, "direct": 50.0},
              "cache_hits": {"exact": {"c1": {"deja": hit, "litellm_proxy": hit}},
                             "semantic": {"c1": {"deja": hit}, "c32": None}}}
    table = markdown_table(result)
    lines = table.splitlines()
    assert lines[0].startswith("| mode | concurrency |")
    assert "| non-streaming | 1 | +4.0 / +8.0 | +8.0 / +16.0 | – | – | 900 | 200 | 100 | 1.50 | 1.50 |" in lines
    streaming = ("| streaming | 1 | +4.0 / +8.0 | +8.0 / +16.0 | +0.5 / +1.0 | +0.5 / +1.0 | 900 | 200 | 100 | "
                 "1.50 | 1.50 |")
    assert streaming in lines
    assert "| req/s at p99 ≤ 50 ms, non-streaming | 200 (c1) | none ≤ 50 ms | 900 (c1) |" in lines
    assert any(line.startswith("| exact hit p50 / p99, hits/s, concurrency 1 | 1.0 / 2.0 ms, 900/s") for line in lines)
    assert any(line.startswith("| semantic hit p50 / p99, hits/s, concurrency 32 | – |") for line in lines)


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
