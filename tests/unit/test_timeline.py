"""The fleet timeline picture: a row per image in the fleet table's order, its markers where its times fall on the
drawn axis, names escaped, big fleets capped with a note."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

from vulnattest.freshness import ImageVerdict, Verdict, fleet_rows
from vulnattest.timeline import COLOURS, fleet_timeline_svg, timeline_markdown

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
MAX_AGE, WARN = timedelta(hours=168), timedelta(hours=30)
SVG = "{http://www.w3.org/2000/svg}"


def verdict(image: str, kind: Verdict, age: timedelta | None = None) -> ImageVerdict:
    scan = None if age is None else NOW - age
    return ImageVerdict(image, kind, "why", "do", NOW, scan_finished=scan,
                        deadline=None if scan is None else scan + MAX_AGE)


FLEET = [
    verdict("reg.example/a/fresh:1", Verdict.FRESH, timedelta(hours=12)),
    verdict("reg.example/a/missing:1", Verdict.MISSING),
    verdict("reg.example/a/stale:1", Verdict.STALE, timedelta(hours=200)),
    verdict("reg.example/a/expiring:1", Verdict.EXPIRING, timedelta(hours=150)),
    verdict("reg.example/a/invalid:1", Verdict.INVALID),
]


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # noqa: S314 - the SVG under test, built here


def rows(root: ET.Element) -> list[ET.Element]:
    return [g for g in root.iter(f"{SVG}g") if g.get("class") == "row"]


def marker(row: ET.Element, kind: str) -> float:
    (found,) = [e for e in row if e.get("class") == kind]
    return float(found.get("cx") or found.get("x1") or "nan")


def axis_x(root: ET.Element, when: datetime) -> float:
    """Where the drawn axis puts `when`, read off two of its labelled ticks (so the test trusts no layout constant)."""
    ticks = [(datetime.fromisoformat(str(t.get("data-time"))), float(str(t.get("x1"))))
             for t in root.iter(f"{SVG}line") if t.get("class") == "tick"]
    (t0, x0), (t1, x1) = ticks[0], ticks[-1]
    return x0 + (when - t0) / (t1 - t0) * (x1 - x0)


def test_one_row_per_image_in_the_fleet_tables_order_coloured_by_verdict():
    root = parse(fleet_timeline_svg(FLEET, NOW, WARN))
    drawn = rows(root)
    assert [(g.get("data-image"), g.get("data-verdict")) for g in drawn] == [
        (row["image"], row["verdict"]) for row in fleet_rows(FLEET)]
    assert [g.get("data-verdict") for g in drawn] == ["stale", "invalid", "missing", "expiring", "fresh"]
    stale = drawn[0]
    assert next(e for e in stale if e.get("class") == "scan").get("fill") == COLOURS[Verdict.STALE]
    # an image with no accepted scan has no markers, only a note saying why
    assert [e.get("class") for e in drawn[2] if e.get("class")] == []
    assert "no vuln attestation attached" in "".join(drawn[2].itertext())


def test_markers_sit_where_their_times_fall_on_the_axis():
    root = parse(fleet_timeline_svg(FLEET, NOW, WARN))
    by_image = {g.get("data-image"): g for g in rows(root)}
    expiring = by_image["reg.example/a/expiring:1"]
    scanned = NOW - timedelta(hours=150)
    for kind, when in (("scan", scanned), ("warn", scanned + MAX_AGE - WARN), ("deadline", scanned + MAX_AGE)):
        assert abs(marker(expiring, kind) - axis_x(root, when)) < 0.2, kind
    (now_line,) = [e for e in root.iter(f"{SVG}line") if e.get("class") == "now"]
    assert abs(float(str(now_line.get("x1"))) - axis_x(root, NOW)) < 0.2
    # the stale image's deadline is before now, the fresh image's after; warnings always come before the deadline
    assert marker(by_image["reg.example/a/stale:1"], "deadline") < axis_x(root, NOW)
    assert marker(by_image["reg.example/a/fresh:1"], "deadline") > axis_x(root, NOW)
    assert all(marker(g, "warn") < marker(g, "deadline") for g in (expiring, by_image["reg.example/a/fresh:1"]))


def test_ticks_are_labelled_in_utc_on_whole_days_within_the_drawn_range():
    root = parse(fleet_timeline_svg(FLEET, NOW, WARN))
    ticks = [datetime.fromisoformat(str(t.get("data-time"))) for t in root.iter(f"{SVG}line")
             if t.get("class") == "tick"]
    assert 2 <= len(ticks) <= 6
    assert all(t.tzinfo == UTC and t.hour == 0 and t.minute == 0 for t in ticks)
    assert ticks[0] < NOW - timedelta(hours=200) + timedelta(days=2) and ticks[-1] > NOW
    labels = {"".join(t.itertext()) for t in root.iter(f"{SVG}text")}
    assert {f"{t:%Y-%m-%d}" for t in ticks} <= labels


def test_image_names_are_escaped():
    hostile = "reg.example/x/<script>alert('&')</script>:1"
    svg = fleet_timeline_svg([verdict(hostile, Verdict.FRESH, timedelta(hours=1))], NOW, WARN)
    assert "<script>" not in svg
    (row,) = rows(parse(svg))
    assert row.get("data-image") == hostile
    assert hostile in "".join(row.itertext())


def test_a_big_fleet_is_capped_with_a_note_on_what_is_left_out():
    fleet = [verdict(f"reg.example/bulk/app-{i}:1", Verdict.FRESH, timedelta(hours=i % 100)) for i in range(250)]
    fleet.append(verdict("reg.example/bulk/stale:1", Verdict.STALE, timedelta(hours=300)))
    root = parse(fleet_timeline_svg(fleet, NOW, WARN, max_rows=200))
    drawn = rows(root)
    assert len(drawn) == 200
    assert drawn[0].get("data-image") == "reg.example/bulk/stale:1"  # the worst are the ones kept
    (more,) = [t for t in root.iter(f"{SVG}text") if t.get("class") == "more"]
    assert "".join(more.itertext()).startswith("+51 more image(s)")
    assert not [t for t in parse(fleet_timeline_svg(FLEET, NOW, WARN)).iter(f"{SVG}text") if t.get("class") == "more"]


def test_the_markdown_carries_the_svg_as_a_data_uri_image():
    markdown = timeline_markdown(FLEET, NOW, WARN)
    prefix = "![Attestation freshness timeline, UTC](data:image/svg+xml;base64,"
    assert markdown.startswith(prefix) and markdown.endswith(")\n")
    svg = base64.b64decode(markdown[len(prefix):-2]).decode()
    assert svg == fleet_timeline_svg(FLEET, NOW, WARN)


def test_a_scan_time_far_off_keeps_the_axis_within_a_year_of_now():
    go_zero = ImageVerdict("reg.example/a/zero:1", Verdict.STALE, "why", "do", NOW,
                           scan_finished=datetime(1, 1, 1, tzinfo=UTC), deadline=datetime(1, 1, 8, tzinfo=UTC))
    root = parse(fleet_timeline_svg([go_zero, *FLEET], NOW, WARN))
    assert rows(root)[0].get("data-image") == "reg.example/a/zero:1"
    ticks = [datetime.fromisoformat(str(t.get("data-time")))
             for t in root.iter(f"{SVG}line") if t.get("class") == "tick"]
    assert ticks and all(abs(t - NOW) <= timedelta(days=400) for t in ticks)
