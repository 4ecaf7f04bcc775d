"""App passwords: made, listed and revoked through the API; checked as HTTP Basic credentials would be (email and
app password), never with the account password; ended by a password change, demotion, deactivation or revoke."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.auth import app_passwords
from app.auth.models import AppPassword
from app.auth.principal import InactiveAccount
from app.core.cache import cache
from app.core.db import commit
from app.users import service as users_service
from app.users.models import Role
from tests.factories import DEFAULT_PASSWORD, auth_headers, make_user

API = "/api/v1"
ROUTE = f"{API}/users/me/app-passwords"


@pytest.fixture
async def owner(db, settings):
    return await make_user(db, settings, email="ada@example.com")


@pytest.fixture
def headers(settings, owner):
    return auth_headers(settings, owner)


async def make(client, headers, name="Phone") -> dict:
    response = await client.post(ROUTE, json={"name": name}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def check(db, settings, email: str, password: str):
    db.expire_all()  # as a request's own session would: no user row remembered from earlier steps
    try:
        return await app_passwords.authenticate(db, settings, users_service.accounts, email, password)
    finally:
        await commit(db)


async def test_a_new_app_password_is_shown_once_and_stored_only_as_a_keyed_hash(client, db, settings, headers):
    created = await make(client, headers, "  Thunderbird ")

    assert created["name"] == "Thunderbird"
    password = created["password"]
    assert len(password.replace("-", "")) == 24
    listed = (await client.get(ROUTE, headers=headers)).json()
    assert listed == [
        {"id": created["id"], "name": "Thunderbird", "created_at": created["created_at"], "last_used_at": None}
    ]
    stored = (await db.execute(select(AppPassword))).scalar_one()
    assert password not in stored.digest
    assert stored.digest == app_passwords.digest(settings, password)
    assert len(stored.digest) == 64


async def test_email_and_app_password_authenticate_and_record_the_use(client, db, settings, headers, owner):
    owner_id = owner.id
    password = (await make(client, headers))["password"]

    user = await check(db, settings, "ADA@example.com", password)

    assert user is not None
    assert user.id == owner_id
    # Typed as a person might, in capitals and without dashes.
    assert await check(db, settings, "ada@example.com", password.replace("-", "").upper()) is not None
    assert (await client.get(ROUTE, headers=headers)).json()[0]["last_used_at"] is not None


async def test_the_account_password_a_wrong_one_or_another_email_never_authenticate(client, db, settings, headers):
    password = (await make(client, headers))["password"]
    other = await make_user(db, settings, email="bob@example.com")
    theirs = (await make(client, auth_headers(settings, other)))["password"]

    assert await check(db, settings, "ada@example.com", DEFAULT_PASSWORD) is None
    assert await check(db, settings, "ada@example.com", password[:-1] + ("a" if password[-1] != "a" else "b")) is None
    assert await check(db, settings, "bob@example.com", password) is None
    assert await check(db, settings, "ada@example.com", theirs) is None
    assert await check(db, settings, "ada@example.com", "") is None
    assert await check(db, settings, "ada@example.com", "x" * 10_000) is None


async def test_a_password_change_ends_every_app_password(client, db, settings, headers):
    password = (await make(client, headers))["password"]

    response = await client.put(
        f"{API}/users/me/password",
        json={"current_password": DEFAULT_PASSWORD, "new_password": "a brand new passphrase"},
        headers=headers,
    )

    assert response.status_code == 200, response.text
    assert await check(db, settings, "ada@example.com", password) is None
    fresh = {"Authorization": f"Bearer {response.json()['access_token']}"}
    assert (await client.get(ROUTE, headers=fresh)).json() == []


@pytest.mark.parametrize("change", [{"role": Role.admin}, {"is_active": False}], ids=["role", "deactivation"])
async def test_a_role_change_or_deactivation_ends_every_app_password(client, db, settings, headers, owner, change):
    password = (await make(client, headers))["password"]

    await users_service.update_user(db, owner, **change)
    await commit(db)

    assert await check(db, settings, "ada@example.com", password) is None


async def test_a_deactivated_account_is_refused_even_with_a_current_app_password(client, db, settings, headers, owner):
    """Deactivation ends app passwords (token_version); should a row still match, the account's state refuses it."""
    password = (await make(client, headers))["password"]
    owner.is_active = False  # straight in the table: token_version unchanged, the app password still current
    await commit(db)
    await cache.invalidate_user_cache(owner.id)

    with pytest.raises(InactiveAccount):
        await check(db, settings, "ada@example.com", password)


async def test_revoking_ends_it_and_another_users_cannot_be_revoked(client, db, settings, headers):
    mine = await make(client, headers)
    other = await make_user(db, settings, email="bob@example.com")
    theirs = await make(client, auth_headers(settings, other))

    foreign = await client.delete(f"{ROUTE}/{theirs['id']}", headers=headers)
    revoked = await client.delete(f"{ROUTE}/{mine['id']}", headers=headers)
    again = await client.delete(f"{ROUTE}/{mine['id']}", headers=headers)

    assert (foreign.status_code, foreign.json()["error"]) == (404, "AppPasswordNotFound")
    assert revoked.status_code == 204
    assert again.status_code == 404
    assert await check(db, settings, "ada@example.com", mine["password"]) is None
    assert await check(db, settings, "bob@example.com", theirs["password"]) is not None


async def test_at_most_fifty_and_a_name_is_required(client, headers):
    for n in range(app_passwords.MAX_APP_PASSWORDS):
        await make(client, headers, f"device {n}")

    over = await client.post(ROUTE, json={"name": "one more"}, headers=headers)
    blank = await client.post(ROUTE, json={"name": "   "}, headers=headers)

    assert (over.status_code, over.json()["error"]) == (409, "TooManyAppPasswords")
    assert blank.status_code == 422
    assert (await client.post(ROUTE, json={"name": "x"})).status_code == 401
