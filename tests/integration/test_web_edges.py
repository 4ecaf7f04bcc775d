"""The web pages' edges: forged or foreign session cookies, htmx requests after the session ended, forms sent
empty or malformed, and lists asked for with a cursor that is not theirs."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from app.auth.tokens import access_token
from app.core.security import TokenPurpose, create_token
from tests.factories import make_contact, make_user
from tests.web_helpers import logged_in, page_token, web_login


@pytest.mark.parametrize("kind", ["garbage", "access-token", "other-secret", "too-long"])
async def test_a_forged_session_cookie_opens_nothing(client, db, settings, kind):
    user = await make_user(db, settings)
    forged = {
        "garbage": "not.a.token",
        "access-token": access_token(settings, user.id, user.token_version),
        "other-secret": create_token(
            settings.model_copy(update={"jwt_secret": SecretStr("another-secret-" + "y" * 40)}),
            TokenPurpose.web_session,
            str(user.id),
            600,
            sid="0" * 32,
            ver=user.token_version,
        ),
        "too-long": "x" * 5000,
    }[kind]
    client.cookies.set("session", forged)
    assert not await logged_in(client)
    # The dead cookie is dropped on the way to the login form.
    response = await client.get("/contacts")
    assert any(v.startswith('session=""') for v in response.headers.get_list("set-cookie"))


async def test_a_validly_signed_cookie_naming_no_session_record_opens_nothing(client, db, settings):
    user = await make_user(db, settings)
    made_up = create_token(settings, TokenPurpose.web_session, str(user.id), 600, sid="f" * 32, ver=user.token_version)
    client.cookies.set("session", made_up)
    assert not await logged_in(client)


async def test_an_htmx_request_after_the_session_ended_is_told_to_load_the_login_page(client):
    response = await client.get("/contacts?q=ada", headers={"HX-Request": "true"})
    assert response.status_code == 401
    assert response.headers["hx-redirect"] == "/login?next=%2Fcontacts%3Fq%3Dada"


async def test_empty_login_form_asks_for_both_fields(client):
    token = await page_token(client, "/login")
    response = await client.post("/login", data={"email": "", "password": "", "csrf_token": token})
    assert response.status_code == 400
    assert 'id="f-email-error">Enter your email address.<' in response.text
    assert 'id="f-password-error">Enter your password.<' in response.text


async def test_forgot_password_with_no_address_says_so(client, mailbox):
    token = await page_token(client, "/forgot-password")
    response = await client.post("/forgot-password", data={"email": "nope", "csrf_token": token})
    assert response.status_code == 400
    assert 'id="f-email-error">Email must be an email address like name@example.com.<' in response.text
    assert mailbox.messages == []


async def test_reset_with_too_short_a_password_says_so_and_keeps_the_link(client):
    token = await page_token(client, "/reset-password?token=abc")
    response = await client.post("/reset-password", data={"token": "abc", "new_password": "short", "csrf_token": token})
    assert response.status_code == 400
    assert 'id="f-new_password-error">The new password must be at least 8 characters long.<' in response.text
    assert 'name="token" value="abc"' in response.text


async def test_a_cursor_that_is_not_this_lists_is_refused_in_words(client, db, settings):
    user = await make_user(db, settings)
    await make_contact(db, user)
    await web_login(client, user.email)
    response = await client.get("/contacts", params={"cursor": "forged"})
    assert response.status_code == 400
    assert "This list cannot be shown" in response.text
    trash = await client.get("/trash", params={"cursor": "forged"})
    assert trash.status_code == 400
    assert "The trash cannot be shown" in trash.text


async def test_restoring_what_is_not_in_the_trash_is_not_found(client, db, settings):
    user = await make_user(db, settings)
    await web_login(client, user.email)
    token = await page_token(client, "/trash")
    response = await client.post("/trash/999999/restore", data={"csrf_token": token})
    assert response.status_code == 404
    assert "Contact not found" in response.text
