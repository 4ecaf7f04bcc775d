"""`uv run python -m bench.sync`: the contact model v2's costs that must not grow with the book, side by side in
one run: a cursor page at depth 1,000 vs 99,000 of a 100,000-contact book, the change feed after one change in a
1,000 vs a 100,000-contact book, and the warm read of a rich contact (database queries and Redis round trips per
request, from the server's own counters).

One `contacts-api serve` (2 workers, PostgreSQL, Redis, rate limits off) over a seeded database; each figure is
the median of many sequential requests on one kept-alive connection, the compared sides interleaved round by
round so that the machine's drift falls on both."""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench import seed
from bench.loadgen import HOST
from bench.measure import counters
from bench.servers import Server, ours

PLAN = seed.DataPlan(bench_users=1, contacts_per_bench_user=20, growth_sizes=(1000, 100_000), total_contacts=0)
READER, SMALL, LARGE = 1, *PLAN.growth_user_ids  # user ids: 20 rich contacts; a 1,000-; a 100,000-contact book
PAGE = 100


class Client:
    """Sequential requests on one kept-alive connection (as a syncing client makes them)."""

    def __init__(self, port: int, token: str) -> None:
        self.connection = http.client.HTTPConnection(HOST, port, timeout=60)
        self.headers = {"Authorization": f"Bearer {token}"}

    def call(self, method: str, path: str, body: object | None = None) -> tuple[int, Any]:
        headers = dict(self.headers)
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            self.connection.request(method, path, body=payload, headers=headers)
            response = self.connection.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            # The server closes a connection left idle past its keep-alive timeout: reconnect, as a client does.
            self.connection.close()
            self.connection.request(method, path, body=payload, headers=headers)
            response = self.connection.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else None

    def get(self, path: str) -> Any:
        status, body = self.call("GET", path)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {body}")
        return body


@dataclass
class Timed:
    label: str
    fetch: Callable[[], Any]
    samples: list[float] = field(default_factory=list)

    def sample(self, n: int) -> None:
        for _ in range(n):
            start = time.perf_counter()
            self.fetch()
            self.samples.append(time.perf_counter() - start)

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.samples) * 1000


def cursor_at(client: Client, depth: int) -> str:
    """The `next_cursor` after `depth` contacts, walked page by page as a client would."""
    cursor = None
    for _ in range(depth // PAGE):
        path = f"/api/v1/contacts?limit={PAGE}" + (f"&cursor={cursor}" if cursor else "")
        cursor = client.get(path)["next_cursor"]
    if not cursor:
        raise RuntimeError(f"the book ended before depth {depth}")
    return str(cursor)


def feed_token_after_one_change(client: Client) -> str:
    """Read the whole feed, change one contact, and return the token from before the change."""
    path, token = "/api/v1/contacts/changes?limit=500", None
    while True:
        page = client.get(path + (f"&since={token}" if token else ""))
        token = page["next_token"]
        if not page["has_more"]:
            break
    first = client.get("/api/v1/contacts?limit=1")["items"][0]
    status, _ = client.call("PATCH", f"/api/v1/contacts/{first['id']}", {"favorite": not first["favorite"]})
    if status != 200:
        raise RuntimeError(f"PATCH answered {status}")
    return str(token)


def per_request(server: Server, client: Client, paths: list[str], repeats: int) -> dict[str, Any]:
    """Database queries and Redis round trips per request over `repeats` passes of `paths`, by the server's own
    counters, with the cache outcomes behind them (hits, misses, bypasses)."""
    before = server.metrics()
    for _ in range(repeats):
        for path in paths:
            client.get(path)
    moved = {key: after - before_value for key, (before_value, after) in _pairs(before, server.metrics()).items()}
    n = repeats * len(paths)
    outcomes = {key: moved[key] for key in moved if key.startswith(("user_", "contact_")) and moved[key]}
    return {"db": moved["db"] / n, "redis": moved["redis"] / n, "n": n, "outcomes": outcomes}


def _pairs(before: dict[str, float], after: dict[str, float]) -> dict[str, tuple[float, float]]:
    a, b = counters(before), counters(after)
    return {key: (a[key], b[key]) for key in a}


def run(args: argparse.Namespace) -> str:
    secret = secrets.token_urlsafe(48)
    admin = args.pg
    dsn = admin.rsplit("/", 1)[0] + f"/{args.database}"
    url = dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    store = redis.Redis.from_url(args.redis)
    store.flushdb()
    workdir = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    server: Server | None = None
    try:
        start = time.perf_counter()
        asyncio.run(seed.create_postgres(admin, args.database))
        asyncio.run(seed.migrate(url, secret))
        asyncio.run(seed.seed_postgres(dsn, PLAN, seed.hash_password_once(secret), seed.contact_rows(PLAN)))
        print(f"seeded {PLAN.contact_count:,} contacts in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        env = {
            "ENVIRONMENT": "production",
            "DATABASE_URL": url,
            "REDIS_URL": args.redis,
            "CACHE_KEY_PREFIX": "bench:",
            "RATE_LIMIT_ENABLED": "false",
            "JWT_SECRET": secret,
            "ACCESS_TOKEN_TTL": str(3 * 3600),
            "PUBLIC_BASE_URL": "http://127.0.0.1",
            "LOG_LEVEL": "WARNING",
            "MAIL_BACKEND": "console",
        }
        server = ours("contacts-api", workdir, 2, env)
        server.start().wait_ready()
        tokens = seed.mint_tokens(seed.bench_settings(secret), [READER, SMALL, LARGE])
        reader, small, large = (Client(server.port, tokens[uid]) for uid in (READER, SMALL, LARGE))

        shallow, deep = cursor_at(large, 1000), cursor_at(large, PLAN.growth_sizes[1] - 1000)
        small_token, large_token = feed_token_after_one_change(small), feed_token_after_one_change(large)
        timed = [
            Timed("cursor page at depth 1,000", lambda: large.get(f"/api/v1/contacts?limit=20&cursor={shallow}")),
            Timed("cursor page at depth 99,000", lambda: large.get(f"/api/v1/contacts?limit=20&cursor={deep}")),
            Timed(
                "feed after 1 change, 1,000 book", lambda: small.get(f"/api/v1/contacts/changes?since={small_token}")
            ),
            Timed(
                "feed after 1 change, 100,000 book", lambda: large.get(f"/api/v1/contacts/changes?since={large_token}")
            ),
        ]
        for item in timed:
            item.sample(20)  # warm-up, dropped
            item.samples.clear()
        for round_ in range(args.rounds):
            for item in timed if round_ % 2 == 0 else reversed(timed):
                item.sample(args.samples)

        ids = [item["id"] for item in reader.get("/api/v1/contacts?limit=100")["items"]]
        paths = [f"/api/v1/contacts/{contact_id}" for contact_id in ids]
        for path in paths:
            reader.get(path)  # warm
        warm = per_request(server, reader, paths, args.samples // len(paths) + 1)
        feed_poll = per_request(server, large, [f"/api/v1/contacts/changes?since={large_token}"], args.samples)
        rich = reader.get(paths[0])

        rows = [f"| {item.label} | {item.p50_ms:.2f} | {len(item.samples)} |" for item in timed]
        cursor_ratio = timed[1].p50_ms / timed[0].p50_ms
        feed_ratio = timed[3].p50_ms / timed[2].p50_ms
        return "\n".join(
            [
                f"## Sync costs ({args.rounds} interleaved rounds of {args.samples} sequential requests each)",
                "",
                "| request | p50 ms | samples |",
                "|---|---:|---:|",
                *rows,
                "",
                f"- cursor paging, depth 99,000 / depth 1,000: **{cursor_ratio:.2f}x** (target <= 1.2)",
                f"- change feed after 1 change, 100,000 / 1,000 book: **{feed_ratio:.2f}x** (target <= 1.5); "
                f"a repeated poll: {feed_poll['db']:.2f} database queries, {feed_poll['redis']:.2f} Redis round "
                "trips per request",
                f"- warm read of a rich contact ({len(json.dumps(rich))} bytes: {len(rich['emails'])} emails, "
                f"{len(rich['phones'])} phones, {len(rich['addresses'])} address, labels {rich['labels']}): "
                f"**{warm['db']:.2f}** database queries and **{warm['redis']:.2f}** Redis round trips per request "
                f"over {warm['n']} reads (cache outcomes: {warm['outcomes']})",
            ]
        )
    finally:
        if server is not None:
            server.stop()
        asyncio.run(seed.drop_postgres(admin, args.database))
        store.flushdb()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sync", description=__doc__)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--database", default="contacts_bench_sync")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12", help="its database index is flushed")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--samples", type=int, default=200, help="requests per side per round")
    print(run(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
