"""Sessions end to end: refresh-token rotation and reuse detection, logout, the events that end every session,
and the token-confusion matrix (each token is accepted where its purpose is expected and nowhere else)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import warnings
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest
from jwt.warnings import InsecureKeyLengthWarning
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.models import RefreshToken
from app.auth.service import issue_tokens
from app.auth.tokens import access_token, reset_password_token, verify_email_token
from app.core.config import Settings
from app.core.db import utcnow
from app.core.security import verify_password
from app.users.models import Role, User
from tests.factories import DEFAULT_PASSWORD, auth_headers, make_user

API = "/api/v1"
NEW_PASSWORD = "a brand new passphrase"


# -- helpers ----------------------------------------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def login(client: httpx.AsyncClient, email: str, password: str = DEFAULT_PASSWORD) -> dict[str, str]:
    response = await client.post(f"{API}/auth/login", data={"username": email, "password": password})
    assert response.status_code == 200, response.text
    pair: dict[str, str] = response.json()
    return pair


async def refresh(client: httpx.AsyncClient, refresh_token: str) -> httpx.Response:
    return await client.post(f"{API}/auth/refresh", json={"refresh_token": refresh_token})


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


async def refresh_rows(db: AsyncSession, user_id: int) -> list[RefreshToken]:
    await db.commit()  # see the app's commits
    query = select(RefreshToken).where(RefreshToken.user_id == user_id).order_by(RefreshToken.created_at)
    return list((await db.execute(query.execution_options(populate_existing=True))).scalars())


async def reload_user(db: AsyncSession, user_id: int) -> User | None:
    await db.commit()
    return await db.get(User, user_id, populate_existing=True)


# -- login, rotation, reuse, logout -----------------------------------------------------------------------------


async def test_login_returns_token_pair_and_records_its_refresh_token(client, db, settings):
    user = await make_user(db, settings)

    pair = await login(client, user.email)

    assert set(pair) == {"access_token", "refresh_token", "token_type"}
    assert pair["token_type"] == "bearer"
    claims = claims_of(pair["refresh_token"])
    (row,) = await refresh_rows(db, user.id)
    assert (row.jti, row.family_id) == (claims["jti"], claims["fam"])
    assert row.used_at is None
    assert row.revoked_at is None
    assert (await client.get(f"{API}/users/me", headers=bearer(pair["access_token"]))).json()["id"] == user.id


async def test_refresh_rotates_the_refresh_token_within_its_family(client, db, settings):
    user = await make_user(db, settings)
    first = await login(client, user.email)

    response = await refresh(client, first["refresh_token"])

    assert response.status_code == 200, response.text
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    old, new = claims_of(first["refresh_token"]), claims_of(second["refresh_token"])
    assert old["fam"] == new["fam"]
    assert old["jti"] != new["jti"]
    rows = {row.jti: row for row in await refresh_rows(db, user.id)}
    assert rows[old["jti"]].used_at is not None
    assert rows[new["jti"]].used_at is None
    assert rows[new["jti"]].revoked_at is None
    assert (await client.get(f"{API}/users/me", headers=bearer(second["access_token"]))).status_code == 200


async def test_used_refresh_token_is_refused(client, db, settings):
    user = await make_user(db, settings)
    pair = await login(client, user.email)
    assert (await refresh(client, pair["refresh_token"])).status_code == 200

    response = await refresh(client, pair["refresh_token"])

    assert response.status_code == 401, response.text
    assert response.json()["error"] == "RefreshTokenReused"
    assert response.headers["www-authenticate"] == "Bearer"


async def test_reusing_a_used_refresh_token_revokes_its_whole_family(client, db, settings):
    user = await make_user(db, settings)
    first = await login(client, user.email)
    other_session = await login(client, user.email)
    second = (await refresh(client, first["refresh_token"])).json()
    newest = (await refresh(client, second["refresh_token"])).json()

    replay = await refresh(client, first["refresh_token"])

    assert replay.status_code == 401, replay.text
    after = await refresh(client, newest["refresh_token"])
    assert after.status_code == 401, after.text
    family = claims_of(first["refresh_token"])["fam"]
    rows = await refresh_rows(db, user.id)
    assert all(row.revoked_at is not None for row in rows if row.family_id == family)
    # Another login of the same user is another family: it lives on.
    assert (await refresh(client, other_session["refresh_token"])).status_code == 200


@pytest.mark.parametrize("racers", [2, 6])
async def test_concurrent_uses_of_one_refresh_token_rotate_once_and_revoke_the_family(client, db, settings, racers):
    user = await make_user(db, settings)
    pair = await login(client, user.email)
    family = claims_of(pair["refresh_token"])["fam"]

    responses = await asyncio.gather(*(refresh(client, pair["refresh_token"]) for _ in range(racers)))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [401] * (racers - 1), [r.text for r in responses]
    # A loser that reads the token after another loser revoked the family sees a revoked token.
    errors = [r.json()["error"] for r in responses if r.status_code == 401]
    assert "RefreshTokenReused" in errors
    assert set(errors) <= {"RefreshTokenReused", "InvalidRefreshToken"}
    rows = await refresh_rows(db, user.id)
    assert len(rows) == 2  # the login's token and the one rotation: no second family, no second child
    assert {row.family_id for row in rows} == {family}
    assert all(row.revoked_at is not None for row in rows)
    winner = next(r.json() for r in responses if r.status_code == 200)
    after = await refresh(client, winner["refresh_token"])
    assert after.status_code == 401, after.text


async def test_logout_ends_the_session_of_that_refresh_token(client, db, settings):
    user = await make_user(db, settings)
    pair = await login(client, user.email)

    response = await client.post(f"{API}/auth/logout", json={"refresh_token": pair["refresh_token"]})

    assert response.status_code == 204, response.text
    assert response.content == b""
    (row,) = await refresh_rows(db, user.id)
    assert row.revoked_at is not None
    after = await refresh(client, pair["refresh_token"])
    assert after.status_code == 401, after.text
    assert after.json()["error"] == "InvalidRefreshToken"


async def test_refresh_token_past_its_recorded_expiry_is_refused(client, db, settings):
    user = await make_user(db, settings)
    pair = await login(client, user.email)
    await db.execute(
        update(RefreshToken)
        .where(RefreshToken.jti == claims_of(pair["refresh_token"])["jti"])
        .values(expires_at=utcnow() - timedelta(seconds=1))
    )
    await db.commit()

    response = await refresh(client, pair["refresh_token"])

    assert response.status_code == 401, response.text
    assert response.json()["error"] == "InvalidRefreshToken"
    (row,) = await refresh_rows(db, user.id)
    assert row.used_at is None


# -- events that end every session ------------------------------------------------------------------------------


async def _change_password(client, settings, victim, pair, admin) -> None:
    response = await client.put(
        f"{API}/users/me/password",
        json={"current_password": DEFAULT_PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(pair["access_token"]),
    )
    assert response.status_code == 200, response.text


async def _reset_password(client, settings, victim, pair, admin) -> None:
    token = reset_password_token(settings, victim.id, victim.hashed_password)
    response = await client.post(f"{API}/auth/reset-password", json={"token": token, "new_password": NEW_PASSWORD})
    assert response.status_code == 204, response.text


async def _deactivate(client, settings, victim, pair, admin) -> None:
    response = await client.patch(
        f"{API}/admin/users/{victim.id}", json={"is_active": False}, headers=auth_headers(settings, admin)
    )
    assert response.status_code == 200, response.text
    assert response.json()["is_active"] is False


async def _demote(client, settings, victim, pair, admin) -> None:
    response = await client.patch(
        f"{API}/admin/users/{victim.id}", json={"role": "user"}, headers=auth_headers(settings, admin)
    )
    assert response.status_code == 200, response.text
    assert response.json()["role"] == "user"


SESSION_ENDERS = {
    "password_change": _change_password,
    "password_reset": _reset_password,
    "deactivation": _deactivate,
    "demotion": _demote,
}


@pytest.mark.parametrize("event", list(SESSION_ENDERS))
async def test_event_ends_every_session_even_with_the_user_cached(client, db, settings, redis_client, event):
    victim = await make_user(db, settings, role=Role.admin if event == "demotion" else Role.user)
    admin = await make_user(db, settings, role=Role.admin)
    pair = await login(client, victim.email)
    other = await login(client, victim.email)
    assert (await client.get(f"{API}/users/me", headers=bearer(pair["access_token"]))).status_code == 200
    cached = await redis_client.get(f"user:{victim.id}")
    assert cached is not None
    assert json.loads(cached)["token_version"] == 0

    await SESSION_ENDERS[event](client, settings, victim, pair, admin)

    assert await redis_client.exists(f"user:{victim.id}") == 0
    me = await client.get(f"{API}/users/me", headers=bearer(pair["access_token"]))
    assert me.status_code == 401, me.text
    assert me.json()["error"] == "InvalidAccessToken"
    for old in (pair, other):
        refused = await refresh(client, old["refresh_token"])
        assert refused.status_code == 401, refused.text
    row = await reload_user(db, victim.id)
    assert row is not None
    assert row.token_version == 1


@pytest.mark.parametrize("event", ["password_change", "password_reset"])
async def test_password_event_revokes_every_refresh_token_record(client, db, settings, event):
    victim = await make_user(db, settings)
    pairs = [await login(client, victim.email), await login(client, victim.email)]

    await SESSION_ENDERS[event](client, settings, victim, pairs[0], None)

    old_jtis = {claims_of(pair["refresh_token"])["jti"] for pair in pairs}
    rows = {row.jti: row for row in await refresh_rows(db, victim.id)}
    assert old_jtis <= set(rows)
    assert all(rows[jti].revoked_at is not None for jti in old_jtis)


# -- token confusion ----------------------------------------------------------------------------------------------

# Where each kind of token is presented, and how each place refuses one: bearer routes and the refresh-token
# endpoints answer 401, the link endpoints (verify, reset) 400.
TARGETS = ("bearer", "refresh", "logout", "verify_email", "reset_password")
HOME = {"access": "bearer", "refresh": "refresh", "verify_email": "verify_email", "reset_password": "reset_password"}
REFUSAL = {"bearer": 401, "refresh": 401, "logout": 401, "verify_email": 400, "reset_password": 400}
ACCEPTANCE = {"bearer": 200, "refresh": 200, "logout": 204, "verify_email": 200, "reset_password": 204}
ERROR = {
    "bearer": "InvalidAccessToken",
    "refresh": "InvalidRefreshToken",
    "logout": "InvalidRefreshToken",
    "verify_email": "InvalidVerificationToken",
    "reset_password": "InvalidResetToken",
}


async def present(client: httpx.AsyncClient, target: str, token: str) -> httpx.Response:
    if target == "bearer":
        return await client.get(f"{API}/users/me", headers=bearer(token))
    if target in ("refresh", "logout"):
        return await client.post(f"{API}/auth/{target}", json={"refresh_token": token})
    if target == "verify_email":
        return await client.get(f"{API}/auth/verify-email", params={"token": token})
    return await client.post(f"{API}/auth/reset-password", json={"token": token, "new_password": NEW_PASSWORD})


async def genuine_tokens(db: AsyncSession, settings: Settings) -> tuple[User, dict[str, str]]:
    """An unverified user (so a wrongly accepted verify token shows) and one genuine token of every kind."""
    user = await make_user(db, settings, verified=False)
    pair = await issue_tokens(db, settings, user.id, user.token_version)
    await db.commit()
    return user, {
        "access": pair.access_token,
        "refresh": pair.refresh_token,
        "verify_email": verify_email_token(settings, user.id, user.email),
        "reset_password": reset_password_token(settings, user.id, user.hashed_password),
    }


async def assert_untouched(db: AsyncSession, settings: Settings, user_id: int) -> None:
    row = await reload_user(db, user_id)
    assert row is not None
    assert row.is_verified is False
    assert row.token_version == 0
    assert await verify_password(settings, DEFAULT_PASSWORD, row.hashed_password)
    assert all(r.used_at is None and r.revoked_at is None for r in await refresh_rows(db, user_id))


@pytest.mark.parametrize(
    ("kind", "target"),
    [
        (kind, target)
        for kind in HOME
        for target in TARGETS
        if HOME[kind] != target and not (kind == "refresh" and target == "logout")
    ],
)
async def test_token_is_refused_outside_its_purpose(client, db, settings, kind, target):
    user, tokens = await genuine_tokens(db, settings)

    response = await present(client, target, tokens[kind])

    assert response.status_code == REFUSAL[target], response.text
    assert response.json()["error"] == ERROR[target]
    await assert_untouched(db, settings, user.id)


@pytest.mark.parametrize(("kind", "target"), [*HOME.items(), ("refresh", "logout")])
async def test_token_is_accepted_for_its_purpose(client, db, settings, kind, target):
    _, tokens = await genuine_tokens(db, settings)

    response = await present(client, target, tokens[kind])

    assert response.status_code == ACCEPTANCE[target], response.text


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def forge(settings: Settings, token: str, defect: str) -> str:
    """`token` with one defect: re-signed with our secret unless the defect is in the signature itself."""
    claims = claims_of(token)
    secret = settings.jwt_secret.get_secret_value()
    now = int(time.time())
    if defect == "alg_none":
        return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    if defect == "tampered":
        header, _, signature = token.split(".")
        return f"{header}.{_b64({**claims, 'exp': now + 10 * 365 * 86400})}.{signature}"
    if defect == "other_secret":
        return jwt.encode(claims, "another-secret-" + "y" * 40, algorithm="HS256")
    if defect == "other_algorithm":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InsecureKeyLengthWarning)  # the key is long enough for HS256
            return jwt.encode(claims, secret, algorithm="HS512")
    changes = {
        "expired": {"iat": now - 600, "nbf": now - 600, "exp": now - 300},
        "not_yet_valid": {"nbf": now + 3600},
        "wrong_audience": {"aud": "contacts-api"},
        "wrong_issuer": {"iss": "someone-else"},
    }
    if defect == "no_expiry":
        del claims["exp"]
    else:
        claims.update(changes[defect])
    return jwt.encode(claims, secret, algorithm="HS256")


DEFECTS = (
    "alg_none",
    "tampered",
    "other_secret",
    "other_algorithm",
    "expired",
    "not_yet_valid",
    "wrong_audience",
    "wrong_issuer",
    "no_expiry",
)


@pytest.mark.parametrize("target", ["bearer", "refresh", "verify_email", "reset_password"])
@pytest.mark.parametrize("defect", DEFECTS)
async def test_forged_token_is_refused(client, db, settings, defect, target):
    user, tokens = await genuine_tokens(db, settings)
    kind = next(kind for kind, home in HOME.items() if home == target)

    response = await present(client, target, forge(settings, tokens[kind], defect))

    assert response.status_code == REFUSAL[target], response.text
    assert response.json()["error"] == ERROR[target]
    await assert_untouched(db, settings, user.id)


@pytest.mark.parametrize("target", ["bearer", "refresh", "verify_email", "reset_password"])
async def test_token_of_a_deleted_user_is_refused(client, db, settings, redis_client, target):
    user, tokens = await genuine_tokens(db, settings)
    assert (await client.get(f"{API}/users/me", headers=bearer(tokens["access"]))).status_code == 200
    assert await redis_client.exists(f"user:{user.id}") == 1
    admin = await make_user(db, settings, role=Role.admin)
    deleted = await client.delete(f"{API}/admin/users/{user.id}", headers=auth_headers(settings, admin))
    assert deleted.status_code == 204, deleted.text
    kind = next(kind for kind, home in HOME.items() if home == target)

    response = await present(client, target, tokens[kind])

    assert response.status_code == REFUSAL[target], response.text
    assert response.json()["error"] == ERROR[target]
    assert await reload_user(db, user.id) is None


async def test_access_token_without_version_claim_is_refused(client, db, settings):
    user = await make_user(db, settings)
    claims = claims_of(access_token(settings, user.id, user.token_version))
    del claims["ver"]
    token = jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm="HS256")

    response = await client.get(f"{API}/users/me", headers=bearer(token))

    assert response.status_code == 401, response.text
    assert response.json()["error"] == "InvalidAccessToken"
