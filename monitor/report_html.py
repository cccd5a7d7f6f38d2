"""The HTML rights-holder report: one self-contained page (inline CSS and SVG, no script, no external asset).

Summary, charts (plays per day, plays per stream), totals, infringements
and plays, readable on screen and printed (A4 landscape, table headers
repeated on each page). A browser cannot show a million-row table, so the
infringement and play tables stop after ``max_rows`` rows each and say how
many more the CSV and JSON reports list; totals and charts always cover the
whole period.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import date
from html import escape
from itertools import islice
from typing import IO

from monitor.reports import Infringement, Play, Report, StreamTotal, local_iso, utc_iso

HTML_MAX_ROWS = 10_000
CHART_WIDTH = 760
STREAM_BARS = 30  # the busiest streams in the per-stream chart; the table lists all

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2329; margin: 2rem auto;
       max-width: 1200px; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ccd; }
.period { color: #4a5560; margin-top: 0; }
dl.summary { display: grid; grid-template-columns: max-content auto; gap: .2rem 1.5rem; }
dl.summary dt { color: #4a5560; } dl.summary dd { margin: 0; font-variant-numeric: tabular-nums; }
table { border-collapse: collapse; width: 100%; font-size: 12.5px; }
th, td { text-align: left; padding: .25rem .5rem; border-bottom: 1px solid #e3e6ea; vertical-align: top; }
th { background: #f2f4f7; position: sticky; top: 0; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
span.t { white-space: nowrap; font-variant-numeric: tabular-nums; }
.no { color: #a61b1b; font-weight: 600; } .muted { color: #6b7580; }
svg { max-width: 100%; height: auto; } svg text { font: 11px system-ui, sans-serif; fill: #4a5560; }
svg .bar { fill: #2f6db5; } svg .axis { stroke: #99a; }
.more { font-style: italic; color: #4a5560; }
@media print {
  @page { size: A4 landscape; margin: 12mm; }
  body { margin: 0; max-width: none; font-size: 10pt; }
  th { position: static; }
  thead { display: table-header-group; } tr, svg { break-inside: avoid; }
  h2 { break-after: avoid; }
}
"""


def _e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def duration(seconds: float | None) -> str:
    """h:mm:ss (or m:ss), to the nearest second, for people."""
    if seconds is None:
        return "ongoing"
    whole = int(seconds + 0.5)  # half up, not to even
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _table(table_id: str, header: list[str], rows: Iterable[list[str]], numeric: set[int]) -> Iterator[str]:
    """A table, row by row. Cells are HTML already (escaped by the caller); ``numeric`` columns align right."""
    yield f'<table id="{table_id}"><thead><tr>'
    yield "".join(f'<th{" class=n" if i in numeric else ""}>{_e(h)}</th>' for i, h in enumerate(header))
    yield "</tr></thead><tbody>\n"
    for row in rows:
        yield "<tr>" + "".join(f'<td{" class=n" if i in numeric else ""}>{c}</td>' for i, c in enumerate(row)) + "</tr>\n"
    yield "</tbody></table>\n"


def _recording(p: Play) -> str:
    isrc = f' <span class="muted">{_e(p.isrc)}</span>' if p.isrc else ""
    removed = ' <span class="muted">(removed from the catalogue)</span>' if p.removed else ""
    return f"{_e(p.title)} — {_e(p.artist)}{isrc}{removed}"


def _times(p: Play) -> str:
    start, end = utc_iso(p.started_at), utc_iso(p.ended_at) or "ongoing"
    local = local_iso(p.started_at, p.station_timezone)
    return f'<span class="t">{start}</span> → <span class="t">{end}</span><br><span class="muted t">{local}</span> <span class="muted">{_e(p.station_timezone)}</span>'


def _ref(p: Play) -> str:
    end = "…" if p.ref_end_s is None else f"{p.ref_end_s:.1f}"
    return f"{p.ref_start_s:.1f}–{end} s"


def _play_row(p: Play) -> list[str]:
    licensed = "yes" if p.licensed else f'<span class="no">no</span>{f" ({_e(p.infringement)})" if p.infringement else ""}'
    return [
        _times(p), _e(p.stream_name), duration(p.duration_s), _recording(p), _ref(p), f"{p.score:.3f}",
        f"{p.share:g} % {_e(p.territory)}", licensed,
    ]  # fmt: skip


def _infringement_row(i: Infringement) -> list[str]:
    p = i.play
    handled = f"{_e(i.updated_by)}, {utc_iso(i.updated_at)}" if i.updated_by else ""
    return [
        _e(p.infringement), _times(p), _e(p.stream_name), duration(p.duration_s), _recording(p), _ref(p),
        f"{p.score:.3f}", f"{p.speed:.3f}", f'<span class="t">{utc_iso(i.detected_at)}</span>', f"{handled}<br>{_e(i.note)}" if i.note else handled,
    ]  # fmt: skip


def _more(total: int, max_rows: int, what: str) -> str:
    if total <= max_rows:
        return ""
    return f'<p class="more">{total - max_rows:,} more {what} are not shown here: the CSV and JSON reports list them all.</p>\n'


def day_chart(days: list[tuple[date, int]]) -> str:
    """Vertical bars, one a day, with the first and last dates and a few between on the axis."""
    left, top, height, bottom = 40, 10, 160, 24
    plot_w = CHART_WIDTH - left - 10
    peak = max((n for _, n in days), default=0) or 1
    step = plot_w / max(len(days), 1)
    bar = min(step * 0.8, 40.0)
    parts = [
        f'<svg id="chart-days" viewBox="0 0 {CHART_WIDTH} {top + height + bottom}" role="img" aria-label="plays per day">',
        f'<line class="axis" x1="{left}" y1="{top + height}" x2="{left + plot_w}" y2="{top + height}"/>',
        f'<text x="{left - 4}" y="{top + 4}" text-anchor="end">{peak}</text>',
        f'<text x="{left - 4}" y="{top + height}" text-anchor="end">0</text>',
    ]
    every = max(1, -(-len(days) // 7))  # at most 7 dates on the axis, plus the last when there is room
    ticks = set(range(0, len(days), every)) | ({len(days) - 1} if (len(days) - 1) % every >= every / 2 else set())
    for i, (day, n) in enumerate(days):
        h = height * n / peak
        x = left + i * step
        parts.append(
            f'<rect class="bar" x="{x + (step - bar) / 2:.1f}" y="{top + height - h:.1f}" width="{bar:.2f}" height="{h:.1f}">'
            f"<title>{day.isoformat()}: {n} plays</title></rect>"
        )
        if i in ticks:
            parts.append(f'<text x="{x + step / 2:.1f}" y="{top + height + 16}" text-anchor="middle">{day.isoformat()}</text>')
    parts.append("</svg>")
    return "".join(parts)


def stream_chart(streams: list[StreamTotal]) -> str:
    """Horizontal bars for the ``STREAM_BARS`` streams with the most plays (ties by id)."""
    shown = sorted(streams, key=lambda s: (-s.plays, s.stream_id))[:STREAM_BARS]
    label_w, row_h = 220, 20
    plot_w = CHART_WIDTH - label_w - 60
    peak = max((s.plays for s in shown), default=0) or 1
    parts = [f'<svg id="chart-streams" viewBox="0 0 {CHART_WIDTH} {row_h * len(shown) + 10}" role="img" aria-label="plays per stream">']
    for i, s in enumerate(shown):
        y = 5 + i * row_h
        w = plot_w * s.plays / peak
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end">{_e(s.stream_name[:36])}</text>'
            f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}"><title>{_e(s.stream_id)}: {s.plays} plays</title></rect>'
            f'<text x="{label_w + w + 4:.1f}" y="{y + 14}">{s.plays}</text>'
        )
    parts.append("</svg>")
    if len(streams) > len(shown):
        parts.append(f'<p class="more">The {len(shown)} streams with the most plays; all {len(streams)} are in the table below.</p>')
    return "".join(parts)


def _head(report: Report) -> Iterator[str]:
    s, p = report.summary, report.request.period
    title = f"Plays of {report.holder_name}'s recordings, {utc_iso(p.start)} to {utc_iso(p.end)}"
    streams = ", ".join(report.request.streams) or "all streams"
    yield f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>\n'
    yield f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head><body>\n'
    yield f"<h1>Rights-holder report: {_e(report.holder_name)}</h1>\n"
    yield (
        f'<p class="period">Plays starting from {utc_iso(p.start)} up to (not including) {utc_iso(p.end)}'
        f" (dates given in {_e(p.timezone)}); {_e(streams)}. Times are UTC, with each station's local time below.</p>\n"
    )
    infringements = ", ".join(f"{n} {status}" for status, n in s.infringements.items())
    items = [
        ("Plays", f"{s.plays:,}"), ("Ongoing (no end yet, airtime not counted)", f"{s.ongoing:,}"),
        ("Airtime", f"{duration(s.airtime_s)} ({s.airtime_s:,.3f} s)"), ("Unlicensed plays", f"{s.unlicensed:,}"),
        ("Infringements", infringements), ("Recordings played", f"{s.recordings:,}"), ("Streams", f"{s.streams:,}"),
    ]  # fmt: skip
    yield '<section id="summary"><h2>Summary</h2><dl class="summary">'
    yield "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items) + "</dl></section>\n"
    yield f'<section id="charts"><h2>Plays per day ({_e(p.timezone)})</h2>{day_chart(report.plays_per_day)}\n'
    yield f"<h2>Plays per stream</h2>{stream_chart(report.streams)}</section>\n"


def html_chunks(report: Report, max_rows: int = HTML_MAX_ROWS) -> Iterator[str]:
    """The page, piece by piece (plays and infringements fetched as they are written)."""
    yield from _head(report)
    yield '<section><h2>Totals per recording</h2>\n'
    yield from _table(
        "recordings",
        ["Recording", "ISRC", "Territory", "Share", "Plays", "Ongoing", "Airtime", "Unlicensed"],
        (
            [f"{_e(r.title)} — {_e(r.artist)}{' <span class=muted>(removed)</span>' if r.removed else ''}", _e(r.isrc),
             _e(r.territory), f"{r.share:g} %", str(r.plays), str(r.ongoing), duration(r.airtime_s), str(r.unlicensed)]
            for r in report.recordings
        ),
        {3, 4, 5, 6, 7},
    )  # fmt: skip
    yield "</section>\n<section><h2>Totals per stream</h2>\n"
    yield from _table(
        "streams",
        ["Stream", "Name", "Time zone", "Plays", "Ongoing", "Airtime", "Unlicensed"],
        (
            [_e(s.stream_id), _e(s.stream_name), _e(s.station_timezone), str(s.plays), str(s.ongoing),
             duration(s.airtime_s), str(s.unlicensed)]
            for s in report.streams
        ),
        {3, 4, 5, 6},
    )  # fmt: skip
    total_infringements = sum(report.summary.infringements.values())
    yield "</section>\n<section><h2>Infringements</h2>\n"
    yield from _table(
        "infringements",
        ["Status", "Time (UTC → end; station local)", "Stream", "Duration", "Recording", "Reference", "Score",
         "Speed", "Detected", "Handled"],
        islice(map(_infringement_row, report.infringements()), max_rows),
        {3, 5, 6, 7},
    )  # fmt: skip
    yield _more(total_infringements, max_rows, "infringements")
    yield "</section>\n<section><h2>Plays</h2>\n"
    yield from _table(
        "plays",
        ["Time (UTC → end; station local)", "Stream", "Duration", "Recording", "Reference", "Score", "Share", "Licensed"],
        islice(map(_play_row, report.plays()), max_rows),
        {2, 4, 5},
    )
    yield _more(report.summary.plays, max_rows, "plays")
    yield "</section>\n</body></html>\n"


def write_html(report: Report, out: IO[str], max_rows: int = HTML_MAX_ROWS) -> None:
    for chunk in html_chunks(report, max_rows):
        out.write(chunk)
