"""Roles and the administration API end to end: who may call it, what it changes, and what deleting a user
removes (rows and cache keys)."""

from __future__ import annotations

import io
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.models import RefreshToken
from app.contacts.models import Contact
from app.users.models import Role, User
from tests.factories import DEFAULT_PASSWORD, auth_headers, make_contact, make_user

API = "/api/v1"
PUBLIC_USER_FIELDS = {"id", "email", "role", "is_active", "is_verified", "avatar_url", "created_at"}


async def reload_user(db: AsyncSession, user_id: int) -> User | None:
    await db.commit()  # end the test session's transaction so the app's commits are seen
    return await db.get(User, user_id, populate_existing=True)


async def count(db: AsyncSession, model: type, *where: object) -> int:
    await db.commit()
    return int(await db.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (20, 120, 200)).save(out, format="PNG")
    return out.getvalue()


async def call_admin_route(
    client: httpx.AsyncClient, route: str, target_id: int, headers: dict[str, str]
) -> httpx.Response:
    if route == "list":
        return await client.get(f"{API}/admin/users", headers=headers)
    if route == "read":
        return await client.get(f"{API}/admin/users/{target_id}", headers=headers)
    if route == "update":
        return await client.patch(f"{API}/admin/users/{target_id}", json={"role": "admin"}, headers=headers)
    return await client.delete(f"{API}/admin/users/{target_id}", headers=headers)


ROUTES = ("list", "read", "update", "delete")


# -- who may call it ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
async def test_admin_route_without_token_returns_401(client, db, settings, route):
    target = await make_user(db, settings)

    response = await call_admin_route(client, route, target.id, {})

    assert response.status_code == 401, response.text
    assert response.json()["error"] == "InvalidAccessToken"
    assert response.headers["www-authenticate"] == "Bearer"
    row = await reload_user(db, target.id)
    assert row is not None
    assert row.role == Role.user


@pytest.mark.parametrize("route", ROUTES)
async def test_admin_route_with_user_token_returns_403(client, db, settings, route):
    caller = await make_user(db, settings)
    target = await make_user(db, settings)

    response = await call_admin_route(client, route, target.id, auth_headers(settings, caller))

    assert response.status_code == 403, response.text
    assert response.json() == {"error": "AdminRequired", "detail": "Administrator rights are required."}
    row = await reload_user(db, target.id)
    assert row is not None
    assert row.role == Role.user


@pytest.mark.parametrize("route", ROUTES)
async def test_admin_route_with_deactivated_admin_token_is_refused(client, db, settings, route):
    caller = await make_user(db, settings, role=Role.admin, active=False)
    target = await make_user(db, settings)

    response = await call_admin_route(client, route, target.id, auth_headers(settings, caller))

    assert response.status_code == 403, response.text
    assert response.json()["error"] == "InactiveAccount"
    row = await reload_user(db, target.id)
    assert row is not None
    assert row.role == Role.user


# -- listing and reading ------------------------------------------------------------------------------------------


async def test_list_users_pages_in_id_order(client, db, settings):
    admin = await make_user(db, settings, role=Role.admin)
    users = [await make_user(db, settings) for _ in range(4)]

    response = await client.get(
        f"{API}/admin/users", params={"skip": 1, "limit": 2}, headers=auth_headers(settings, admin)
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["total"], body["skip"], body["limit"]) == (5, 1, 2)
    assert [item["id"] for item in body["items"]] == [users[0].id, users[1].id]
    assert all(set(item) == PUBLIC_USER_FIELDS for item in body["items"])


async def test_list_users_filters_by_role(client, db, settings):
    admin = await make_user(db, settings, role=Role.admin)
    other_admin = await make_user(db, settings, role=Role.admin)
    await make_user(db, settings)

    response = await client.get(f"{API}/admin/users", params={"role": "admin"}, headers=auth_headers(settings, admin))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total"] == 2
    assert [item["id"] for item in body["items"]] == [admin.id, other_admin.id]
    assert {item["role"] for item in body["items"]} == {"admin"}


@pytest.mark.parametrize("params", [{"role": "superuser"}, {"limit": 0}, {"limit": 101}, {"skip": -1}])
async def test_list_users_with_invalid_query_returns_422(client, db, settings, params):
    admin = await make_user(db, settings, role=Role.admin)

    response = await client.get(f"{API}/admin/users", params=params, headers=auth_headers(settings, admin))

    assert response.status_code == 422, response.text
    assert response.json()["error"] == "ValidationError"


async def test_read_user_returns_public_fields(client, db, settings):
    admin = await make_user(db, settings, role=Role.admin)
    target = await make_user(db, settings, verified=False)

    response = await client.get(f"{API}/admin/users/{target.id}", headers=auth_headers(settings, admin))

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == PUBLIC_USER_FIELDS
    assert (body["id"], body["email"], body["role"], body["is_verified"]) == (target.id, target.email, "user", False)


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
async def test_unknown_user_returns_404(client, db, settings, method):
    admin = await make_user(db, settings, role=Role.admin)

    response = await client.request(
        method,
        f"{API}/admin/users/{admin.id + 1000}",
        json={"role": "admin"} if method == "PATCH" else None,
        headers=auth_headers(settings, admin),
    )

    assert response.status_code == 404, response.text
    assert response.json()["error"] == "UserNotFound"


# -- changing roles and the active flag -----------------------------------------------------------------------------


async def test_patch_sets_role_and_ends_the_users_sessions(client, db, settings):
    admin = await make_user(db, settings, role=Role.admin)
    target = await make_user(db, settings)

    response = await client.patch(
        f"{API}/admin/users/{target.id}", json={"role": "admin"}, headers=auth_headers(settings, admin)
    )

    assert response.status_code == 200, response.text
    assert response.json()["role"] == "admin"
    row = await reload_user(db, target.id)
    assert row is not None
    assert row.role == Role.admin
    assert row.token_version == 1


async def test_promoted_user_reaches_admin_routes_after_logging_in_again(client, db, settings):
    admin = await make_user(db, settings, role=Role.admin)
    target = await make_user(db, settings)
    promoted = await client.patch(
        f"{API}/admin/users/{target.id}", json={"role": "admin"}, headers=auth_headers(settings, admin)
    )
    assert promoted.status_code == 200, promoted.text

    pair = await client.post(f"{API}/auth/login", data={"username": target.email, "password": DEFAULT_PASSWORD})
    response = await client.get(
        f"{API}/admin/users", headers={"Authorization": f"Bearer {pair.json()['access_token']}"}
    )

    assert response.status_code == 200, response.text
    assert response.json()["total"] == 2


async def test_patch_deactivates_user_who_then_cannot_log_in(client, db, settings):
    admin = await make_user(db, settings, role=Role.admin)
    target = await make_user(db, settings)

    response = await client.patch(
        f"{API}/admin/users/{target.id}", json={"is_active": False}, headers=auth_headers(settings, admin)
    )

    assert response.status_code == 200, response.text
    assert response.json()["is_active"] is False
    row = await reload_user(db, target.id)
    assert row is not None
    assert row.is_active is False
    login = await client.post(f"{API}/auth/login", data={"username": target.email, "password": DEFAULT_PASSWORD})
    assert login.status_code == 403, login.text
    assert login.json()["error"] == "InactiveAccount"


@pytest.mark.parametrize(("role", "changes"), [(Role.admin, {"role": "user"}), (Role.user, {"is_active": False})])
async def test_demotion_or_deactivation_revokes_every_refresh_token_record(client, db, settings, role, changes):
    admin = await make_user(db, settings, role=Role.admin)
    target = await make_user(db, settings, role=role)
    bystander = await make_user(db, settings)
    for user in (target, target, bystander):
        form = {"username": user.email, "password": DEFAULT_PASSWORD}
        assert (await client.post(f"{API}/auth/login", data=form)).status_code == 200

    response = await client.patch(f"{API}/admin/users/{target.id}", json=changes, headers=auth_headers(settings, admin))

    assert response.status_code == 200, response.text
    assert await count(db, RefreshToken, RefreshToken.user_id == target.id) == 2
    assert await count(db, RefreshToken, RefreshToken.user_id == target.id, RefreshToken.revoked_at.is_(None)) == 0
    assert await count(db, RefreshToken, RefreshToken.user_id == bystander.id, RefreshToken.revoked_at.is_(None)) == 1


async def test_patch_that_changes_nothing_leaves_the_sessions_alone(client, db, settings):
    admin = await make_user(db, settings, role=Role.admin)
    target = await make_user(db, settings)
    form = {"username": target.email, "password": DEFAULT_PASSWORD}
    assert (await client.post(f"{API}/auth/login", data=form)).status_code == 200

    response = await client.patch(
        f"{API}/admin/users/{target.id}",
        json={"role": "user", "is_active": True},
        headers=auth_headers(settings, admin),
    )

    assert response.status_code == 200, response.text
    assert await count(db, RefreshToken, RefreshToken.user_id == target.id, RefreshToken.revoked_at.is_(None)) == 1
    row = await reload_user(db, target.id)
    assert row is not None
    assert row.token_version == 0


@pytest.mark.parametrize("changes", [{"role": "user"}, {"is_active": False}, {"role": "admin", "is_active": True}])
async def test_admin_cannot_change_own_account(client, db, settings, changes):
    admin = await make_user(db, settings, role=Role.admin)

    response = await client.patch(f"{API}/admin/users/{admin.id}", json=changes, headers=auth_headers(settings, admin))

    assert response.status_code == 403, response.text
    assert response.json()["error"] == "CannotChangeOwnAccount"
    row = await reload_user(db, admin.id)
    assert row is not None
    assert (row.role, row.is_active, row.token_version) == (Role.admin, True, 0)


@pytest.mark.parametrize(
    "body",
    [{"email": "new@example.com"}, {"is_verified": True}, {"token_version": 0}, {"role": "superuser"}],
)
async def test_patch_with_a_field_or_value_it_does_not_allow_returns_422(client, db, settings, body):
    admin = await make_user(db, settings, role=Role.admin)
    target = await make_user(db, settings, verified=False)

    response = await client.patch(f"{API}/admin/users/{target.id}", json=body, headers=auth_headers(settings, admin))

    assert response.status_code == 422, response.text
    row = await reload_user(db, target.id)
    assert row is not None
    assert (row.email, row.role, row.is_verified, row.token_version) == (target.email, Role.user, False, 0)


# -- deleting -------------------------------------------------------------------------------------------------------


async def test_delete_user_removes_their_rows_and_cache_keys(client, db, settings, redis_client):
    admin = await make_user(db, settings, role=Role.admin)
    target = await make_user(db, settings)
    bystander = await make_user(db, settings)
    contacts = [await make_contact(db, target) for _ in range(2)]
    kept = await make_contact(db, bystander)
    logged_in = await client.post(f"{API}/auth/login", data={"username": target.email, "password": DEFAULT_PASSWORD})
    assert logged_in.status_code == 200, logged_in.text
    assert await count(db, RefreshToken, RefreshToken.user_id == target.id) == 1
    headers = auth_headers(settings, target)
    assert (await client.get(f"{API}/users/me", headers=headers)).status_code == 200
    assert (await client.get(f"{API}/contacts", headers=headers)).status_code == 200
    for contact in contacts:
        assert (await client.get(f"{API}/contacts/{contact.id}", headers=headers)).status_code == 200
    keys = [f"user:{target.id}", f"contacts:{target.id}", *(f"contact:{c.id}:user:{target.id}" for c in contacts)]
    assert await redis_client.exists(*keys) == len(keys)

    response = await client.delete(f"{API}/admin/users/{target.id}", headers=auth_headers(settings, admin))

    assert response.status_code == 204, response.text
    assert response.content == b""
    assert await redis_client.exists(*keys) == 0
    assert await reload_user(db, target.id) is None
    assert await count(db, Contact, Contact.user_id == target.id) == 0
    assert await count(db, RefreshToken, RefreshToken.user_id == target.id) == 0
    assert await count(db, Contact, Contact.id == kept.id) == 1
    assert (await client.get(f"{API}/users/me", headers=headers)).status_code == 401
    assert (
        await client.get(f"{API}/admin/users/{target.id}", headers=auth_headers(settings, admin))
    ).status_code == 404


async def test_delete_user_deletes_their_avatar_file(client, db, settings):
    admin = await make_user(db, settings, role=Role.admin)
    target = await make_user(db, settings)
    bystander = await make_user(db, settings)
    files = {}
    for user in (target, bystander):
        uploaded = await client.put(
            f"{API}/users/me/avatar",
            headers=auth_headers(settings, user),
            files={"file": ("a.png", png(), "image/png")},
        )
        assert uploaded.status_code == 200, uploaded.text
        files[user.id] = Path(settings.media_root) / urlsplit(uploaded.json()["avatar_url"]).path.removeprefix(
            "/media/"
        )
        assert files[user.id].is_file()

    response = await client.delete(f"{API}/admin/users/{target.id}", headers=auth_headers(settings, admin))

    assert response.status_code == 204, response.text
    assert not files[target.id].exists()
    assert files[bystander.id].is_file()


async def test_admin_cannot_delete_self(client, db, settings):
    admin = await make_user(db, settings, role=Role.admin)

    response = await client.delete(f"{API}/admin/users/{admin.id}", headers=auth_headers(settings, admin))

    assert response.status_code == 403, response.text
    assert response.json()["error"] == "CannotChangeOwnAccount"
    assert await reload_user(db, admin.id) is not None
