"""A second real CardDAV client, tsdav (npm, run on Node.js; pinned by tests/dav_clients/package-lock.json and
installed by `npm ci --prefix tests/dav_clients`): well-known discovery, addressbook-query and sync-collection,
which vdirsyncer does not use."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest

from app.auth import app_passwords
from app.core.db import commit
from app.users.service import auth_user
from tests.factories import auth_headers, make_user
from tests.integration.test_dav_vdirsyncer import server  # noqa: F401 - the fixture serving the app over HTTP

API = "/api/v1"
CLIENTS = Path(__file__).resolve().parents[1] / "dav_clients"
NODE = shutil.which("node")
INSTALLED = (CLIENTS / "node_modules" / "tsdav").is_dir()

pytestmark = pytest.mark.skipif(
    (NODE is None or not INSTALLED) and os.environ.get("CI") != "true",
    reason="tsdav is not installed: `npm ci --prefix tests/dav_clients` (Node.js and npm needed)",
)


async def read_json_line(stream: asyncio.StreamReader) -> dict:
    line = await asyncio.wait_for(stream.readline(), timeout=60)
    assert line, "tsdav ended without an answer (its errors are printed below)"
    return json.loads(line)


async def test_tsdav_discovers_queries_creates_and_syncs_incrementally(server, client, db, settings):  # noqa: F811
    assert NODE is not None, "Node.js must be installed on CI"
    assert INSTALLED, "tsdav must be installed on CI"
    owner = await make_user(db, settings, email="ada@example.com")
    rest = auth_headers(settings, owner)
    _, password = await app_passwords.create(db, settings, auth_user(owner), "tsdav")
    await commit(db)
    ada = (
        await client.post(f"{API}/contacts", json={"first_name": "Ada", "last_name": "Lovelace"}, headers=rest)
    ).json()
    bob = (await client.post(f"{API}/contacts", json={"first_name": "Bob"}, headers=rest)).json()
    carl = (await client.post(f"{API}/contacts", json={"first_name": "Carl"}, headers=rest)).json()

    process = await asyncio.create_subprocess_exec(
        NODE,
        str(CLIENTS / "tsdav_sync.mjs"),
        f"http://127.0.0.1:{server}",
        "ada@example.com",
        password,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=CLIENTS,
    )
    assert process.stdout is not None
    assert process.stdin is not None
    try:
        first = await read_json_line(process.stdout)
        await client.patch(f"{API}/contacts/{bob['id']}", json={"nickname": "Bobby"}, headers=rest)
        await client.delete(f"{API}/contacts/{carl['id']}", headers=rest)
        process.stdin.write(b"sync\n")
        await process.stdin.drain()
        second = await read_json_line(process.stdout)
    except AssertionError:
        _, errors = await process.communicate()
        raise AssertionError(errors.decode(errors="replace")[-3000:]) from None
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    book = f"/dav/addressbooks/{owner.id}/contacts/"

    assert [b["url"].split(str(server), 1)[-1] for b in first["books"]] == [book]
    assert first["books"][0]["syncToken"]
    assert {c["etag"] for c in first["cards"]} == {ada["etag"], bob["etag"], carl["etag"]}
    assert list(first["found"]) == [f"{book}{ada['uid']}.vcf"]
    assert first["created"] == 201
    listed = (await client.get(f"{API}/contacts", headers=rest)).json()["items"]
    assert "Made" in {c["first_name"] for c in listed}

    assert [url.endswith("tsdav-1.vcf") for url in second["created"]] == [True]
    assert [u["url"].endswith(f"{bob['uid']}.vcf") for u in second["updated"]] == [True]
    assert "NICKNAME:Bobby" in second["updated"][0]["data"]
    assert [url.endswith(f"{carl['uid']}.vcf") for url in second["deleted"]] == [True]
    assert second["syncToken"] != first["books"][0]["syncToken"]
