"""Attacks on what the service exposes around its API: the token secret, the logs, error pages and /metrics."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from app.core.cache import cache
from app.core.config import DEV_JWT_SECRET, Settings
from app.core.db import Database
from app.core.email import CONSOLE_MARK
from app.main import create_app
from app.users.models import Role, User
from tests.factories import auth_headers, make_user
from tests.integration.test_avatars import image_bytes

API = "/api/v1"


@asynccontextmanager
async def running(settings: Settings, database: Database, **overrides: Any) -> AsyncIterator[FastAPI]:
    application = create_app(settings.model_copy(update=overrides), database)
    try:
        async with application.router.lifespan_context(application):
            yield application
    finally:
        cache.configure(settings)  # the lifespan rebound the process-wide cache: give it back to the suite


def client_at(app: FastAPI, address: str = "127.0.0.1", *, raise_errors: bool = True) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 5000), raise_app_exceptions=raise_errors)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def forged_admin_token(secret: str, user: User) -> str:
    now = int(time.time())
    claims = {"sub": str(user.id), "aud": "contacts-api:access", "iss": "contacts-api", "iat": now, "nbf": now}
    claims |= {"exp": now + 600, "jti": "forged", "ver": user.token_version}
    return jwt.encode(claims, secret, algorithm="HS256")


# -- 1. the token secret ------------------------------------------------------------------------------------------


async def test_a_token_signed_with_the_published_development_secret_is_refused_by_default(
    db, settings, database, tmp_path
):
    admin = await make_user(db, settings, role=Role.admin)
    unset = {"jwt_secret": None, "jwt_secret_file": str(tmp_path / "secret")}
    async with running(settings, database, **unset) as app, client_at(app) as http:
        forged = await http.get(
            f"{API}/admin/users", headers={"Authorization": f"Bearer {forged_admin_token(DEV_JWT_SECRET, admin)}"}
        )
        genuine_secret = (tmp_path / "secret").read_text().strip()
        genuine = await http.get(
            f"{API}/admin/users", headers={"Authorization": f"Bearer {forged_admin_token(genuine_secret, admin)}"}
        )

    assert forged.status_code == 401, forged.text
    assert forged.json()["error"] == "InvalidAccessToken"
    assert genuine.status_code == 200  # the generated key is the one in use, kept in its file


@pytest.mark.parametrize("secret", [DEV_JWT_SECRET, "change-me-to-32-or-more-random-characters", "too-short"])
def test_serve_refuses_a_published_or_short_secret_on_a_public_address(secret, tmp_path):
    env = {**os.environ, "JWT_SECRET": secret, "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/c.db"}
    result = subprocess.run(
        [sys.executable, "-c", "from app.cli import main; main()", "serve", "--host", "0.0.0.0", "--no-migrate"],  # noqa: S104
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2, result.stdout + result.stderr
    assert "refusing to serve on 0.0.0.0: JWT_SECRET is short or a published example value" in result.stderr
    assert "Uvicorn running" not in result.stdout + result.stderr


# -- 7. secrets in logs -------------------------------------------------------------------------------------------

LINK = re.compile(r"https?://\S+\?token=(\S+)")


async def test_no_log_line_of_every_mail_flow_holds_a_password_hash_or_token(db, settings, database, caplog):
    """Register, verify, resend, log in, refresh, change the password, forget it, reset it, log out, with the
    console mailer: then every INFO line outside the mailer's own marked ones is free of every secret seen."""
    caplog.set_level(logging.INFO)
    email, first, second, third = "ada@example.com", "first passphrase", "second passphrase", "third passphrase"
    secrets_seen: set[str] = {first, second, third}
    async with running(settings, database, smtp_host=None) as app, client_at(app) as http:

        async def mailed_token() -> str:
            await app.state.mailer.drain()
            lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(CONSOLE_MARK)]
            found = LINK.findall("\n".join(lines))
            assert found, "no link in the console mailer's lines"
            secrets_seen.add(found[-1])
            return str(found[-1])

        assert (await http.post(f"{API}/auth/register", json={"email": email, "password": first})).status_code == 201
        await mailed_token()
        assert (await http.post(f"{API}/auth/resend-verification", json={"email": email})).status_code == 202
        verify = await http.get(f"{API}/auth/verify-email", params={"token": await mailed_token()})
        assert verify.status_code == 200
        pair = (await http.post(f"{API}/auth/login", data={"username": email, "password": first})).json()
        pair = (await http.post(f"{API}/auth/refresh", json={"refresh_token": pair["refresh_token"]})).json()
        secrets_seen.update(pair.values())
        changed = await http.put(
            f"{API}/users/me/password",
            json={"current_password": first, "new_password": second},
            headers={"Authorization": f"Bearer {pair['access_token']}"},
        )
        assert changed.status_code == 200, changed.text
        secrets_seen.update(changed.json().values())
        assert (await http.post(f"{API}/auth/forgot-password", json={"email": email})).status_code == 202
        reset = await http.post(
            f"{API}/auth/reset-password", json={"token": await mailed_token(), "new_password": third}
        )
        assert reset.status_code == 204
        pair = (await http.post(f"{API}/auth/login", data={"username": email, "password": third})).json()
        secrets_seen.update(pair.values())
        assert (await http.post(f"{API}/auth/logout", json={"refresh_token": pair["refresh_token"]})).status_code == 204
        bad = await http.post(f"{API}/auth/login", data={"username": email, "password": "a wrong passphrase"})
        assert bad.status_code == 401
    user = (await db.execute(select(User).where(User.email == email))).scalar_one()
    secrets_seen.add(user.hashed_password)
    secrets_seen.discard("bearer")

    # The service's lines (the test's own HTTP client logs its request URLs: not the service's).
    service = [r for r in caplog.records if r.levelno >= logging.INFO and not r.name.startswith(("httpx", "httpcore"))]
    log_lines = [line for r in service for line in r.getMessage().splitlines()]
    console = [line for line in log_lines if line.startswith(CONSOLE_MARK)]
    other = [line for line in log_lines if not line.startswith(CONSOLE_MARK)]
    leaks = [(secret[:12], line[:80]) for line in other for secret in secrets_seen if secret in line]
    leaks += [("argon2 hash", line[:80]) for line in other if "$argon2" in line]

    assert len(console) >= 12  # four messages went to the log, each over several marked lines
    assert leaks == []


async def test_database_errors_never_carry_their_statement_parameters(db, settings, database):
    """A failed statement's parameters (here a password hash) stay out of the error, so out of every log line."""
    user = await make_user(db, settings)
    insert = text("INSERT INTO users (email, hashed_password) VALUES (:email, :hashed)")
    with pytest.raises(IntegrityError) as raised:
        async with database.engine.begin() as connection:
            await connection.execute(insert, {"email": user.email, "hashed": "$argon2id$v=19$secret-hash-value"})

    assert "secret-hash-value" not in str(raised.value)
    assert "hidden due to hide_parameters" in str(raised.value)


# -- 8. errors ----------------------------------------------------------------------------------------------------


async def test_a_crash_answers_json_with_a_request_id_that_is_in_the_log(settings, database, caplog):
    async with running(settings, database) as app:

        @app.get("/crash")
        async def crash() -> None:
            raise RuntimeError("private detail 0xdeadbeef")

        async with client_at(app, raise_errors=False) as http:
            response = await http.get("/crash")

    assert response.status_code == 500
    body = response.json()
    assert body["error"] == "InternalError"
    assert re.fullmatch(r"[0-9a-f]{16}", body["request_id"])
    assert body["request_id"] in body["detail"]
    assert response.headers["x-request-id"] == body["request_id"]
    assert "0xdeadbeef" not in response.text
    logged = [r for r in caplog.records if body["request_id"] in r.getMessage()]
    assert len(logged) == 1
    assert logged[0].exc_info is not None
    assert "0xdeadbeef" in str(logged[0].exc_info[1])


def _fill(folder: Path) -> None:
    with (folder / "filler").open("wb") as handle:
        while True:
            handle.write(b"\0" * 4096)
            handle.flush()


@pytest.fixture
def full_media_root(tmp_path: Path) -> Iterator[Path]:
    """A media folder on a 64 KiB tmpfs with no room left (real ENOSPC, not a stand-in)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs")
    media = tmp_path / "media"
    media.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(media)], check=True)
    try:
        (media / "avatars").mkdir()
        with pytest.raises(OSError, match="No space left"):
            _fill(media)
        yield media
    finally:
        subprocess.run(["umount", str(media)], check=False)


async def test_a_full_disk_on_avatar_upload_is_507_not_database_unavailable(db, settings, database, full_media_root):
    user = await make_user(db, settings)
    async with running(settings, database, media_root=str(full_media_root)) as app, client_at(app) as http:
        response = await http.put(
            f"{API}/users/me/avatar",
            files={"file": ("a.png", image_bytes("PNG", (64, 64)), "image/png")},
            headers=auth_headers(settings, user),
        )

    assert response.status_code == 507, response.text
    assert response.json() == {
        "error": "InsufficientStorage",
        "detail": "The server has no room to store this; try again later.",
    }
    assert list((full_media_root / "avatars").iterdir()) == []  # no half-written file
    await db.refresh(user)
    assert user.avatar_url is None


# -- 9. exposure --------------------------------------------------------------------------------------------------


async def test_metrics_are_refused_to_outsiders_and_served_to_allowed_networks_or_the_token(settings, database):
    token = "metrics-" + "t" * 40
    async with running(settings, database, metrics_token=SecretStr(token), trusted_proxies=["10.0.0.1"]) as app:
        async with client_at(app, "203.0.113.5") as outsider:
            refused = await outsider.get("/metrics")
            wrong = await outsider.get("/metrics", headers={"Authorization": "Bearer not-the-token"})
            with_token = await outsider.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        async with client_at(app, "127.0.0.1") as local:
            local_scrape = await local.get("/metrics")
        async with client_at(app, "10.0.0.1") as proxy:
            forwarded_outsider = await proxy.get("/metrics", headers={"X-Forwarded-For": "203.0.113.5"})
            forwarded_local = await proxy.get("/metrics", headers={"X-Forwarded-For": "127.0.0.1"})

    for response in (refused, wrong, forwarded_outsider):
        assert response.status_code == 403, response.text
        assert response.json()["error"] == "MetricsForbidden"
        assert "contacts_api" not in response.text
    for response in (with_token, local_scrape, forwarded_local):
        assert response.status_code == 200
        assert "contacts_api_cache_hit_ratio" in response.text
