"""A real CardDAV client, vdirsyncer (PyPI, a dev dependency), syncing against the service over HTTP: discovery
from the server's root, a first sync of cards made on the server, cards made, edited and deleted on each side,
a conflict, and incremental syncs; each step checked on both sides."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import pytest
import uvicorn

from app.auth import app_passwords
from app.core.db import commit
from app.users.service import auth_user
from tests.factories import auth_headers, make_user
from tests.servers import free_port

API = "/api/v1"
VDIRSYNCER = shutil.which("vdirsyncer", path=str(Path(sys.executable).parent)) or shutil.which("vdirsyncer")
SERVER_CARDS, LOCAL_CARDS = 40, 25

CONFIG = """[general]
status_path = "{root}/status/"

[pair book]
a = "local"
b = "server"
collections = ["from b"]
conflict_resolution = "{winner} wins"

[storage local]
type = "filesystem"
path = "{root}/local/"
fileext = ".vcf"

[storage server]
type = "carddav"
url = "http://127.0.0.1:{port}/"
username = "ada@example.com"
password = "{password}"
"""

LOCAL_CARD = (
    "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:{uid}\r\nFN:{name}\r\nN:{name};;;;\r\nEMAIL:{uid}@local.example\r\nEND:VCARD\r\n"
)

pytestmark = pytest.mark.skipif(
    VDIRSYNCER is None and os.environ.get("CI") != "true", reason="vdirsyncer is not installed (uv sync installs it)"
)


@pytest.fixture
async def server(app):
    port = free_port()
    instance = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning"))
    task = asyncio.create_task(instance.serve())
    for _ in range(500):
        if instance.started:
            break
        await asyncio.sleep(0.02)
    yield port
    instance.should_exit = True
    await task


async def vdirsyncer(config: Path, *args: str) -> str:
    assert VDIRSYNCER is not None, "vdirsyncer must be installed on CI"
    process = await asyncio.create_subprocess_exec(
        VDIRSYNCER,
        "-c",
        str(config),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(b"y\n" * 5), timeout=120)
    text = output.decode(errors="replace")
    assert process.returncode == 0, text
    return text


def local_cards(root: Path) -> dict[str, str]:
    books = [p for p in (root / "local").iterdir() if p.is_dir()]
    assert len(books) == 1, books
    return {path.name: path.read_text() for path in books[0].glob("*.vcf")}


async def test_vdirsyncer_syncs_both_ways_with_edits_deletions_and_a_conflict(server, client, db, settings, tmp_path):
    owner = await make_user(db, settings, email="ada@example.com")
    rest = auth_headers(settings, owner)
    _, password = await app_passwords.create(db, settings, auth_user(owner), "vdirsyncer")
    await commit(db)
    made = [
        (
            await client.post(
                f"{API}/contacts", json={"first_name": f"Server{n}", "email": f"s{n}@example.com"}, headers=rest
            )
        ).json()
        for n in range(SERVER_CARDS)
    ]
    config = tmp_path / "config"
    config.write_text(CONFIG.format(root=tmp_path, port=server, password=password, winner="b"))

    await vdirsyncer(config, "discover", "book")
    await vdirsyncer(config, "sync")

    first = local_cards(tmp_path)
    assert len(first) == SERVER_CARDS
    assert all(any(f"UID:{c['uid']}" in text for text in first.values()) for c in made)

    # Made, edited and deleted on the client's side.
    book_dir = next(p for p in (tmp_path / "local").iterdir() if p.is_dir())
    for n in range(LOCAL_CARDS):
        (book_dir / f"local-{n}.vcf").write_text(LOCAL_CARD.format(uid=f"local-{n}", name=f"Local{n}"))
    edited_name, edited_text = next((name, text) for name, text in first.items() if "Server0" in text)
    (book_dir / edited_name).write_text(edited_text.replace("Server0", "Server0 Edited"))
    deleted_name = next(name for name, text in first.items() if "FN:Server1\r" in text or "FN:Server1\n" in text)
    (book_dir / deleted_name).unlink()
    await vdirsyncer(config, "sync")

    listed = (await client.get(f"{API}/contacts?limit=100", headers=rest)).json()
    names = sorted(c["first_name"] for c in listed["items"])
    assert listed["total"] == SERVER_CARDS + LOCAL_CARDS - 1
    assert "Server1" not in names
    assert sum(name.startswith("Local") for name in names) == LOCAL_CARDS
    assert any("Edited" in f"{c['first_name']} {c['last_name'] or ''}" for c in listed["items"])

    # Edited and deleted on the server's side (REST), then synced: the client follows.
    server2 = next(c for c in made if c["first_name"] == "Server2")
    server3 = next(c for c in made if c["first_name"] == "Server3")
    await client.patch(f"{API}/contacts/{server2['id']}", json={"nickname": "Two"}, headers=rest)
    await client.delete(f"{API}/contacts/{server3['id']}", headers=rest)
    await vdirsyncer(config, "sync")

    after = local_cards(tmp_path)
    assert len(after) == SERVER_CARDS + LOCAL_CARDS - 2
    assert any("NICKNAME:Two" in text for text in after.values())
    assert not any(f"UID:{server3['uid']}" in text for text in after.values())

    # A conflict: the same card edited on both sides; the server wins ("b wins").
    server4 = next(c for c in made if c["first_name"] == "Server4")
    name4 = next(name for name, text in after.items() if f"UID:{server4['uid']}" in text)
    (book_dir / name4).write_text(after[name4].replace("FN:", "FN:Client side "))
    await client.patch(f"{API}/contacts/{server4['id']}", json={"nickname": "ServerSide"}, headers=rest)
    await vdirsyncer(config, "sync")

    final = local_cards(tmp_path)[name4]
    assert "NICKNAME:ServerSide" in final
    assert "Client side" not in final
    again = await vdirsyncer(config, "sync")  # nothing left to do
    assert "Copying" not in again
    assert len(local_cards(tmp_path)) == SERVER_CARDS + LOCAL_CARDS - 2
