"""Upcoming birthdays: the service query with a fixed `today` (year wrap, Feb 29 in common and leap years, ordering
by how soon). The pure window function is in tests/unit/test_birthdays.py."""

from __future__ import annotations

import json
from datetime import date

import pytest

from app.contacts import service
from tests.factories import make_contact, make_user
from tests.unit.test_birthdays import ALL_MONTH_DAYS, next_birthday

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
