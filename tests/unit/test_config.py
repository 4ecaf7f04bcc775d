from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.core.config import (
    DEV_JWT_SECRET,
    JWT_SECRET_FILE_NAME,
    KNOWN_JWT_SECRETS,
    Settings,
    is_loopback,
    with_jwt_secret,
)


def test_production_refuses_the_development_jwt_secret():
    with pytest.raises(ValidationError, match="JWT_SECRET"):
        Settings(_env_file=None, environment="production", jwt_secret=DEV_JWT_SECRET)


def test_production_refuses_a_short_jwt_secret():
    with pytest.raises(ValidationError, match="JWT_SECRET"):
        Settings(_env_file=None, environment="production", jwt_secret="short")


def test_production_accepts_a_long_random_secret():
    settings = Settings(_env_file=None, environment="production", jwt_secret="k" * 48, smtp_host="smtp.example")
    assert settings.jwt_key == "k" * 48


def test_production_refuses_a_missing_jwt_secret():
    with pytest.raises(ValidationError, match="JWT_SECRET"):
        Settings(_env_file=None, environment="production", smtp_host="smtp.example")


def test_production_refuses_to_write_mail_to_the_log_unless_asked():
    with pytest.raises(ValidationError, match="SMTP_HOST"):
        Settings(_env_file=None, environment="production", jwt_secret="k" * 48)
    chosen = Settings(_env_file=None, environment="production", jwt_secret="k" * 48, mail_backend="console")
    assert chosen.mail_to_console


def test_smtp_mail_backend_needs_a_host():
    with pytest.raises(ValidationError, match="SMTP_HOST"):
        Settings(_env_file=None, mail_backend="smtp")


@pytest.mark.parametrize("secret", [DEV_JWT_SECRET, "change-me-to-32-or-more-random-characters", "short"])
def test_published_or_short_jwt_secrets_are_weak(secret):
    assert Settings(_env_file=None, jwt_secret=secret).weak_jwt_secret


def test_without_jwt_secret_one_is_generated_beside_the_sqlite_file_and_kept(tmp_path):
    settings = Settings(_env_file=None, database_url=f"sqlite+aiosqlite:///{tmp_path}/contacts.db")

    first = with_jwt_secret(settings)
    again = with_jwt_secret(Settings(_env_file=None, database_url=f"sqlite+aiosqlite:///{tmp_path}/contacts.db"))

    path = tmp_path / JWT_SECRET_FILE_NAME
    assert first.jwt_key == again.jwt_key == path.read_text().strip()
    assert len(first.jwt_key) >= 32
    assert not first.weak_jwt_secret
    assert first.jwt_key not in KNOWN_JWT_SECRETS
    assert path.stat().st_mode & 0o777 == 0o600
    other = tmp_path / "elsewhere"
    other.mkdir()
    elsewhere = with_jwt_secret(Settings(_env_file=None, database_url=f"sqlite+aiosqlite:///{other}/contacts.db"))
    assert elsewhere.jwt_key != first.jwt_key


def test_a_configured_jwt_secret_is_used_as_it_is(tmp_path):
    settings = Settings(_env_file=None, jwt_secret="j" * 40, database_url=f"sqlite+aiosqlite:///{tmp_path}/c.db")
    assert with_jwt_secret(settings).jwt_key == "j" * 40
    assert not (tmp_path / JWT_SECRET_FILE_NAME).exists()


def test_an_empty_secret_file_is_refused_rather_than_signing_with_nothing(tmp_path):
    (tmp_path / JWT_SECRET_FILE_NAME).write_text("\n")
    with pytest.raises(RuntimeError, match="JWT secret"):
        with_jwt_secret(Settings(_env_file=None, database_url=f"sqlite+aiosqlite:///{tmp_path}/contacts.db"))


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),  # noqa: S104 - the address under test
        ("::", False),
        ("192.0.2.1", False),
        ("contacts.example", False),
    ],
)
def test_only_loopback_addresses_count_as_local(host, loopback):
    assert is_loopback(host) is loopback


def test_several_workers_without_redis_turn_the_cache_off(monkeypatch):
    for name in ("REDIS_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD", "REDIS_DB"):
        monkeypatch.delenv(name, raising=False)
    assert Settings(_env_file=None, web_concurrency=1).cache_off_reason is None
    assert "2 workers and no Redis" in str(Settings(_env_file=None, web_concurrency=2).cache_off_reason)
    assert Settings(_env_file=None, web_concurrency=2, redis_url="redis://127.0.0.1:6379/0").cache_off_reason is None


def test_no_redis_setting_selects_the_in_process_cache(monkeypatch):
    for name in ("REDIS_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD", "REDIS_DB"):
        monkeypatch.delenv(name, raising=False)
    assert Settings(_env_file=None).redis_dsn is None


def test_redis_host_port_password_build_the_url(monkeypatch):
    monkeypatch.setenv("REDIS_HOST", "cache.internal")
    monkeypatch.setenv("REDIS_PORT", "6380")
    monkeypatch.setenv("REDIS_PASSWORD", "s3cret")
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert Settings(_env_file=None).redis_dsn == "redis://:s3cret@cache.internal:6380/0"


def test_a_redis_password_with_url_characters_is_escaped(monkeypatch):
    from redis.asyncio.connection import parse_url

    monkeypatch.setenv("REDIS_HOST", "cache.internal")
    monkeypatch.setenv("REDIS_PASSWORD", "p@ss/w:rd#1?")
    monkeypatch.delenv("REDIS_URL", raising=False)

    parsed = parse_url(Settings(_env_file=None).redis_dsn)

    assert (parsed["password"], parsed["host"], parsed["port"]) == ("p@ss/w:rd#1?", "cache.internal", 6379)


def test_comma_separated_lists_are_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("TRUSTED_PROXIES", "10.0.0.0/8,127.0.0.1")
    settings = Settings(_env_file=None)
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.trusted_proxies == ["10.0.0.0/8", "127.0.0.1"]


@pytest.mark.parametrize(
    ("name", "value"), [("RATE_LIMIT_LOGIN_IP", "ten per minute"), ("TRUSTED_PROXIES", "not-an-ip")]
)
def test_malformed_settings_are_refused_at_start(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings(_env_file=None)


def test_every_setting_is_in_the_readme_configuration_table():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme[readme.index("## Configuration") : readme.index("\n## ", readme.index("## Configuration") + 1)]

    missing = [name.upper() for name in Settings.model_fields if f"`{name.upper()}`" not in table]

    assert missing == []
