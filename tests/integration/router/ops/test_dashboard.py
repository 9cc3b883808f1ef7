"""``deploy/grafana/deja.json`` queries only metrics deja exports, and covers every metric the issue asks for.

Every PromQL ``expr`` (panels and template variables) is reduced to its metric names, which are compared with
the names in a real ``/metrics`` scrape (a histogram exports ``_bucket``, ``_sum`` and ``_count``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from providers.fake_openai import FakeOpenAI
from tests.integration.harness import Deja
from tests.integration.router.ops.helpers import chat, scrape

DASHBOARD = Path(__file__).resolve().parents[4] / "deploy" / "grafana" / "deja.json"
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
            "group_right", "inf", "nan", "atan2"}
REQUIRED = {
    "deja_requests_total", "deja_request_duration_seconds_bucket", "deja_time_to_first_token_seconds_bucket",
    "deja_upstream_requests_total", "deja_upstream_duration_seconds_bucket", "deja_cache_lookups_total",
    "deja_cache_entries", "deja_cache_similarity_bucket", "deja_tokens_total", "deja_tokens_saved_total",
    "deja_cost_usd_total", "deja_cost_saved_usd_total", "deja_ratelimit_rejections_total",
    "deja_inflight_requests", "deja_usage_queue_depth", "deja_usage_rows_written_total",
    "deja_embedding_batch_size_count", "deja_embedding_duration_seconds_bucket", "deja_tag_cost_usd_total",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, labels and variables left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', " ", expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery selectors
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", text):
        name = match.group(0)
        if name.lower() in KEYWORDS or re.match(r"\s*\(", text[match.end():]):
            continue
        names.add(name)
    return names


@pytest.mark.parametrize(("expr", "names"), [
    ('sum by (route) (rate(deja_requests_total{instance=~"$instance",status=~"5.."}[$__rate_interval]))',
     {"deja_requests_total"}),
    ("histogram_quantile(0.95, sum by (le, cache) (rate(deja_request_duration_seconds_bucket[5m])))",
     {"deja_request_duration_seconds_bucket"}),
    ("sum(rate(a_sum[1m])) / sum(rate(a_count[1m])) * 3600 > bool 1e3", {"a_sum", "a_count"}),
    ("max(up offset 5m) or on (job) vector(0)", {"up"}),
    ('x{le="0.5"} unless ignoring (le) y', {"x", "y"}),
])
def test_metric_names_from_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


@pytest.mark.parametrize(("query", "expr"), [
    ("label_values(deja_requests_total, instance)", "deja_requests_total"),
    ('label_values(deja_tokens_total{kind="prompt"}, source)', 'deja_tokens_total{kind="prompt"}'),
    ("label_values(instance)", ""),
    ("query_result(sum(deja_cache_entries))", "sum(deja_cache_entries)"),
])
def test_variable_query_to_promql(query: str, expr: str) -> None:
    assert variable_expr(query) == expr


def variable_expr(query: str) -> str:
    """The PromQL inside a Grafana Prometheus variable query (``label_values(expr, label)`` and friends)."""
    match = re.fullmatch(r"\s*label_values\((?:(.*),)?\s*\w+\s*\)\s*", query)
    if match:
        return (match.group(1) or "").strip()
    match = re.fullmatch(r"\s*query_result\((.*)\)\s*", query)
    return match.group(1).strip() if match else query.strip()


def _panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from _panels(panel.get("panels") or [])


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_exprs() -> list[str]:
    board = _dashboard()
    exprs = [t["expr"] for p in _panels(board["panels"]) for t in p.get("targets") or [] if t.get("expr")]
    for variable in board["templating"]["list"]:
        query = variable.get("query")
        if variable.get("type") == "query":
            exprs.append(variable_expr(query.get("query") if isinstance(query, dict) else query))
    return exprs


def dashboard_metrics() -> set[str]:
    return set().union(*(metric_names(e) for e in dashboard_exprs()))


def test_dashboard_is_importable_grafana_json() -> None:
    board = _dashboard()
    panels = list(_panels(board["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    for panel in panels:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"


def test_dashboard_covers_what_operators_need() -> None:
    used = dashboard_metrics()
    exprs = " ".join(dashboard_exprs())
    assert "sum by (model) (rate(deja_cost_usd_total" in exprs and "sum by (tenant) (rate(deja_cost_usd_total" in exprs
    assert REQUIRED <= used, f"not on the dashboard: {sorted(REQUIRED - used)}"
    titles = " | ".join(p["title"].lower() for p in _panels(_dashboard()["panels"]))
    for topic in ("latency", "first token", "error rate", "hit rate", "saved", "cost", "rate-limit", "queue",
                  "spend by model", "spend by tenant", "spend by tag"):
        assert topic in titles or topic.replace("-", " ") in titles, topic


async def test_every_dashboard_metric_is_exported(deja: Deja, upstream: FakeOpenAI,
                                                  session: aiohttp.ClientSession) -> None:
    assert (await chat(session, deja.url, "hello there", stream=True)).status == 200
    exported = (await scrape(session, deja.url)).names()
    used = dashboard_metrics()
    assert len(used) >= 20
    missing = sorted(used - exported)
    assert not missing, f"the dashboard queries metrics deja does not export: {missing}"
