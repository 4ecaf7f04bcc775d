"""Contact lists in model v2: sort orders, cursor paging (every row once, in order, bound to its user and query,
keyset on an index however deep), label and favorite filters, the labels (counts, rename and delete everywhere),
list ETags with 304, and the list cache: fresh after every write, and bounded."""

from __future__ import annotations

import json

import pytest
from redis.asyncio import Redis
from sqlalchemy import select, text

from app.contacts import cursor as cursors
from app.contacts import queries, repository
from app.contacts.models import Contact, ContactCount, ContactLabel
from app.contacts.queries import ListQuery
from tests.factories import auth_headers, make_contact, make_user

API = "/api/v1"
SORTS = ["created", "name", "-name", "updated", "-updated"]


@pytest.fixture
async def owner(db, settings):
    return await make_user(db, settings)


@pytest.fixture
def headers(settings, owner):
    return auth_headers(settings, owner)


@pytest.fixture
async def book(db, owner) -> list[Contact]:
    """Eleven contacts with names that tie, differ only in case, or have no last name; some labelled, some
    favorites; updated in an order of their own."""
    people = [
        ("ada", "Lovelace"),
        ("Alan", "turing"),
        ("Grace", "Hopper"),
        ("Zed", None),
        ("amy", None),
        ("Bob", "Hopper"),
        ("bob", "hopper"),
        ("Émile", "Zola"),
        ("Carl", "Lovelace"),
        ("Dee", "ZOLA"),
        ("Eve", "adams"),
    ]
    made = []
    for n, (first, last) in enumerate(people):
        labels = ["family"] if n % 3 == 0 else (["work", "family"] if n % 3 == 1 else [])
        made.append(await make_contact(db, owner, first_name=first, last_name=last, labels=labels, favorite=n % 4 == 0))
    for contact in reversed(made[::2]):  # later updates for every other one, in reverse
        contact.notes = "touched"
        await db.flush()
    await db.commit()
    return made


def expected_order(contacts: list[Contact], sort: str) -> list[int]:
    def name_key(c: Contact):
        return ((c.last_name or "").lower(), c.first_name.lower(), c.id)

    if sort == "created":
        return sorted(c.id for c in contacts)
    if sort.endswith("name"):
        ordered = sorted(contacts, key=name_key)
    else:
        ordered = sorted(contacts, key=lambda c: (c.updated_at, c.id))
    ids = [c.id for c in ordered]
    return ids[::-1] if sort.startswith("-") else ids


async def walk(client, headers, params: dict, limit: int) -> tuple[list[int], list[dict]]:
    pages, ids = [], []
    page = (await client.get(f"{API}/contacts", params=params | {"limit": limit}, headers=headers)).json()
    while True:
        pages.append(page)
        ids += [item["id"] for item in page["items"]]
        if page["next_cursor"] is None:
            return ids, pages
        response = await client.get(
            f"{API}/contacts", params=params | {"limit": limit, "cursor": page["next_cursor"]}, headers=headers
        )
        assert response.status_code == 200, response.text
        page = response.json()


# -- sort and cursor ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sort", SORTS)
async def test_cursor_pages_give_every_contact_once_in_the_sort_order(client, db, book, headers, sort):
    await db.refresh(book[0])
    for contact in book:
        await db.refresh(contact)
    expected = expected_order(book, sort)

    for limit in (1, 3, 4, 11, 20):
        ids, pages = await walk(client, headers, {"sort": sort}, limit)
        assert ids == expected, (sort, limit)
        assert all(page["total"] == len(book) for page in pages)
        assert len(pages) == max(1, -(-len(book) // limit))
        assert pages[-1]["next_cursor"] is None


@pytest.mark.parametrize("sort", SORTS)
async def test_skip_pages_agree_with_the_sort_order_and_carry_a_cursor_to_go_on(client, db, book, headers, sort):
    for contact in book:
        await db.refresh(contact)
    expected = expected_order(book, sort)

    for skip in range(len(book) + 1):
        body = (
            await client.get(f"{API}/contacts", params={"sort": sort, "skip": skip, "limit": 3}, headers=headers)
        ).json()
        assert [item["id"] for item in body["items"]] == expected[skip : skip + 3], (sort, skip)
        if body["next_cursor"]:
            after = (
                await client.get(
                    f"{API}/contacts", params={"sort": sort, "cursor": body["next_cursor"], "limit": 3}, headers=headers
                )
            ).json()
            assert [item["id"] for item in after["items"]] == expected[skip + 3 : skip + 6]
        else:
            assert skip + 3 >= len(book)


async def test_cursor_continues_under_the_filters_it_was_made_for(client, book, headers):
    params = {"label": "family", "favorite": "true", "sort": "-name"}
    everyone = (await client.get(f"{API}/contacts", params=params | {"limit": 100}, headers=headers)).json()

    ids, _ = await walk(client, headers, params, 1)

    assert ids == [item["id"] for item in everyone["items"]]
    assert len(ids) == everyone["total"] >= 2


async def test_cursor_of_another_query_or_user_or_tampered_answers_400(client, db, settings, book, headers):
    page = (await client.get(f"{API}/contacts", params={"sort": "name", "limit": 2}, headers=headers)).json()
    cursor = page["next_cursor"]
    stranger = auth_headers(settings, await make_user(db, settings))
    body, mac = cursor.split(".")
    payload = json.loads(cursors._unb64(body))
    payload["u"] = payload["u"] + 1
    forged = cursors._b64(json.dumps(payload).encode()) + "." + mac

    cases = {
        "other sort": ({"sort": "-name", "cursor": cursor}, headers),
        "other search": ({"sort": "name", "q": "a", "cursor": cursor}, headers),
        "other user": ({"sort": "name", "cursor": cursor}, stranger),
        "forged user": ({"sort": "name", "cursor": forged}, headers),
        "garbage": ({"sort": "name", "cursor": "not-a-cursor"}, headers),
        "with skip": ({"sort": "name", "cursor": cursor, "skip": 2}, headers),
    }
    for name, (params, who) in cases.items():
        response = await client.get(f"{API}/contacts", params=params, headers=who)
        assert (response.status_code, response.json()["error"]) == (400, "InvalidCursor"), name


def test_a_cursor_names_its_sort_key_only_under_its_signature():
    query = ListQuery(sort="name")
    made = cursors.encode("k" * 32, 7, query, ["lovelace", "ada", 3])

    assert cursors.decode("k" * 32, 7, query, made) == ["lovelace", "ada", 3]
    with pytest.raises(cursors.InvalidCursor):
        cursors.decode("j" * 32, 7, query, made)


@pytest.mark.postgres_only
@pytest.mark.parametrize(
    ("sort", "after", "index"),
    [
        ("name", ["same", "n10", 11], "ix_contacts_user_id_name"),
        ("-updated", ["2026-01-01T00:00:00+00:00", 11], "ix_contacts_user_id_updated_at"),
        ("created", [11], "ix_contacts_user_id_id"),
    ],
)
async def test_a_cursor_page_walks_the_index_from_its_key(db, owner, sort, after, index):
    # The bench measures depth 1,000 vs 100,000; here the plan: an index range that starts at the cursor's key (an
    # Index Cond on the key, no OFFSET), so the rows before it are never read.
    for n in range(30):
        await make_contact(db, owner, first_name=f"N{n:02}", last_name="Same")
    statement = queries.after_statement(owner.id, ListQuery(sort=sort), after, 5)
    compiled = statement.compile(db.get_bind(), compile_kwargs={"literal_binds": True})

    await db.execute(text("SET LOCAL enable_seqscan = off"))
    plan = "\n".join((await db.execute(text(f"EXPLAIN {compiled}"))).scalars())

    assert index in plan, plan
    condition = next(line for line in plan.splitlines() if "Index Cond" in line)
    assert "user_id = " in condition, plan
    assert "ROW(" in condition or "id >" in condition or "id <" in condition, plan
    assert "Offset" not in plan
    assert "Sort" not in plan  # the index gives the order


# -- filters -----------------------------------------------------------------------------------------------------


async def test_label_and_favorite_filter_the_list(client, book, headers):
    family = (await client.get(f"{API}/contacts", params={"label": " Family ", "limit": 100}, headers=headers)).json()
    favorites = (await client.get(f"{API}/contacts", params={"favorite": "true", "limit": 100}, headers=headers)).json()
    others = (await client.get(f"{API}/contacts", params={"favorite": "false", "limit": 100}, headers=headers)).json()

    assert [item["id"] for item in family["items"]] == [c.id for n, c in enumerate(book) if n % 3 != 2]
    assert all("family" in item["labels"] for item in family["items"])
    assert [item["id"] for item in favorites["items"]] == [c.id for n, c in enumerate(book) if n % 4 == 0]
    assert favorites["total"] + others["total"] == len(book)


# -- labels --------------------------------------------------------------------------------------------------------


async def test_labels_lists_each_label_with_its_live_contact_count(client, book, headers):
    await client.delete(f"{API}/contacts/{book[0].id}", headers=headers)

    response = await client.get(f"{API}/labels", headers=headers)

    assert response.status_code == 200
    assert response.json() == {"labels": [{"name": "family", "contacts": 7}, {"name": "work", "contacts": 4}]}


async def test_rename_label_everywhere_makes_each_contact_a_new_version_and_a_change(client, db, owner, book, headers):
    await client.delete(f"{API}/contacts/{book[1].id}", headers=headers)  # trashed: renamed too
    both = await make_contact(db, owner, first_name="Both", labels=["work", "colleagues"])
    before_seq = await db.scalar(select(ContactCount.change_seq).where(ContactCount.user_id == owner.id))
    cached = await client.get(f"{API}/contacts/{book[4].id}", headers=headers)
    ids = [contact.id for contact in book]
    both_id = both.id

    response = await client.patch(f"{API}/labels/WORK", json={"name": "Colleagues"}, headers=headers)

    assert response.status_code == 200, response.text
    assert response.json() == {"name": "Colleagues", "contacts": 4}
    table = Contact.__table__
    rows = (await db.execute(select(table).where(table.c.user_id == owner.id).order_by(table.c.id))).all()
    renamed = [c for c in rows if "Colleagues" in c.labels]
    assert [c.id for c in renamed] == [ids[1], ids[4], ids[7], ids[10], both_id]
    assert all("work" not in c.labels for c in rows)
    assert next(c for c in rows if c.id == both_id).labels == ["Colleagues", "colleagues"]
    assert all(c.version == 2 or (c.id == ids[1] and c.version == 3) for c in renamed if c.id != both_id)
    assert sorted(c.change_seq for c in renamed) == list(range(before_seq + 1, before_seq + 6))
    mirrored = (await db.execute(select(ContactLabel.contact_id).where(ContactLabel.name == "Colleagues"))).scalars()
    assert sorted(mirrored) == sorted(c.id for c in renamed)
    fresh = (await client.get(f"{API}/contacts/{ids[4]}", headers=headers)).json()
    assert (fresh["labels"], fresh["etag"] != cached.json()["etag"]) == (["Colleagues", "family"], True)
    listed = (await client.get(f"{API}/labels", headers=headers)).json()["labels"]
    assert {"name": "Colleagues", "contacts": 4} in listed
    assert all(label["name"] != "work" for label in listed)


async def test_delete_label_removes_it_everywhere_and_keeps_the_contacts(client, db, book, headers):
    assert (await client.get(f"{API}/contacts", params={"label": "family"}, headers=headers)).json()["total"] == 8

    response = await client.delete(f"{API}/labels/family", headers=headers)

    assert response.status_code == 204
    assert (await client.get(f"{API}/contacts", params={"label": "family"}, headers=headers)).json()["total"] == 0
    assert (await client.get(f"{API}/contacts", headers=headers)).json()["total"] == len(book)
    assert (await client.get(f"{API}/labels", headers=headers)).json() == {"labels": [{"name": "work", "contacts": 4}]}


async def test_a_label_with_a_slash_is_renamed_through_its_escaped_path(client, db, owner, headers):
    contact = await make_contact(db, owner, labels=["clients/2026"])

    response = await client.patch(f"{API}/labels/clients%2F2026", json={"name": "clients/2027"}, headers=headers)

    assert response.status_code == 200, response.text
    assert (await client.get(f"{API}/contacts/{contact.id}", headers=headers)).json()["labels"] == ["clients/2027"]


@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
async def test_unknown_or_foreign_label_answers_404_and_changes_nothing(client, db, settings, book, headers, method):
    stranger = await make_user(db, settings)
    await make_contact(db, stranger, labels=["theirs"])
    body = {"name": "x"} if method == "PATCH" else None

    for name in ("nobody", "theirs"):
        response = await client.request(method, f"{API}/labels/{name}", json=body, headers=headers)
        assert (response.status_code, response.json()["error"]) == (404, "LabelNotFound")
    stored = await db.execute(select(Contact.__table__.c.labels).where(Contact.__table__.c.user_id == stranger.id))
    assert stored.scalar_one() == ["theirs"]


# -- ETags of lists, and the list cache ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/contacts", {}),
        ("/contacts", {"sort": "name", "label": "family"}),
        ("/contacts/birthdays", {"days": 365}),
        ("/labels", {}),
    ],
)
async def test_list_etag_answers_304_until_a_write_changes_the_list(client, book, headers, path, params):
    first = await client.get(f"{API}{path}", params=params, headers=headers)
    etag = first.headers["etag"]
    again = await client.get(f"{API}{path}", params=params, headers=headers | {"If-None-Match": etag})
    await client.patch(
        f"{API}/contacts/{book[0].id}", json={"labels": ["family", "new"], "birthday": "1990-01-01"}, headers=headers
    )

    after = await client.get(f"{API}{path}", params=params, headers=headers | {"If-None-Match": etag})

    assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", etag)
    assert after.status_code == 200
    assert after.headers["etag"] != etag


async def test_every_cached_list_is_fresh_after_each_kind_of_write(client, db, owner, book, headers):
    views = [
        ("/contacts", {}),
        ("/contacts", {"sort": "name"}),
        ("/contacts", {"sort": "-updated"}),
        ("/contacts", {"label": "family"}),
        ("/contacts", {"favorite": "true"}),
        ("/contacts", {"q": "hopper"}),
        ("/labels", {}),
    ]

    async def served() -> list:
        found = []
        for path, params in views:
            body = (await client.get(f"{API}{path}", params=params | {"limit": 100}, headers=headers)).json()
            found.append(body if path == "/labels" else ([(i["id"], i["etag"]) for i in body["items"]], body["total"]))
        return found

    async def truth() -> list:
        await db.commit()  # a fresh snapshot of what is committed
        found = []
        for path, params in views:
            if path == "/labels":
                counts = await repository.label_counts(db, owner.id)
                found.append({"labels": [{"name": name, "contacts": count} for name, count in counts]})
                continue
            favorite = {"true": True}.get(params.get("favorite", ""))
            query = ListQuery(
                sort=params.get("sort", "created"), q=params.get("q"), label=params.get("label"), favorite=favorite
            )
            page = await queries.page_by_skip(db, owner.id, query, 0, 100)
            found.append(([(r["id"], f'"{r["id"]}-{r["version"]}"') for r in page.rows], page.total))
        return found

    assert await served() == await truth()  # and now every view is cached
    writes = [
        ("POST", "/contacts", {"first_name": "New", "last_name": "Hopper", "labels": ["family"], "favorite": True}),
        ("PATCH", f"/contacts/{book[2].id}", {"last_name": "Aaron", "favorite": True}),
        ("PUT", f"/contacts/{book[3].id}", {"first_name": "Zed"}),
        ("DELETE", f"/contacts/{book[5].id}", None),
        ("PATCH", "/labels/family", {"name": "kin"}),
        ("DELETE", "/labels/work", None),
    ]
    for method, path, body in writes:
        response = await client.request(method, f"{API}{path}", json=body, headers=headers)
        assert response.status_code < 300, response.text

        assert await served() == await truth(), (method, path)


async def test_distinct_sorts_and_filters_stay_within_the_list_cache_bound(
    client, db, settings, owner, headers, redis_client: Redis
):
    await make_contact(db, owner, first_name="One", labels=["x"])
    for n in range(settings.cache_list_max_fields + 30):
        params = {"label": f"label{n}"} if n % 2 else {"sort": SORTS[n % 5], "skip": n}
        response = await client.get(f"{API}/contacts", params=params, headers=headers)
        assert response.status_code == 200

    fields = await redis_client.hlen(f"contacts:{owner.id}")

    assert 0 < fields <= settings.cache_list_max_fields
