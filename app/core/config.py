"""Application settings, read from the environment and an optional `.env` file."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal

from fastapi import Depends, Request
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEV_JWT_SECRET = "dev-insecure-change-me-0123456789abcdef"  # noqa: S105 - the development default, refused in production


class Settings(BaseSettings):
    """Every setting the service reads; names match the README's configuration table."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    app_name: str = "Contacts API"
    log_level: str = "INFO"

    # Database: an embedded SQLite file unless DATABASE_URL names PostgreSQL.
    database_url: str = "sqlite+aiosqlite:///./contacts.db"
    database_pool_size: int = Field(default=10, ge=1)
    database_max_overflow: int = Field(default=10, ge=0)
    database_timeout: float = Field(default=5.0, gt=0, description="Seconds to wait for a connection or a statement.")

    # Cache: Redis when any REDIS_* setting is given, else an in-process backend.
    redis_url: str | None = None
    redis_host: str | None = None
    redis_port: int = 6379
    redis_password: SecretStr | None = None
    redis_db: int = Field(default=0, ge=0)
    cache_enabled: bool = True
    cache_key_prefix: str = ""
    cache_user_ttl: int = Field(default=3600, ge=1)
    cache_contact_ttl: int = Field(default=1800, ge=1)
    cache_contacts_list_ttl: int = Field(default=1800, ge=1)
    cache_op_timeout: float = Field(
        default=0.05, gt=0, description="Seconds any one Redis operation may take while the event loop is free."
    )
    cache_op_timeout_per_call: float = Field(
        default=0.001, ge=0, description="Seconds added to the timeout for each Redis operation already under way."
    )
    cache_op_timeout_cap: float = Field(
        default=1.0, gt=0, description="Seconds a Redis operation may take at most, however busy the event loop."
    )
    cache_lease_ttl: float = Field(default=2.0, gt=0, description="Seconds a cache-miss lease lives.")
    cache_lease_wait: float = Field(default=0.25, ge=0, description="Seconds a reader waits for another's fill.")
    cache_breaker_threshold: int = Field(default=3, ge=1)
    cache_breaker_cooldown: float = Field(default=1.0, gt=0)
    cache_recovery_grace: float = Field(
        default=2.5, ge=0, description="Seconds after Redis answers again during which reads bypass the cache."
    )
    cache_tombstone_ttl: float = Field(default=10.0, gt=0, description="Seconds a write's tombstone lives at most.")
    cache_pool_size: int = Field(default=50, ge=1)

    # Tokens
    jwt_secret: SecretStr = SecretStr(DEV_JWT_SECRET)
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    jwt_issuer: str = "contacts-api"
    access_token_ttl: int = Field(default=900, ge=1)
    refresh_token_ttl: int = Field(default=14 * 24 * 3600, ge=1)

    # Passwords: argon2id; OWASP minimum is m=19 MiB, t=2, p=1.
    argon2_time_cost: int = Field(default=2, ge=1)
    argon2_memory_cost: int = Field(default=19456, ge=8)
    argon2_parallelism: int = Field(default=1, ge=1)

    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Public address of the service, used in links sent by email (never the request's Host header).
    public_base_url: str = "http://127.0.0.1:8000"

    # Accounts
    require_email_verification: bool = True
    verify_token_ttl: int = Field(default=48 * 3600, ge=60)
    reset_token_ttl: int = Field(default=3600, ge=60)

    # Email: SMTP when SMTP_HOST is set, else messages (with their links) go to the log.
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = "Contacts API <no-reply@localhost>"
    smtp_tls: Literal["starttls", "tls", "none"] = "starttls"
    smtp_timeout: float = Field(default=10.0, gt=0)

    # Rate limits ("N/second|minute|hour|day"), per client IP, per account or per user.
    rate_limit_enabled: bool = True
    rate_limit_login_ip: str = "10/minute"
    rate_limit_login_account: str = "20/hour"
    rate_limit_register_ip: str = "20/hour"
    rate_limit_account_email: str = "5/hour"
    rate_limit_account_email_ip: str = "20/hour"
    rate_limit_contacts_read: str = "600/minute"
    rate_limit_contacts_write: str = "120/minute"
    # Peers whose X-Forwarded-For is believed (addresses or networks); empty: the socket's address counts.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Avatars
    media_root: str = "./media"
    avatar_max_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    avatar_max_pixels: int = Field(default=25_000_000, ge=1)
    avatar_size: int = Field(default=256, ge=16, le=2048)
    max_request_bytes: int = Field(default=1024 * 1024, ge=1024)

    @field_validator("cors_origins", "trusted_proxies", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip().startswith("["):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator(
        "rate_limit_login_ip",
        "rate_limit_login_account",
        "rate_limit_register_ip",
        "rate_limit_account_email",
        "rate_limit_account_email_ip",
        "rate_limit_contacts_read",
        "rate_limit_contacts_write",
    )
    @classmethod
    def _valid_rate_limit(cls, value: str) -> str:
        from limits import parse

        parse(value)  # raises ValueError on a malformed limit
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        for entry in value:
            ipaddress.ip_network(entry, strict=False)
        return value

    @model_validator(mode="after")
    def _refuse_development_secrets_in_production(self) -> Settings:
        if self.environment == "production":
            secret = self.jwt_secret.get_secret_value()
            if secret == DEV_JWT_SECRET or len(secret) < 32:
                raise ValueError("JWT_SECRET must be set to a random value of at least 32 characters in production")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def redis_dsn(self) -> str | None:
        """The Redis URL to use, or None for the in-process cache backend."""
        if self.redis_url:
            return self.redis_url
        if self.model_fields_set & {"redis_host", "redis_port", "redis_password", "redis_db"}:
            host = self.redis_host or "127.0.0.1"
            auth = f":{self.redis_password.get_secret_value()}@" if self.redis_password else ""
            return f"redis://{auth}{host}:{self.redis_port}/{self.redis_db}"
        return None


@lru_cache
def get_settings() -> Settings:
    return Settings()


async def app_settings(request: Request) -> Settings:
    """The settings the application was created with. Async on purpose: FastAPI runs a plain `def` dependency in
    its thread pool, a thread hop on every request."""
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(app_settings)]
