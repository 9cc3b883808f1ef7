"""The replay report as one self-contained HTML file: inline CSS, inline SVG charts, no network."""

from __future__ import annotations

from html import escape
from pathlib import Path
from string import Template
from typing import Any

from cache.replay.report import COLUMNS, table_rows
from cache.replay.runner import modes
from cache.replay.svg import Series, line_chart

TEMPLATE = Path(__file__).resolve().parent / "report.html"
COLORS = ("#1f6feb", "#d9822b", "#2e8b57", "#8e44ad", "#7f8c8d", "#c0392b")


def _series(report: dict[str, Any], field: str) -> list[Series]:
    out = []
    for n, mode in enumerate(modes(report["rows"])):
        rows = sorted((r for r in report["rows"] if r["mode"] == mode), key=lambda r: r["threshold"])
        out.append(Series("cosine only" if mode == "cosine" else mode, COLORS[n % len(COLORS)],
                          [r["threshold"] for r in rows], [r[field] for r in rows]))
    return out


def charts(report: dict[str, Any]) -> str:
    percent = "{:.0%}".format
    parts = [line_chart("chart-hit-rate", "Hit rate (exact + semantic)", _series(report, "hit_rate"),
                        x_label="similarity threshold", y_label="hit rate", y_format=percent, y_min=0.0)]
    if report["labelled"]:
        wrong = _series(report, "wrong_rate")
        first = wrong[0].xs or [0.0]
        target = report["options"]["target_wrong_rate"]
        wrong.append(Series(f"target {target:.0%}", "#b3261e", [min(first), max(first)], [target, target],
                            dashed=True))
        parts.append(line_chart("chart-wrong-rate", "Wrong semantic hits (judged)", wrong,
                                x_label="similarity threshold", y_label="wrong / judged", y_format=percent,
                                y_min=0.0))
    parts.append(line_chart("chart-savings", "Upstream cost saved", _series(report, "usd_saved"),
                            x_label="similarity threshold", y_label="USD saved", y_format="${:,.2f}".format,
                            y_min=0.0))
    return "\n".join(parts)


def _sweep_rows(report: dict[str, Any]) -> str:
    lines = []
    for row in table_rows(report):
        css = "live" if "*" in row[0] else "recommended" if "<" in row[0] else ""
        cells = "".join(f'<td class="text">{escape(c)}</td>' if i < 2 else f"<td>{escape(c)}</td>"
                        for i, c in enumerate(row))
        lines.append(f'<tr class="{css}">{cells}</tr>')
    return "\n".join(lines)


def _sample_rows(report: dict[str, Any]) -> str:
    lines = []
    for band in report["samples"]:
        for kind in ("hits", "refused"):
            for ex in band[kind]:
                score = "-" if ex["score"] is None else f"{ex['score']:.3f}"
                lines.append(
                    f'<tr><td class="text">{escape(band["band"])}</td>'
                    f'<td class="text">{"served" if kind == "hits" else "refused"}</td>'
                    f'<td class="text">{escape(ex["query"])}</td><td class="text">{escape(ex["cached"])}</td>'
                    f'<td>{ex["similarity"]:.4f}</td><td>{score}</td><td class="text">{escape(ex["reason"])}</td>'
                    f'<td class="text {ex["judged"]}">{escape(ex["judged"])}</td></tr>')
    return "\n".join(lines) or '<tr><td class="text" colspan="8">no would-be semantic hits</td></tr>'


def live_row(report: dict[str, Any]) -> dict[str, Any]:
    default = report["default"]["threshold"]
    return next(r for r in report["rows"] if r["mode"] == "verifier" and r["threshold"] == default)


def render(report: dict[str, Any]) -> str:
    live = live_row(report)
    recommended = report["recommended"]["verifier"]
    reasons = "\n".join(f'<tr><td class="text">{escape(k)}</td><td>{v:,}</td></tr>'
                        for k, v in live["miss_reasons"].items())
    summary = (f"{report['requests']:,} requests replayed ({report['distinct_requests']:,} distinct, "
               f"{report['embedded_texts']:,} texts embedded) in {report['timing']['total_s']:.1f} s; "
               f"answering all of them upstream cost ${report['costs']['usd_total']:,.2f}.")
    return Template(TEMPLATE.read_text(encoding="utf-8")).substitute(
        title=escape(str(report["source"].get("name", "replay"))),
        summary=escape(summary),
        live_setting=f"floor {live['threshold']:.3f} + verifier",
        live_hit_rate=f"{live['hit_rate']:.1%} ({live['exact']:,} exact, {live['semantic']:,} semantic)",
        live_saved=f"${live['usd_saved']:,.2f} · {live['tokens_saved']:,} tokens",
        live_wrong="-" if live["wrong_rate"] is None else f"{live['wrong_rate']:.1%} ({live['wrong']} wrong)",
        recommended="none" if recommended is None else f"{recommended:.3f}",
        charts=charts(report),
        target=f"{report['options']['target_wrong_rate']:.0%}",
        sweep_head="".join(f'<th class="text">{escape(c)}</th>' if i < 2 else f"<th>{escape(c)}</th>"
                           for i, c in enumerate(COLUMNS)),
        sweep_rows=_sweep_rows(report),
        reason_rows=reasons or '<tr><td class="text" colspan="2">no misses</td></tr>',
        sample_rows=_sample_rows(report),
    )


def write_html(report: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(render(report), encoding="utf-8")
