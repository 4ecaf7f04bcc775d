"""The embedded default as a new user runs it: `contacts-api serve --workers 2` on a SQLite file, no Redis, no SMTP.
A new user registers, follows the verification link from the log, logs in, and never reads a value older than an
acknowledged write, whichever worker answers."""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.reliability.conftest import API, PASSWORD, ApiServer

LINK = re.compile(r"console-mail \| (http://\S+/verify-email\?token=\S+)")


@pytest.fixture(scope="module")
def embedded_server() -> Iterator[ApiServer]:
    folder = Path(tempfile.mkdtemp(prefix="contacts-embedded-"))
    server = ApiServer(
        "embedded",
        f"sqlite+aiosqlite:///{folder / 'contacts.db'}",
        None,
        workers=2,
        extra_env={"REQUIRE_EMAIL_VERIFICATION": "true", "LOG_LEVEL": "INFO", "PUBLIC_BASE_URL": "http://ignored"},
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _verification_link(server: ApiServer, email: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = server.log_text()
        start = text.find(f"console-mail | to {email}")
        if start >= 0:
            found = LINK.search(text, start)
            if found:
                return found.group(1).replace("http://ignored", server.base_url)
        time.sleep(0.1)
    raise AssertionError(f"no verification link for {email} in the log:\n{server.log_tail()}")


def _fresh_get(url: str, token: str) -> httpx.Response:
    # A new connection for every read, so that uvicorn's workers take turns answering.
    with httpx.Client(timeout=10) as http:
        return http.get(url, headers={"Authorization": f"Bearer {token}"})


def test_two_workers_on_the_embedded_default_sign_up_by_the_log_and_never_read_stale(embedded_server, figures):
    base = embedded_server.base_url
    email = "newcomer@example.com"
    with httpx.Client(base_url=base, timeout=10) as http:
        health = http.get("/health").json()
        registered = http.post(f"{API}/auth/register", json={"email": email, "password": PASSWORD})
        refused = http.post(f"{API}/auth/login", data={"username": email, "password": PASSWORD})
        link = _verification_link(embedded_server, email)
        verified = http.get(link)
        login = http.post(f"{API}/auth/login", data={"username": email, "password": PASSWORD})
    assert registered.status_code == 201, registered.text
    assert refused.status_code == 403
    assert verified.status_code == 200, verified.text
    assert "Your email address is confirmed" in verified.text  # the mailed link opens the web page
    assert login.status_code == 200, login.text
    token = login.json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}

    reads = stale = 0
    with httpx.Client(base_url=base, timeout=10, headers=headers) as http:
        created = http.post(f"{API}/contacts", json={"first_name": "v0", "email": "grace@example.com"})
        assert created.status_code == 201, created.text
        contact_url = f"{base}{API}/contacts/{created.json()['id']}"
        for _ in range(4):  # warm whatever each worker would cache
            _fresh_get(contact_url, token)
            _fresh_get(f"{base}{API}/contacts", token)
        for version in range(1, 11):
            written = http.patch(contact_url, json={"first_name": f"v{version}"})
            assert written.status_code == 200, written.text
            for _ in range(4):
                one = _fresh_get(contact_url, token)
                page = _fresh_get(f"{base}{API}/contacts", token)
                reads += 2
                stale += one.json()["first_name"] != f"v{version}"
                stale += page.json()["items"][0]["first_name"] != f"v{version}"
    figures(requests=reads, stale_reads=stale, errors=0, notes="serve --workers 2, SQLite, no Redis, no SMTP")
    assert stale == 0
    assert health["cache"]["backend"] == "off"
    assert "2 workers and no Redis" in health["cache"]["reason"]
    assert "cache off: 2 workers and no Redis" in embedded_server.log_text()
