"""Accounts end to end: registration, email verification, password reset and change, and answers that do not
reveal whether an address has an account."""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.models import RefreshToken
from app.auth.tokens import password_fingerprint, reset_password_token, verify_email_token
from app.core.config import Settings, app_settings
from app.core.security import TokenPurpose, create_token, hash_password, verify_password
from app.users import passwords as password_service
from app.users.models import User
from tests.factories import DEFAULT_PASSWORD, auth_headers, make_user

API = "/api/v1"
NEW_PASSWORD = "a brand new passphrase"
ACCEPTED = {"detail": "If the address belongs to an account that needs it, a message is on its way."}
PUBLIC_USER_FIELDS = {"id", "email", "role", "is_active", "is_verified", "avatar_url", "created_at"}


# -- helpers ----------------------------------------------------------------------------------------------------


async def login(client: httpx.AsyncClient, email: str, password: str = DEFAULT_PASSWORD) -> httpx.Response:
    return await client.post(f"{API}/auth/login", data={"username": email, "password": password})


async def reload_user(db: AsyncSession, user_id: int) -> User | None:
    """The user's row as committed now (ends the test session's transaction so the app's commits are seen)."""
    await db.commit()
    return await db.get(User, user_id, populate_existing=True)


def only_link(message: EmailMessage) -> str:
    links = re.findall(r"https?://\S+", message.get_content())
    assert len(links) == 1, links
    return links[0]


def token_of(link: str) -> str:
    return parse_qs(urlsplit(link).query)["token"][0]


async def register(client: httpx.AsyncClient, email: str, **headers: str) -> httpx.Response:
    return await client.post(
        f"{API}/auth/register", json={"email": email, "password": DEFAULT_PASSWORD}, headers=headers
    )


# -- registration -------------------------------------------------------------------------------------------------


async def test_register_creates_unverified_user_with_role_user(client, db, settings):
    response = await register(client, "Ada@Example.com")

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == PUBLIC_USER_FIELDS
    assert body["email"] == "ada@example.com"
    assert body["role"] == "user"
    assert body["is_verified"] is False
    assert body["is_active"] is True
    assert body["avatar_url"] is None
    row = await reload_user(db, body["id"])
    assert row is not None
    assert (row.email, row.role, row.is_verified) == ("ada@example.com", "user", False)
    assert await verify_password(settings, DEFAULT_PASSWORD, row.hashed_password)


@pytest.mark.parametrize("extra", [{"role": "admin"}, {"is_verified": True}, {"is_active": True}])
async def test_register_with_a_privileged_field_returns_422_and_creates_no_user(client, db, extra):
    response = await client.post(
        f"{API}/auth/register", json={"email": "mallory@example.com", "password": DEFAULT_PASSWORD, **extra}
    )

    assert response.status_code == 422, response.text
    assert response.json()["error"] == "ValidationError"
    assert [e["loc"] for e in response.json()["detail"]] == [["body", *extra]]
    await db.commit()
    assert await db.scalar(select(func.count()).select_from(User)) == 0


async def test_register_existing_email_in_other_case_returns_409(client, db, settings):
    await make_user(db, settings, email="taken@example.com")

    response = await register(client, "TAKEN@example.com")

    assert response.status_code == 409, response.text
    assert response.json()["error"] == "EmailAlreadyRegistered"
    await db.commit()
    assert await db.scalar(select(func.count()).select_from(User)) == 1


# -- email verification -------------------------------------------------------------------------------------------


async def test_register_mails_verification_link_built_from_public_base_url_not_host_header(client, mailbox):
    response = await register(client, "ada@example.com", Host="evil.example", **{"X-Forwarded-Host": "evil.example"})

    assert response.status_code == 201, response.text
    assert response.request.headers["host"] == "evil.example"
    (message,) = await mailbox.wait_for("ada@example.com")
    assert message["Subject"] == "Confirm your email address"
    link = only_link(message)
    assert link.startswith("http://contacts.test/verify-email?token="), link
    assert "evil.example" not in message.get_content()


async def test_verification_link_marks_user_verified(client, db, mailbox):
    user_id = (await register(client, "ada@example.com")).json()["id"]
    (message,) = await mailbox.wait_for("ada@example.com")
    link = only_link(message)

    # The link opens the web page; the JSON route answers the same token for API clients.
    response = await client.get(link.removeprefix("http://contacts.test"))

    assert response.status_code == 200, response.text
    assert "Your email address is confirmed" in response.text
    api = await client.get("/api/v1/auth/verify-email", params={"token": token_of(link)})
    assert api.status_code == 200, api.text
    assert api.json()["id"] == user_id
    assert api.json()["is_verified"] is True
    row = await reload_user(db, user_id)
    assert row is not None
    assert row.is_verified is True
    assert (await login(client, "ada@example.com")).status_code == 200


async def test_login_of_unverified_user_returns_403_with_clear_message(client, db, settings):
    user = await make_user(db, settings, verified=False)

    response = await login(client, user.email)

    assert response.status_code == 403, response.text
    body = response.json()
    assert body["error"] == "EmailNotVerified"
    assert "Verify your email address" in body["detail"]
    assert "/auth/resend-verification" in body["detail"]
    await db.commit()
    assert await db.scalar(select(func.count()).select_from(RefreshToken)) == 0


async def test_login_of_unverified_user_succeeds_when_verification_is_not_required(
    client, db, settings, app, monkeypatch
):
    relaxed = settings.model_copy(update={"require_email_verification": False})
    monkeypatch.setitem(app.dependency_overrides, app_settings, lambda: relaxed)
    user = await make_user(db, settings, verified=False)

    response = await login(client, user.email)

    assert response.status_code == 200, response.text
    assert set(response.json()) == {"access_token", "refresh_token", "token_type"}


async def test_verify_token_for_a_changed_email_returns_400(client, db, settings):
    user = await make_user(db, settings, email="old@example.com", verified=False)
    token = verify_email_token(settings, user.id, "old@example.com")
    user.email = "new@example.com"
    await db.commit()

    response = await client.get(f"{API}/auth/verify-email", params={"token": token})

    assert response.status_code == 400, response.text
    assert response.json()["error"] == "InvalidVerificationToken"
    row = await reload_user(db, user.id)
    assert row is not None
    assert row.is_verified is False


async def test_tampered_verify_token_returns_400(client, db, settings):
    user = await make_user(db, settings, verified=False)
    header, payload, signature = verify_email_token(settings, user.id, user.email).split(".")
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")

    response = await client.get(f"{API}/auth/verify-email", params={"token": f"{header}.{payload}.{flipped}"})

    assert response.status_code == 400, response.text
    assert response.json()["error"] == "InvalidVerificationToken"
    row = await reload_user(db, user.id)
    assert row is not None
    assert row.is_verified is False


async def test_resend_verification_mails_a_new_working_link(client, db, settings, mailbox):
    user = await make_user(db, settings, verified=False)

    response = await client.post(f"{API}/auth/resend-verification", json={"email": user.email})

    assert response.status_code == 202, response.text
    assert response.json() == ACCEPTED
    (message,) = await mailbox.wait_for(user.email)
    link = only_link(message)
    assert link.startswith("http://contacts.test/verify-email?token=")
    assert (await client.get(f"{API}/auth/verify-email", params={"token": token_of(link)})).status_code == 200
    row = await reload_user(db, user.id)
    assert row is not None
    assert row.is_verified is True


async def test_resend_verification_answers_alike_for_unverified_verified_and_unknown_email(
    client, db, settings, mailbox, app
):
    unverified = await make_user(db, settings, verified=False)
    verified = await make_user(db, settings, verified=True)

    responses = [
        await client.post(f"{API}/auth/resend-verification", json={"email": email})
        for email in (unverified.email, verified.email, "nobody@example.com")
    ]

    assert {r.status_code for r in responses} == {202}
    assert {r.content for r in responses} == {responses[0].content}
    assert responses[0].json() == ACCEPTED
    await app.state.mailer.drain()
    assert len(mailbox.to(unverified.email)) == 1
    assert mailbox.to(verified.email) == []
    assert mailbox.to("nobody@example.com") == []


# -- password reset -----------------------------------------------------------------------------------------------


async def request_reset_token(client: httpx.AsyncClient, mailbox: Any, email: str, count: int = 1) -> str:
    response = await client.post(f"{API}/auth/forgot-password", json={"email": email})
    assert response.status_code == 202, response.text
    messages = await mailbox.wait_for(email, count)
    return token_of(only_link(messages[count - 1]))


async def test_forgot_password_mails_reset_link_built_from_public_base_url(client, db, settings, mailbox):
    user = await make_user(db, settings)

    response = await client.post(
        f"{API}/auth/forgot-password", json={"email": user.email}, headers={"Host": "evil.example"}
    )

    assert response.status_code == 202, response.text
    assert response.request.headers["host"] == "evil.example"
    assert response.json() == ACCEPTED
    (message,) = await mailbox.wait_for(user.email)
    assert message["Subject"] == "Reset your password"
    assert only_link(message).startswith("http://contacts.test/reset-password?token=")


async def test_reset_password_with_mailed_token_sets_new_password(client, db, settings, mailbox):
    user = await make_user(db, settings)
    token = await request_reset_token(client, mailbox, user.email)

    response = await client.post(f"{API}/auth/reset-password", json={"token": token, "new_password": NEW_PASSWORD})

    assert response.status_code == 204, response.text
    assert response.content == b""
    row = await reload_user(db, user.id)
    assert row is not None
    assert await verify_password(settings, NEW_PASSWORD, row.hashed_password)
    assert (await login(client, user.email, NEW_PASSWORD)).status_code == 200
    assert (await login(client, user.email, DEFAULT_PASSWORD)).status_code == 401


async def test_reset_token_works_only_once(client, db, settings, mailbox):
    user = await make_user(db, settings)
    token = await request_reset_token(client, mailbox, user.email)
    first = await client.post(f"{API}/auth/reset-password", json={"token": token, "new_password": NEW_PASSWORD})
    assert first.status_code == 204, first.text

    second = await client.post(f"{API}/auth/reset-password", json={"token": token, "new_password": "another one 123"})

    assert second.status_code == 400, second.text
    assert second.json()["error"] == "InvalidResetToken"
    row = await reload_user(db, user.id)
    assert row is not None
    assert await verify_password(settings, NEW_PASSWORD, row.hashed_password)


async def test_reset_token_works_only_once_when_used_concurrently(client, db, settings, monkeypatch):
    # Production argon2 spends tens of milliseconds between the token check and the write; the suite's hashing
    # is cheap, so give it back a realistic duration to make the window the two requests race in reliable.
    async def realistic_hash(settings: Settings, password: str) -> str:
        await asyncio.sleep(0.1)
        return await hash_password(settings, password)

    monkeypatch.setattr(password_service, "hash_password", realistic_hash)
    user = await make_user(db, settings)
    token = reset_password_token(settings, user.id, user.hashed_password)
    passwords = ["first new password", "second new password"]

    responses = await asyncio.gather(
        *(client.post(f"{API}/auth/reset-password", json={"token": token, "new_password": p}) for p in passwords)
    )

    statuses = [r.status_code for r in responses]
    assert sorted(statuses) == [204, 400], [r.text for r in responses]
    row = await reload_user(db, user.id)
    assert row is not None
    assert await verify_password(settings, passwords[statuses.index(204)], row.hashed_password)


async def test_using_one_reset_token_kills_the_other_outstanding_ones(client, db, settings, mailbox):
    user = await make_user(db, settings)
    older = await request_reset_token(client, mailbox, user.email, 1)
    newer = await request_reset_token(client, mailbox, user.email, 2)
    assert (
        await client.post(f"{API}/auth/reset-password", json={"token": newer, "new_password": NEW_PASSWORD})
    ).status_code == 204

    response = await client.post(f"{API}/auth/reset-password", json={"token": older, "new_password": "another 12345"})

    assert response.status_code == 400, response.text
    row = await reload_user(db, user.id)
    assert row is not None
    assert await verify_password(settings, NEW_PASSWORD, row.hashed_password)


async def test_expired_reset_token_returns_400(client, db, settings):
    user = await make_user(db, settings)
    token = create_token(
        settings,
        TokenPurpose.reset_password,
        str(user.id),
        1,
        pwd=password_fingerprint(settings, user.hashed_password),
    )
    await asyncio.sleep(1.05)  # exp is whole seconds: at most 1 s away

    response = await client.post(f"{API}/auth/reset-password", json={"token": token, "new_password": NEW_PASSWORD})

    assert response.status_code == 400, response.text
    assert response.json()["error"] == "InvalidResetToken"
    row = await reload_user(db, user.id)
    assert row is not None
    assert await verify_password(settings, DEFAULT_PASSWORD, row.hashed_password)


async def test_reset_token_dies_when_password_is_changed(client, db, settings):
    user = await make_user(db, settings)
    token = reset_password_token(settings, user.id, user.hashed_password)
    changed = await client.put(
        f"{API}/users/me/password",
        json={"current_password": DEFAULT_PASSWORD, "new_password": NEW_PASSWORD},
        headers=auth_headers(settings, user),
    )
    assert changed.status_code == 200, changed.text

    response = await client.post(
        f"{API}/auth/reset-password", json={"token": token, "new_password": "attacker's choice"}
    )

    assert response.status_code == 400, response.text
    assert response.json()["error"] == "InvalidResetToken"
    row = await reload_user(db, user.id)
    assert row is not None
    assert await verify_password(settings, NEW_PASSWORD, row.hashed_password)


async def test_forgot_password_answers_alike_for_existing_inactive_and_unknown_email(
    client, db, settings, mailbox, app
):
    active = await make_user(db, settings)
    inactive = await make_user(db, settings, active=False)

    responses = [
        await client.post(f"{API}/auth/forgot-password", json={"email": email})
        for email in (active.email, inactive.email, "nobody@example.com")
    ]

    assert {r.status_code for r in responses} == {202}
    assert {r.content for r in responses} == {responses[0].content}
    assert responses[0].json() == ACCEPTED
    assert {r.headers["content-type"] for r in responses} == {"application/json"}
    await app.state.mailer.drain()
    assert len(mailbox.to(active.email)) == 1
    assert mailbox.to(inactive.email) == []
    assert mailbox.to("nobody@example.com") == []


async def test_forgot_password_takes_about_as_long_for_unknown_as_for_existing_email(db, settings, app, mailbox):
    known = [(await make_user(db, settings)).email for _ in range(10)]
    unknown = [f"nobody{i}@example.com" for i in range(10)]
    durations: dict[str, list[float]] = {"known": [], "unknown": []}

    # One client address per group keeps both under the per-address limit (each address is allowed 20/hour).
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("10.9.0.1", 1)), base_url="http://t") as a,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("10.9.0.2", 1)), base_url="http://t") as b,
    ):
        await a.post(f"{API}/auth/forgot-password", json={"email": "warm-up@example.com"})
        for known_email, unknown_email in zip(known, unknown, strict=True):
            for group, http, email in (("known", a, known_email), ("unknown", b, unknown_email)):
                started = time.perf_counter()
                response = await http.post(f"{API}/auth/forgot-password", json={"email": email})
                durations[group].append(time.perf_counter() - started)
                assert response.status_code == 202, response.text

    difference = abs(statistics.median(durations["known"]) - statistics.median(durations["unknown"]))
    assert difference < 0.05, durations
    await app.state.mailer.drain()
    assert all(len(mailbox.to(email)) == 1 for email in known)
    assert all(mailbox.to(email) == [] for email in unknown)


# -- password change ----------------------------------------------------------------------------------------------


async def test_change_password_returns_a_new_token_pair_that_works(client, db, settings):
    user = await make_user(db, settings)

    response = await client.put(
        f"{API}/users/me/password",
        json={"current_password": DEFAULT_PASSWORD, "new_password": NEW_PASSWORD},
        headers=auth_headers(settings, user),
    )

    assert response.status_code == 200, response.text
    pair = response.json()
    assert set(pair) == {"access_token", "refresh_token", "token_type"}
    assert pair["token_type"] == "bearer"
    me = await client.get(f"{API}/users/me", headers={"Authorization": f"Bearer {pair['access_token']}"})
    assert me.status_code == 200
    assert me.json()["id"] == user.id
    refreshed = await client.post(f"{API}/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    row = await reload_user(db, user.id)
    assert row is not None
    assert await verify_password(settings, NEW_PASSWORD, row.hashed_password)
    assert (await login(client, user.email, NEW_PASSWORD)).status_code == 200


async def test_change_password_with_wrong_current_password_returns_400_and_changes_nothing(client, db, settings):
    user = await make_user(db, settings)
    headers = auth_headers(settings, user)

    response = await client.put(
        f"{API}/users/me/password",
        json={"current_password": "not my password", "new_password": NEW_PASSWORD},
        headers=headers,
    )

    assert response.status_code == 400, response.text
    assert response.json() == {"error": "WrongCurrentPassword", "detail": "The current password is incorrect."}
    row = await reload_user(db, user.id)
    assert row is not None
    assert row.token_version == 0
    assert await verify_password(settings, DEFAULT_PASSWORD, row.hashed_password)
    assert (await client.get(f"{API}/users/me", headers=headers)).status_code == 200


async def test_change_password_without_token_returns_401(client, db, settings):
    user = await make_user(db, settings)

    response = await client.put(
        f"{API}/users/me/password", json={"current_password": DEFAULT_PASSWORD, "new_password": NEW_PASSWORD}
    )

    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    row = await reload_user(db, user.id)
    assert row is not None
    assert await verify_password(settings, DEFAULT_PASSWORD, row.hashed_password)


# -- enumeration --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["verified", "unverified", "inactive"])
async def test_login_with_wrong_password_answers_as_for_unknown_email(client, db, settings: Settings, state):
    user = await make_user(db, settings, verified=state != "unverified", active=state != "inactive")

    existing = await login(client, user.email, "wrong password")
    unknown = await login(client, "nobody@example.com", "wrong password")

    assert existing.status_code == unknown.status_code == 401
    assert existing.content == unknown.content
    assert existing.json() == {"error": "InvalidCredentials", "detail": "Incorrect email or password."}
    assert existing.headers["www-authenticate"] == unknown.headers["www-authenticate"] == "Bearer"
