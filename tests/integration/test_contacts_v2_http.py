"""Contact model v2's HTTP semantics: strong ETags that change with every write, 304 to a current If-None-Match
(single contacts, lists, labels), If-Match on PUT/PATCH/DELETE (412 with the current ETag and nothing changed),
two editors racing with one ETag, and the trash answering 404 everywhere else."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from app.contacts.models import Contact, ContactCount
from app.core.cache import REDIS_ROUNDTRIPS
from app.core.db import query_counter
from tests.factories import auth_headers, make_contact, make_user

API = "/api/v1"
RICH = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "organization": "Analytical Engines",
    "emails": [{"value": "ada@work.example", "label": "work"}, {"value": "ada@home.example", "label": "home"}],
    "phones": [{"value": "+44 20 7946 0958", "label": "mobile"}, {"value": "+1 650 253 0000", "label": "work"}],
    "addresses": [{"label": "home", "street": "12 St James's Square", "locality": "London", "country": "UK"}],
    "urls": [{"value": "https://ada.example"}],
    "labels": ["family", "friends"],
    "favorite": True,
    "notes": "x" * 500,
}


@pytest.fixture
async def owner(db, settings):
    return await make_user(db, settings)


@pytest.fixture
def headers(settings, owner):
    return auth_headers(settings, owner)


@pytest.fixture
async def contact(client, headers) -> dict:
    response = await client.post(f"{API}/contacts", json=RICH, headers=headers)
    assert response.status_code == 201, response.text
    assert response.headers["etag"] == response.json()["etag"]
    return response.json()


async def stored(db, contact_id: int) -> dict:
    table = Contact.__table__
    db.expire_all()
    return dict((await db.execute(select(table).where(table.c.id == contact_id))).mappings().one())


# -- ETag and If-None-Match ----------------------------------------------------------------------------------------


async def test_read_sends_the_contacts_etag_and_304_to_a_current_if_none_match(client, headers, contact):
    first = await client.get(f"{API}/contacts/{contact['id']}", headers=headers)
    again = await client.get(
        f"{API}/contacts/{contact['id']}", headers=headers | {"If-None-Match": f'"other", {contact["etag"]}'}
    )
    weak = await client.get(
        f"{API}/contacts/{contact['id']}", headers=headers | {"If-None-Match": f"W/{contact['etag']}"}
    )
    stale = await client.get(f"{API}/contacts/{contact['id']}", headers=headers | {"If-None-Match": '"1-0"'})

    assert first.status_code == 200
    assert first.headers["etag"] == contact["etag"] == f'"{contact["id"]}-1"'
    assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", contact["etag"])
    assert weak.status_code == 304  # If-None-Match compares weakly
    assert (stale.status_code, stale.json()) == (200, contact)


async def test_every_write_changes_the_etag_and_the_old_one_no_longer_answers_304(client, headers, contact):
    etags = [contact["etag"]]
    for method, body in (("PATCH", {"nickname": "A"}), ("PUT", {"first_name": "Ada"}), ("PATCH", {"labels": ["x"]})):
        response = await client.request(method, f"{API}/contacts/{contact['id']}", json=body, headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["etag"] == response.json()["etag"]
        etags.append(response.json()["etag"])

    old = await client.get(f"{API}/contacts/{contact['id']}", headers=headers | {"If-None-Match": etags[0]})

    assert len(set(etags)) == 4
    assert (old.status_code, old.json()["etag"]) == (200, etags[-1])


async def test_write_that_changes_nothing_keeps_the_etag_and_takes_no_change_number(client, db, headers, contact):
    head = await db.scalar(select(ContactCount.change_seq))

    response = await client.patch(f"{API}/contacts/{contact['id']}", json={"first_name": "Ada"}, headers=headers)

    assert response.json()["etag"] == contact["etag"]
    assert (await stored(db, contact["id"]))["version"] == 1
    assert await db.scalar(select(ContactCount.change_seq)) == head


async def test_warm_read_of_a_rich_contact_makes_no_query_and_one_redis_round_trip(client, headers, contact):
    cold = await client.get(f"{API}/contacts/{contact['id']}", headers=headers)
    queries, trips = query_counter.value, REDIS_ROUNDTRIPS._value.get()

    warm = await client.get(f"{API}/contacts/{contact['id']}", headers=headers)
    not_modified = await client.get(
        f"{API}/contacts/{contact['id']}", headers=headers | {"If-None-Match": contact["etag"]}
    )

    assert warm.json() == cold.json() == contact
    assert not_modified.status_code == 304
    assert query_counter.value - queries == 0
    assert REDIS_ROUNDTRIPS._value.get() - trips == 2  # one per request


# -- If-Match ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "body"), [("PUT", {"first_name": "Stale"}), ("PATCH", {"first_name": "Stale"}), ("DELETE", None)]
)
async def test_stale_if_match_answers_412_with_the_current_etag_and_changes_nothing(
    client, db, headers, contact, method, body
):
    newer = await client.patch(f"{API}/contacts/{contact['id']}", json={"nickname": "newer"}, headers=headers)
    before = await stored(db, contact["id"])
    counts_before = await db.scalar(select(ContactCount.change_seq))

    response = await client.request(
        method, f"{API}/contacts/{contact['id']}", json=body, headers=headers | {"If-Match": contact["etag"]}
    )

    assert response.status_code == 412, response.text
    assert response.json()["error"] == "PreconditionFailed"
    assert response.headers["etag"] == newer.json()["etag"]
    assert await stored(db, contact["id"]) == before
    assert await db.scalar(select(ContactCount.change_seq)) == counts_before
    assert (await client.get(f"{API}/contacts/{contact['id']}", headers=headers)).json() == newer.json()


@pytest.mark.parametrize("if_match", ["{etag}", '"x", {etag}', "*"])
async def test_current_if_match_lets_the_write_through(client, headers, contact, if_match):
    tag = if_match.format(etag=contact["etag"])

    patched = await client.patch(
        f"{API}/contacts/{contact['id']}", json={"nickname": "ok"}, headers=headers | {"If-Match": tag}
    )

    assert patched.status_code == 200, patched.text
    assert patched.json()["nickname"] == "ok"


async def test_weak_if_match_never_matches(client, headers, contact):
    response = await client.patch(
        f"{API}/contacts/{contact['id']}",
        json={"nickname": "no"},
        headers=headers | {"If-Match": f"W/{contact['etag']}"},
    )

    assert response.status_code == 412


async def test_if_match_on_delete_moves_to_the_trash_only_the_version_read(client, headers, contact):
    response = await client.delete(f"{API}/contacts/{contact['id']}", headers=headers | {"If-Match": contact["etag"]})

    assert response.status_code == 204
    assert (await client.get(f"{API}/contacts/{contact['id']}", headers=headers)).status_code == 404


async def test_two_editors_racing_with_one_etag_exactly_one_wins_and_nothing_is_lost(client, db, headers, contact):
    # Separate requests on separate connections at once: the winner's write is whole, the loser gets 412 with the
    # winner's ETag, and reading again then writing with it succeeds.
    async def edit(name: str):
        return await client.patch(
            f"{API}/contacts/{contact['id']}",
            json={"nickname": name, "notes": f"by {name}"},
            headers=headers | {"If-Match": contact["etag"]},
        )

    results = await asyncio.gather(*(edit(f"editor{n}") for n in range(6)))

    statuses = sorted(r.status_code for r in results)
    assert statuses == [200, 412, 412, 412, 412, 412]
    winner = next(r for r in results if r.status_code == 200).json()
    assert all(r.headers["etag"] == winner["etag"] for r in results if r.status_code == 412)
    row = await stored(db, contact["id"])
    assert (row["nickname"], row["notes"], row["version"]) == (winner["nickname"], f"by {winner['nickname']}", 2)
    retry = await client.patch(
        f"{API}/contacts/{contact['id']}", json={"labels": ["retried"]}, headers=headers | {"If-Match": winner["etag"]}
    )
    assert retry.status_code == 200, retry.text
    assert (retry.json()["nickname"], retry.json()["labels"]) == (winner["nickname"], ["retried"])


# -- the trash -----------------------------------------------------------------------------------------------------


async def test_trashed_contact_answers_404_everywhere_and_leaves_lists_and_counts(client, db, owner, headers, contact):
    other = await make_contact(db, owner, first_name="Other", labels=["family"])
    assert (await client.get(f"{API}/contacts", headers=headers)).json()["total"] == 2  # cached page
    assert (await client.get(f"{API}/labels", headers=headers)).json()["labels"][0] == {"name": "family", "contacts": 2}

    deleted = await client.delete(f"{API}/contacts/{contact['id']}", headers=headers)

    assert deleted.status_code == 204
    for method, body in (("GET", None), ("PUT", {"first_name": "X"}), ("PATCH", {"first_name": "X"}), ("DELETE", None)):
        response = await client.request(method, f"{API}/contacts/{contact['id']}", json=body, headers=headers)
        assert (response.status_code, response.json()["error"]) == (404, "ContactNotFound"), method
    page = (await client.get(f"{API}/contacts", headers=headers)).json()
    assert ([item["id"] for item in page["items"]], page["total"]) == ([other.id], 1)
    assert (await client.get(f"{API}/contacts", params={"q": "lovelace"}, headers=headers)).json()["total"] == 0
    assert (await client.get(f"{API}/contacts", params={"label": "family"}, headers=headers)).json()["total"] == 1
    assert (await client.get(f"{API}/labels", headers=headers)).json()["labels"] == [{"name": "family", "contacts": 1}]
    row = await stored(db, contact["id"])
    assert (row["version"], row["deleted_at"] is not None) == (2, True)
    assert await db.scalar(select(ContactCount.contacts)) == 1


async def test_another_users_etag_or_contact_is_404_not_412(client, db, settings, headers, contact):
    intruder = auth_headers(settings, await make_user(db, settings))

    response = await client.patch(
        f"{API}/contacts/{contact['id']}", json={"nickname": "x"}, headers=intruder | {"If-Match": contact["etag"]}
    )

    assert (response.status_code, response.json()["error"]) == (404, "ContactNotFound")
    assert "etag" not in response.headers
