"""Plain-text tables for ``deja usage``: the rows of ``Storage.usage_summary`` made readable."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

_COLUMNS = (
    ("requests", "requests", "{:,}"),
    ("prompt_tokens", "prompt tok", "{:,}"),
    ("completion_tokens", "completion tok", "{:,}"),
    ("cost_usd", "cost $", "{:,.4f}"),
    ("saved_usd", "saved $", "{:,.4f}"),
    ("cache_hit_rate", "cache hits", "{:.1%}"),
)


def _totals(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {"group": "TOTAL"}
    for key in ("requests", "prompt_tokens", "completion_tokens", "cost_usd", "saved_usd", "cache_hits"):
        total[key] = sum(r.get(key, 0) or 0 for r in rows)
    lookups = sum(r.get("cache_lookups", r.get("requests", 0)) or 0 for r in rows)
    total["cache_hit_rate"] = total["cache_hits"] / lookups if lookups else 0.0
    return total


def format_usage(rows: Sequence[dict[str, Any]], group_by: str | None = None) -> str:
    """An aligned table, one line per group plus a TOTAL line when there are several groups."""
    if not rows:
        return "no usage in this period"
    label = group_by or "period"
    body = list(rows)
    with_total = group_by is not None and len(body) > 1
    if with_total:
        body.append(_totals(body))
    table = [[label, *(title for _, title, _ in _COLUMNS)]]
    for row in body:
        group = row.get("group")
        name = "(none)" if group is None and group_by else ("all" if group is None else str(group))
        table.append([name, *(fmt.format(row.get(key) or 0) for key, _, fmt in _COLUMNS)])
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    out = []
    for n, line in enumerate(table):
        cells = [line[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True)]
        out.append("  ".join(cells).rstrip())
        if n == 0 or (with_total and n == len(table) - 2):
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)
