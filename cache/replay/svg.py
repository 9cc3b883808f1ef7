"""Line charts as inline SVG, drawn here: no plotting library, no script, no network."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 560, 300
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 44, 44


@dataclass(frozen=True)
class Series:
    name: str
    color: str
    xs: Sequence[float]
    ys: Sequence[float | None]  # None: no point (e.g. no judged hits at that threshold)
    dashed: bool = False


def _ticks(low: float, high: float, n: int = 5) -> list[float]:
    if high <= low:
        return [low]
    step = (high - low) / (n - 1)
    return [low + step * i for i in range(n)]


def line_chart(ident: str, title: str, series: Sequence[Series], *, x_label: str, y_label: str,
               y_format: Callable[[float], str], y_min: float | None = None) -> str:
    """An ``<svg id=ident>`` with one ``path.series`` per series (points as circles with a tooltip)."""
    xs = [x for s in series for x in s.xs]
    ys = [y for s in series for y in s.ys if y is not None]
    x0, x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
    y0 = y_min if y_min is not None else (min(ys) if ys else 0.0)
    y1 = max(ys) if ys else 1.0
    if y1 <= y0:
        y1 = y0 + (abs(y0) or 1.0)
    x1 = x1 if x1 > x0 else x0 + 1.0

    def px(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * (WIDTH - LEFT - RIGHT)

    def py(y: float) -> float:
        return HEIGHT - BOTTOM - (y - y0) / (y1 - y0) * (HEIGHT - TOP - BOTTOM)

    parts = [f'<svg id="{escape(ident)}" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
             f'height="{HEIGHT}" role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
             f'<text x="{WIDTH / 2}" y="16" text-anchor="middle" class="title">{escape(title)}</text>']
    for t in _ticks(y0, y1):
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{py(t):.1f}" y2="{py(t):.1f}" class="grid"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{escape(y_format(t))}</text>')
    for t in _ticks(x0, x1, 6):
        parts.append(f'<text x="{px(t):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">{t:.2f}</text>')
    parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{HEIGHT - BOTTOM}" y2="{HEIGHT - BOTTOM}" '
                 'class="axis"/>')
    parts.append(f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 8}" text-anchor="middle">'
                 f'{escape(x_label)}</text>')
    parts.append(f'<text transform="translate(14 {(TOP + HEIGHT - BOTTOM) / 2}) rotate(-90)" '
                 f'text-anchor="middle">{escape(y_label)}</text>')
    for n, s in enumerate(series):
        parts.extend(_series(s, px, py, y_format))
        parts.append(f'<text x="{LEFT + 8 + 125 * (n % 4)}" y="{28 + 12 * (n // 4)}" fill="{s.color}" class="legend">'
                     f'{"- - " if s.dashed else "— "}{escape(s.name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _series(s: Series, px: Callable[[float], float], py: Callable[[float], float],
            y_format: Callable[[float], str]) -> list[str]:
    points = [(x, y) for x, y in zip(s.xs, s.ys, strict=True) if y is not None]
    if not points:
        return []
    d = " ".join(f"{'M' if i == 0 else 'L'}{px(x):.1f},{py(y):.1f}" for i, (x, y) in enumerate(points))
    dash = ' stroke-dasharray="6 4"' if s.dashed else ""
    out = [f'<path class="series" data-name="{escape(s.name)}" data-points="{len(points)}" d="{d}" '
           f'fill="none" stroke="{s.color}" stroke-width="2"{dash}/>']
    for x, y in points:
        out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" fill="{s.color}">'
                   f'<title>{escape(s.name)} at {x:.3f}: {escape(y_format(y))}</title></circle>')
    return out
