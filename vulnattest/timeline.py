"""The fleet's freshness as a timeline picture (SVG): one row per image, worst first as the fleet table orders them,
showing when its judged scan finished, when warnings start, its deadline (the max_age line) and now, all in UTC."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from html import escape

from vulnattest.freshness import ImageVerdict, Verdict, counts_text, worst_first
from vulnattest.text import rfc3339

MAX_ROWS = 200
"""Rows drawn at most (the worst ones); the rest are counted in a "+N more" note (the fleet table lists them all)."""

COLOURS = {
    Verdict.FRESH: "#2e7d32", Verdict.EXPIRING: "#ef8f00", Verdict.STALE: "#c62828", Verdict.MISSING: "#6a1b9a",
    Verdict.INVALID: "#6a1b9a", Verdict.POLICY: "#ad1457", Verdict.UNREACHABLE: "#757575",
}
_LEGEND = (("fresh", Verdict.FRESH), ("expiring", Verdict.EXPIRING), ("stale", Verdict.STALE),
           ("missing or invalid", Verdict.MISSING), ("policy", Verdict.POLICY), ("unreachable", Verdict.UNREACHABLE))
_NO_SCAN = {Verdict.MISSING: "no vuln attestation attached", Verdict.INVALID: "no attestation admission accepts",
            Verdict.UNREACHABLE: "not checked: the registry did not answer"}
WARN_COLOUR, DEADLINE_COLOUR, NOW_COLOUR = "#ef8f00", "#b71c1c", "#1565c0"

WIDTH, ROW_HEIGHT, LABEL_WIDTH, VERDICT_WIDTH, MARGIN = 1000, 20, 330, 100, 12
PLOT_LEFT = MARGIN + LABEL_WIDTH
PLOT_RIGHT = WIDTH - MARGIN - VERDICT_WIDTH
ROWS_TOP = 112
_NAME_CHARS = 48  # a longer image name is cut at its start in the label; the row's <title> and the table keep it whole
_STEPS = tuple(timedelta(hours=h) for h in (1, 2, 3, 6, 12, 24, 48, 72, 168, 336, 720, 2160, 8760))
_MAX_TICKS = 6
_REACH = timedelta(days=366)
_FONT = "font-family='DejaVu Sans, Arial, Helvetica, sans-serif' font-size='12'"


class TimeAxis:
    """Maps UTC times onto the plot's x range, from `start` to `end`."""

    def __init__(self, start: datetime, end: datetime) -> None:
        self.start, self.end = start, end

    @classmethod
    def around(cls, moments: Sequence[datetime]) -> TimeAxis:
        """An axis spanning `moments` with a little room each side (a day each side of a single moment)."""
        first, last = min(moments), max(moments)
        pad = (last - first) / 25 if last > first else timedelta(days=1)
        return cls(first - pad, last + pad)

    def x(self, moment: datetime) -> float:
        """The x coordinate of `moment` (one off the axis at its nearer end)."""
        share = min(max((moment - self.start) / (self.end - self.start), 0.0), 1.0)
        return PLOT_LEFT + share * (PLOT_RIGHT - PLOT_LEFT)

    def ticks(self) -> list[tuple[datetime, str]]:
        """Round UTC times along the axis with their labels: at most a handful, on whole hours or days."""
        step = next((s for s in _STEPS if (self.end - self.start) / s <= _MAX_TICKS), _STEPS[-1])
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        tick = epoch + ((self.start - epoch) // step + 1) * step
        form = "%Y-%m-%d" if step >= timedelta(days=1) else "%m-%d %H:%M"
        ticks = []
        while tick <= self.end:
            ticks.append((tick, tick.strftime(form)))
            tick += step
        return ticks


def fleet_timeline_svg(verdicts: Sequence[ImageVerdict], now: datetime, warn_before: timedelta,
                       max_rows: int = MAX_ROWS) -> str:
    """The timeline of `verdicts` as of `now` (warnings start `warn_before` each deadline), as SVG text.

    Rows are worst first; past `max_rows` the rest are left out with a "+N more" note.
    """
    ordered = worst_first(verdicts)
    shown, hidden = ordered[:max_rows], max(len(ordered) - max_rows, 0)
    moments = [now]
    for v in shown:
        moments += [t for t in (v.scan_finished, v.deadline) if t is not None]
    # a year each side of now at most: a scan time of year 1 (Go's zero time) or 9999 would crush every other row
    axis = TimeAxis.around([min(max(t, now - _REACH), now + _REACH) for t in moments])
    rows_bottom = ROWS_TOP + ROW_HEIGHT * len(shown)
    height = rows_bottom + (48 if hidden else 24)
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{height}' "
        f"viewBox='0 0 {WIDTH} {height}' {_FONT}>",
        f"<rect width='{WIDTH}' height='{height}' fill='#ffffff'/>",
        f"<text x='{MARGIN}' y='22' font-size='15' font-weight='bold'>Attestation freshness, times in UTC</text>",
        f"<text x='{MARGIN}' y='40' fill='#444444'>{escape(counts_text(verdicts))}; now {rfc3339(now)}</text>",
        *_legend(),
        *_grid(axis, rows_bottom),
    ]
    for index, verdict in enumerate(shown):
        parts += _row(index, verdict, axis, warn_before)
    now_x = axis.x(now)
    parts += [
        f"<line class='now' x1='{now_x:.1f}' y1='{ROWS_TOP - 10}' x2='{now_x:.1f}' y2='{rows_bottom}' "
        f"stroke='{NOW_COLOUR}' stroke-width='2'/>",
        f"<text x='{now_x:.1f}' y='{ROWS_TOP - 12}' text-anchor='middle' fill='{NOW_COLOUR}' "
        "font-weight='bold'>now</text>",
    ]
    if hidden:
        parts.append(f"<text class='more' x='{MARGIN}' y='{rows_bottom + 30}' fill='#444444'>+{hidden} more "
                     "image(s) not drawn, the least urgent; the fleet table lists every image</text>")
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def timeline_markdown(verdicts: Sequence[ImageVerdict], now: datetime, warn_before: timedelta) -> str:
    """The timeline as a markdown image carrying its SVG in a ``data:`` URI: Prefect's UI draws that in a markdown
    artifact (an inline ``<svg>`` is stripped by its sanitiser, and an image artifact prints the whole URI too)."""
    svg = fleet_timeline_svg(verdicts, now, warn_before)
    uri = "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode("ascii")
    return f"![Attestation freshness timeline, UTC]({uri})\n"


def _legend() -> list[str]:
    parts, x = [], float(MARGIN)
    for label, verdict in _LEGEND:
        parts += [f"<rect x='{x:.0f}' y='52' width='12' height='12' fill='{COLOURS[verdict]}'/>",
                  f"<text x='{x + 16:.0f}' y='62'>{label}</text>"]
        x += 26 + 6.5 * len(label)
    x += 10
    parts += [
        f"<circle cx='{x + 6:.0f}' cy='58' r='4' fill='#555555'/>",
        f"<text x='{x + 14:.0f}' y='62'>scan finished</text>",
        f"<line x1='{x + 112:.0f}' y1='51' x2='{x + 112:.0f}' y2='65' stroke='{WARN_COLOUR}' stroke-width='2' "
        "stroke-dasharray='3,2'/>",
        f"<text x='{x + 118:.0f}' y='62'>warnings start</text>",
        f"<line x1='{x + 224:.0f}' y1='51' x2='{x + 224:.0f}' y2='65' stroke='{DEADLINE_COLOUR}' stroke-width='3'/>",
        f"<text x='{x + 230:.0f}' y='62'>deadline (max_age)</text>",
    ]
    return parts


def _grid(axis: TimeAxis, rows_bottom: int) -> list[str]:
    parts = [f"<text x='{MARGIN}' y='{ROWS_TOP - 6}' font-weight='bold'>image</text>",
             f"<text x='{PLOT_RIGHT + 8}' y='{ROWS_TOP - 6}' font-weight='bold'>verdict</text>"]
    for moment, label in axis.ticks():
        x = axis.x(moment)
        parts += [f"<line class='tick' data-time='{rfc3339(moment)}' x1='{x:.1f}' y1='{ROWS_TOP - 2}' x2='{x:.1f}' "
                  f"y2='{rows_bottom}' stroke='#dddddd'/>",
                  f"<text x='{x:.1f}' y='{ROWS_TOP - 28}' text-anchor='middle' fill='#444444' "
                  f"font-size='11'>{label}</text>"]
    return parts


def _row(index: int, verdict: ImageVerdict, axis: TimeAxis, warn_before: timedelta) -> list[str]:
    top = ROWS_TOP + index * ROW_HEIGHT
    middle = top + ROW_HEIGHT // 2
    colour = COLOURS[verdict.verdict]
    name = verdict.image if len(verdict.image) <= _NAME_CHARS else "…" + verdict.image[-(_NAME_CHARS - 1):]
    scan, deadline = verdict.scan_finished, verdict.deadline
    tip = f"{verdict.image}: {verdict.verdict.value}"
    if scan is not None and deadline is not None:
        tip += (f"; scan finished {rfc3339(scan)}, warnings from {rfc3339(deadline - warn_before)}, "
                f"deadline {rfc3339(deadline)}")
    parts = [f"<g class='row' data-image='{escape(verdict.image)}' data-verdict='{verdict.verdict.value}'>",
             f"<title>{escape(tip)}</title>"]
    if index % 2:  # a faint band on every other row, see-through so the grid shows
        parts.append(f"<rect x='0' y='{top}' width='{WIDTH}' height='{ROW_HEIGHT}' fill-opacity='0.04'/>")
    parts += [f"<text x='{MARGIN}' y='{middle + 4}'>{escape(name)}</text>",
              f"<text x='{PLOT_RIGHT + 8}' y='{middle + 4}' fill='{colour}' font-weight='bold'>"
              f"{verdict.verdict.value}</text>"]
    if scan is None or deadline is None:
        note = _NO_SCAN.get(verdict.verdict, "no scan time")
        parts.append(f"<text x='{PLOT_LEFT + 6}' y='{middle + 4}' fill='{colour}' font-style='italic'>{note}</text>")
    else:
        scan_x, warn_x, deadline_x = (axis.x(t) for t in (scan, deadline - warn_before, deadline))
        parts += [
            f"<rect x='{scan_x:.1f}' y='{top + 5}' width='{deadline_x - scan_x:.1f}' height='{ROW_HEIGHT - 10}' "
            f"fill='{colour}' fill-opacity='0.3'/>",
            f"<line class='warn' x1='{warn_x:.1f}' y1='{top + 3}' x2='{warn_x:.1f}' y2='{top + ROW_HEIGHT - 3}' "
            f"stroke='{WARN_COLOUR}' stroke-width='2' stroke-dasharray='3,2'/>",
            f"<line class='deadline' x1='{deadline_x:.1f}' y1='{top + 2}' x2='{deadline_x:.1f}' "
            f"y2='{top + ROW_HEIGHT - 2}' stroke='{DEADLINE_COLOUR}' stroke-width='3'/>",
            f"<circle class='scan' cx='{scan_x:.1f}' cy='{middle}' r='4' fill='{colour}'/>",
        ]
    parts.append("</g>")
    return parts
