"""The count-over-time chart as inline SVG, drawn on the server (no chart library, no script):
a step line of the total, the largest drop marked in red with its numbers written out, so a
fall like the incident's is seen at a glance and read by a screen reader."""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape

from memvault.server.console.history import Series

WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 28, 36  # margins for the axis labels


_FULL = "2000-01-01T00:00:00"


def _seconds(at: str) -> float:
    """A point's time (to the second, minute, hour or day) in seconds since the epoch, UTC."""
    return datetime.fromisoformat(at + _FULL[len(at):]).replace(tzinfo=UTC).timestamp()


def drop_text(series: Series) -> str | None:
    drop = series.drop
    if drop is None:
        return None
    return (f"largest drop: {drop.peak} → {drop.low} memories (-{drop.size}, "
            f"{drop.ratio:.0%}) between {drop.peak_at.replace('T', ' ')} and "
            f"{drop.low_at.replace('T', ' ')} UTC")


def render(series: Series, now_at: str) -> str:
    points = [(p.at, p.total) for p in series.points]
    if not points or _seconds(points[-1][0]) < _seconds(now_at):
        points.append((now_at, series.now))
    summary = drop_text(series) or "no drop recorded"
    title = f"Memories over time (from the journal): {series.now} now; {summary}"
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
             f'role="img" aria-labelledby="chart-title" class="chart">',
             f'<title id="chart-title">{escape(title)}</title>']
    if len(points) < 2:
        parts.append(f'<text x="{LEFT}" y="{HEIGHT // 2}">no changes in the journal yet'
                     '</text></svg>')
        return "".join(parts)
    t0, t1 = _seconds(points[0][0]), _seconds(points[-1][0])
    top = max(max(total for _, total in points), 1)
    span = max(t1 - t0, 1.0)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def xy(at: str, total: int) -> tuple[float, float]:
        x = LEFT + (_seconds(at) - t0) / span * plot_w
        return round(x, 1), round(TOP + plot_h - total / top * plot_h, 1)

    steps: list[tuple[float, float]] = []
    for at, total in points:
        x, y = xy(at, total)
        if steps:
            steps.append((x, steps[-1][1]))
        steps.append((x, y))
    line = " ".join(f"{x},{y}" for x, y in steps)
    base = TOP + plot_h
    parts += [
        f'<line class="axis" x1="{LEFT}" y1="{base}" x2="{WIDTH - RIGHT}" y2="{base}"/>',
        f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{base}"/>',
        f'<text class="label" x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end">{top}</text>',
        f'<text class="label" x="{LEFT - 6}" y="{base}" text-anchor="end">0</text>',
        f'<text class="label" x="{LEFT}" y="{HEIGHT - 10}">'
        f'{escape(points[0][0].replace("T", " "))}</text>',
        f'<text class="label" x="{WIDTH - RIGHT}" y="{HEIGHT - 10}" text-anchor="end">'
        f'{escape(points[-1][0].replace("T", " "))} UTC</text>',
        f'<polyline class="series" fill="none" points="{line}"/>',
    ]
    drop = series.drop
    if drop is not None:
        _, y1 = xy(drop.peak_at, drop.peak)
        x2, y2 = xy(drop.low_at, drop.low)
        label = f"drop: {drop.peak} → {drop.low} (-{drop.size}, {drop.ratio:.0%})"
        parts += [  # the fall itself, at the time it was reached, in red
            f'<line class="drop" x1="{x2}" y1="{y1}" x2="{x2}" y2="{y2}"/>',
            f'<circle class="drop" cx="{x2}" cy="{y2}" r="4"/>',
            f'<text class="drop-label" x="{LEFT + 8}" y="{TOP - 10}">{escape(label)}</text>',
        ]
    parts.append("</svg>")
    return "".join(parts)
