"""Reliability and security suite: real server processes on databases and Redis servers of their own.

Every server here is a `contacts-api serve` process (uvicorn, 2 workers) on a free port, on a PostgreSQL database
created for it (and dropped afterwards) and on a `redis-server` of its own that tests may kill, pause or freeze.
Quick parts run in the default `uv run pytest`; long runs are marked `slow` (`uv run pytest -m slow
tests/reliability`). Every test reports its figures to the session's `ReliabilityReport`, printed as one table at
the end of the session and written to tests/reliability/LAST_RUN.md.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from app.core.config import Settings
from tests.reliability.secrets_scan import SecretScanner
from tests.servers import RedisProcess, free_port, throwaway_database

PROJECT_ROOT = Path(__file__).resolve().parents[2]
REPORT_PATH = Path(__file__).with_name("LAST_RUN.md")
API = "/api/v1"
PASSWORD = "reliability passphrase 1"
JWT_SECRET = "reliability-" + secrets.token_urlsafe(32)


# --------------------------------------------------------------------------------------------------------------
# The session's figures: one row per run, printed at the end and written to LAST_RUN.md
# --------------------------------------------------------------------------------------------------------------


@dataclass
class ReportRow:
    name: str
    test: str = ""
    outcome: str = "?"
    requests: int | None = None
    errors: int | None = None
    stale_reads: int | None = None
    lost_writes: int | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    notes: str = ""


@dataclass
class ReliabilityReport:
    rows: dict[str, ReportRow] = field(default_factory=dict)

    def row(self, name: str) -> ReportRow:
        return self.rows.setdefault(name, ReportRow(name))

    def record(self, name: str, **figures: Any) -> ReportRow:
        row = self.row(name)
        for key, value in figures.items():
            if key == "notes" and row.notes and value:
                value = f"{row.notes}; {value}"
            setattr(row, key, value)
        return row

    def table(self) -> str:
        def cell(value: Any) -> str:
            if value is None:
                return "-"
            if isinstance(value, float):
                return f"{value:.1f}"
            return str(value).replace("|", "\\|")

        header = "| run | outcome | requests | errors | stale reads | lost writes | p50 ms | p99 ms | notes |"
        lines = [header, "|---|---|---:|---:|---:|---:|---:|---:|---|"]
        for row in self.rows.values():
            values = (row.requests, row.errors, row.stale_reads, row.lost_writes, row.p50_ms, row.p99_ms)
            lines.append(
                f"| {cell(row.name)} | {row.outcome} | "
                + " | ".join(cell(v) for v in values)
                + f" | {cell(row.notes)} |"
            )
        return "\n".join(lines)


_REPORT = ReliabilityReport()


@pytest.fixture(scope="session")
def reliability_report() -> ReliabilityReport:
    return _REPORT


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Any:
    """`figures(label=None, **values)`: record this test's figures (in the row `label`, default the test's name)."""

    def record(label: str | None = None, **values: Any) -> ReportRow:
        return _REPORT.record(label or request.node.name, test=request.node.nodeid, **values)

    return record


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        for row in _REPORT.rows.values():
            if row.test == item.nodeid:
                row.outcome = "PASS" if report.outcome == "passed" else report.outcome.upper()
    return report


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Long runs (`slow`) only when the marker expression asks for them: `-m slow`."""
    if "slow" in (config.getoption("-m") or ""):
        return
    here = Path(__file__).parent
    skip = pytest.mark.skip(reason="long run: select with -m slow")
    for item in items:
        marker = item.get_closest_marker("slow")
        if marker is not None and not marker.kwargs.get("also_quick") and here in Path(str(item.path)).parents:
            item.add_marker(skip)


def _selection(config: pytest.Config) -> str:
    expression = config.getoption("-m") or ""
    return "slow" if "slow" in expression and "not slow" not in expression else "quick"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Print the figures, and keep them in LAST_RUN.md: one section per selection (quick, slow), each the last."""
    if not _REPORT.rows:
        return
    table = _REPORT.table()
    terminalreporter.write_sep("=", "reliability figures")
    terminalreporter.write_line(table)
    selection = _selection(config)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    sections = {}
    if REPORT_PATH.exists():
        for chunk in REPORT_PATH.read_text(encoding="utf-8").split("\n## ")[1:]:
            title, _, body = chunk.partition("\n")
            if title.split()[0] in ("quick", "slow"):
                sections[title.split()[0]] = f"## {title}\n{body.rstrip()}\n"
    command = "uv run pytest tests/reliability" + (" -m slow" if selection == "slow" else "")
    sections[selection] = (
        f"## {selection} run\n\n`{command}`: {stamp}, exit status {exitstatus}, {os.cpu_count()} CPUs, "
        f"server workers: {os.environ.get('RELIABILITY_SERVER_WORKERS', '2')}.\n\n{table}\n"
    )
    REPORT_PATH.write_text(
        "# Reliability suite: figures of the last runs\n\nWritten by tests/reliability/conftest.py at the end of "
        "each session (the quick and the slow selection each keep their last run).\n\n"
        + "\n".join(sections[name] for name in ("quick", "slow") if name in sections),
        encoding="utf-8",
    )


# --------------------------------------------------------------------------------------------------------------
# Servers: PostgreSQL databases, Redis processes and API processes of the suite's own
# --------------------------------------------------------------------------------------------------------------


def asyncpg_dsn(database_url: str) -> str:
    """A SQLAlchemy URL as a plain libpq DSN that asyncpg accepts."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextlib.contextmanager
def fresh_database(admin_url: str, label: str) -> Iterator[str]:
    """A new, empty PostgreSQL database (its SQLAlchemy asyncpg URL), dropped on exit."""
    with throwaway_database(admin_url, f"contacts_rel_{label}") as url:
        yield url


def start_redis() -> RedisProcess:
    """A redis-server of the suite's own, on a free port (to be killed, paused and frozen at will)."""
    return RedisProcess().start()


def _settings_variables() -> set[str]:
    return {name.upper() for name in Settings.model_fields}


@dataclass
class ApiServer:
    """A `contacts-api serve` process; stopped by its process group id (uvicorn's workers included)."""

    name: str
    database_url: str
    redis: RedisProcess | None
    # RELIABILITY_SERVER_WORKERS=1 runs the suite against one worker (to tell cross-process effects apart).
    workers: int = field(default_factory=lambda: int(os.environ.get("RELIABILITY_SERVER_WORKERS", "2")))
    extra_env: dict[str, str] = field(default_factory=dict)
    migrate: bool = True
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    media_root: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="contacts-rel-media-"))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        # Nothing of the caller's own configuration leaks in: only what this server is given.
        inherited = {k: v for k, v in os.environ.items() if k.upper() not in _settings_variables()}
        inherited.pop("PROMETHEUS_MULTIPROC_DIR", None)
        env = {
            **inherited,
            "ENVIRONMENT": "test",
            "DATABASE_URL": self.database_url,
            "JWT_SECRET": JWT_SECRET,
            "REQUIRE_EMAIL_VERIFICATION": "false",
            "RATE_LIMIT_ENABLED": "false",
            "ARGON2_TIME_COST": "1",
            "ARGON2_MEMORY_COST": "1024",
            "ARGON2_PARALLELISM": "1",
            "ACCESS_TOKEN_TTL": "14400",
            "LOG_LEVEL": "WARNING",
            "MEDIA_ROOT": self.media_root,
            "PUBLIC_BASE_URL": "http://contacts.reliability.test",
            # Two servers of 2 workers each stay well under PostgreSQL's 100 connections, shared with others.
            "DATABASE_POOL_SIZE": "5",
            "DATABASE_MAX_OVERFLOW": "3",
        }
        if self.redis is not None:
            env["REDIS_URL"] = self.redis.url
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 60.0) -> ApiServer:
        fd, log = tempfile.mkstemp(prefix=f"contacts-rel-{self.name}-", suffix=".log")
        os.close(fd)
        self.log_path = Path(log)
        args = [
            sys.executable,
            "-c",
            "from app.cli import main; main()",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
        ]
        if not self.migrate:
            args.append("--no-migrate")
        with self.log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                args,
                cwd=PROJECT_ROOT,
                env=self.env(),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server {self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/health", timeout=2).status_code == 200:
                    # Every worker must answer: a few more requests reach both of them.
                    for _ in range(4):
                        httpx.get(f"{self.base_url}/health", timeout=5).raise_for_status()
                    return
            time.sleep(0.1)
        raise RuntimeError(f"server {self.name} not ready within {timeout} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def stop(self) -> None:
        process = self.process
        if process is None:
            return
        self.process = None
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        # Workers left behind by a parent that died first belong to the same process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        shutil.rmtree(self.media_root, ignore_errors=True)


@dataclass
class Account:
    id: int
    email: str
    role: str
    access_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


@dataclass
class Deployment:
    """A running server with what the tests need to reach around it: its database and its Redis."""

    server: ApiServer
    database_url: str
    redis: RedisProcess

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def dsn(self) -> str:
        return asyncpg_dsn(self.database_url)


async def register_account(http: httpx.AsyncClient, email: str, *, admin_dsn: str | None = None) -> Account:
    """Register through the API; `admin_dsn` promotes the account to administrator in the database first."""
    response = await http.post(f"{API}/auth/register", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201, response.text
    user_id = response.json()["id"]
    role = "user"
    if admin_dsn is not None:
        import asyncpg

        connection = await asyncpg.connect(admin_dsn)
        try:
            await connection.execute("UPDATE users SET role = 'admin' WHERE id = $1", user_id)
        finally:
            await connection.close()
        role = "admin"
    login = await http.post(f"{API}/auth/login", data={"username": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    return Account(user_id, email, role, login.json()["access_token"])


@dataclass
class Accounts:
    alice: Account
    bob: Account
    admin: Account


@pytest.fixture(scope="session")
def secret_scanner() -> SecretScanner:
    """Every response body the suite records passes through this scanner (see test_zz_secrets_scan)."""
    return SecretScanner()


@pytest.fixture(scope="session")
def deployment(postgres_admin_url: str) -> Iterator[Deployment]:
    """The server every run talks to: 2 workers on a PostgreSQL database and a Redis of its own, which the fault
    runs kill, pause and freeze. (One server for the whole suite: starting one costs seconds of CPU.)"""
    with fresh_database(postgres_admin_url, "api") as database_url:
        redis = start_redis()
        server = ApiServer("api", database_url, redis)
        try:
            server.start()
            yield Deployment(server, database_url, redis)
        finally:
            server.stop()
            redis.close()


@pytest.fixture(scope="session")
def nocache_server(deployment: Deployment) -> Iterator[ApiServer]:
    """The same service on the same database with the cache switched off: the no-cache latency baseline."""
    server = ApiServer("nocache", deployment.database_url, None, migrate=False, extra_env={"CACHE_ENABLED": "false"})
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
async def accounts(deployment: Deployment) -> Accounts:
    """Two plain users and an administrator on the API server, with access tokens."""
    async with httpx.AsyncClient(base_url=deployment.base_url, timeout=30) as http:
        tag = secrets.token_hex(3)
        alice = await register_account(http, f"alice-{tag}@example.com")
        bob = await register_account(http, f"bob-{tag}@example.com")
        admin = await register_account(http, f"admin-{tag}@example.com", admin_dsn=deployment.dsn)
    return Accounts(alice, bob, admin)


@pytest.fixture
async def api_client(deployment: Deployment, secret_scanner: SecretScanner) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the API server whose every response body goes through the secrets scanner."""

    async def scan(response: httpx.Response) -> None:
        await response.aread()
        secret_scanner.scan_response(response.request.url.path, response.status_code, response.content)

    async with httpx.AsyncClient(base_url=deployment.base_url, timeout=30, event_hooks={"response": [scan]}) as http:
        yield http
