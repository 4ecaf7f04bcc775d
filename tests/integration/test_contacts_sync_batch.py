"""Batches and the Idempotency-Key through HTTP: all or nothing, results in order, the failing operation's status
with its index; retries answered once, also when they race; and two editors racing with If-Match."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

import app.core.db as core_db
from app.contacts.models import Contact, ContactCount, IdempotencyKey
from app.contacts.trash import clean_up
from app.core.db import utcnow
from tests.factories import auth_headers, make_user
from tests.sync_helpers import API, book, held_commits


@pytest.fixture
async def owner(db, settings):
    return await make_user(db, settings)


@pytest.fixture
def headers(settings, owner):
    return auth_headers(settings, owner)


async def create(client, headers, body: dict) -> dict:
    response = await client.post(f"{API}/contacts", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def contacts_of(db, user_id: int) -> int:
    counted = await db.scalar(select(func.count()).select_from(Contact).where(Contact.user_id == user_id))
    await db.commit()
    return int(counted or 0)


async def head_of(db, user_id: int) -> int:
    seq = await db.scalar(select(ContactCount.change_seq).where(ContactCount.user_id == user_id))
    await db.commit()
    return int(seq or 0)


async def batch(client, headers, operations: list[dict], **extra_headers: str):
    return await client.post(
        f"{API}/contacts/batch", json={"operations": operations}, headers={**headers, **extra_headers}
    )


# -- batch --------------------------------------------------------------------------------------------------------


async def test_a_batch_applies_every_operation_in_order(client, headers, db, owner):
    ada, bob = (
        await create(client, headers, {"first_name": "Ada"}),
        await create(client, headers, {"first_name": "Bob"}),
    )

    response = await batch(
        client,
        headers,
        [
            {"op": "create", "contact": {"first_name": "Cyd", "email": "cyd@example.com"}},
            {"op": "update", "id": ada["id"], "if_match": ada["etag"], "contact": {"last_name": "Lovelace"}},
            {"op": "delete", "id": bob["id"]},
        ],
    )

    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [(r["index"], r["status"]) for r in results] == [(0, 201), (1, 200), (2, 204)]
    assert results[0]["contact"]["first_name"] == "Cyd"
    assert results[1]["contact"]["last_name"] == "Lovelace"
    assert "contact" not in results[2] or results[2]["contact"] is None
    live = await book(db, owner.id)
    assert sorted(live) == sorted([ada["id"], results[0]["contact"]["id"]])
    assert live[ada["id"]] == results[1]["contact"]
    trash = (await client.get(f"{API}/contacts/trash", headers=headers)).json()
    assert [item["id"] for item in trash["items"]] == [bob["id"]]


@pytest.mark.parametrize(
    ("failing", "status", "error"),
    [
        ({"op": "update", "id": 999_999, "contact": {"last_name": "X"}}, 404, "ContactNotFound"),
        ({"op": "create", "contact": {"first_name": "Dup", "email": "ada@example.com"}}, 409, "ContactEmailExists"),
        ({"op": "delete", "id": "ADA", "if_match": '"0-0"'}, 412, "PreconditionFailed"),
    ],
)
async def test_a_failing_operation_applies_nothing_and_answers_its_status_and_index(
    client, headers, db, owner, failing, status, error
):
    ada = await create(client, headers, {"first_name": "Ada", "email": "ada@example.com"})
    failing = {**failing, "id": ada["id"]} if failing.get("id") == "ADA" else failing
    count, head = await contacts_of(db, owner.id), await head_of(db, owner.id)

    response = await batch(
        client,
        headers,
        [
            {"op": "create", "contact": {"first_name": "Applied first"}},
            {"op": "update", "id": ada["id"], "contact": {"last_name": "Changed"}},
            failing,
        ],
    )

    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error
    assert body["index"] == 2
    assert body["detail"]
    assert await contacts_of(db, owner.id) == count
    assert await head_of(db, owner.id) == head
    assert (await client.get(f"{API}/contacts/{ada['id']}", headers=headers)).json()["last_name"] is None


async def test_an_invalid_operation_answers_422_with_its_index_and_applies_nothing(client, headers, db, owner):
    response = await batch(
        client, headers, [{"op": "create", "contact": {"first_name": "Ok"}}, {"op": "create", "contact": {}}]
    )

    assert response.status_code == 422
    assert response.json()["error"] == "ValidationError"
    assert response.json()["index"] == 1
    assert response.json()["detail"][0]["loc"][:3] == ["body", "operations", 1]
    assert await contacts_of(db, owner.id) == 0


async def test_a_batch_holds_at_most_100_operations(client, headers, db, owner):
    operations = [{"op": "create", "contact": {"first_name": f"C{n}"}} for n in range(101)]

    response = await batch(client, headers, operations)

    assert response.status_code == 422
    assert response.json()["error"] == "ValidationError"
    assert await contacts_of(db, owner.id) == 0


async def test_each_operation_of_a_batch_counts_against_the_write_rate_limit(client, headers, db, owner, settings):
    operations = [{"op": "create", "contact": {"first_name": f"C{n}"}} for n in range(100)]
    assert (await batch(client, headers, operations)).status_code == 200

    second = await batch(client, headers, operations[:30])

    assert second.status_code == 429, settings.rate_limit_contacts_write
    assert second.json()["error"] == "RateLimited"
    assert await contacts_of(db, owner.id) == 100


# -- Idempotency-Key ----------------------------------------------------------------------------------------------


async def test_a_retry_with_the_same_key_answers_the_first_response_and_creates_nothing_more(
    client, headers, db, owner
):
    body = {"first_name": "Ada", "email": "ada@example.com"}
    keyed = {**headers, "Idempotency-Key": "create-ada-1"}

    first = await client.post(f"{API}/contacts", json=body, headers=keyed)
    retry = await client.post(f"{API}/contacts", json=body, headers=keyed)

    assert (first.status_code, retry.status_code) == (201, 201)
    assert retry.json() == first.json()
    assert retry.headers.get("Idempotent-Replayed") == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert await contacts_of(db, owner.id) == 1


async def test_concurrent_requests_with_one_key_create_one_contact(client, headers, db, owner):
    body = {"first_name": "Ada", "email": "ada@example.com"}
    keyed = {**headers, "Idempotency-Key": "create-ada-race"}

    responses = await asyncio.gather(*(client.post(f"{API}/contacts", json=body, headers=keyed) for _ in range(8)))

    assert [r.status_code for r in responses] == [201] * 8, [r.text for r in responses]
    assert len({r.text for r in responses}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == 7
    assert await contacts_of(db, owner.id) == 1


async def test_a_key_held_by_an_open_request_makes_its_retry_wait_for_the_first_answer(
    client, headers, db, owner, monkeypatch
):
    body = {"first_name": "Ada"}
    keyed = {**headers, "Idempotency-Key": "slow-create"}
    async with held_commits(monkeypatch) as hold:
        release = await hold()
        first = asyncio.create_task(client.post(f"{API}/contacts", json=body, headers=keyed))
        await asyncio.wait_for(release.reached.wait(), 5)  # the first has created, not committed
        retry = asyncio.create_task(client.post(f"{API}/contacts", json=body, headers=keyed))
        await asyncio.sleep(0.3)
        assert not retry.done()  # waiting for the first, not running a second create
        release.set()
        answers = [await first, await retry]

    assert [a.status_code for a in answers] == [201, 201]
    assert answers[0].json() == answers[1].json()
    assert await contacts_of(db, owner.id) == 1


async def test_the_same_key_with_another_body_answers_422(client, headers, db, owner):
    keyed = {**headers, "Idempotency-Key": "k-1"}
    await client.post(f"{API}/contacts", json={"first_name": "Ada"}, headers=keyed)

    other = await client.post(f"{API}/contacts", json={"first_name": "Bob"}, headers=keyed)
    on_batch = await batch(
        client, headers, [{"op": "create", "contact": {"first_name": "Ada"}}], **{"Idempotency-Key": "k-1"}
    )

    for response in (other, on_batch):
        assert response.status_code == 422
        assert response.json()["error"] == "IdempotencyKeyReused"
    assert await contacts_of(db, owner.id) == 1


async def test_keys_are_per_user(client, headers, db, owner, settings):
    other_user = await make_user(db, settings)
    body = {"first_name": "Ada"}

    mine = await client.post(f"{API}/contacts", json=body, headers={**headers, "Idempotency-Key": "shared"})
    theirs = await client.post(
        f"{API}/contacts", json=body, headers={**auth_headers(settings, other_user), "Idempotency-Key": "shared"}
    )

    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert "Idempotent-Replayed" not in theirs.headers
    assert theirs.json()["user_id"] == other_user.id
    assert mine.json()["id"] != theirs.json()["id"]


async def test_a_failed_request_stores_nothing_so_its_retry_runs(client, headers, db, owner):
    taken = await create(client, headers, {"first_name": "Taken", "email": "ada@example.com"})
    keyed = {**headers, "Idempotency-Key": "after-409"}
    body = {"first_name": "Ada", "email": "ada@example.com"}
    assert (await client.post(f"{API}/contacts", json=body, headers=keyed)).status_code == 409
    await client.delete(f"{API}/contacts/{taken['id']}", headers=headers)

    retry = await client.post(f"{API}/contacts", json=body, headers=keyed)

    assert retry.status_code == 201
    assert "Idempotent-Replayed" not in retry.headers


async def test_a_key_older_than_24_hours_is_forgotten(client, headers, db, owner, settings, database):
    keyed = {**headers, "Idempotency-Key": "yesterday"}
    await client.post(f"{API}/contacts", json={"first_name": "Ada"}, headers=keyed)
    await db.execute(update(IdempotencyKey).values(created_at=utcnow() - timedelta(hours=25)))
    await db.commit()

    again = await client.post(f"{API}/contacts", json={"first_name": "Ada"}, headers=keyed)

    assert again.status_code == 201
    assert "Idempotent-Replayed" not in again.headers
    assert await contacts_of(db, owner.id) == 2
    await db.execute(update(IdempotencyKey).values(created_at=utcnow() - timedelta(hours=25)))
    await db.commit()
    assert (await clean_up(database, settings)).idempotency_keys_pruned == 1
    assert await db.scalar(select(func.count()).select_from(IdempotencyKey)) == 0


async def test_a_batch_with_a_key_is_applied_once(client, headers, db, owner):
    operations = [{"op": "create", "contact": {"first_name": f"C{n}"}} for n in range(3)]

    answers = await asyncio.gather(
        *(batch(client, headers, operations, **{"Idempotency-Key": "import-1"}) for _ in range(4))
    )

    assert [a.status_code for a in answers] == [200] * 4
    assert len({a.text for a in answers}) == 1
    assert await contacts_of(db, owner.id) == 3


@pytest.mark.parametrize("key", ["", "x" * 256, "has space", "tab\tkey", "ünï".encode("latin-1")])
async def test_a_malformed_key_answers_422(client, headers, db, owner, key):
    response = await client.post(
        f"{API}/contacts", json={"first_name": "Ada"}, headers={**headers, "Idempotency-Key": key}
    )

    assert response.status_code == 422
    assert await contacts_of(db, owner.id) == 0


# -- If-Match ------------------------------------------------------------------------------------------------------


async def test_two_editors_racing_with_if_match_one_wins_the_other_gets_412_and_nothing_is_lost(
    client, headers, db, owner, monkeypatch
):
    ada = await create(client, headers, {"first_name": "Ada"})
    etag = (await client.get(f"{API}/contacts/{ada['id']}", headers=headers)).headers["ETag"]

    async with held_commits(monkeypatch) as hold:
        release = await hold()
        first = asyncio.create_task(
            client.patch(
                f"{API}/contacts/{ada['id']}", json={"last_name": "One"}, headers={**headers, "If-Match": etag}
            )
        )
        await asyncio.wait_for(release.reached.wait(), 5)  # editor one has written, not committed
        second = asyncio.create_task(
            client.patch(f"{API}/contacts/{ada['id']}", json={"nickname": "Two"}, headers={**headers, "If-Match": etag})
        )
        await asyncio.sleep(0.3)
        release.set()
        one, two = await first, await second

    assert one.status_code == 200, one.text
    assert two.status_code == 412, two.text
    assert two.json()["error"] == "PreconditionFailed"
    assert two.headers["ETag"] == one.headers["ETag"] != etag
    current = (await client.get(f"{API}/contacts/{ada['id']}", headers=headers)).json()
    assert (current["last_name"], current["nickname"]) == ("One", None)
    # The loser reads again and re-applies its change: both edits are kept.
    retried = await client.patch(
        f"{API}/contacts/{ada['id']}", json={"nickname": "Two"}, headers={**headers, "If-Match": two.headers["ETag"]}
    )
    assert retried.status_code == 200
    assert (retried.json()["last_name"], retried.json()["nickname"]) == ("One", "Two")


async def test_many_editors_racing_with_one_etag_exactly_one_wins(client, headers, db, owner, monkeypatch):
    ada = await create(client, headers, {"first_name": "Ada"})
    etag = ada["etag"]
    real_commit = core_db.commit

    async def slow_commit(session) -> None:  # every transaction stays open a while: the editors overlap
        if session.in_transaction():
            await asyncio.sleep(0.05)
        await real_commit(session)

    monkeypatch.setattr(core_db, "commit", slow_commit)

    answers = await asyncio.gather(
        *(
            client.patch(
                f"{API}/contacts/{ada['id']}", json={"last_name": f"E{n}"}, headers={**headers, "If-Match": etag}
            )
            for n in range(6)
        )
    )

    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 412, 412, 412, 412, 412], [a.text for a in answers]
    winner = next(a for a in answers if a.status_code == 200).json()
    assert (await client.get(f"{API}/contacts/{ada['id']}", headers=headers)).json()["last_name"] == winner["last_name"]
