"""Upcoming birthdays: the pure window function against an independent calendar oracle, and the service query
with a fixed `today` (year wrap, Feb 29 in common and leap years, ordering by how soon)."""

from __future__ import annotations

import calendar
import json
from datetime import date, timedelta

import pytest

from app.contacts import service
from app.contacts.service import birthday_window
from tests.factories import make_contact, make_user

# Every month/day a birthday can have (2000 is a leap year, so Feb 29 is among them).
ALL_MONTH_DAYS = [(d.month, d.day) for d in (date(2000, 1, 1) + timedelta(days=n) for n in range(366))]


def celebrated_on(year: int, month: int, day: int) -> date:
    """The day a birthday is celebrated in `year`: Feb 29 falls on Feb 28 in common years."""
    if (month, day) == (2, 29) and not calendar.isleap(year):
        return date(year, 2, 28)
    return date(year, month, day)


def next_birthday(today: date, month: int, day: int) -> date:
    this_year = celebrated_on(today.year, month, day)
    return this_year if this_year >= today else celebrated_on(today.year + 1, month, day)


def celebrated_keys(today: date, days: int) -> set[int]:
    """Month*100+day of every birthday celebrated from `today` to `today + days`, walking the calendar."""
    keys = set()
    for n in range(days + 1):
        day = today + timedelta(days=n)
        keys.add(day.month * 100 + day.day)
        if (day.month, day.day) == (2, 28) and not calendar.isleap(day.year):
            keys.add(229)
    return keys


def window_holds(window: tuple[list[tuple[int, int]], list[int]], month: int, day: int) -> bool:
    ranges, extra = window
    key = month * 100 + day
    return any(low <= key <= high for low, high in ranges) or key in extra


def window_keys(today: date, days: int) -> set[int]:
    window = birthday_window(today, days)
    return {m * 100 + d for m, d in ALL_MONTH_DAYS if window_holds(window, m, d)}


# -- birthday_window, the pure function ---------------------------------------------------------------------


@pytest.mark.parametrize("year", [2023, 2024], ids=["common-year", "leap-year"])
@pytest.mark.parametrize("days", [0, 1, 7, 59, 365])
def test_birthday_window_matches_calendar_for_every_day_of_year(year, days):
    first = date(year, 1, 1)
    mismatches = {
        today.isoformat(): sorted(window_keys(today, days) ^ celebrated_keys(today, days))
        for today in (first + timedelta(days=n) for n in range(366 if calendar.isleap(year) else 365))
        if window_keys(today, days) != celebrated_keys(today, days)
    }
    assert mismatches == {}


def test_birthday_window_with_zero_days_holds_only_today():
    today = date(2023, 6, 15)
    held = [(m, d) for m, d in ALL_MONTH_DAYS if window_holds(birthday_window(today, 0), m, d)]
    assert held == [(6, 15)]


def test_birthday_window_wraps_past_new_year():
    window = birthday_window(date(2023, 12, 30), 7)
    assert window_holds(window, 12, 30)
    assert window_holds(window, 1, 6)
    assert not window_holds(window, 1, 7)
    assert not window_holds(window, 12, 29)


def test_birthday_window_celebrates_feb_29_on_feb_28_in_common_year():
    assert window_holds(birthday_window(date(2023, 2, 28), 0), 2, 29)
    assert window_holds(birthday_window(date(2023, 2, 21), 7), 2, 29)
    assert not window_holds(birthday_window(date(2023, 2, 20), 7), 2, 29)
    assert not window_holds(birthday_window(date(2023, 3, 1), 0), 2, 29)


def test_birthday_window_keeps_feb_29_on_its_day_in_leap_year():
    assert not window_holds(birthday_window(date(2024, 2, 28), 0), 2, 29)
    assert window_holds(birthday_window(date(2024, 2, 28), 1), 2, 29)
    assert window_holds(birthday_window(date(2024, 2, 29), 0), 2, 29)
    assert not window_holds(birthday_window(date(2024, 2, 29), 0), 2, 28)


def test_birthday_window_of_365_days_holds_every_birthday():
    for today in (date(2023, 1, 1), date(2023, 3, 1), date(2024, 2, 29), date(2024, 12, 31)):
        window = birthday_window(today, 365)
        assert all(window_holds(window, m, d) for m, d in ALL_MONTH_DAYS), today


# -- get_birthdays_json, the query ---------------------------------------------------------------------------


async def birthdays(db, user, today: date, days: int, skip: int = 0, limit: int = 20) -> dict:
    return json.loads(await service.get_birthdays_json(db, user.id, days, skip, limit, today=today))


def names(page: dict) -> list[str]:
    return [item["first_name"] for item in page["items"]]


async def test_birthdays_across_new_year_are_ordered_by_how_soon(db, settings):
    user = await make_user(db, settings)
    for name, born in [
        ("Jan7", date(1990, 1, 7)),
        ("Jan1", date(1985, 1, 1)),
        ("Dec31", date(1970, 12, 31)),
        ("Jan6", date(2001, 1, 6)),
        ("Dec29", date(1999, 12, 29)),
        ("Dec30", date(1960, 12, 30)),
    ]:
        await make_contact(db, user, first_name=name, birthday=born)

    page = await birthdays(db, user, today=date(2023, 12, 30), days=7)

    assert names(page) == ["Dec30", "Dec31", "Jan1", "Jan6"]
    assert page["total"] == 4
    assert (page["skip"], page["limit"]) == (0, 20)


async def test_birthdays_include_feb_29_on_feb_28_of_common_year(db, settings):
    user = await make_user(db, settings)
    await make_contact(db, user, first_name="Leapling", birthday=date(2000, 2, 29))
    await make_contact(db, user, first_name="Feb28", birthday=date(1990, 2, 28))
    await make_contact(db, user, first_name="Mar1", birthday=date(1990, 3, 1))

    page = await birthdays(db, user, today=date(2023, 2, 28), days=0)

    assert sorted(names(page)) == ["Feb28", "Leapling"]
    assert page["total"] == 2


async def test_birthdays_exclude_feb_29_after_feb_28_of_common_year(db, settings):
    user = await make_user(db, settings)
    await make_contact(db, user, first_name="Leapling", birthday=date(2000, 2, 29))
    await make_contact(db, user, first_name="Mar1", birthday=date(1990, 3, 1))

    page = await birthdays(db, user, today=date(2023, 3, 1), days=0)

    assert names(page) == ["Mar1"]


async def test_birthdays_keep_feb_29_on_its_own_day_in_leap_year(db, settings):
    user = await make_user(db, settings)
    await make_contact(db, user, first_name="Leapling", birthday=date(2000, 2, 29))
    await make_contact(db, user, first_name="Feb28", birthday=date(1990, 2, 28))

    on_feb_28 = await birthdays(db, user, today=date(2024, 2, 28), days=0)
    next_day_too = await birthdays(db, user, today=date(2024, 2, 28), days=1)

    assert names(on_feb_28) == ["Feb28"]
    assert names(next_day_too) == ["Feb28", "Leapling"]


async def test_birthdays_order_feb_29_as_feb_28_when_year_wraps_into_common_year(db, settings):
    user = await make_user(db, settings)
    await make_contact(db, user, first_name="Mar1", birthday=date(1990, 3, 1))
    await make_contact(db, user, first_name="Leapling", birthday=date(2000, 2, 29))
    await make_contact(db, user, first_name="Jan2", birthday=date(1990, 1, 2))
    await make_contact(db, user, first_name="Mar2", birthday=date(1990, 3, 2))

    page = await birthdays(db, user, today=date(2022, 12, 31), days=60)

    assert names(page) == ["Jan2", "Leapling", "Mar1"]


@pytest.mark.parametrize(
    "today", [date(2023, 1, 1), date(2023, 2, 28), date(2023, 12, 31), date(2024, 2, 29), date(2024, 7, 4)]
)
async def test_birthdays_of_whole_year_come_soonest_first(db, settings, today):
    user = await make_user(db, settings)
    borns = [date(2000, m, d) for m, d in ALL_MONTH_DAYS[::17]] + [date(2000, 2, 29), date(1999, 2, 28)]
    for n, born in enumerate(borns):
        await make_contact(db, user, first_name=f"C{n}", birthday=born)

    page = await birthdays(db, user, today=today, days=365, limit=100)

    waits = [
        (next_birthday(today, b.month, b.day) - today).days
        for b in (date.fromisoformat(i["birthday"]) for i in page["items"])
    ]
    assert page["total"] == len(borns)
    assert len(waits) == len(borns)
    assert waits == sorted(waits)


async def test_birthdays_page_by_skip_and_limit(db, settings):
    user = await make_user(db, settings)
    for day in range(1, 6):
        await make_contact(db, user, first_name=f"May{day}", birthday=date(1990, 5, day))

    page = await birthdays(db, user, today=date(2023, 5, 1), days=10, skip=1, limit=2)

    assert names(page) == ["May2", "May3"]
    assert (page["total"], page["skip"], page["limit"]) == (5, 1, 2)


async def test_birthdays_ignore_contacts_without_birthday(db, settings):
    user = await make_user(db, settings)
    await make_contact(db, user, first_name="Nobirthday", birthday=None)
    await make_contact(db, user, first_name="Jun15", birthday=date(1990, 6, 15))

    page = await birthdays(db, user, today=date(2023, 6, 15), days=365)

    assert names(page) == ["Jun15"]
