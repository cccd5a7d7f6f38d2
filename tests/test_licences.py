"""monitor.rights.licences: the licensing decision (pure) and its rules, one by one."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from monitor.rights.licences import Licence, LicenceBook, LicenceError, Stream, parse_time

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
ACME, BRAVO = 1, 2
SONG, DUET, ORPHAN = 10, 11, 12


def lic(
    id: int,
    kind: str = "blanket",
    holder: int | None = ACME,
    track: int | None = None,
    territories: tuple[str, ...] = ("FR",),
    start: datetime = T0 - timedelta(days=30),
    until: datetime | None = None,
    revoked: datetime | None = None,
    licensee: str = "Radio Un",
) -> Licence:
    return Licence(id, licensee, kind, holder, track, frozenset(territories), start, until, revoked)


def book(*licences: Licence) -> LicenceBook:
    b = LicenceBook(
        streams={
            "fr1": Stream("fr1", "Radio Un", "Radio Un", "FR", "Europe/Paris"),
            "de1": Stream("de1", "Radio Eins", "Radio Un", "DE", "Europe/Berlin"),
            "be1": Stream("be1", "Other", "Other Ltd", "BE"),
        },
        holders={ACME: "Acme", BRAVO: "Bravo"},
        ownership={
            SONG: [(ACME, "WW", 100.0)],
            DUET: [(ACME, "WW", 50.0), (BRAVO, "WW", 50.0), (BRAVO, "DE", 100.0)],
        },
    )
    for item in licences:
        b.licences.setdefault(item.licensee, []).append(item)
    return b


def test_no_licence_is_unlicensed_and_names_the_holder() -> None:
    d = book().decide("fr1", SONG, T0)
    assert not d.licensed
    assert d.unlicensed_holders == (ACME,)
    assert "Acme" in d.reason and "Radio Un" in d.reason and "FR" in d.reason


def test_blanket_licence_in_territory_covers() -> None:
    assert book(lic(1)).decide("fr1", SONG, T0).licensed


def test_blanket_licence_of_another_territory_does_not_cover() -> None:
    assert not book(lic(1, territories=("BE",))).decide("fr1", SONG, T0).licensed


def test_worldwide_licence_covers_every_territory() -> None:
    b = book(lic(1, territories=("WW",)))
    assert b.decide("fr1", SONG, T0).licensed
    assert b.decide("de1", SONG, T0).licensed


def test_licence_of_another_licensee_does_not_cover() -> None:
    assert not book(lic(1, licensee="Other Ltd")).decide("fr1", SONG, T0).licensed
    assert not book(lic(1)).decide("be1", SONG, T0).licensed


@pytest.mark.parametrize(
    "start, until, at, expected",
    [
        (T0, None, T0, True),  # valid_from is inclusive
        (T0, None, T0 - timedelta(seconds=1), False),
        (T0 - timedelta(days=1), T0, T0, False),  # valid_until is exclusive
        (T0 - timedelta(days=1), T0, T0 - timedelta(microseconds=1), True),
        (T0 - timedelta(days=1), T0 + timedelta(days=1), T0, True),
    ],
)
def test_validity_period(start: datetime, until: datetime | None, at: datetime, expected: bool) -> None:
    assert book(lic(1, start=start, until=until)).decide("fr1", SONG, at).licensed is expected


def test_revocation_applies_from_its_time_only() -> None:
    b = book(lic(1, revoked=T0))
    assert b.decide("fr1", SONG, T0 - timedelta(minutes=1)).licensed
    assert not b.decide("fr1", SONG, T0).licensed


def test_every_co_owner_must_license() -> None:
    only_acme = book(lic(1))
    d = only_acme.decide("fr1", DUET, T0)
    assert not d.licensed and d.unlicensed_holders == (BRAVO,)
    both = book(lic(1), lic(2, holder=BRAVO))
    assert both.decide("fr1", DUET, T0).licensed


def test_territory_specific_ownership_overrides_worldwide() -> None:
    # In DE, Bravo owns DUET outright: Acme's licence is irrelevant there, Bravo's is needed.
    acme_only = book(lic(1, territories=("WW",)))
    assert not acme_only.decide("de1", DUET, T0).licensed
    bravo_only = book(lic(2, holder=BRAVO, territories=("DE",)))
    assert bravo_only.decide("de1", DUET, T0).licensed
    assert not bravo_only.decide("fr1", DUET, T0).licensed  # in FR the worldwide split applies


def test_per_track_licence_covers_that_track_only() -> None:
    b = book(lic(1, kind="per-track", holder=None, track=DUET))
    assert b.decide("fr1", DUET, T0).licensed  # no holder named: the whole track
    assert not b.decide("fr1", SONG, T0).licensed


def test_per_track_licence_for_one_holders_share() -> None:
    b = book(lic(1, kind="per-track", holder=ACME, track=DUET))
    d = b.decide("fr1", DUET, T0)
    assert not d.licensed and d.unlicensed_holders == (BRAVO,)
    assert book(lic(1, kind="per-track", holder=ACME, track=DUET), lic(2, holder=BRAVO)).decide("fr1", DUET, T0).licensed


def test_track_without_owner_on_record_is_licensed_with_reason() -> None:
    d = book().decide("fr1", ORPHAN, T0)
    assert d.licensed and "no rights-holder" in d.reason


def test_unknown_stream_is_not_licensed() -> None:
    d = book(lic(1)).decide("nope", SONG, T0)
    assert not d.licensed and "not registered" in d.reason


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        book().decide("fr1", SONG, T0.replace(tzinfo=None))


def test_parse_time() -> None:
    assert parse_time("2026-06-01", "x") == datetime(2026, 6, 1, tzinfo=timezone.utc)
    assert parse_time("2026-06-01T14:00:00+02:00", "x") == T0
    with pytest.raises(LicenceError, match="--from '1st June'"):
        parse_time("1st June", "--from")
