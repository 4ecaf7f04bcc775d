"""Cross-user matrix: user A at every contact route with user B's ids, a plain user at every admin route, with the
cache cold (Redis flushed) and warm (B's contacts, lists and searches cached, A's own too)."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
from redis.asyncio import Redis

from tests.reliability.conftest import API, Accounts, Deployment

pytestmark = pytest.mark.postgres_only

ABSENT_ID = 2**62


def _contact_body(tag: str, n: int) -> dict[str, Any]:
    return {
        "first_name": f"Bsecret{tag}{n}",
        "last_name": f"Bhidden{tag}{n}",
        "email": f"bsecret{tag}{n}@example.net",
        "phone": f"+44 20 7946 09{n:02d}",
        # Born today, so that B's contacts are in every birthdays window.
        "birthday": datetime.now(UTC).date().replace(year=1990).isoformat(),
        "notes": f"Bnotes{tag}{n}",
    }


async def _rows(dsn: str, user_id: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    connection = await asyncpg.connect(dsn)
    try:
        contacts = await connection.fetch("SELECT * FROM contacts WHERE user_id = $1 ORDER BY id", user_id)
        user = await connection.fetchrow("SELECT * FROM users WHERE id = $1", user_id)
    finally:
        await connection.close()
    return [dict(row) for row in contacts], dict(user) if user else {}


def _attacks(b_contact_ids: list[int], accounts: Accounts, tag: str) -> list[tuple[str, str, Any, int]]:
    """(method, path, json body, expected status) of every request A sends."""
    replacement = {"first_name": f"Apwned{tag}", "notes": "overwritten by A"}
    calls: list[tuple[str, str, Any, int]] = []
    for contact_id in b_contact_ids:
        path = f"{API}/contacts/{contact_id}"
        calls += [
            ("GET", path, None, 404),
            ("PUT", path, replacement, 404),
            ("PATCH", path, {"notes": "patched by A"}, 404),
            ("PATCH", path, {"first_name": "A"}, 404),
            ("DELETE", path, None, 404),
            # After the failed writes, a read still finds nothing (nothing was cached for A by them).
            ("GET", path, None, 404),
        ]
    for user_id in (accounts.bob.id, accounts.admin.id, accounts.alice.id, ABSENT_ID):
        path = f"{API}/admin/users/{user_id}"
        calls += [
            ("GET", path, None, 403),
            ("PATCH", path, {"role": "admin"}, 403),
            ("PATCH", path, {"is_active": False}, 403),
            ("DELETE", path, None, 403),
        ]
    calls += [("GET", f"{API}/admin/users", None, 403), ("GET", f"{API}/admin/users?role=user", None, 403)]
    return calls


async def test_user_a_never_reaches_user_b_contacts_nor_admin_routes(
    api_client: httpx.AsyncClient, accounts: Accounts, deployment: Deployment, figures: Any
) -> None:
    alice, bob = accounts.alice, accounts.bob
    tag = secrets.token_hex(3)
    b_ids = []
    for n in range(3):
        created = await api_client.post(f"{API}/contacts", json=_contact_body(tag, n), headers=bob.headers)
        assert created.status_code == 201, created.text
        b_ids.append(created.json()["id"])
    own = await api_client.post(f"{API}/contacts", json={"first_name": f"Aown{tag}"}, headers=alice.headers)
    assert own.status_code == 201, own.text
    # Everything that identifies B's data; none of it may reach A.
    markers = [bob.email, *(str(v) for n in range(3) for k, v in _contact_body(tag, n).items() if k != "birthday")]
    contacts_before, bob_before = await _rows(deployment.dsn, bob.id)

    redis = Redis.from_url(deployment.redis.url)
    results: list[tuple[str, str, str, int, int]] = []
    leaks: list[str] = []
    try:
        for temperature in ("cold", "warm"):
            await redis.flushdb()
            if temperature == "warm":
                for _ in range(2):  # the second round is served from the cache
                    for contact_id in b_ids:
                        assert (
                            await api_client.get(f"{API}/contacts/{contact_id}", headers=bob.headers)
                        ).status_code == 200
                    for params in ({}, {"q": "bsecret"}, {"limit": 5}):
                        assert (await api_client.get(f"{API}/contacts", params=params, headers=bob.headers)).is_success
                    assert (await api_client.get(f"{API}/contacts/birthdays", headers=bob.headers)).is_success
                    assert (await api_client.get(f"{API}/contacts", headers=alice.headers)).is_success
                    assert (await api_client.get(f"{API}/users/me", headers=alice.headers)).is_success
                assert await redis.exists(f"contact:{b_ids[0]}:user:{bob.id}", f"contacts:{bob.id}") == 2
            for method, path, body, expected in _attacks(b_ids, accounts, tag):
                response = await api_client.request(method, path, json=body, headers=alice.headers)
                results.append((temperature, method, path, expected, response.status_code))
                leaks += [f"{temperature} {method} {path}: {m}" for m in markers if m.lower() in response.text.lower()]
            # A's collection routes: answered, and without a trace of B.
            for path, params in (
                (f"{API}/contacts", {"limit": 100}),
                (f"{API}/contacts", {"q": "bsecret"}),
                (f"{API}/contacts", {"q": tag}),
                (f"{API}/contacts/birthdays", {"days": 365, "limit": 100}),
                (f"{API}/users/me", {}),
            ):
                response = await api_client.get(path, params=params, headers=alice.headers)
                assert response.status_code == 200, response.text
                ids = {item["id"] for item in response.json().get("items", [])}
                leaks += [f"{temperature} GET {path}{params}: B's contact {i}" for i in ids & set(b_ids)]
                leaks += [
                    f"{temperature} GET {path}{params}: {m}" for m in markers if m.lower() in response.text.lower()
                ]
    finally:
        await redis.aclose()

    contacts_after, bob_after = await _rows(deployment.dsn, bob.id)
    # B still sees its own contacts exactly as created (and the cache agrees with the database).
    for contact_id, row in zip(b_ids, contacts_after, strict=True):
        response = await api_client.get(f"{API}/contacts/{contact_id}", headers=bob.headers)
        assert response.status_code == 200
        assert response.json()["notes"] == row["notes"]

    wrong = [r for r in results if r[3] != r[4]]
    figures(
        requests=len(results),
        errors=len(wrong) + len(leaks),
        notes=f"{sum(1 for r in results if r[4] == r[3])}/{len(results)} answered as expected "
        f"(404 contacts, 403 admin), cold + warm; {len(leaks)} leaks; B's rows unchanged: "
        f"{contacts_before == contacts_after and bob_before == bob_after}",
    )
    assert wrong == [], json.dumps(wrong[:10], indent=1)
    assert leaks == []
    assert contacts_after == contacts_before
    assert bob_after == bob_before
