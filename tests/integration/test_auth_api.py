"""Registration, login, token refresh, the current user, and every way a bearer token can be wrong."""

from __future__ import annotations

import base64
import json

import jwt
import pytest
from sqlalchemy import delete, func, select, update

from app.auth.models import RefreshToken
from app.core.db import commit
from app.core.security import TokenPurpose, create_token, decode_token
from app.users.models import Role, User
from tests.factories import DEFAULT_PASSWORD, auth_headers, make_user

API = "/api/v1"
USER_FIELDS = {"id", "email", "role", "is_active", "is_verified", "avatar_url", "created_at"}


def assert_error(response, status: int, error: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"}, body
    assert body["detail"], body
    if error is not None:
        assert body["error"] == error, body
    return body


async def user_rows(db, email: str | None = None) -> list[dict]:
    query = select(User.__table__)
    if email is not None:
        query = query.where(User.__table__.c.email == email.lower())
    return [dict(row) for row in (await db.execute(query)).mappings()]


async def refresh_token_count(db, user_id: int | None = None) -> int:
    query = select(func.count()).select_from(RefreshToken)
    if user_id is not None:
        query = query.where(RefreshToken.user_id == user_id)
    return int(await db.scalar(query) or 0)


async def mark_verified(db, email: str) -> None:
    """Stand-in for following the emailed link: login needs a verified address."""
    await db.execute(update(User).where(User.email == email.lower()).values(is_verified=True))
    await commit(db)


async def login(client, email: str, password: str):
    return await client.post(f"{API}/auth/login", data={"username": email, "password": password})


# -- register ----------------------------------------------------------------------------------------------


async def test_register_returns_201_with_unverified_user(client, db):
    response = await client.post(f"{API}/auth/register", json={"email": "new@example.com", "password": "s3cret-pass"})

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == USER_FIELDS
    assert body["email"] == "new@example.com"
    assert (body["role"], body["is_active"], body["is_verified"], body["avatar_url"]) == ("user", True, False, None)
    [row] = await user_rows(db)
    assert row["id"] == body["id"]
    assert row["email"] == "new@example.com"
    assert row["role"] == "user"
    assert "s3cret-pass" not in row["hashed_password"]


@pytest.mark.parametrize("second_email", ["taken@example.com", "TAKEN@Example.COM", "Taken@example.com"])
async def test_register_taken_email_returns_409(client, db, settings, second_email):
    await make_user(db, settings, email="taken@example.com")

    response = await client.post(f"{API}/auth/register", json={"email": second_email, "password": "another-pass"})

    assert_error(response, 409, "EmailAlreadyRegistered")
    assert len(await user_rows(db)) == 1


@pytest.mark.parametrize(
    "extra",
    [
        {"role": "admin"},
        {"is_active": False},
        {"is_verified": True},
        {"id": 1},
        {"hashed_password": "x"},
        {"token_version": 7},
    ],
    ids=lambda extra: next(iter(extra)),
)
async def test_register_refuses_fields_it_does_not_own(client, db, extra):
    body = {"email": "sneaky@example.com", "password": "s3cret-pass", **extra}

    response = await client.post(f"{API}/auth/register", json=body)

    detail = assert_error(response, 422, "ValidationError")["detail"]
    assert any(next(iter(extra)) in err["loc"] for err in detail), detail
    assert await user_rows(db) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"password": "s3cret-pass"}, "email"),
        ({"email": "a@example.com"}, "password"),
        ({"email": "not-an-email", "password": "s3cret-pass"}, "email"),
        ({"email": "a@example", "password": "s3cret-pass"}, "email"),
        ({"email": "a@example.com", "password": "short7!"}, "password"),
        ({"email": "a@example.com", "password": 12345678}, "password"),
        ({"email": ["a@example.com"], "password": "s3cret-pass"}, "email"),
    ],
    ids=["no-email", "no-password", "invalid-email", "no-tld", "short-password", "int-password", "list-email"],
)
async def test_register_bad_input_returns_422(client, db, body, field):
    response = await client.post(f"{API}/auth/register", json=body)

    detail = assert_error(response, 422, "ValidationError")["detail"]
    assert any(field in err["loc"] for err in detail), detail
    assert await user_rows(db) == []


async def test_register_passphrase_of_300_bytes_then_login_succeeds(client, db):
    passphrase = "é" * 100 + "x" * 99 + "a"
    assert len(passphrase.encode()) == 300

    registered = await client.post(f"{API}/auth/register", json={"email": "long@example.com", "password": passphrase})
    assert registered.status_code == 201, registered.text
    await mark_verified(db, "long@example.com")

    response = await login(client, "long@example.com", passphrase)

    assert response.status_code == 200, response.text
    me = await client.get(f"{API}/users/me", headers={"Authorization": f"Bearer {response.json()['access_token']}"})
    assert me.json()["id"] == registered.json()["id"]


async def test_login_with_300_byte_passphrase_differing_in_last_byte_fails(client, db):
    passphrase = "é" * 100 + "x" * 99 + "a"
    registered = await client.post(f"{API}/auth/register", json={"email": "long@example.com", "password": passphrase})
    assert registered.status_code == 201, registered.text
    await mark_verified(db, "long@example.com")

    response = await login(client, "long@example.com", passphrase[:-1] + "b")

    assert_error(response, 401, "InvalidCredentials")
    assert await refresh_token_count(db) == 0


# -- login -------------------------------------------------------------------------------------------------


async def test_login_returns_bearer_token_pair(client, db, settings):
    user = await make_user(db, settings, email="ann@example.com")

    response = await login(client, "ann@example.com", DEFAULT_PASSWORD)

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access_token", "refresh_token", "token_type"}
    assert body["token_type"] == "bearer"
    assert decode_token(settings, body["access_token"], TokenPurpose.access)["sub"] == str(user.id)
    assert decode_token(settings, body["refresh_token"], TokenPurpose.refresh)["sub"] == str(user.id)
    assert await refresh_token_count(db, user.id) == 1


async def test_login_email_is_case_insensitive(client, db, settings):
    user = await make_user(db, settings, email="ann@example.com")

    response = await login(client, "ANN@Example.com", DEFAULT_PASSWORD)

    assert response.status_code == 200, response.text
    assert decode_token(settings, response.json()["access_token"], TokenPurpose.access)["sub"] == str(user.id)


async def test_login_unknown_email_and_wrong_password_answer_alike(client, db, settings):
    await make_user(db, settings, email="ann@example.com")

    wrong_password = await login(client, "ann@example.com", DEFAULT_PASSWORD + "!")
    unknown_email = await login(client, "nobody@example.com", DEFAULT_PASSWORD)

    assert_error(wrong_password, 401, "InvalidCredentials")
    assert unknown_email.status_code == wrong_password.status_code
    assert unknown_email.json() == wrong_password.json()
    assert unknown_email.headers.get("www-authenticate") == wrong_password.headers.get("www-authenticate")
    assert await refresh_token_count(db) == 0


async def test_login_inactive_user_returns_403(client, db, settings):
    await make_user(db, settings, email="gone@example.com", active=False)

    response = await login(client, "gone@example.com", DEFAULT_PASSWORD)

    assert_error(response, 403)
    assert await refresh_token_count(db) == 0


# -- refresh -----------------------------------------------------------------------------------------------


async def test_refresh_returns_new_working_pair(client, db, settings):
    user = await make_user(db, settings, email="ann@example.com")
    first = (await login(client, "ann@example.com", DEFAULT_PASSWORD)).json()

    response = await client.post(f"{API}/auth/refresh", json={"refresh_token": first["refresh_token"]})

    assert response.status_code == 200, response.text
    pair = response.json()
    assert set(pair) == {"access_token", "refresh_token", "token_type"}
    assert pair["token_type"] == "bearer"
    assert pair["refresh_token"] != first["refresh_token"]
    me = await client.get(f"{API}/users/me", headers={"Authorization": f"Bearer {pair['access_token']}"})
    assert me.status_code == 200
    assert me.json()["id"] == user.id
    assert await refresh_token_count(db, user.id) == 2


async def test_refresh_token_works_only_once(client, db, settings):
    await make_user(db, settings, email="ann@example.com")
    first = (await login(client, "ann@example.com", DEFAULT_PASSWORD)).json()
    assert (await client.post(f"{API}/auth/refresh", json={"refresh_token": first["refresh_token"]})).status_code == 200

    again = await client.post(f"{API}/auth/refresh", json={"refresh_token": first["refresh_token"]})

    assert_error(again, 401)


async def test_refresh_refuses_access_token(client, db, settings):
    user = await make_user(db, settings, email="ann@example.com")
    pair = (await login(client, "ann@example.com", DEFAULT_PASSWORD)).json()

    response = await client.post(f"{API}/auth/refresh", json={"refresh_token": pair["access_token"]})

    assert_error(response, 401)
    assert await refresh_token_count(db, user.id) == 1


async def test_refresh_token_refused_as_bearer_token(client, db, settings):
    await make_user(db, settings, email="ann@example.com")
    pair = (await login(client, "ann@example.com", DEFAULT_PASSWORD)).json()

    response = await client.get(f"{API}/users/me", headers={"Authorization": f"Bearer {pair['refresh_token']}"})

    assert_error(response, 401)
    assert response.headers.get("www-authenticate", "").lower().startswith("bearer")


async def test_refresh_token_of_deleted_user_returns_401(client, db, settings):
    user = await make_user(db, settings, email="ann@example.com")
    pair = (await login(client, "ann@example.com", DEFAULT_PASSWORD)).json()
    await db.execute(delete(User).where(User.id == user.id))
    await commit(db)

    response = await client.post(f"{API}/auth/refresh", json={"refresh_token": pair["refresh_token"]})

    assert_error(response, 401)
    assert await refresh_token_count(db) == 0


# -- the current user --------------------------------------------------------------------------------------


async def test_read_me_returns_profile_without_password_hash(client, db, settings):
    user = await make_user(db, settings, email="ann@example.com", role=Role.admin)

    response = await client.get(f"{API}/users/me", headers=auth_headers(settings, user))

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == USER_FIELDS | {"default_region"}
    assert body["default_region"] is None
    assert (body["id"], body["email"], body["role"]) == (user.id, "ann@example.com", "admin")
    assert (body["is_active"], body["is_verified"], body["avatar_url"]) == (True, True, None)
    assert body["created_at"]
    assert user.hashed_password not in response.text
    assert "hashed_password" not in response.text


async def test_read_me_without_token_returns_401(client, db, settings):
    await make_user(db, settings)

    response = await client.get(f"{API}/users/me")

    assert_error(response, 401)
    assert response.headers.get("www-authenticate", "").lower().startswith("bearer")


async def test_read_me_of_deactivated_user_returns_403(client, db, settings):
    user = await make_user(db, settings, active=False)

    response = await client.get(f"{API}/users/me", headers=auth_headers(settings, user))

    assert_error(response, 403)


# -- bad bearer tokens -------------------------------------------------------------------------------------


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def expired(settings, user) -> str:
    return create_token(settings, TokenPurpose.access, str(user.id), -60, ver=user.token_version)


def wrong_key(settings, user) -> str:
    valid = create_token(settings, TokenPurpose.access, str(user.id), 600, ver=user.token_version)
    return jwt.encode(_claims(valid), "another-secret-" + "y" * 40, algorithm=settings.jwt_algorithm)


def tampered_payload(settings, user) -> str:
    valid = create_token(settings, TokenPurpose.access, str(user.id), 600, ver=user.token_version)
    header, _, signature = valid.split(".")
    return f"{header}.{_b64({**_claims(valid), 'sub': str(user.id + 1)})}.{signature}"


def alg_none(settings, user) -> str:
    valid = create_token(settings, TokenPurpose.access, str(user.id), 600, ver=user.token_version)
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims(valid))}."


def refresh_purpose(settings, user) -> str:
    return create_token(settings, TokenPurpose.refresh, str(user.id), 600, ver=user.token_version, fam="f")


def verify_email_purpose(settings, user) -> str:
    return create_token(settings, TokenPurpose.verify_email, str(user.id), 600, email=user.email)


def wrong_issuer(settings, user) -> str:
    valid = create_token(settings, TokenPurpose.access, str(user.id), 600, ver=user.token_version)
    return jwt.encode({**_claims(valid), "iss": "someone-else"}, settings.jwt_secret.get_secret_value(), "HS256")


def stale_version(settings, user) -> str:
    return create_token(settings, TokenPurpose.access, str(user.id), 600, ver=user.token_version + 1)


def garbage(settings, user) -> str:
    return "not.a.jwt"


def oversized(settings, user) -> str:
    """Validly signed, but far longer than any token the service issues."""
    return create_token(settings, TokenPurpose.access, str(user.id), 600, ver=user.token_version, pad="x" * 8000)


@pytest.mark.parametrize(
    "craft",
    [
        expired,
        wrong_key,
        tampered_payload,
        alg_none,
        refresh_purpose,
        verify_email_purpose,
        wrong_issuer,
        stale_version,
        garbage,
        oversized,
    ],
)
async def test_bad_access_token_returns_401(client, db, settings, craft):
    user = await make_user(db, settings)
    await make_user(db, settings)  # the id a tampered payload points at exists
    token = craft(settings, user)

    response = await client.get(f"{API}/users/me", headers={"Authorization": f"Bearer {token}"})

    assert_error(response, 401)
    contacts = await client.get(f"{API}/contacts", headers={"Authorization": f"Bearer {token}"})
    assert_error(contacts, 401)


async def test_token_of_user_deleted_by_admin_returns_401(client, db, settings):
    admin = await make_user(db, settings, role=Role.admin)
    user = await make_user(db, settings)
    headers = auth_headers(settings, user)
    assert (await client.get(f"{API}/users/me", headers=headers)).status_code == 200  # now cached

    deleted = await client.delete(f"{API}/admin/users/{user.id}", headers=auth_headers(settings, admin))
    assert deleted.status_code == 204, deleted.text

    response = await client.get(f"{API}/users/me", headers=headers)

    assert_error(response, 401)
    assert await user_rows(db, user.email) == []


async def test_token_of_user_deleted_from_database_returns_401(client, db, settings):
    user = await make_user(db, settings)
    headers = auth_headers(settings, user)
    await db.execute(delete(User).where(User.id == user.id))
    await commit(db)

    response = await client.get(f"{API}/users/me", headers=headers)

    assert_error(response, 401)
