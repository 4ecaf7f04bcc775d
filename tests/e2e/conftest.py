"""End-to-end fixtures: a real `contacts-api serve` process (one worker, a database and a Redis of its own, mail to
the suite's in-process SMTP server) and Debian's Chromium driven through Playwright for Python (`executable_path`:
Playwright's own browser downloads are never used).

Without a Chromium the tests skip and say why; under CI=true a missing Chromium fails them instead."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Mailbox
from tests.servers import RedisProcess, free_port, throwaway_database

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(__file__).with_name("screenshots")
README_SCREENSHOTS = PROJECT_ROOT / "docs" / "screenshots"
JWT_SECRET = "e2e-secret-" + "x" * 40
PASSWORD = "end to end passphrase"
AXE = PROJECT_ROOT / "app" / "web" / "static" / "vendor" / "axe.min.js"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 740}


def chromium_path() -> str | None:
    for candidate in (os.environ.get("CHROMIUM_PATH"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    found = chromium_path()
    if found is None:
        reason = "no Chromium found (install Debian's `chromium` package, or set CHROMIUM_PATH)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {reason}: .ci/run installs it", pytrace=False)
        pytest.skip(reason)
    return found


@dataclass
class WebServer:
    base_url: str
    mailbox: Mailbox
    database_url: str
    env: dict[str, str]

    def create_admin(self, email: str, password: str = PASSWORD) -> None:
        """An administrator made as an operator makes one: `contacts-api create-admin`."""
        command = [sys.executable, "-c", "from app.cli import main; main()", "create-admin", email, "--password-stdin"]
        subprocess.run(command, input=f"{password}\n".encode(), env=self.env, cwd=PROJECT_ROOT, check=True, timeout=60)

    def mails_to(self, address: str, count: int = 1, timeout: float = 10.0) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.mailbox.to(address)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"no {count} message(s) to {address} within {timeout} s")

    def link_in(self, message: EmailMessage) -> str:
        (link,) = re.findall(r"https?://\S+", message.get_content())
        assert link.startswith(self.base_url), link
        return link


@pytest.fixture(scope="session")
def web_server(
    chromium: str, smtp_server: tuple[Mailbox, int], db_engine_name: str, request: pytest.FixtureRequest
) -> Iterator[WebServer]:
    mailbox, smtp_port = smtp_server
    with contextlib.ExitStack() as stack:
        if db_engine_name == "sqlite":
            directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="contacts-e2e-db-"))
            database_url = f"sqlite+aiosqlite:///{directory}/contacts.db"
        else:
            admin_url: str = request.getfixturevalue("postgres_admin_url")
            database_url = stack.enter_context(throwaway_database(admin_url, "contacts_e2e"))
        redis = RedisProcess().start()
        stack.callback(redis.close)
        media = stack.enter_context(tempfile.TemporaryDirectory(prefix="contacts-e2e-media-"))
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        settings_names = {"DATABASE_URL", "REDIS_URL", "JWT_SECRET", "ENVIRONMENT", "SMTP_HOST", "MAIL_BACKEND"}
        env = {k: v for k, v in os.environ.items() if k not in settings_names}
        env.update(
            {
                "ENVIRONMENT": "test",
                "DATABASE_URL": database_url,
                "REDIS_URL": redis.url,
                "JWT_SECRET": JWT_SECRET,
                "SMTP_HOST": "127.0.0.1",
                "SMTP_PORT": str(smtp_port),
                "SMTP_TLS": "none",
                "MAIL_BACKEND": "smtp",
                "PUBLIC_BASE_URL": base_url,
                "RATE_LIMIT_ENABLED": "false",
                "ARGON2_TIME_COST": "1",
                "ARGON2_MEMORY_COST": "1024",
                "ARGON2_PARALLELISM": "1",
                "LOG_LEVEL": "WARNING",
                "MEDIA_ROOT": media,
                "DATABASE_POOL_SIZE": "3",
                "DATABASE_MAX_OVERFLOW": "2",
            }
        )
        log = stack.enter_context(tempfile.NamedTemporaryFile(prefix="contacts-e2e-", suffix=".log"))
        command = [sys.executable, "-c", "from app.cli import main; main()", "serve", "--host", "127.0.0.1"]
        process = subprocess.Popen(
            [*command, "--port", str(port), "--workers", "1"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stack.callback(_stop, process)
        _wait_ready(base_url, process, Path(log.name))
        yield WebServer(base_url, mailbox, database_url, env)


def _wait_ready(base_url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"the server was not ready within {timeout} s:\n{log.read_text(errors='replace')}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


@pytest.fixture(scope="package")
def browser(chromium: str) -> Iterator[Any]:
    # Package-scoped, not session: Playwright's sync API keeps an event loop running in this thread while it is
    # open, and every later test that starts its own loop (asyncio.run) would find it and fail.
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def screenshot(request: pytest.FixtureRequest) -> Any:
    """`screenshot(page, name=None)`: saves the page under tests/e2e/screenshots/ (every test saves at least one)."""
    SCREENSHOTS.mkdir(exist_ok=True)
    taken: list[Path] = []

    def take(page: Any, name: str | None = None) -> Path:
        stem = re.sub(r"[^\w.-]+", "_", f"{request.node.name}{'-' + name if name else ''}")
        path = SCREENSHOTS / f"{stem}.png"
        page.screenshot(path=str(path), full_page=True)
        taken.append(path)
        return path

    yield take
    assert taken, f"{request.node.name} saved no screenshot"
