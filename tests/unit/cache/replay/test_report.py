"""The report: the recommendation rule, the terminal table, the charts and the HTML page."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

from cache.replay.html import render
from cache.replay.records import Judge
from cache.replay.report import format_table
from cache.replay.runner import ReplayOptions, recommend, run_replay
from cache.replay.svg import Series, line_chart
from cache.verify import Verifier
from tests.unit.cache.replay.helpers import TableEmbedder, ask, at_cosine


def _row(threshold: float, wrong_rate: float | None, semantic: int = 10) -> dict[str, Any]:
    return {"threshold": threshold, "wrong_rate": wrong_rate, "semantic": semantic, "mode": "verifier"}


def test_recommend_takes_the_lowest_threshold_from_which_every_higher_one_stays_under_target() -> None:
    rows = [_row(0.99, 0.0), _row(0.98, 0.01), _row(0.97, 0.03), _row(0.96, 0.01), _row(0.95, 0.05)]
    assert recommend(rows, "verifier", 0.02) == 0.98  # 0.96 is under target, but 0.97 above it is not
    assert recommend(rows, "cosine", 0.02) is None
    assert recommend([_row(0.99, None, semantic=0), _row(0.98, 0.0)], "verifier", 0.02) == 0.98
    assert recommend([_row(0.99, 0.0), _row(0.98, None, semantic=3)], "verifier", 0.02) == 0.99  # unjudged


def test_line_chart_draws_one_path_per_series_and_skips_missing_points() -> None:
    svg = line_chart("c", "T <&>", [Series("a", "#000", [0.8, 0.9, 1.0], [0.1, None, 0.3]),
                                    Series("b", "#111", [0.8, 1.0], [0.0, 0.0])],
                     x_label="x", y_label="y", y_format="{:.0%}".format)
    assert svg.count('class="series"') == 2 and 'data-points="2"' in svg and "T &lt;&amp;&gt;" in svg


class _Cells(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        ident = dict(attrs).get("id")
        if ident:
            self.ids.add(ident)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


async def _report(labels: bool = True) -> dict[str, Any]:
    table = {"Is it <b>?": at_cosine(1.0), "is it a <b>": at_cosine(0.96), "far": [0.0, 0.0, 1.0]}
    requests = [ask("Is it <b>?", 0, label="1" if labels else None, latency_ms=1000.0),
                ask("is it a <b>", 1, label="1" if labels else None, latency_ms=2000.0),
                ask("far", 2), ask("far", 3, latency_ms=500.0)]
    return await run_replay(requests, TableEmbedder(table), Verifier.load_default(), judge=Judge(),
                            options=ReplayOptions(thresholds=(0.9, 0.95, 0.99), source={"name": "t.jsonl"}))


async def test_report_table_marks_the_live_setting_and_the_recommendation() -> None:
    report = await _report()
    rows = {r["setting"]: r for r in report["rows"]}
    assert set(rows) == {f"{m}@{t:.3f}" for m in ("verifier", "cosine") for t in (0.9, 0.95, 0.97, 0.99)}
    low = rows["cosine@0.900"]
    assert (low["exact"], low["semantic"], low["right"], low["wrong"]) == (1, 1, 1, 0)
    assert low["latency_saved_s"] == 2.5 and low["latency_known_hits"] == 2
    assert rows["verifier@0.970"]["semantic"] == 0
    assert rows["verifier@0.970"]["miss_reasons"] == {"no-candidate": 1, "below-floor": 2}
    assert report["recommended"]["cosine"] == 0.9
    table = format_table(report)
    lines = table.splitlines()
    assert lines[0].startswith("replayed 4 requests (3 distinct, 3 texts embedded")
    assert any(line.startswith("*  verifier      0.970     25.0%      1         0      -") for line in lines)
    assert any(line.startswith("<  cosine        0.900     50.0%      1         1   0.0%") for line in lines)
    assert "< verifier: lowest threshold keeping measured wrong semantic hits <= 2%: none (no judged" in table


async def test_html_is_self_contained_and_escapes_what_it_shows() -> None:
    report = await _report()
    page = render(report)
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page
    parser = _Cells()
    parser.feed(page)
    assert {"chart-hit-rate", "chart-wrong-rate", "chart-savings", "sweep", "samples", "reasons"} <= parser.ids
    assert "Is it <b>?" in "".join(parser.text) and "<b>?" not in page  # shown as text, never as markup
    unlabelled = render(await _report(labels=False))
    assert 'id="chart-wrong-rate"' not in unlabelled
