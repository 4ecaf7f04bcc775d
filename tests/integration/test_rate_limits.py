"""Where a request comes from, end to end: rate limits per client address, per account and per user (with Redis
and without it), which address counts behind proxies, and which browser origins CORS lets in."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.models import RefreshToken
from app.contacts.models import Contact
from app.core.cache import cache
from app.core.config import Settings, app_settings
from app.core.db import Database
from app.main import create_app
from app.users.models import Role
from tests.factories import DEFAULT_PASSWORD, auth_headers, make_user
from tests.servers import free_port

API = "/api/v1"
WRONG_PASSWORD = "wrong password"
RATE_LIMITED = {"error": "RateLimited", "detail": "Too many requests; try again later."}


# -- helpers ----------------------------------------------------------------------------------------------------


@asynccontextmanager
async def running_app(settings: Settings, database: Database, **overrides: Any) -> AsyncIterator[FastAPI]:
    """An application of its own, built from the test settings with `overrides`, running its lifespan."""
    configured = settings.model_copy(update=overrides)
    application = create_app(configured, database)
    application.dependency_overrides[app_settings] = lambda: configured
    try:
        async with application.router.lifespan_context(application):
            yield application
    finally:
        cache.configure(settings)  # the lifespan rebound the process-wide cache: give it back to the suite's app


def client_at(app: FastAPI, address: str = "127.0.0.1") -> httpx.AsyncClient:
    """A client whose socket peer address is `address`."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(address, 5000)), base_url="http://testserver"
    )


async def login(http: httpx.AsyncClient, email: str, password: str = WRONG_PASSWORD, **headers: str) -> httpx.Response:
    return await http.post(f"{API}/auth/login", data={"username": email, "password": password}, headers=headers)


def assert_rate_limited(response: httpx.Response, window: int) -> None:
    assert response.status_code == 429, response.text
    assert response.json() == RATE_LIMITED
    assert 1 <= int(response.headers["retry-after"]) <= window


async def count(db: AsyncSession, model: type) -> int:
    await db.commit()  # end the test session's transaction so the app's commits are seen
    return int(await db.scalar(select(func.count()).select_from(model)) or 0)


# -- login ------------------------------------------------------------------------------------------------------------


async def test_login_over_the_per_address_limit_returns_429_with_retry_after(client, db, settings):
    user = await make_user(db, settings)
    for i in range(10):
        assert (await login(client, f"guess{i}@example.com")).status_code == 401

    response = await login(client, user.email, DEFAULT_PASSWORD)

    assert_rate_limited(response, 60)
    assert await count(db, RefreshToken) == 0


async def test_login_per_address_limit_leaves_other_addresses_alone(client, db, settings, app):
    user = await make_user(db, settings)
    for i in range(11):
        await login(client, f"guess{i}@example.com")
    assert (await login(client, user.email, DEFAULT_PASSWORD)).status_code == 429

    async with client_at(app, "10.0.0.2") as other:
        response = await login(other, user.email, DEFAULT_PASSWORD)

    assert response.status_code == 200, response.text
    assert await count(db, RefreshToken) == 1


async def test_failed_logins_from_one_network_throttle_it_but_not_the_owner_elsewhere(db, settings, app):
    victim = await make_user(db, settings)
    async with client_at(app, "10.3.0.1") as attacker:
        guesses = [await login(attacker, victim.email) for _ in range(5)]
        throttled = await login(attacker, victim.email.upper(), DEFAULT_PASSWORD)
        other_account = await login(attacker, "someone-else@example.com")

    async with client_at(app, "10.4.0.1") as owner:
        response = await login(owner, victim.email, DEFAULT_PASSWORD)

    assert [r.status_code for r in guesses] == [401] * 5
    assert_rate_limited(throttled, 900)
    assert other_account.status_code == 401, other_account.text
    assert response.status_code == 200, response.text
    assert await count(db, RefreshToken) == 1


@pytest.mark.parametrize("role", [Role.user, Role.admin])
async def test_failed_logins_from_many_networks_do_not_lock_the_owner_out(db, settings, app, role):
    victim = await make_user(db, settings, role=role)
    bystander = await make_user(db, settings)
    for i in range(20):  # the account's failure budget, spent from twenty networks
        async with client_at(app, f"10.1.0.{i + 1}") as http:
            assert (await login(http, victim.email)).status_code == 401

    async with client_at(app, "10.1.0.1") as attacker:
        attacker_again = await login(attacker, victim.email)
        attacker_right = await login(attacker, victim.email, DEFAULT_PASSWORD)
    async with client_at(app, "10.2.0.1") as stranger:
        stranger_wrong = await login(stranger, victim.email)
        stranger_again = await login(stranger, victim.email)
    async with client_at(app, "10.2.0.2") as owner:
        owner_response = await login(owner, victim.email.upper(), DEFAULT_PASSWORD)
        other_account = await login(owner, bystander.email, DEFAULT_PASSWORD)

    assert_rate_limited(attacker_again, 900)
    assert_rate_limited(attacker_right, 900)
    assert stranger_wrong.status_code == 401, stranger_wrong.text  # still checked: a network with no failures
    assert_rate_limited(stranger_again, 900)  # ... until it has failed once
    assert owner_response.status_code == 200, owner_response.text
    assert other_account.status_code == 200, other_account.text
    assert await count(db, RefreshToken) == 2


async def test_successful_logins_do_not_count_against_the_account(db, settings, app):
    user = await make_user(db, settings)
    responses = []
    for i in range(25):
        async with client_at(app, f"10.5.0.{i + 1}") as http:
            responses.append(await login(http, user.email, DEFAULT_PASSWORD))

    assert [r.status_code for r in responses] == [200] * 25
    assert await count(db, RefreshToken) == 25


# -- account email ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["forgot-password", "resend-verification"])
async def test_account_email_over_the_per_account_limit_returns_429(client, db, settings, mailbox, app, path):
    user = await make_user(db, settings, verified=False)
    other = await make_user(db, settings, verified=False)
    for _ in range(5):
        assert (await client.post(f"{API}/auth/{path}", json={"email": user.email})).status_code == 202

    response = await client.post(f"{API}/auth/{path}", json={"email": user.email.upper()})

    assert_rate_limited(response, 3600)
    assert (await client.post(f"{API}/auth/{path}", json={"email": other.email})).status_code == 202
    await app.state.mailer.drain()
    assert len(mailbox.to(user.email)) == 5
    assert len(mailbox.to(other.email)) == 1


# -- contacts, per user -----------------------------------------------------------------------------------------------


async def test_contact_reads_are_limited_per_user(db, settings, database):
    user = await make_user(db, settings)
    other = await make_user(db, settings)
    async with running_app(settings, database, rate_limit_contacts_read="3/minute") as app, client_at(app) as http:
        for _ in range(3):
            assert (await http.get(f"{API}/contacts", headers=auth_headers(settings, user))).status_code == 200

        response = await http.get(f"{API}/contacts", headers=auth_headers(settings, user))

        assert_rate_limited(response, 60)
        assert (await http.get(f"{API}/contacts", headers=auth_headers(settings, other))).status_code == 200
        write = await http.post(f"{API}/contacts", json={"first_name": "Ada"}, headers=auth_headers(settings, user))
        assert write.status_code == 201, write.text


async def test_contact_writes_are_limited_per_user(db, settings, database):
    user = await make_user(db, settings)
    async with running_app(settings, database, rate_limit_contacts_write="2/minute") as app, client_at(app) as http:
        headers = auth_headers(settings, user)
        for name in ("Ada", "Grace"):
            assert (await http.post(f"{API}/contacts", json={"first_name": name}, headers=headers)).status_code == 201

        response = await http.post(f"{API}/contacts", json={"first_name": "Edsger"}, headers=headers)

        assert_rate_limited(response, 60)
        assert await count(db, Contact) == 2
        assert (await http.get(f"{API}/contacts", headers=headers)).json()["total"] == 2


# -- which address counts ------------------------------------------------------------------------------------------


async def test_rotating_forwarded_for_does_not_evade_the_address_limit_without_trusted_proxies(client, db, settings):
    for i in range(10):
        spoofed = {"X-Forwarded-For": f"203.0.113.{i + 1}"}
        assert (await login(client, f"guess{i}@example.com", **spoofed)).status_code == 401

    response = await login(client, "guess@example.com", **{"X-Forwarded-For": "203.0.113.99"})

    assert_rate_limited(response, 60)


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(db, settings, database):
    async with running_app(settings, database, trusted_proxies=["10.0.0.1"]) as app, client_at(app, "10.0.0.9") as http:
        for i in range(10):
            spoofed = {"X-Forwarded-For": f"203.0.113.{i + 1}"}
            assert (await login(http, f"guess{i}@example.com", **spoofed)).status_code == 401

        response = await login(http, "guess@example.com", **{"X-Forwarded-For": "203.0.113.99"})

    assert_rate_limited(response, 60)


async def test_forwarded_for_from_a_trusted_proxy_identifies_the_client(db, settings, database):
    async with (
        running_app(settings, database, trusted_proxies=["10.0.0.1"]) as app,
        client_at(app, "10.0.0.1") as proxy,
    ):
        for i in range(12):
            forwarded = {"X-Forwarded-For": f"203.0.113.{i + 1}"}
            assert (await login(proxy, f"guess{i}@example.com", **forwarded)).status_code == 401
        for i in range(10):
            same = {"X-Forwarded-For": "198.51.100.7"}
            assert (await login(proxy, f"other{i}@example.com", **same)).status_code == 401

        response = await login(proxy, "other@example.com", **{"X-Forwarded-For": "198.51.100.7"})

    assert_rate_limited(response, 60)


async def test_forged_leftmost_forwarded_for_entries_do_not_evade_the_limit_behind_a_trusted_proxy(
    db, settings, database
):
    async with (
        running_app(settings, database, trusted_proxies=["10.0.0.1"]) as app,
        client_at(app, "10.0.0.1") as proxy,
    ):
        for i in range(10):
            forged = {"X-Forwarded-For": f"198.51.100.{i + 1}, 203.0.113.7"}
            assert (await login(proxy, f"guess{i}@example.com", **forged)).status_code == 401

        response = await login(proxy, "guess@example.com", **{"X-Forwarded-For": "198.51.100.99, 203.0.113.7"})

    assert_rate_limited(response, 60)


async def test_forwarded_for_split_over_several_header_lines_is_read_as_one_list(db, settings, database):
    # A proxy may add its own X-Forwarded-For line (HAProxy's `option forwardfor` does) after the client's
    # forged one; RFC 9110 5.3 makes the lines one comma-separated list, so the proxy's entry is the right-most.
    async with (
        running_app(settings, database, trusted_proxies=["10.0.0.1"]) as app,
        client_at(app, "10.0.0.1") as proxy,
    ):
        for i in range(10):
            lines = [("X-Forwarded-For", f"198.51.100.{i + 1}"), ("X-Forwarded-For", "203.0.113.7")]
            response = await proxy.post(
                f"{API}/auth/login",
                data={"username": f"guess{i}@example.com", "password": WRONG_PASSWORD},
                headers=lines,
            )
            assert response.status_code == 401, response.text

        response = await proxy.post(
            f"{API}/auth/login",
            data={"username": "guess@example.com", "password": WRONG_PASSWORD},
            headers=[("X-Forwarded-For", "198.51.100.99"), ("X-Forwarded-For", "203.0.113.7")],
        )

    assert_rate_limited(response, 60)


@pytest.mark.parametrize("via", ["peer", "forwarded"])
async def test_addresses_of_one_ipv6_64_share_one_bucket(db, settings, database, via):
    async def attempt(app: FastAPI, address: str, email: str) -> httpx.Response:
        if via == "peer":
            async with client_at(app, address) as http:
                return await login(http, email)
        async with client_at(app, "10.0.0.1") as proxy:
            return await login(proxy, email, **{"X-Forwarded-For": address})

    async with running_app(settings, database, trusted_proxies=["10.0.0.1"]) as app:
        spread = [await attempt(app, f"2001:db8:1:2:{i:x}::{i + 1:x}", f"guess{i}@example.com") for i in range(10)]
        same_64 = await attempt(app, "2001:db8:1:2:ffff:ffff:ffff:ffff", "guess@example.com")
        next_64 = await attempt(app, "2001:db8:1:3::1", "guess@example.com")

    assert [r.status_code for r in spread] == [401] * 10
    assert_rate_limited(same_64, 60)
    assert next_64.status_code == 401, next_64.text


async def test_ipv4_mapped_ipv6_shares_the_ipv4_bucket(db, settings, app):
    for i in range(10):
        async with client_at(app, "203.0.113.9") as http:
            assert (await login(http, f"guess{i}@example.com")).status_code == 401

    async with client_at(app, "::ffff:203.0.113.9") as mapped:
        response = await login(mapped, "guess@example.com")

    assert_rate_limited(response, 60)


async def test_malformed_forwarded_for_entries_do_not_share_the_proxys_bucket(db, settings, database):
    async with (
        running_app(settings, database, trusted_proxies=["10.0.0.1"]) as app,
        client_at(app, "10.0.0.1") as proxy,
    ):
        malformed = [await login(proxy, f"guess{i}@example.com", **{"X-Forwarded-For": "unknown"}) for i in range(10)]
        same_entry = await login(proxy, "guess@example.com", **{"X-Forwarded-For": "1.2.3.4, unknown"})
        other_entry = await login(proxy, "guess@example.com", **{"X-Forwarded-For": "_hidden"})
        real_client = await login(proxy, "guess@example.com", **{"X-Forwarded-For": "198.51.100.7"})
        the_proxy = await login(proxy, "guess@example.com")

    assert [r.status_code for r in malformed] == [401] * 10
    assert_rate_limited(same_entry, 60)
    assert other_entry.status_code == 401, other_entry.text
    assert real_client.status_code == 401, real_client.text
    assert the_proxy.status_code == 401, the_proxy.text


async def test_forwarded_for_entries_with_a_port_count_as_their_address(db, settings, database):
    async with (
        running_app(settings, database, trusted_proxies=["10.0.0.1"]) as app,
        client_at(app, "10.0.0.1") as proxy,
    ):
        for i in range(10):  # a new source port per connection must not mean a new bucket
            forwarded = {"X-Forwarded-For": f"203.0.113.7:{5000 + i}"}
            assert (await login(proxy, f"guess{i}@example.com", **forwarded)).status_code == 401
        bracketed = await login(proxy, "guess@example.com", **{"X-Forwarded-For": "[::ffff:203.0.113.7]:443"})
        other_client = await login(proxy, "guess@example.com", **{"X-Forwarded-For": "198.51.100.7:5000"})

    assert_rate_limited(bracketed, 60)
    assert other_client.status_code == 401, other_client.text


async def test_concurrent_login_burst_is_limited_exactly(client, db, settings):
    responses = await asyncio.gather(*(login(client, f"guess{i}@example.com") for i in range(15)))

    assert sorted(r.status_code for r in responses) == [401] * 10 + [429] * 5


# -- without Redis ----------------------------------------------------------------------------------------------------


async def test_limits_hold_in_process_and_nothing_fails_while_redis_is_down(db, settings, database):
    user = await make_user(db, settings)
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    async with (
        running_app(settings, database, redis_url=dead_redis, rate_limit_contacts_read="3/minute") as app,
        client_at(app) as http,
    ):
        health = await http.get("/health")
        assert health.status_code == 200, health.text
        assert health.json()["cache"] == {"backend": "redis", "ok": False}
        logins = [await login(http, f"guess{i}@example.com") for i in range(10)]
        over = await login(http, user.email, DEFAULT_PASSWORD)
        reads = [await http.get(f"{API}/contacts", headers=auth_headers(settings, user)) for _ in range(3)]
        over_reads = await http.get(f"{API}/contacts", headers=auth_headers(settings, user))
        resets = [await http.post(f"{API}/auth/forgot-password", json={"email": user.email}) for _ in range(5)]
        over_resets = await http.post(f"{API}/auth/forgot-password", json={"email": user.email})

    assert [r.status_code for r in logins] == [401] * 10
    assert_rate_limited(over, 60)
    assert [r.status_code for r in reads] == [200] * 3
    assert_rate_limited(over_reads, 60)
    assert [r.status_code for r in resets] == [202] * 5
    assert_rate_limited(over_resets, 3600)


# -- CORS -------------------------------------------------------------------------------------------------------------


def preflight_headers(origin: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }


async def test_cors_preflight_from_a_configured_origin_is_allowed(db, settings, database):
    async with running_app(settings, database, cors_origins=["https://app.example"]) as app, client_at(app) as http:
        response = await http.options(f"{API}/contacts", headers=preflight_headers("https://app.example"))

    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == "https://app.example"
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "authorization" in response.headers["access-control-allow-headers"].lower()


async def test_cors_preflight_from_another_origin_is_refused(db, settings, database):
    async with running_app(settings, database, cors_origins=["https://app.example"]) as app, client_at(app) as http:
        response = await http.options(f"{API}/contacts", headers=preflight_headers("https://evil.example"))
        simple = await http.get("/health", headers={"Origin": "https://evil.example"})

    assert response.status_code == 400, response.text
    assert "access-control-allow-origin" not in response.headers
    assert simple.status_code == 200
    assert "access-control-allow-origin" not in simple.headers


async def test_no_origin_is_allowed_when_cors_origins_is_empty(client, settings):
    assert settings.cors_origins == []

    response = await client.options(f"{API}/contacts", headers=preflight_headers("https://app.example"))

    assert response.status_code == 405, response.text
    assert "access-control-allow-origin" not in response.headers
