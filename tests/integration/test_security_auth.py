"""Password hashing under attack, end to end: a flood of logins meets a bounded queue (503 with Retry-After)
instead of an unbounded one, hashing keeps working while the loop's default thread pool is busy, and a stolen
access token cannot be used to guess the current password without limit."""

from __future__ import annotations

import asyncio
import threading

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.models import RefreshToken
from app.core.security import hashing_pool, verify_password
from app.users.models import User
from tests.factories import DEFAULT_PASSWORD, auth_headers, make_user
from tests.integration.test_rate_limits import RATE_LIMITED, assert_rate_limited, client_at, login, running_app

API = "/api/v1"
NEW_PASSWORD = "a brand new passphrase"
BUSY = {"error": "PasswordHashingBusy", "detail": "Too many password checks are waiting; try again in a moment."}
# Slow enough (about 0.1 s a check here) that a burst of logins arrives while the first is still hashing.
SLOW_ARGON2 = {"argon2_time_cost": 3, "argon2_memory_cost": 32768}


async def refresh_rows(db: AsyncSession) -> int:
    await db.commit()  # see the app's commits
    return int(await db.scalar(select(func.count()).select_from(RefreshToken)) or 0)


async def change_password(
    http: httpx.AsyncClient, headers: dict[str, str], current: str, new: str = NEW_PASSWORD
) -> httpx.Response:
    body = {"current_password": current, "new_password": new}
    return await http.put(f"{API}/users/me/password", json=body, headers=headers)


async def password_is(db: AsyncSession, settings, user_id: int, password: str) -> bool:
    await db.commit()
    user = await db.get(User, user_id, populate_existing=True)
    assert user is not None
    return await verify_password(settings, password, user.hashed_password)


# -- the hashing queue ------------------------------------------------------------------------------------------


async def test_login_flood_beyond_the_hashing_queue_is_refused_with_503_and_retry_after(db, settings, database):
    async with (
        running_app(settings, database, hash_workers=1, hash_queue_max=2, **SLOW_ARGON2) as app,
        client_at(app) as http,
    ):
        assert (await login(http, "warm-up@example.com")).status_code == 401  # the dummy hash is made once

        responses = await asyncio.gather(*(login(http, f"guess{i}@example.com") for i in range(8)))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [401] * 3 + [503] * 5, [r.text for r in responses]
    for response in responses:
        if response.status_code == 503:
            assert response.json() == BUSY
            assert response.headers["retry-after"] == "1"


async def test_hashing_queue_full_refuses_logins_until_it_drains(db, settings, database):
    user = await make_user(db, settings)
    async with (
        running_app(settings, database, hash_workers=1, hash_queue_max=1) as app,
        client_at(app) as http,
    ):
        pool = hashing_pool(app.state.settings)
        release = threading.Event()
        holders = [asyncio.ensure_future(pool.run(release.wait, 10)) for _ in range(2)]  # one running, one queued
        try:
            await asyncio.sleep(0.05)
            refused = await login(http, user.email, DEFAULT_PASSWORD)
            register = await http.post(f"{API}/auth/register", json={"email": "new@example.com", "password": "x" * 12})
        finally:
            release.set()
            await asyncio.gather(*holders)
        accepted = await login(http, user.email, DEFAULT_PASSWORD)

    assert refused.status_code == 503, refused.text
    assert refused.json() == BUSY
    assert refused.headers["retry-after"] == "1"
    assert register.status_code == 503, register.text
    assert accepted.status_code == 200, accepted.text
    assert await refresh_rows(db) == 1


async def test_hashing_does_not_wait_for_the_default_thread_pool(client, db, settings):
    user = await make_user(db, settings)
    loop = asyncio.get_running_loop()
    release = threading.Event()
    # Other thread work (asyncio.to_thread, file I/O) saturating the loop's default executor.
    blockers = [loop.run_in_executor(None, release.wait, 10) for _ in range(40)]
    try:
        async with asyncio.timeout(5):
            response = await client.post(
                f"{API}/auth/login", data={"username": user.email, "password": DEFAULT_PASSWORD}
            )
    finally:
        release.set()
        await asyncio.gather(*blockers)

    assert response.status_code == 200, response.text


# -- changing the password ----------------------------------------------------------------------------------------


async def test_guessing_the_current_password_with_a_stolen_token_is_limited_per_user(db, settings, database):
    victim = await make_user(db, settings)
    bystander = await make_user(db, settings)
    async with running_app(settings, database) as app:
        stolen = auth_headers(settings, victim)
        guesses = []
        for i in range(5):  # from five addresses: the per-user limit holds across them
            async with client_at(app, f"198.51.100.{i + 1}") as http:
                guesses.append(await change_password(http, stolen, f"guess number {i}"))
        async with client_at(app, "198.51.100.99") as http:
            over = await change_password(http, stolen, DEFAULT_PASSWORD)
            other = await change_password(http, auth_headers(settings, bystander), DEFAULT_PASSWORD)

    assert [r.status_code for r in guesses] == [400] * 5
    assert {r.json()["error"] for r in guesses} == {"WrongCurrentPassword"}
    assert_rate_limited(over, 3600)
    assert await password_is(db, settings, victim.id, DEFAULT_PASSWORD)
    assert other.status_code == 200, other.text
    assert await password_is(db, settings, bystander.id, NEW_PASSWORD)


async def test_password_changes_are_limited_per_client_address(db, settings, database):
    users = [await make_user(db, settings) for _ in range(4)]
    async with running_app(settings, database, rate_limit_password_change_ip="3/hour") as app:
        async with client_at(app, "203.0.113.5") as http:
            allowed = [await change_password(http, auth_headers(settings, u), "wrong guess") for u in users[:3]]
            over = await change_password(http, auth_headers(settings, users[3]), DEFAULT_PASSWORD)
        async with client_at(app, "203.0.113.6") as elsewhere:
            other = await change_password(elsewhere, auth_headers(settings, users[3]), DEFAULT_PASSWORD)

    assert [r.status_code for r in allowed] == [400] * 3
    assert over.status_code == 429, over.text
    assert over.json() == RATE_LIMITED
    assert 1 <= int(over.headers["retry-after"]) <= 3600
    assert other.status_code == 200, other.text
