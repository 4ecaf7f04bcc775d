"""The settings page and the administrators' users page through httpx: password change and region with errors in
words, an admin's demotion or deactivation ending the other account's open pages, and non-admins kept out."""

from __future__ import annotations

import re

import httpx

from app.users.models import Role, User
from tests.factories import DEFAULT_PASSWORD, make_user
from tests.web_helpers import logged_in, page_token, web_login


async def test_wrong_current_password_is_said_beside_it_and_changes_nothing(client, db, settings):
    user = await make_user(db, settings)
    await web_login(client, user.email)
    token = await page_token(client, "/settings")
    response = await client.post(
        "/settings/password",
        data={"current_password": "not it at all", "new_password": "a new password", "csrf_token": token},
    )
    assert response.status_code == 400
    assert re.search(r'id="f-current_password-error">Your current password is not correct.<', response.text)
    short = await client.post(
        "/settings/password", data={"current_password": DEFAULT_PASSWORD, "new_password": "short", "csrf_token": token}
    )
    assert short.status_code == 400
    assert re.search(r'id="f-new_password-error">The new password must be at least 8 characters long.<', short.text)
    hashed = user.hashed_password
    await db.refresh(user)
    assert user.hashed_password == hashed
    assert await logged_in(client)


async def test_region_is_saved_and_an_unknown_one_refused_in_words(client, db, settings):
    user = await make_user(db, settings)
    await web_login(client, user.email)
    token = await page_token(client, "/settings")
    refused = await client.post("/settings/region", data={"default_region": "XX", "csrf_token": token})
    assert refused.status_code == 400
    assert "Choose a region from the list." in refused.text
    saved = await client.post("/settings/region", data={"default_region": "GB", "csrf_token": token})
    assert saved.status_code == 303
    await db.refresh(user)
    assert user.default_region == "GB"
    assert '<option value="GB" selected>' in (await client.get("/settings")).text


async def test_users_page_is_for_administrators_only(client, db, settings):
    user = await make_user(db, settings)
    await web_login(client, user.email)
    response = await client.get("/admin/users")
    assert response.status_code == 403
    assert "Only administrators can open this page." in response.text
    token = await page_token(client, "/settings")
    forged = await client.post(
        f"/admin/users/{user.id}", data={"role": "admin", "is_active": "on", "csrf_token": token}
    )
    assert forged.status_code == 403
    await db.refresh(user)
    assert user.role == Role.user


async def test_admin_demotes_and_deactivates_and_the_users_open_pages_lose_access(client, app, db, settings):
    admin = await make_user(db, settings, role=Role.admin)
    other_admin = await make_user(db, settings, role=Role.admin)
    member = await make_user(db, settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as demoted,
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as deactivated,
    ):
        await web_login(demoted, other_admin.email)
        await web_login(deactivated, member.email)
        assert (await demoted.get("/admin/users")).status_code == 200
        assert await logged_in(deactivated)
        await web_login(client, admin.email)
        page = await client.get("/admin/users")
        assert page.status_code == 200
        assert other_admin.email in page.text
        token = await page_token(client, "/admin/users")
        demote = await client.post(
            f"/admin/users/{other_admin.id}", data={"role": "user", "is_active": "on", "csrf_token": token}
        )
        assert demote.status_code == 303, demote.text
        deactivate = await client.post(f"/admin/users/{member.id}", data={"role": "user", "csrf_token": token})
        assert deactivate.status_code == 303, deactivate.text
        # The demoted administrator's open page loses access at once: the session is over.
        gone = await demoted.get("/admin/users")
        assert gone.status_code == 303
        assert gone.headers["location"].startswith("/login")
        assert not await logged_in(deactivated)
        relogin_page = await deactivated.get("/login")
        token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', relogin_page.text)
        assert token
        refused = await deactivated.post(
            "/login", data={"email": member.email, "password": DEFAULT_PASSWORD, "csrf_token": token.group(1)}
        )
        assert refused.status_code == 403
        assert "This account has been deactivated." in refused.text
    for row, role, active in ((other_admin, Role.user, True), (member, Role.user, False)):
        await db.refresh(row)
        assert isinstance(row, User)
        assert (row.role, row.is_active) == (role, active)


async def test_admin_cannot_change_their_own_account_here(client, db, settings):
    admin = await make_user(db, settings, role=Role.admin)
    await web_login(client, admin.email)
    token = await page_token(client, "/admin/users")
    response = await client.post(f"/admin/users/{admin.id}", data={"role": "user", "csrf_token": token})
    assert response.status_code == 403
    assert "You cannot change your own role or active flag." in response.text


def png_bytes(size: int = 32) -> bytes:
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.new("RGB", (size, size), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_avatar_upload_and_removal_on_the_settings_page(client, db, settings):
    user = await make_user(db, settings)
    await web_login(client, user.email)
    token = await page_token(client, "/settings")
    forged = await client.post("/settings/avatar", files={"avatar": ("me.png", png_bytes(), "image/png")})
    assert forged.status_code == 403
    uploaded = await client.post(
        "/settings/avatar", data={"csrf_token": token}, files={"avatar": ("me.png", png_bytes(), "image/png")}
    )
    assert uploaded.status_code == 303, uploaded.text
    await db.refresh(user)
    assert user.avatar_url
    page = await client.get("/settings")
    assert f'<img src="{user.avatar_url}" alt="Your avatar"' in page.text
    removed = await client.post("/settings/avatar/remove", data={"csrf_token": token})
    assert removed.status_code == 303
    await db.refresh(user)
    assert user.avatar_url is None


async def test_a_file_that_is_no_image_is_refused_in_words_beside_the_field(client, db, settings):
    user = await make_user(db, settings)
    await web_login(client, user.email)
    token = await page_token(client, "/settings")
    response = await client.post(
        "/settings/avatar", data={"csrf_token": token}, files={"avatar": ("notes.txt", b"just some text", "text/plain")}
    )
    assert response.status_code == 415
    assert re.search(r'id="f-avatar-error">This file is not an image we can use', response.text)
    await db.refresh(user)
    assert user.avatar_url is None
