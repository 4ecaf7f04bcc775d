"""Helpers for the web pages' tests: anti-forgery tokens out of pages, logging in through the login form."""

from __future__ import annotations

import re

import httpx

from tests.factories import DEFAULT_PASSWORD

CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')


def csrf_of(page: httpx.Response) -> str:
    found = CSRF.search(page.text)
    assert found, f"no anti-forgery token in the page:\n{page.text[:2000]}"
    return found.group(1)


async def page_token(client: httpx.AsyncClient, path: str = "/login") -> str:
    page = await client.get(path)
    assert page.status_code == 200, page.text
    return csrf_of(page)


async def web_login(client: httpx.AsyncClient, email: str, password: str = DEFAULT_PASSWORD) -> httpx.Response:
    token = await page_token(client, "/login")
    response = await client.post("/login", data={"email": email, "password": password, "csrf_token": token})
    assert response.status_code == 303, response.text
    assert client.cookies.get("session"), "no session cookie after logging in"
    return response


async def logged_in(client: httpx.AsyncClient) -> bool:
    """Whether the client's session is live: a page that needs one answers it, else sends to the login form."""
    response = await client.get("/settings")
    if response.status_code == 200:
        return True
    assert response.status_code == 303, response.text
    assert response.headers["location"].startswith("/login"), response.headers
    return False
