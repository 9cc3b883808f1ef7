"""The replay report as a terminal table, and as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _usd(value: float) -> str:
    return f"${value:,.2f}" if value >= 1 else f"${value:.4f}"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


COLUMNS = ("", "mode", "threshold", "hit rate", "exact", "semantic", "wrong", "tokens saved", "$ saved",
           "latency saved")


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    default, recommended = report["default"]["threshold"], report["recommended"]
    rows = []
    for row in report["rows"]:
        mode = row["mode"]
        mark = "*" if mode == "verifier" and row["threshold"] == default else ""
        mark += "<" if recommended.get(mode) == row["threshold"] else ""
        rows.append([mark, mode, f"{row['threshold']:.3f}", _pct(row["hit_rate"]), str(row["exact"]),
                     str(row["semantic"]), _pct(row["wrong_rate"]), f"{row['tokens_saved']:,}",
                     _usd(row["usd_saved"]), _duration(row["latency_saved_s"])])
    return rows


def format_table(report: dict[str, Any]) -> str:
    """The sweep as an aligned table, with a header of what was replayed and a legend."""
    rows = [list(COLUMNS), *table_rows(report)]
    widths = [max(len(r[c]) for r in rows) for c in range(len(COLUMNS))]
    lines = [_header(report), ""]
    for n, row in enumerate(rows):
        cells = [cell.ljust(w) if c < 2 else cell.rjust(w) for c, (cell, w) in enumerate(zip(row, widths,
                                                                                             strict=True))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    lines.append(f"* deja's live setting (floor {report['default']['threshold']:.3f}, verifier on)")
    target = report["options"]["target_wrong_rate"]
    if report["labelled"]:
        for mode, value in report["recommended"].items():
            judged = any(r["right"] + r["wrong"] for r in report["rows"] if r["mode"] == mode)
            text = f"{value:.3f}" if value is not None else "none (no threshold keeps it)" if judged \
                else "none (no judged semantic hits)"
            lines.append(f"< {mode}: lowest threshold keeping measured wrong semantic hits <= {target:.0%}: {text}")
    else:
        lines.append("wrong: no labels or judged pairs given (--judged, or a 'label' per request)")
    return "\n".join(lines)


def _header(report: dict[str, Any]) -> str:
    read, costs = report["read"], report["costs"]
    skipped = sum(read["skipped"].values())
    text = (f"replayed {report['requests']:,} requests ({report['distinct_requests']:,} distinct, "
            f"{report['embedded_texts']:,} texts embedded, {report['verifier_checks']:,} verifier checks) "
            f"in {report['timing']['total_s']:.1f} s; upstream cost of all of them {_usd(costs['usd_total'])}")
    if skipped:
        reasons = ", ".join(f"{n} {why}" for why, n in read["skipped"].items())
        text += f"\nskipped {skipped:,} of {read['inputs']:,} inputs: {reasons}"
    if costs["unpriced_models"]:
        text += f"\nnot in LiteLLM's price map (counted as free): {', '.join(costs['unpriced_models'])}"
    return text


def write_json(report: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
