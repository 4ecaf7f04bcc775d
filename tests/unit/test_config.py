from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.core.config import DEV_JWT_SECRET, Settings


def test_production_refuses_the_development_jwt_secret():
    with pytest.raises(ValidationError, match="JWT_SECRET"):
        Settings(_env_file=None, environment="production", jwt_secret=DEV_JWT_SECRET)


def test_production_refuses_a_short_jwt_secret():
    with pytest.raises(ValidationError, match="JWT_SECRET"):
        Settings(_env_file=None, environment="production", jwt_secret="short")


def test_production_accepts_a_long_random_secret():
    settings = Settings(_env_file=None, environment="production", jwt_secret="k" * 48)
    assert settings.jwt_secret.get_secret_value() == "k" * 48


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
