"""The web pages' sessions and protections, attacked through httpx: forged forms, cookie flags, sessions ended by a
password change, demotion, deactivation and logout, frame headers, and errors in words next to their fields."""

from __future__ import annotations

import re

import httpx
import pytest
from sqlalchemy import select

from app.auth.models import RefreshToken
from app.users.models import Role, User
from tests.factories import DEFAULT_PASSWORD, auth_headers, make_user
from tests.web_helpers import csrf_of, logged_in, page_token, web_login

API = "/api/v1"
NEW_PASSWORD = "a brand new passphrase"


def set_cookie_headers(response: httpx.Response, name: str) -> list[str]:
    return [v for v in response.headers.get_list("set-cookie") if v.startswith(f"{name}=")]


# -- anti-forgery ------------------------------------------------------------------------------------------------


async def test_form_posted_without_the_sessions_token_is_refused_and_changes_nothing(client, db, settings):
    user = await make_user(db, settings)
    await web_login(client, user.email)
    # The attack: another site's page posts the settings form with the victim's cookies but cannot read the token.
    forged = await client.post("/settings/region", data={"default_region": "FR"})
    assert forged.status_code == 403, forged.text
    assert "This form has expired" in forged.text
    wrong = await client.post("/settings/region", data={"default_region": "FR", "csrf_token": "0" * 64})
    assert wrong.status_code == 403
    await db.refresh(user)
    assert user.default_region is None
    # The same form with the page's token goes through.
    token = await page_token(client, "/settings")
    accepted = await client.post("/settings/region", data={"default_region": "FR", "csrf_token": token})
    assert accepted.status_code == 303, accepted.text
    await db.refresh(user)
    assert user.default_region == "FR"


async def test_token_of_another_session_is_refused(client, app, db, settings):
    victim = await make_user(db, settings)
    attacker = await make_user(db, settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as other:
        await web_login(other, attacker.email)
        attackers_token = await page_token(other, "/settings")
    await web_login(client, victim.email)
    forged = await client.post("/settings/region", data={"default_region": "FR", "csrf_token": attackers_token})
    assert forged.status_code == 403
    await db.refresh(victim)
    assert victim.default_region is None


async def test_forged_logout_does_not_end_the_session(client, db, settings):
    user = await make_user(db, settings)
    await web_login(client, user.email)
    forged = await client.post("/logout")
    assert forged.status_code == 403
    assert await logged_in(client)


async def test_login_form_without_token_is_refused_and_starts_no_session(client, db, settings):
    user = await make_user(db, settings)
    forged = await client.post("/login", data={"email": user.email, "password": DEFAULT_PASSWORD})
    assert forged.status_code == 403
    assert not set_cookie_headers(forged, "session")
    rows = (await db.execute(select(RefreshToken).where(RefreshToken.user_id == user.id))).scalars().all()
    assert rows == []


# -- cookie flags --------------------------------------------------------------------------------------------------


async def test_session_cookie_is_httponly_lax_and_not_secure_over_plain_http(client, db, settings):
    user = await make_user(db, settings)
    response = await web_login(client, user.email)
    (cookie,) = set_cookie_headers(response, "session")
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in flags
    assert "samesite=lax" in flags
    assert "path=/" in flags
    assert "secure" not in flags
    assert response.headers["location"] == "/contacts"


async def test_session_cookie_is_secure_over_https(app, clean, db, settings):
    user = await make_user(db, settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as https:
        token = await page_token(https, "/login")
        response = await https.post(
            "/login", data={"email": user.email, "password": DEFAULT_PASSWORD, "csrf_token": token}
        )
    assert response.status_code == 303, response.text
    (cookie,) = set_cookie_headers(response, "session")
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert "secure" in flags
    assert "httponly" in flags
    assert "samesite=lax" in flags


# -- session endings -------------------------------------------------------------------------------------------------


async def _change_password_by_api(client, settings, user, admin) -> None:
    response = await client.put(
        f"{API}/users/me/password",
        json={"current_password": DEFAULT_PASSWORD, "new_password": NEW_PASSWORD},
        headers=auth_headers(settings, user),
    )
    assert response.status_code == 200, response.text


async def _demote(client, settings, user, admin) -> None:
    response = await client.patch(
        f"{API}/admin/users/{user.id}", json={"role": "user"}, headers=auth_headers(settings, admin)
    )
    assert response.status_code == 200, response.text


async def _deactivate(client, settings, user, admin) -> None:
    response = await client.patch(
        f"{API}/admin/users/{user.id}", json={"is_active": False}, headers=auth_headers(settings, admin)
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("event", [_change_password_by_api, _demote, _deactivate])
async def test_event_ends_the_web_session_at_once(client, db, settings, event):
    admin = await make_user(db, settings, role=Role.admin)
    user = await make_user(db, settings, role=Role.admin)  # an administrator, so that demotion is a change
    await web_login(client, user.email)
    assert await logged_in(client)  # read once: the principal is now cached
    cookie = client.cookies.get("session")
    async with httpx.AsyncClient(transport=client._transport, base_url="http://testserver") as api:
        await event(api, settings, user, admin)
    assert not await logged_in(client)
    # A copy of the old cookie is worth nothing either.
    client.cookies.set("session", cookie)
    assert not await logged_in(client)


async def test_password_change_on_the_settings_page_ends_other_sessions_and_keeps_this_one(client, app, db, settings):
    user = await make_user(db, settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as other:
        await web_login(other, user.email)
        await web_login(client, user.email)
        token = await page_token(client, "/settings")
        response = await client.post(
            "/settings/password",
            data={"current_password": DEFAULT_PASSWORD, "new_password": NEW_PASSWORD, "csrf_token": token},
        )
        assert response.status_code == 303, response.text
        assert response.headers["location"] == "/settings?notice=password-changed"
        assert await logged_in(client)
        assert not await logged_in(other)


async def test_logout_ends_the_session_and_a_copied_cookie(client, db, settings):
    user = await make_user(db, settings)
    await web_login(client, user.email)
    cookie = client.cookies.get("session")
    token = await page_token(client, "/settings")
    response = await client.post("/logout", data={"csrf_token": token})
    assert response.status_code == 303
    assert response.headers["location"] == "/login?notice=logged-out"
    assert not await logged_in(client)
    client.cookies.set("session", cookie)
    assert not await logged_in(client)


async def test_a_web_session_cookie_is_no_bearer_token(client, db, settings):
    user = await make_user(db, settings)
    await web_login(client, user.email)
    cookie = client.cookies.get("session")
    response = await client.get(f"{API}/users/me", headers={"Authorization": f"Bearer {cookie}"})
    assert response.status_code == 401
    client.cookies.clear()
    refreshed = await client.post(f"{API}/auth/refresh", json={"refresh_token": cookie})
    assert refreshed.status_code == 401


async def test_page_without_session_sends_to_login_with_the_way_back(client):
    response = await client.get("/settings")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2Fsettings"


async def test_login_follows_only_a_local_next(client, db, settings):
    user = await make_user(db, settings)
    token = await page_token(client, "/login")
    response = await client.post(
        "/login",
        data={"email": user.email, "password": DEFAULT_PASSWORD, "csrf_token": token, "next": "//evil.example/x"},
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/contacts"


# -- frames and scripts -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/login", "/register", "/forgot-password", "/reset-password", "/settings"])
async def test_pages_may_not_be_framed(client, path):
    response = await client.get(path)
    assert response.headers["x-frame-options"] == "DENY"
    csp = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp
    assert "script-src 'self'" in csp


async def test_api_responses_keep_their_headers(client):
    response = await client.get("/health")
    assert "content-security-policy" not in response.headers


# -- errors in words, beside their field ----------------------------------------------------------------------------


async def test_register_errors_are_words_next_to_their_fields(client):
    token = await page_token(client, "/register")
    response = await client.post(
        "/register", data={"email": "not-an-address", "password": "short", "csrf_token": token}
    )
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert '"error"' not in response.text
    email_error = re.search(r'id="f-email-error">([^<]+)<', response.text)
    password_error = re.search(r'id="f-password-error">([^<]+)<', response.text)
    assert email_error
    assert "email address like name@example.com" in email_error.group(1)
    assert password_error
    assert "at least 8 characters" in password_error.group(1)
    assert 'aria-describedby="f-email-error"' in response.text
    assert 'value="not-an-address"' in response.text  # what was typed stays


async def test_wrong_password_is_said_in_words_like_an_unknown_email(client, db, settings):
    user = await make_user(db, settings)
    token = await page_token(client, "/login")
    wrong = await client.post("/login", data={"email": user.email, "password": "not the password", "csrf_token": token})
    unknown = await client.post(
        "/login", data={"email": "nobody@example.com", "password": "not the password", "csrf_token": token}
    )
    assert wrong.status_code == unknown.status_code == 401
    message = "That email and password do not match an account."
    assert message in wrong.text
    assert message in unknown.text
    assert not set_cookie_headers(wrong, "session")


async def test_login_page_shares_the_apis_login_limit(client, db, settings):
    user = await make_user(db, settings)
    limit = int(settings.rate_limit_login_ip.split("/")[0])
    for _ in range(limit):
        await client.post(f"{API}/auth/login", data={"username": "x@example.com", "password": "whatever1"})
    token = await page_token(client, "/login")
    response = await client.post(
        "/login", data={"email": user.email, "password": DEFAULT_PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 429
    assert "Too many attempts" in response.text
    assert int(response.headers["retry-after"]) > 0
    assert not set_cookie_headers(response, "session")


# -- the mailed links open pages ------------------------------------------------------------------------------------


def only_link(message) -> str:
    (link,) = re.findall(r"https?://\S+", message.get_content())
    return link


async def test_register_then_the_mailed_link_confirms_on_a_page_then_login(client, db, mailbox):
    token = await page_token(client, "/register")
    response = await client.post(
        "/register", data={"email": "Newcomer@Example.com", "password": DEFAULT_PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/login?notice=registered"
    (message,) = await mailbox.wait_for("newcomer@example.com")
    link = only_link(message)
    assert link.startswith("http://contacts.test/verify-email?token=")
    page = await client.get(link.removeprefix("http://contacts.test"))
    assert page.status_code == 200
    assert "<h1>Your email address is confirmed</h1>" in page.text
    row = (await db.execute(select(User).where(User.email == "newcomer@example.com"))).scalar_one()
    assert row.is_verified is True
    await web_login(client, "newcomer@example.com")


async def test_a_bad_confirmation_link_says_so_in_words(client):
    page = await client.get("/verify-email", params={"token": "garbage"})
    assert page.status_code == 400
    assert "This confirmation link is invalid or expired." in page.text


async def test_register_with_a_taken_email_says_so_next_to_the_email(client, db, settings):
    user = await make_user(db, settings)
    token = await page_token(client, "/register")
    response = await client.post(
        "/register", data={"email": user.email, "password": DEFAULT_PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 409
    assert re.search(r'id="f-email-error">An account with this email already exists', response.text)


async def test_forgot_and_reset_password_through_the_pages(client, db, settings, mailbox):
    user = await make_user(db, settings)
    token = await page_token(client, "/forgot-password")
    known = await client.post("/forgot-password", data={"email": user.email, "csrf_token": token})
    unknown = await client.post("/forgot-password", data={"email": "nobody@example.com", "csrf_token": token})
    # The same answer for an address with and without an account.
    assert known.status_code == unknown.status_code == 303
    assert known.headers["location"] == unknown.headers["location"] == "/login?notice=reset-sent"
    (message,) = await mailbox.wait_for(user.email)
    link = only_link(message)
    assert link.startswith("http://contacts.test/reset-password?token=")
    page = await client.get(link.removeprefix("http://contacts.test"))
    assert page.status_code == 200
    assert "Choose a new password" in page.text
    reset_token = re.search(r'name="token" value="([^"]+)"', page.text)
    assert reset_token
    done = await client.post(
        "/reset-password",
        data={"token": reset_token.group(1), "new_password": NEW_PASSWORD, "csrf_token": csrf_of(page)},
    )
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/login?notice=reset-done"
    again = await client.post(
        "/reset-password",
        data={"token": reset_token.group(1), "new_password": "yet another one", "csrf_token": csrf_of(page)},
    )
    assert again.status_code == 400
    assert "invalid, expired or already used" in again.text
    await web_login(client, user.email, NEW_PASSWORD)
