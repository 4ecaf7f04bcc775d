"""The console script, run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys

from sqlalchemy import select

from app.users.models import User


def _run(args: list[str], settings, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "JWT_SECRET": settings.jwt_secret.get_secret_value(),
        "ARGON2_TIME_COST": "1",
        "ARGON2_MEMORY_COST": "1024",
    }
    return subprocess.run(
        [sys.executable, "-c", "from app.cli import main; main()", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


async def test_create_admin_makes_a_verified_administrator(db, settings, client):
    result = _run(["create-admin", "Root@Example.com", "--password-stdin"], settings, "a strong passphrase\n")
    assert result.returncode == 0, result.stderr
    assert "root@example.com: administrator created" in result.stdout
    user = (await db.execute(select(User).where(User.email == "root@example.com"))).scalar_one()
    assert (user.role, user.is_verified, user.is_active) == ("admin", True, True)
    login = await client.post(
        "/api/v1/auth/login", data={"username": "root@example.com", "password": "a strong passphrase"}
    )
    assert login.status_code == 200
    listing = await client.get(
        "/api/v1/admin/users", headers={"Authorization": f"Bearer {login.json()['access_token']}"}
    )
    assert listing.status_code == 200
    assert [u["email"] for u in listing.json()["items"]] == ["root@example.com"]


async def test_create_admin_promotes_an_existing_user_and_drops_their_cached_record(db, settings, client, redis_client):
    from tests.factories import auth_headers, make_user

    user = await make_user(db, settings, email="member@example.com")
    assert (await client.get("/api/v1/users/me", headers=auth_headers(settings, user))).json()["role"] == "user"
    assert await redis_client.exists(f"user:{user.id}")
    result = _run(["create-admin", "member@example.com", "--password-stdin"], settings, "irrelevant pass\n")
    assert result.returncode == 0, result.stderr
    assert "administrator promoted" in result.stdout
    assert not await redis_client.exists(f"user:{user.id}")
    await db.refresh(user)
    assert user.role == "admin"


async def test_create_admin_refuses_a_short_password(db, settings):
    result = _run(["create-admin", "x@example.com", "--password-stdin"], settings, "short\n")
    assert result.returncode != 0
    assert "8 to 1024" in result.stderr + result.stdout
    assert (await db.execute(select(User))).first() is None


def test_migrate_command_reports_the_newest_migration(settings, database):
    result = _run(["migrate"], settings)
    assert result.returncode == 0, result.stderr
    assert "newest migration" in result.stdout
