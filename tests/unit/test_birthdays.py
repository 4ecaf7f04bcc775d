"""Upcoming birthdays: the pure window function against an independent calendar oracle. The service query with a
fixed `today` is in tests/integration/test_birthdays.py."""

from __future__ import annotations

import calendar
from datetime import date, timedelta

import pytest

from app.contacts.service import birthday_window

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
