"""Application settings, read from the environment and an optional `.env` file."""

from __future__ import annotations

import ipaddress
import os
import secrets
import time
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import Depends, Request
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url

# Secrets that were once shipped in this repository (the old built-in default, .env.example's placeholder):
# anyone can sign tokens with them, so they are refused wherever the service can be reached from elsewhere.
DEV_JWT_SECRET = "dev-insecure-change-me-0123456789abcdef"  # noqa: S105 - a known value, refused
KNOWN_JWT_SECRETS = frozenset({DEV_JWT_SECRET, "change-me-to-32-or-more-random-characters"})
MIN_JWT_SECRET_LENGTH = 32
# With no JWT_SECRET, a random one is generated once and kept in this file beside the SQLite database.
JWT_SECRET_FILE_NAME = ".contacts-api-jwt-secret"  # noqa: S105 - a file name


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
    # A Redis Cluster (startup nodes, `host:port,...`) or a master watched by Sentinels, instead of one server.
    redis_cluster_nodes: Annotated[list[str], NoDecode] = Field(default_factory=list)
    redis_sentinels: Annotated[list[str], NoDecode] = Field(default_factory=list)
    redis_sentinel_master: str = "mymaster"
    cache_enabled: bool = True
    # strict: a write whose tombstone cannot be placed (and, with replicas, confirmed by one) is refused with 503.
    cache_write_policy: Literal["available", "strict"] = "available"
    cache_replay_interval: float = Field(
        default=1.0, ge=0, description="Seconds between replays of invalidations recorded in the database; 0: off."
    )
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
    # One user's cached pages and searches (the `contacts:{user_id}` hash): at most this many, of this many bytes.
    cache_list_max_fields: int = Field(default=64, ge=1)
    cache_list_max_bytes: int = Field(default=256 * 1024, ge=1024)
    # The in-process backend's memory: past it, the oldest keys are evicted.
    cache_memory_max_bytes: int = Field(default=64 * 1024 * 1024, ge=64 * 1024)
    # Worker processes on this host: uvicorn's own variable, which `serve --workers N` sets for its workers.
    web_concurrency: int = Field(default=1, ge=1)

    # Tokens
    # Unset: a random secret kept in JWT_SECRET_FILE (see `with_jwt_secret`); required in production.
    jwt_secret: SecretStr | None = None
    jwt_secret_file: str | None = None
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    jwt_issuer: str = "contacts-api"
    access_token_ttl: int = Field(default=900, ge=1)
    refresh_token_ttl: int = Field(default=14 * 24 * 3600, ge=1)

    # Passwords: argon2id; OWASP minimum is m=19 MiB, t=2, p=1.
    argon2_time_cost: int = Field(default=2, ge=1)
    argon2_memory_cost: int = Field(default=19456, ge=8)
    argon2_parallelism: int = Field(default=1, ge=1)
    # Hashing runs on a thread pool of its own: this many threads, and this many callers waiting (then 503).
    hash_workers: int = Field(default=2, ge=1)
    hash_queue_max: int = Field(default=32, ge=0)

    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Public address of the service, used in links sent by email (never the request's Host header).
    public_base_url: str = "http://127.0.0.1:8000"

    # Accounts
    require_email_verification: bool = True
    verify_token_ttl: int = Field(default=48 * 3600, ge=60)
    reset_token_ttl: int = Field(default=3600, ge=60)

    # Email: SMTP when SMTP_HOST is set, else (development only, or MAIL_BACKEND=console) messages go to the log.
    mail_backend: Literal["smtp", "console"] | None = None
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
    # Failed logins per account and client network; per account from every network (once spent, only networks
    # that failed recently for that account are held back: a correct password from elsewhere still logs in).
    rate_limit_login_account_network: str = "5/15 minutes"
    rate_limit_login_account: str = "20/hour"
    rate_limit_password_change_user: str = "5/hour"  # noqa: S105 - a rate limit
    rate_limit_password_change_ip: str = "20/hour"  # noqa: S105 - a rate limit
    rate_limit_register_ip: str = "20/hour"
    rate_limit_account_email: str = "5/hour"
    rate_limit_account_email_ip: str = "20/hour"
    rate_limit_contacts_read: str = "600/minute"
    rate_limit_contacts_write: str = "120/minute"
    rate_limit_avatar_upload: str = "10/minute"
    # Peers whose X-Forwarded-For is believed (addresses or networks); empty: the socket's address counts.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Who may read /metrics: clients in these networks (after TRUSTED_PROXIES), or with METRICS_TOKEN as bearer.
    metrics_allow: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    metrics_token: SecretStr | None = None

    # Avatars
    media_root: str = "./media"
    avatar_max_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    # Decoded pixels an upload may have (checked from its header, before decoding): a 256 px avatar needs few.
    avatar_max_pixels: int = Field(default=4_000_000, ge=1)
    avatar_size: int = Field(default=256, ge=16, le=2048)
    # Image work runs on a pool of its own: this many threads, and this many uploads waiting (then 503).
    avatar_workers: int = Field(default=2, ge=1)
    avatar_queue: int = Field(default=8, ge=0)
    max_request_bytes: int = Field(default=1024 * 1024, ge=1024)

    # Phones: national numbers (no leading +) are read in the user's `default_region`, else in this region
    # (ISO 3166 alpha-2, e.g. "US"); unset: only numbers written with a leading + get their E.164 form.
    default_phone_region: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")

    # Sync: the trash keeps deleted contacts this many days; the change feed remembers purged ones this many days
    # (older change tokens answer 410); the clean-up that enforces both runs every this many seconds (0: never).
    trash_retention_days: int = Field(default=30, ge=1)
    sync_history_days: int = Field(default=30, ge=1)
    sync_cleanup_interval: float = Field(default=3600.0, ge=0)

    # Imports (vCard, CSV): a file up to IMPORT_SYNC_MAX_BYTES is imported in its request; none may exceed
    # IMPORT_MAX_BYTES. One card or CSV record may be at most IMPORT_MAX_RECORD_BYTES (a card with a large PHOTO).
    import_sync_max_bytes: int = Field(default=1024 * 1024, ge=1024)
    import_max_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    import_max_record_bytes: int = Field(default=512 * 1024, ge=1024)
    # Each worker looks for import jobs to run every this many seconds (0: never); a running job whose worker has
    # not reported for IMPORT_JOB_STALE_SECONDS is taken over and resumed.
    import_job_interval: float = Field(default=2.0, ge=0)
    import_job_stale_seconds: float = Field(default=60.0, gt=0)

    @field_validator(
        "cors_origins", "trusted_proxies", "metrics_allow", "redis_cluster_nodes", "redis_sentinels", mode="before"
    )
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip().startswith("["):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator(
        "rate_limit_login_ip",
        "rate_limit_login_account",
        "rate_limit_login_account_network",
        "rate_limit_password_change_user",
        "rate_limit_password_change_ip",
        "rate_limit_register_ip",
        "rate_limit_account_email",
        "rate_limit_account_email_ip",
        "rate_limit_contacts_read",
        "rate_limit_contacts_write",
        "rate_limit_avatar_upload",
    )
    @classmethod
    def _valid_rate_limit(cls, value: str) -> str:
        from limits import parse

        parse(value)  # raises ValueError on a malformed limit
        return value

    @field_validator("redis_cluster_nodes", "redis_sentinels")
    @classmethod
    def _host_port_pairs(cls, value: list[str]) -> list[str]:
        for entry in value:
            host, _, port = entry.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{entry!r} is not host:port")
        return value

    @model_validator(mode="after")
    def _one_redis_topology(self) -> Settings:
        given = [name for name in ("redis_url", "redis_cluster_nodes", "redis_sentinels") if getattr(self, name)]
        if len(given) > 1:
            raise ValueError(f"{' and '.join(n.upper() for n in given)} exclude each other: give one Redis topology")
        return self

    @field_validator("trusted_proxies", "metrics_allow")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            ipaddress.ip_network(entry, strict=False)
        return value

    @model_validator(mode="after")
    def _refuse_development_secrets_in_production(self) -> Settings:
        if self.environment == "production" and self.weak_jwt_secret:
            raise ValueError(
                f"JWT_SECRET must be set to a random value of at least {MIN_JWT_SECRET_LENGTH} characters in "
                "production (it is shared by every worker and host)"
            )
        return self

    @model_validator(mode="after")
    def _refuse_mail_to_the_log_in_production(self) -> Settings:
        # Emailed links are bearer secrets: in production they go to the log only when asked for explicitly.
        if self.mail_backend == "smtp" and not self.smtp_host:
            raise ValueError("MAIL_BACKEND=smtp needs SMTP_HOST")
        if self.environment == "production" and not self.smtp_host and self.mail_backend != "console":
            raise ValueError("production needs SMTP_HOST (or MAIL_BACKEND=console to write messages to the log)")
        return self

    @property
    def mail_to_console(self) -> bool:
        return self.mail_backend == "console" or (self.mail_backend is None and not self.smtp_host)

    @property
    def weak_jwt_secret(self) -> bool:
        """No JWT_SECRET, a short one, or one that was published in this repository."""
        if self.jwt_secret is None:
            return True
        secret = self.jwt_secret.get_secret_value()
        return secret in KNOWN_JWT_SECRETS or len(secret) < MIN_JWT_SECRET_LENGTH

    @property
    def jwt_key(self) -> str:
        """The HMAC key of every token. Settings from `get_settings()` or `create_app` always have one."""
        if self.jwt_secret is None:
            raise RuntimeError("JWT_SECRET is not resolved: build settings with with_jwt_secret()")
        return self.jwt_secret.get_secret_value()

    @property
    def jwt_secret_path(self) -> Path:
        """Where a generated secret is kept: JWT_SECRET_FILE, else beside the SQLite file (else the working
        folder), so that the embedded default keeps its sessions across restarts."""
        if self.jwt_secret_file:
            return Path(self.jwt_secret_file)
        if self.is_sqlite:
            database = make_url(self.database_url).database
            if database and database != ":memory:":
                return Path(database).parent / JWT_SECRET_FILE_NAME
        return Path(JWT_SECRET_FILE_NAME)

    @property
    def cache_off_reason(self) -> str | None:
        """Why the cache must stay off, or None. The in-process backend is one worker's memory: with several
        workers, a write in one could not invalidate another's copy, which would then serve values older than an
        acknowledged write. (Several hosts on one database without Redis cannot be detected: see the README.)"""
        if not self.cache_enabled:
            return "CACHE_ENABLED is false"
        if self.redis_dsn is None and self.web_concurrency > 1:
            return (
                f"{self.web_concurrency} workers and no Redis: an in-process cache per worker would serve values "
                "older than a write made in another worker; set REDIS_URL to cache"
            )
        return None

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def redis_dsn(self) -> str | None:
        """The Redis URL to use, or None for the in-process cache backend."""
        if self.redis_url:
            return self.redis_url
        # The password goes into a URL: escape what a URL reserves (`@`, `/`, `:`, `#`, ...).
        auth = f":{quote(self.redis_password.get_secret_value(), safe='')}@" if self.redis_password else ""
        if self.redis_cluster_nodes:
            return f"redis+cluster://{auth}{','.join(self.redis_cluster_nodes)}"
        if self.redis_sentinels:
            master = quote(self.redis_sentinel_master, safe="")
            return f"redis+sentinel://{auth}{','.join(self.redis_sentinels)}/{master}/{self.redis_db}"
        if self.model_fields_set & {"redis_host", "redis_port", "redis_password", "redis_db"}:
            host = self.redis_host or "127.0.0.1"
            return f"redis://{auth}{host}:{self.redis_port}/{self.redis_db}"
        return None


def with_jwt_secret(settings: Settings) -> Settings:
    """`settings` with a JWT secret: the configured one, else the one kept in `jwt_secret_path`, created with 32
    random bytes on first use (readable by its owner only). Several workers starting at once agree: the file is
    created exclusively, and whoever loses the race reads the winner's."""
    if settings.jwt_secret is not None:
        return settings
    path = settings.jwt_secret_path
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        secret = ""
        for _ in range(50):  # the creator may not have written it yet
            secret = path.read_text(encoding="ascii").strip()
            if secret:
                break
            time.sleep(0.02)
        if len(secret) < MIN_JWT_SECRET_LENGTH:
            raise RuntimeError(f"{path} holds no usable JWT secret; delete it or set JWT_SECRET") from None
    else:
        secret = secrets.token_urlsafe(32)
        with os.fdopen(descriptor, "w", encoding="ascii") as file:
            file.write(secret + "\n")
    return settings.model_copy(update={"jwt_secret": SecretStr(secret)})


def is_loopback(host: str) -> bool:
    """Whether a listening address is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@lru_cache
def get_settings() -> Settings:
    return with_jwt_secret(Settings())


async def app_settings(request: Request) -> Settings:
    """The settings the application was created with. Async on purpose: FastAPI runs a plain `def` dependency in
    its thread pool, a thread hop on every request."""
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(app_settings)]
