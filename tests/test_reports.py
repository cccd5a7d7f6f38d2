"""Rights-holder reports (``castwatch report``) against a real PostgreSQL: golden files, structure and totals.

The dataset (``DATA``) is small and known: three holders, a co-owned
recording, a recording owned territorially, a removed recording, streams in
Paris, London and New York plus an unregistered one, licensed and unlicensed
plays, an open play, infringements in each status, and plays just outside
the period. Every figure the tests expect follows from it by hand.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from datetime import date, datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

import psycopg
import pytest

from monitor import cli, report_bench, reports
from monitor.report_html import day_chart, write_html

GOLDEN = Path(__file__).parent / "golden"
UPDATE_GOLDEN = os.environ.get("CASTWATCH_UPDATE_GOLDEN") == "1"  # rewrite the golden files (then review the diff)

HOLDERS = {1: "Northwind Records", 2: "Southgate Music", 3: "Other Label"}
# id: (title, artist, isrc, seconds, removed, [(holder, territory, share)])
TRACKS = {
    1: ("Blue Hour", "Mara Vey", "GBAAA2600001", 200.0, False, [(1, "WW", 100)]),
    2: ('=HYPERLINK("http://evil.example")', "Ålesund Ensemble", None, 250.0, False, [(1, "WW", 60), (2, "WW", 40)]),
    3: ("Southbound", "Kit Rowe", "GBAAA2600003", 180.0, False, [(2, "WW", 100)]),
    4: ("Old Tape", "Mara Vey", "GBAAA2600004", 90.0, True, [(1, "WW", 100)]),
    5: ("Border Song", "Lena Dahl", "SEAAA2600005", 160.0, False, [(1, "GB", 100), (3, "WW", 100)]),
}
# id: (name, licensee, territory, timezone)
STREAMS = {
    "paris-fm": ("Paris FM", "Paris Media", "FR", "Europe/Paris"),
    "london-1": ("London One", "London Radio", "GB", "Europe/London"),
    "nyc-jazz": ("NYC <Jazz> & Co", "NYC Media", "US", "America/New_York"),
}
T0 = datetime(2026, 6, 1, tzinfo=timezone.utc)
# name: (stream, track, start, seconds or None (open), licensed, infringement status or None)
DATA = {
    "d1": ("paris-fm", 1, T0, 180.0, True, None),  # exactly at --from: in
    "d2": ("london-1", 2, T0 + timedelta(hours=10, minutes=15, seconds=30.25), 200.5, False, "open"),
    "d3": ("nyc-jazz", 1, T0 + timedelta(days=1, hours=3, minutes=30), 120.0, True, None),  # 23:30 the day before in New York
    "d4": ("london-1", 5, T0 + timedelta(days=1, hours=12), 150.0, False, "acknowledged"),  # Northwind owns it in GB
    "d5": ("paris-fm", 5, T0 + timedelta(days=1, hours=13), 150.0, False, "open"),  # in FR only Other Label's
    "d6": ("pirate-9", 4, T0 + timedelta(days=1, hours=20), 60.0, False, "resolved"),  # unregistered stream, removed track
    "d7": ("paris-fm", 2, T0 + timedelta(days=1, hours=23, minutes=59), None, True, None),  # still playing
    "d8": ("paris-fm", 3, T0 + timedelta(hours=5), 100.0, True, None),  # Southgate's alone
    "d9": ("london-1", 1, T0 - timedelta(seconds=1), 180.0, True, None),  # before --from
    "d10": ("london-1", 1, T0 + timedelta(days=2), 180.0, True, None),  # exactly at --to: out
    "d11": ("nyc-jazz", 2, T0 + timedelta(hours=18), 240.0, False, "open"),
}
EVENT_IDS = {name: f"00000000-0000-4000-8000-{i:012d}" for i, name in enumerate(DATA, start=1)}
NORTHWIND_PLAYS = ["d1", "d2", "d11", "d3", "d4", "d6", "d7"]  # in report order (start time)


def build(conn: psycopg.Connection) -> None:
    for hid, name in HOLDERS.items():
        conn.execute("INSERT INTO holders (id, name) VALUES (%s, %s)", (hid, name))
    for tid, (title, artist, isrc, seconds, removed, owners) in TRACKS.items():
        conn.execute(
            "INSERT INTO tracks (id, isrc, title, artist, duration_s, content_sha256, source, removed_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (tid, isrc, title, artist, seconds, hashlib.sha256(bytes([tid])).digest(), f"t{tid}.wav",
             T0 - timedelta(days=1) if removed else None),
        )  # fmt: skip
        for holder, territory, share in owners:
            conn.execute("INSERT INTO ownership VALUES (%s, %s, %s, %s)", (tid, holder, territory, share))
    for sid, (name, licensee, territory, tz) in STREAMS.items():
        conn.execute("INSERT INTO streams (id, name, licensee, territory, timezone) VALUES (%s, %s, %s, %s, %s)",
                     (sid, name, licensee, territory, tz))  # fmt: skip
    for name, (stream, track, start, seconds, licensed, status) in DATA.items():
        conn.execute(
            "INSERT INTO detections (event_id, stream_id, track_id, started_at, ended_at, ref_start_s, ref_end_s,"
            " score, speed, licensed, state) VALUES (%s, %s, %s, %s, %s, 12.5, %s, 0.4321, 1.03, %s, %s)",
            (EVENT_IDS[name], stream, track, start, None if seconds is None else start + timedelta(seconds=seconds),
             None if seconds is None else 12.5 + seconds * 1.03, licensed, "started" if seconds is None else "ended"),
        )  # fmt: skip
        if status is not None:
            handled = status != "open"
            conn.execute(
                "INSERT INTO infringements (detection_id, status, note, updated_by, created_at, updated_at)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (EVENT_IDS[name], status, "=1+1 called the station" if handled else "",
                 "ops@example.org" if handled else None, start + timedelta(seconds=5),
                 start + timedelta(days=1 if handled else 0, seconds=5)),
            )  # fmt: skip
    conn.commit()


@pytest.fixture
def data_url(db_url: str) -> str:
    with psycopg.connect(db_url) as conn:
        build(conn)
    return db_url


def run(url: str, args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    monkeypatch.setenv("CASTWATCH_DATABASE_URL", url)
    code = cli.main(["report", *args])
    out, err = capsys.readouterr()
    return code, out, err


def report_file(
    url: str, tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    holder: str = "Northwind Records", extra: tuple[str, ...] = (),
) -> bytes:  # fmt: skip
    out = tmp_path / f"report.{fmt}"
    code, stdout, err = run(
        url, ["--holder", holder, "--from", "2026-06-01", "--to", "2026-06-03", "--format", fmt, "--out", str(out), *extra],
        monkeypatch, capsys,
    )  # fmt: skip
    assert (code, stdout, err) == (0, "", "")
    return out.read_bytes()


def check_golden(name: str, content: bytes) -> None:
    path = GOLDEN / name
    if UPDATE_GOLDEN:
        path.write_bytes(content)
    assert content == path.read_bytes(), f"{name} differs from the golden file (review, then CASTWATCH_UPDATE_GOLDEN=1)"


def csv_sections(content: bytes) -> dict[str, list[list[str]]]:
    """title -> rows (header first) of the sectioned CSV."""
    assert content.startswith(b"\xef\xbb\xbf") and b"\r\n" in content and content.count(b"\n") == content.count(b"\r\n")
    rows = list(csv.reader(io.StringIO(content.decode("utf-8-sig"), newline="")))
    sections: dict[str, list[list[str]]] = {}
    current: list[list[str]] | None = None
    for row in rows:
        if not row:
            current = None
        elif current is None:
            current = sections.setdefault(row[0], [])
            if row[0] == "castwatch rights-holder report":
                continue
        else:
            current.append(row)
    return sections


def dicts(rows: list[list[str]]) -> list[dict[str, str]]:
    return [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]


# ---- CSV -----------------------------------------------------------------------------------------


def test_csv_report_golden_structure_and_totals(data_url: str, tmp_path: Path, monkeypatch, capsys) -> None:
    content = report_file(data_url, tmp_path, "csv", monkeypatch, capsys)
    check_golden("report-northwind.csv", content)
    s = csv_sections(content)
    assert list(s) == ["castwatch rights-holder report", "totals per recording", "totals per stream", "plays per day",
                       "infringements", "plays"]  # fmt: skip
    head = dict(s["castwatch rights-holder report"])
    assert head["holder"] == "Northwind Records"
    assert (head["from"], head["to"], head["timezone"]) == ("2026-06-01T00:00:00.000Z", "2026-06-03T00:00:00.000Z", "UTC")
    assert (head["plays"], head["ongoing_plays"], head["unlicensed_plays"]) == ("7", "1", "4")
    assert float(head["airtime_s"]) == 180 + 200.5 + 240 + 120 + 150 + 60
    assert (head["infringements_open"], head["infringements_acknowledged"], head["infringements_resolved"]) == ("2", "1", "1")
    assert (head["recordings"], head["streams_with_plays"]) == ("4", "4")

    plays = dicts(s["plays"])
    assert [p["event_id"] for p in plays] == [EVENT_IDS[n] for n in NORTHWIND_PLAYS]
    assert tuple(s["plays"][0]) == reports.PLAY_COLUMNS
    by = {p["event_id"]: p for p in plays}
    d2 = by[EVENT_IDS["d2"]]
    assert (d2["start_utc"], d2["end_utc"]) == ("2026-06-01T10:15:30.250Z", "2026-06-01T10:18:50.750Z")
    assert (d2["start_local"], d2["station_timezone"]) == ("2026-06-01T11:15:30.250+01:00", "Europe/London")
    assert (d2["duration_s"], d2["share_percent"], d2["licensed"], d2["infringement"]) == ("200.5", "60.0", "no", "open")
    assert d2["title"] == "'=HYPERLINK(\"http://evil.example\")" and d2["artist"] == "Ålesund Ensemble"
    d3 = by[EVENT_IDS["d3"]]
    assert d3["start_local"] == "2026-06-01T23:30:00.000-04:00"  # the station's day is the day before
    d7 = by[EVENT_IDS["d7"]]
    assert (d7["ongoing"], d7["end_utc"], d7["duration_s"], d7["ref_end_s"]) == ("yes", "", "", "")
    d6 = by[EVENT_IDS["d6"]]
    assert (d6["stream_id"], d6["stream_name"], d6["station_timezone"], d6["removed"]) == ("pirate-9", "pirate-9", "UTC", "yes")
    d4 = by[EVENT_IDS["d4"]]
    assert (d4["territory"], d4["share_percent"]) == ("GB", "100.0")

    recordings = {(r["track_id"], r["territory"]): r for r in dicts(s["totals per recording"])}
    assert sorted(recordings) == [("1", "WW"), ("2", "WW"), ("4", "WW"), ("5", "GB")]
    assert (recordings["1", "WW"]["plays"], recordings["1", "WW"]["airtime_s"]) == ("2", "300.0")
    t2 = recordings["2", "WW"]
    assert (t2["plays"], t2["ongoing"], t2["airtime_s"], t2["unlicensed_plays"], t2["share_percent"]) == ("3", "1", "440.5", "2", "60.0")
    assert recordings["4", "WW"]["removed"] == "yes"
    assert sum(int(r["plays"]) for r in recordings.values()) == len(plays)

    streams = {r["stream_id"]: r for r in dicts(s["totals per stream"])}
    assert list(streams) == ["london-1", "nyc-jazz", "paris-fm", "pirate-9"]
    assert [(r["plays"], r["ongoing"], r["airtime_s"], r["unlicensed_plays"]) for r in streams.values()] == [
        ("2", "0", "350.5", "2"), ("2", "0", "360.0", "1"), ("2", "1", "180.0", "0"), ("1", "0", "60.0", "1")]  # fmt: skip
    assert dicts(s["plays per day"]) == [{"date": "2026-06-01", "plays": "3"}, {"date": "2026-06-02", "plays": "4"}]

    infringements = dicts(s["infringements"])
    assert [(i["event_id"], i["status"]) for i in infringements] == [
        (EVENT_IDS["d2"], "open"), (EVENT_IDS["d11"], "open"), (EVENT_IDS["d4"], "acknowledged"), (EVENT_IDS["d6"], "resolved")]  # fmt: skip
    d4i = infringements[2]
    assert (d4i["updated_by"], d4i["note"], d4i["updated_at"]) == ("ops@example.org", "'=1+1 called the station", "2026-06-03T12:00:05.000Z")
    assert (d4i["ref_start_s"], d4i["ref_end_s"], d4i["score"], d4i["speed"]) == ("12.5", "167.0", "0.4321", "1.03")


def test_csv_cells_that_spreadsheets_would_run_are_neutralised() -> None:
    assert [reports.csv_cell(v) for v in ("=1+1", "+44 20", "-x", "@SUM(A1)", "\tx", "plain", "")] == [
        "'=1+1", "'+44 20", "'-x", "'@SUM(A1)", "'\tx", "plain", ""]  # fmt: skip
    assert [reports.csv_cell(v) for v in (None, True, False, -1.5, 3)] == ["", "yes", "no", -1.5, 3]


# ---- JSON ----------------------------------------------------------------------------------------


def test_json_report_golden_structure_and_totals(data_url: str, tmp_path: Path, monkeypatch, capsys) -> None:
    content = report_file(data_url, tmp_path, "json", monkeypatch, capsys)
    check_golden("report-northwind.json", content)
    doc = json.loads(content)
    assert list(doc) == ["schema", "holder", "period", "summary", "recordings", "streams", "plays_per_day",
                         "infringements", "plays"]  # fmt: skip
    assert doc["schema"] == "castwatch.report.v1" and doc["holder"] == {"id": 1, "name": "Northwind Records"}
    summary = doc["summary"]
    assert (summary["plays"], summary["ongoing_plays"], summary["airtime_s"], summary["unlicensed_plays"]) == (7, 1, 950.5, 4)
    plays = doc["plays"]
    assert [p["event_id"] for p in plays] == [EVENT_IDS[n] for n in NORTHWIND_PLAYS]
    assert sum(p["duration_s"] or 0 for p in plays) == summary["airtime_s"]
    assert sum(not p["licensed"] for p in plays) == summary["unlicensed_plays"]
    assert sum(r["airtime_s"] for r in doc["recordings"]) == sum(s["airtime_s"] for s in doc["streams"]) == 950.5
    assert sum(d["plays"] for d in doc["plays_per_day"]) == len(plays)
    d2 = next(p for p in plays if p["event_id"] == EVENT_IDS["d2"])
    assert d2["title"] == '=HYPERLINK("http://evil.example")'  # raw in JSON: machines get the data as it is
    assert (d2["licensed"], d2["ongoing"], d2["isrc"], d2["share_percent"]) == (False, False, None, 60.0)
    assert plays[-1]["ongoing"] is True and plays[-1]["end_utc"] is None and plays[-1]["duration_s"] is None
    assert [i["event_id"] for i in doc["infringements"]] == [EVENT_IDS[n] for n in ("d2", "d11", "d4", "d6")]


def test_co_owner_and_territorial_owner_reports(data_url: str, tmp_path: Path, monkeypatch, capsys) -> None:
    south = json.loads(report_file(data_url, tmp_path, "json", monkeypatch, capsys, holder="Southgate Music"))
    assert [p["event_id"] for p in south["plays"]] == [EVENT_IDS[n] for n in ("d8", "d2", "d11", "d7")]
    assert {p["track_id"]: p["share_percent"] for p in south["plays"]} == {3: 100.0, 2: 40.0}
    other = json.loads(report_file(data_url, tmp_path, "json", monkeypatch, capsys, holder="Other Label"))
    assert [(p["event_id"], p["territory"]) for p in other["plays"]] == [(EVENT_IDS["d5"], "WW")]  # not d4: GB is Northwind's


def test_stream_filter_and_report_timezone(data_url: str, tmp_path: Path, monkeypatch, capsys) -> None:
    one = json.loads(report_file(data_url, tmp_path, "json", monkeypatch, capsys, extra=("--stream", "london-1")))
    assert one["period"]["streams"] == ["london-1"]
    assert [p["event_id"] for p in one["plays"]] == [EVENT_IDS["d2"], EVENT_IDS["d4"]]
    assert [s["stream_id"] for s in one["streams"]] == ["london-1"] and one["summary"]["plays"] == 2

    ny = json.loads(report_file(data_url, tmp_path, "json", monkeypatch, capsys, extra=("--timezone", "America/New_York")))
    assert (ny["period"]["from"], ny["period"]["to"]) == ("2026-06-01T04:00:00.000Z", "2026-06-03T04:00:00.000Z")
    # d1 is on 31 May in New York, d10 on 2 June
    assert [p["event_id"] for p in ny["plays"]] == [EVENT_IDS[n] for n in [*NORTHWIND_PLAYS[1:], "d10"]]
    assert ny["plays_per_day"] == [{"date": "2026-06-01", "plays": 3}, {"date": "2026-06-02", "plays": 4}]


def test_same_data_same_bytes_and_stdout_equals_file(data_url: str, tmp_path: Path, monkeypatch, capsys) -> None:
    for fmt in reports.FORMATS:
        first = report_file(data_url, tmp_path, fmt, monkeypatch, capsys)
        assert report_file(data_url, tmp_path, fmt, monkeypatch, capsys) == first
    monkeypatch.setenv("CASTWATCH_DATABASE_URL", data_url)
    code = cli.main(["report", "--holder", "Northwind Records", "--from", "2026-06-01", "--to", "2026-06-03", "--format", "json"])
    assert code == 0
    assert capsys.readouterr().out.encode() == report_file(data_url, tmp_path, "json", monkeypatch, capsys)


# ---- HTML ----------------------------------------------------------------------------------------


class Page(HTMLParser):
    """Rows of each table by id, and every external reference or script."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.external: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script" or any(k in ("src", "href") for k in a):
            self.external.append(f"{tag} {a}")
        if tag == "table":
            self._table = a["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._table and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def test_html_report_golden_self_contained_escaped(data_url: str, tmp_path: Path, monkeypatch, capsys) -> None:
    content = report_file(data_url, tmp_path, "html", monkeypatch, capsys)
    check_golden("report-northwind.html", content)
    text = content.decode()
    page = Page()
    page.feed(text)
    assert page.external == []  # no script, no external asset
    assert "@media print" in text and text.count("<svg") == 2
    assert 'NYC &lt;Jazz&gt; &amp; Co' in text and "<Jazz>" not in text
    assert '=HYPERLINK(&quot;http://evil.example&quot;)' in text
    assert set(page.tables) == {"recordings", "streams", "infringements", "plays"}
    assert [len(page.tables[t]) - 1 for t in ("recordings", "streams", "infringements", "plays")] == [4, 4, 4, 7]
    plays = page.tables["plays"][1:]
    assert plays[0][0].startswith("2026-06-01T00:00:00.000Z → 2026-06-01T00:03:00.000Z")
    assert "2026-06-01T02:00:00.000+02:00 Europe/Paris" in plays[0][0]
    assert plays[-1][2] == "ongoing" and plays[-1][0].split("→")[1].strip().startswith("ongoing")
    assert [row[-1] for row in plays] == ["yes", "no (open)", "no (open)", "yes", "no (acknowledged)", "no (resolved)", "yes"]
    streams = {row[0]: row for row in page.tables["streams"][1:]}
    assert streams["london-1"][3:] == ["2", "0", "5:51", "2"]  # 350.5 s
    assert text.count("<rect") == 2 + 4  # a bar per day, a bar per stream
    assert "<title>2026-06-02: 4 plays</title>" in text


def test_html_caps_long_tables_and_says_so(data_url: str) -> None:
    request = reports.Request("Northwind Records", reports.period("2026-06-01", "2026-06-03"))
    out = io.StringIO()
    with psycopg.connect(data_url) as conn, reports.open_report(conn, request) as report:
        write_html(report, out, max_rows=3)
    page = Page()
    page.feed(out.getvalue())
    assert len(page.tables["plays"]) - 1 == 3 and len(page.tables["infringements"]) - 1 == 3
    assert "4 more plays are not shown here" in out.getvalue()
    assert "1 more infringements are not shown here" in out.getvalue()
    assert "Airtime</dt><dd>15:51 (950.500 s)" in out.getvalue()  # totals always cover everything


def test_day_chart_labels_few_dates_for_long_periods() -> None:
    days = [(date(2026, 1, 1) + timedelta(days=i), i % 5) for i in range(365)]
    svg = day_chart(days)
    assert svg.count("<rect") == 365
    labels = [part.split(">")[1] for part in svg.split("<text")[3:]]
    assert 6 <= len(labels) <= 8 and labels[0] == "2026-01-01</text" and labels[-1] == "2026-12-31</text"


# ---- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--holder", "Northwind Record"], "no rights-holder named 'Northwind Record': did you mean 'Northwind Records'?"),
        (["--holder", "Nobody"], "no rights-holder named 'Nobody': see `castwatch holders ls`"),
        (["--from", "2026-13-01"], "--from '2026-13-01' is not an ISO date"),
        (["--to", "June 3"], "--to 'June 3' is not an ISO date"),
        (["--from", "2026-06-03"], "--from 2026-06-03 is not before --to 2026-06-03"),
        (["--timezone", "Mars/Olympus"], "--timezone 'Mars/Olympus' is unknown"),
        (["--stream", "london-1", "--stream", "nowhere"], "--stream 'nowhere': no such stream"),
        (["--out", "/nonexistent-dir/r.csv"], "--out /nonexistent-dir/r.csv: the directory /nonexistent-dir does not exist"),
    ],
)
def test_bad_input_is_a_clear_error(data_url: str, monkeypatch, capsys, args: list[str], message: str) -> None:
    base = {"--holder": "Northwind Records", "--from": "2026-06-01", "--to": "2026-06-03"}
    for flag, value in zip(args[::2], args[1::2]):
        base.pop(flag, None)
    argv = [x for kv in base.items() for x in kv] + args
    code, out, err = run(data_url, argv, monkeypatch, capsys)
    assert code == 1 and out == ""
    assert err.startswith("error: " + message), err
    assert "Traceback" not in err


def test_a_failed_report_leaves_no_file(data_url: str, tmp_path: Path, monkeypatch, capsys) -> None:
    target = tmp_path / "r.csv"
    target.write_text("the previous report")
    code, _, err = run(data_url, ["--holder", "Nobody", "--from", "2026-06-01", "--to", "2026-06-02", "--out", str(target)],
                       monkeypatch, capsys)  # fmt: skip
    assert code == 1 and "Nobody" in err
    assert target.read_text() == "the previous report" and sorted(p.name for p in tmp_path.iterdir()) == ["r.csv"]


# ---- large periods stream --------------------------------------------------------------------------


@pytest.mark.slow
def test_memory_does_not_grow_with_the_number_of_plays(pg_server, tmp_path: Path) -> None:
    """``castwatch report`` (CSV) over 10,000 and 100,000 plays: same peak memory, every play written."""
    runs = {}
    for plays in (10_000, 100_000):
        url = pg_server.fresh_database()
        try:
            with psycopg.connect(url) as conn:
                report_bench.generate(conn, plays)
            out = tmp_path / f"{plays}.csv"
            runs[plays] = report_bench.measure(url, "csv", out)
        finally:
            pg_server.drop_database(url)
        sections = csv_sections(out.read_bytes())
        assert len(sections["plays"]) - 1 == plays
        assert len(sections["infringements"]) - 1 == plays // 10
        assert sum(int(row[1]) for row in sections["plays per day"][1:]) == plays
    small, large = runs[10_000], runs[100_000]
    assert large.out_bytes > 8 * small.out_bytes
    assert large.peak_rss_mb - small.peak_rss_mb < 20, (small, large)  # holding 90,000 more rows would take over 100 MB
