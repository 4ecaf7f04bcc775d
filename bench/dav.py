"""`uv run --group bench python -m bench.dav`: CardDAV sync against Radicale, side by side in one run.

The same 10,000 cards (our own serialisation of the seeded contacts) are served by `contacts-api serve` (2 workers,
PostgreSQL, Redis) and by Radicale (its default file storage, one process, started here on a free port). A client
as DAVx5 and vdirsyncer are: an initial sync (PROPFIND Depth 1 for the ETags, then addressbook-multiget of every
card, 100 hrefs a request) and an incremental sync after one change (sync-collection from the token held before
the change, then a multiget of what changed). Then the incremental sync of our server on a 1,000- and a
100,000-contact book. Rounds interleave the contenders; figures are medians."""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import httpx
import redis

from app.auth import app_passwords
from app.interchange.vcard_out import write_card
from bench import seed
from bench.loadgen import HOST
from bench.servers import Server, free_port, ours

PLAN = seed.DataPlan(bench_users=1, contacts_per_bench_user=1, growth_sizes=(1000, 10_000, 100_000), total_contacts=0)
SMALL, MEDIUM, LARGE = PLAN.growth_user_ids
MULTIGET = 100
D, C = "DAV:", "urn:ietf:params:xml:ns:carddav"
JSON_COLUMNS = {"emails", "phones", "addresses", "urls", "labels", "vcard_extra"}


@dataclass
class Book:
    """One address book on one server, as a syncing client sees it."""

    label: str
    http: httpx.Client
    path: str  # the book's collection path, ending in /

    def request(self, method: str, path: str, body: str = "", depth: str = "0") -> httpx.Response:
        response = self.http.request(method, path, content=body.encode(), headers={"Depth": depth})
        if response.status_code >= 400:
            raise RuntimeError(f"{self.label}: {method} {path} answered {response.status_code}: {response.text[:300]}")
        return response

    def hrefs_and_etags(self) -> dict[str, str]:
        body = f'<d:propfind xmlns:d="{D}"><d:prop><d:getetag/></d:prop></d:propfind>'
        root = ET.fromstring(self.request("PROPFIND", self.path, body, "1").content)  # noqa: S314
        found = {}
        for response in root.iter(f"{{{D}}}response"):
            etag = response.find(f".//{{{D}}}getetag")
            href = response.findtext(f"{{{D}}}href") or ""
            if etag is not None and etag.text and href.endswith(".vcf"):  # cards only, not the collection
                found[href] = etag.text
        return found

    def multiget(self, hrefs: list[str]) -> int:
        cards = 0
        for start in range(0, len(hrefs), MULTIGET):
            chunk = "".join(f"<d:href>{href}</d:href>" for href in hrefs[start : start + MULTIGET])
            body = (
                f'<c:addressbook-multiget xmlns:d="{D}" xmlns:c="{C}"><d:prop><d:getetag/><c:address-data/>'
                f"</d:prop>{chunk}</c:addressbook-multiget>"
            )
            cards += self.request("REPORT", self.path, body, "1").text.count("BEGIN:VCARD")
        return cards

    def initial_sync(self) -> int:
        return self.multiget(list(self.hrefs_and_etags()))

    def token(self) -> str:
        body = f'<d:propfind xmlns:d="{D}"><d:prop><d:sync-token/></d:prop></d:propfind>'
        root = ET.fromstring(self.request("PROPFIND", self.path, body).content)  # noqa: S314
        return root.findtext(f".//{{{D}}}sync-token") or ""

    def incremental_sync(self, token: str) -> int:
        body = (
            f'<d:sync-collection xmlns:d="{D}"><d:sync-token>{token}</d:sync-token><d:sync-level>1</d:sync-level>'
            "<d:prop><d:getetag/></d:prop></d:sync-collection>"
        )
        root = ET.fromstring(self.request("REPORT", self.path, body, "1").content)  # noqa: S314
        changed = [
            r.findtext(f"{{{D}}}href") or ""
            for r in root.iter(f"{{{D}}}response")
            if r.find(f".//{{{D}}}getetag") is not None
        ]
        return self.multiget(changed)

    def change_one(self) -> None:
        """Rewrite one card (the first listed) with a new note: the one change of the incremental sync."""
        href = next(iter(self.hrefs_and_etags()))
        card = self.request("GET", href).text
        self.http.put(href, content=card.replace("END:VCARD", f"NOTE:changed {time.time()}\r\nEND:VCARD").encode())


def timed(call: Callable[[], int], repeats: int) -> tuple[float, int]:
    samples, result = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        result = call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), result


async def prepare(admin: str, database: str, secret: str) -> tuple[str, dict[int, str], list[str]]:
    """The seeded database, an app password per growth user, and the medium book's cards as we serve them."""
    dsn = admin.rsplit("/", 1)[0] + f"/{database}"
    await seed.create_postgres(admin, database)
    await seed.migrate(dsn.replace("postgresql://", "postgresql+asyncpg://", 1), secret)
    await seed.seed_postgres(dsn, PLAN, seed.hash_password_once(secret), seed.contact_rows(PLAN))
    settings = seed.bench_settings(secret)
    passwords = {uid: app_passwords.new_password() for uid in (SMALL, MEDIUM, LARGE)}
    connection = await asyncpg.connect(dsn)
    try:
        for uid, password in passwords.items():
            await connection.execute(
                "INSERT INTO app_passwords (user_id, name, digest, token_version, created_at)"
                " VALUES ($1, 'bench', $2, 0, now())",
                uid,
                app_passwords.digest(settings, password),
            )
        rows = await connection.fetch("SELECT * FROM contacts WHERE user_id = $1 ORDER BY id", MEDIUM)
    finally:
        await connection.close()
    cards = [write_card(_decoded(dict(row)), "3.0") for row in rows]
    return dsn, passwords, cards


def _decoded(row: dict[str, object]) -> dict[str, object]:
    """A row as asyncpg gives it (JSON columns as text) in the shape the app's rows have."""
    return {
        key: json.loads(value) if key in JSON_COLUMNS and isinstance(value, str) else value
        for key, value in row.items()
    }


def radicale(workdir: Path, cards: list[str]) -> Server:
    """Radicale on its file storage, holding `cards` in one address book, `bench/contacts/`."""
    book = workdir / "radicale" / "collection-root" / "bench" / "contacts"
    book.mkdir(parents=True)
    (book / ".Radicale.props").write_text(json.dumps({"tag": "VADDRESSBOOK", "D:displayname": "Contacts"}))
    for n, text in enumerate(cards):
        (book / f"card-{n}.vcf").write_text(text)
    config = workdir / "radicale.conf"
    port = free_port()
    config.write_text(
        f"[server]\nhosts = {HOST}:{port}\n[auth]\ntype = none\n[storage]\nfilesystem_folder = {workdir / 'radicale'}\n"
        "[logging]\nlevel = warning\n"
    )
    argv = [sys.executable, "-m", "radicale", "--config", str(config)]
    return Server("radicale", argv, {}, port, 1, workdir, has_metrics=False, health_path="/.web/")


def run(args: argparse.Namespace) -> str:
    secret = secrets.token_urlsafe(48)
    workdir = Path(tempfile.mkdtemp(prefix="bench-dav-"))
    store = redis.Redis.from_url(args.redis)
    store.flushdb()
    servers: list[Server] = []
    try:
        dsn, passwords, cards = asyncio.run(prepare(args.pg, args.database, secret))
        env = {
            "ENVIRONMENT": "production",
            "DATABASE_URL": dsn.replace("postgresql://", "postgresql+asyncpg://", 1),
            "REDIS_URL": args.redis,
            "RATE_LIMIT_ENABLED": "false",
            "JWT_SECRET": secret,
            "PUBLIC_BASE_URL": "http://127.0.0.1",
            "LOG_LEVEL": "WARNING",
            "MAIL_BACKEND": "console",
        }
        ours_server, peer = ours("contacts-api", workdir, 2, env), radicale(workdir, cards)
        for server in (ours_server, peer):
            servers.append(server.start())
            server.wait_ready()

        def book(uid: int) -> Book:
            auth = (f"bench{uid}@bench.example", passwords[uid])
            http = httpx.Client(base_url=f"http://{HOST}:{ours_server.port}", auth=auth, timeout=300)
            return Book(f"ours {uid}", http, f"/dav/addressbooks/{uid}/contacts/")

        theirs = Book(
            "radicale",
            httpx.Client(base_url=f"http://{HOST}:{peer.port}", auth=("bench", "x"), timeout=300),
            "/bench/contacts/",
        )
        mine = book(MEDIUM)
        theirs.initial_sync()  # Radicale builds its item cache on first read: not part of any measured sync
        initial: dict[str, float] = {}
        for round_ in range(args.rounds):
            for contender in (mine, theirs) if round_ % 2 == 0 else (theirs, mine):
                seconds, count = timed(contender.initial_sync, 1)
                assert count == len(cards), (contender.label, count)
                initial.setdefault(contender.label, 0.0)
                initial[contender.label] += seconds / args.rounds

        incremental: dict[str, float] = {}
        books = {"ours 10k": mine, "radicale 10k": theirs, "ours 1k": book(SMALL), "ours 100k": book(LARGE)}
        tokens = {}
        for label, item in books.items():
            tokens[label] = item.token()
            item.change_one()
        for label, item in books.items():
            seconds, count = timed(partial(item.incremental_sync, tokens[label]), args.repeats)
            assert count == 1, (label, count)
            incremental[label] = seconds
        ours_initial, their_initial = initial[mine.label], initial["radicale"]
        ours_10k, their_10k = incremental["ours 10k"] * 1000, incremental["radicale 10k"] * 1000
        small, large = incremental["ours 1k"] * 1000, incremental["ours 100k"] * 1000
        lines = [
            f"## CardDAV sync vs Radicale ({args.rounds} rounds; incremental: median of {args.repeats})",
            "",
            "| sync | contacts-api | Radicale | Radicale / ours |",
            "|---|---:|---:|---:|",
            f"| initial, 10,000 cards (PROPFIND + multiget) | {ours_initial:.2f} s | {their_initial:.2f} s | "
            f"**{their_initial / ours_initial:.2f}x** |",
            f"| incremental after 1 change, 10,000 cards | {ours_10k:.1f} ms | {their_10k:.1f} ms | "
            f"**{their_10k / ours_10k:.2f}x** |",
            "",
            f"Incremental sync of our server, 100,000 / 1,000 cards: {large:.1f} ms / {small:.1f} ms = "
            f"**{large / small:.2f}x**",
        ]
        return "\n".join(lines)
    finally:
        for server in servers:
            server.stop()
        asyncio.run(seed.drop_postgres(args.pg, args.database))
        store.flushdb()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dav", description=__doc__)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--database", default="contacts_bench_dav")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/13", help="its database index is flushed")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=30, help="incremental syncs per contender")
    print(run(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
