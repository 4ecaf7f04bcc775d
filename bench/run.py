"""The benchmark run: set up, measure every scenario side by side, print the table, clean up."""

from __future__ import annotations

import asyncio
import json
import math
import multiprocessing
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import redis

from bench import machine, plans, seed
from bench.loadgen import LoadGenerator, Workload, burst, percentile, raw_request, replay, request, request_with_headers
from bench.measure import Contender, Measured, delta, interleaved, ratio
from bench.report import Row, fmt, fmt_ms, measured_row, render
from bench.servers import Server, ours, peer

API = "/api/v1"


@dataclass(frozen=True)
class Profile:
    name: str
    plan: seed.DataPlan
    working_set: int  # contacts per bench user that the read and write workloads touch
    rounds: int
    seconds: float
    connections: int
    growth_rounds: int
    growth_seconds: float
    growth_connections: int
    herd_trials: int
    herd_size: int = 200


FULL = Profile(
    "full",
    seed.DataPlan(
        bench_users=1000, contacts_per_bench_user=20, growth_sizes=(1000, 10_000, 100_000), total_contacts=1_000_000
    ),
    working_set=3,
    rounds=3,
    seconds=4,
    connections=64,
    growth_rounds=2,
    growth_seconds=2,
    growth_connections=2,
    herd_trials=3,
)
QUICK = Profile(
    "quick",
    seed.DataPlan(bench_users=300, contacts_per_bench_user=20, growth_sizes=(1000, 10_000, 100_000), total_contacts=0),
    working_set=3,
    rounds=2,
    seconds=1,
    connections=64,
    growth_rounds=2,
    growth_seconds=1,
    growth_connections=2,
    herd_trials=2,
)


# A Redis operation timeout long enough that a saturated event loop cannot trip it: the variant that shows what the
# cache does when the circuit breaker stays closed (the default is 0.05 s).
RELAXED_TIMEOUT = "1.0"
# What shared/performance-facts.md measured for bare FastAPI on an idle machine of this kind (wrk -t2 -c64).
IDLE_BARE_RPS = {1: 5100, 2: 9800}


def outcomes(m: Measured, kind: str) -> str:
    """The cache's answers for `kind`, and the user look-ups' too when some of them were not hits."""
    text = m.cache_outcomes(kind)
    user = m.cache_outcomes("user")
    if user and user != "user look-ups: hit 100.0%":
        text = f"{text}; {user}" if text else user
    return text


def joined(*parts: str) -> str:
    return "; ".join(part for part in parts if part)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _size_label(size: int) -> str:
    return f"{size // 1000}k" if size >= 1000 else str(size)


@dataclass
class Target:
    name: str
    met: bool
    detail: str

    def line(self) -> str:
        return f"- [{'met' if self.met else 'MISSED'}] {self.name}: {self.detail}"


class Bench:
    def __init__(self, profile: Profile, pg_admin: str, redis_url: str, database: str, loadgen: str, explain: bool):
        self.profile = profile
        self.pg_admin = pg_admin
        self.redis_url = redis_url
        self.database = database
        self.explain = explain
        base = pg_admin.rsplit("/", 1)[0]
        self.pg_dsn = f"{base}/{database}"
        self.pg_url = self.pg_dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
        self.workdir = Path(tempfile.mkdtemp(prefix="contacts-bench-"))
        self.sqlite_path = self.workdir / "bench.sqlite3"
        self.secret = secrets.token_urlsafe(36)
        self.loadgen = LoadGenerator(loadgen)
        self.redis = redis.Redis.from_url(redis_url)
        self.servers: list[Server] = []
        self.rows: list[Row] = []
        self.targets: list[Target] = []
        self.appendix: list[str] = []
        self.data = seed.Seeded(profile.plan)
        self.facts: dict[str, str] = {}

    # -- set-up -------------------------------------------------------------------------------------------------

    def setup(self) -> None:
        plan = self.profile.plan
        start = time.perf_counter()
        self.redis.flushdb()
        hashed = seed.hash_password_once(self.secret)
        log(f"generating {plan.contact_count:,} contacts for {plan.user_count:,} users")
        rows = seed.contact_rows(plan)
        # SQLite is filled by another process while PostgreSQL builds its indexes (both finish before measuring).
        context = multiprocessing.get_context("fork")
        sqlite_job = context.Process(
            target=seed.prepare_sqlite, args=(self.sqlite_path, plan, self.secret, hashed, rows)
        )
        sqlite_job.start()
        log("PostgreSQL: create, migrate, COPY, index, vacuum")
        asyncio.run(seed.create_postgres(self.pg_admin, self.database))
        asyncio.run(seed.migrate(self.pg_url, self.secret))
        steps = asyncio.run(seed.seed_postgres(self.pg_dsn, plan, hashed, rows))
        del rows
        sqlite_job.join()
        if sqlite_job.exitcode != 0:
            raise RuntimeError("seeding SQLite failed")
        self.data.contacts = asyncio.run(seed.bench_contacts_postgres(self.pg_dsn, plan.bench_users))
        user_ids = list(range(1, plan.bench_users + 1)) + list(plan.growth_user_ids)
        self.data.tokens = seed.mint_tokens(seed.bench_settings(self.secret), user_ids)
        self.data.seconds = time.perf_counter() - start
        log(f"seeded in {self.data.seconds:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in steps.items())})")

    async def _versions(self) -> tuple[str, str]:
        connection = await asyncpg.connect(self.pg_dsn)
        try:
            pg = str(await connection.fetchval("SHOW server_version")).split()[0]
        finally:
            await connection.close()
        info: Any = self.redis.info("server")
        return pg, str(info.get("redis_version", "?"))

    # -- servers ------------------------------------------------------------------------------------------------

    def ours_env(self, *, cache: bool, rate_limit: bool, database_url: str | None = None) -> dict[str, str]:
        env = {
            "ENVIRONMENT": "production",
            "DATABASE_URL": database_url or self.pg_url,
            "CACHE_ENABLED": str(cache).lower(),
            "CACHE_KEY_PREFIX": "bench:",
            "RATE_LIMIT_ENABLED": str(rate_limit).lower(),
            "JWT_SECRET": self.secret,
            "ACCESS_TOKEN_TTL": str(3 * 3600),
            "PUBLIC_BASE_URL": "http://127.0.0.1",
            "LOG_LEVEL": "WARNING",
            # Production refuses to write mail to the log unless told to; the benchmark sends none.
            "MAIL_BACKEND": "console",
        }
        if database_url is None:
            env["REDIS_URL"] = self.redis_url
        return env

    def start(self, *servers: Server) -> None:
        for server in servers:
            self.servers.append(server.start())
        for server in servers:
            server.wait_ready()

    def stop(self, *servers: Server) -> None:
        for server in servers:
            server.stop()
            if server in self.servers:
                self.servers.remove(server)

    def peer_app(self, workers: int) -> Server:
        return peer(
            f"fastapi-cache2-peer-{workers}w",
            "bench.peers.fastapi_cache_peer",
            self.workdir,
            workers,
            {
                "BENCH_PEER_DATABASE_URL": self.pg_url,
                "BENCH_PEER_REDIS_URL": self.redis_url,
                "BENCH_PEER_JWT_SECRET": self.secret,
                "BENCH_PEER_TTL": "1800",
                "BENCH_PEER_PREFIX": "bench-peer",
            },
        )

    def bare_app(self, workers: int, body: bytes) -> Server:
        body_file = self.workdir / "bare-body.json"
        body_file.write_bytes(body)
        return peer(
            f"bare-{workers}w", "bench.peers.bare", self.workdir, workers, {"BENCH_BARE_BODY_FILE": str(body_file)}
        )

    # -- workloads ----------------------------------------------------------------------------------------------

    def pairs(self) -> list[tuple[int, int]]:
        k = self.profile.working_set
        return [(uid, cid) for uid, contacts in sorted(self.data.contacts.items()) for cid, _ in contacts[:k]]

    def read_requests(self) -> list[bytes]:
        return [raw_request("GET", f"{API}/contacts/{cid}", self.data.tokens[uid]) for uid, cid in self.pairs()]

    def write_requests(self) -> list[bytes]:
        out = []
        for uid, cid in self.pairs():
            for _ in range(2):
                body = json.dumps({"notes": f"mixed {secrets.token_hex(6)}"}).encode()
                out.append(raw_request("PATCH", f"{API}/contacts/{cid}", self.data.tokens[uid], body))
        return out

    def list_requests(self) -> list[bytes]:
        return [raw_request("GET", f"{API}/contacts?skip=0&limit=20", t) for uid, t in self._bench_tokens()]

    def search_requests(self) -> list[bytes]:
        out = []
        for uid, token in self._bench_tokens():
            term = self.data.contacts[uid][0][1].lower()  # the surname of the user's first contact
            out.append(raw_request("GET", f"{API}/contacts?q={term}&skip=0&limit=20", token))
        return out

    def _bench_tokens(self) -> list[tuple[int, str]]:
        return [(uid, self.data.tokens[uid]) for uid in sorted(self.data.contacts)]

    def warm(self, server: Server, requests: list[bytes]) -> None:
        statuses = asyncio.run(replay(server.port, requests, 16))
        bad = {s: n for s, n in statuses.items() if s != 200}
        if bad:
            raise RuntimeError(f"warm-up on {server.name}: statuses {bad}")

    def check(self, server: Server, workload: Workload) -> None:
        """Up to 200 requests of the workload must all answer 200 before anything is measured (this also opens
        the server's connection pools)."""
        sample = [req for _, pool in workload.pools for req in pool[:200] if req.startswith(b"GET")]
        statuses = asyncio.run(replay(server.port, sample, 16))
        bad = {status: n for status, n in statuses.items() if status != 200}
        if bad:
            raise RuntimeError(f"{server.name}: statuses {bad} checking {workload.name}")

    def redis_commands_per_request(self, server: Server, n: int = 50) -> str:
        """Exactly what one warm contact read costs, without load: `n` sequential requests, the Redis commands
        they sent (MONITOR, kept to this benchmark's database index: the app's and the rate limiter's alike) and
        the app's own counters."""
        uid = min(self.data.contacts)
        token, cid = self.data.tokens[uid], self.data.contacts[uid][0][0]
        request(server.port, "GET", f"{API}/contacts/{cid}", token)
        db_index = self.redis.connection_pool.connection_kwargs.get("db", 0)
        seen: Counter[str] = Counter()
        stop = threading.Event()
        ready = threading.Event()

        def watch() -> None:
            with self.redis.monitor() as monitor:  # type: ignore[no-untyped-call]
                ready.set()
                for event in monitor.listen():
                    if stop.is_set():
                        break
                    if event.get("db") == db_index and not str(event.get("command", "")).startswith("INFO"):
                        name = str(event["command"]).split()[0].upper()
                        # Commands a Lua script runs inside Redis are no round trips of their own.
                        seen[f"({name} inside Lua)" if event.get("client_type") == "lua" else name] += 1

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        ready.wait(5)
        time.sleep(0.2)
        before = server.metrics()
        for _ in range(n):
            request(server.port, "GET", f"{API}/contacts/{cid}", token)
        after = server.metrics()
        time.sleep(0.3)
        stop.set()
        self.redis.ping()  # one more event wakes the watcher so that it sees `stop`
        thread.join(5)
        d = delta(before, after)
        sent = [(name, count) for name, count in seen.most_common() if not name.startswith("(")]
        inside = [(name, count) for name, count in seen.most_common() if name.startswith("(")]
        commands = ", ".join(f"{name} {count / n:.2f}" for name, count in sent + inside) or "none"
        return (
            f"{d['db'] / n:.2f} DB q/req, {d['redis'] / n:.2f} Redis rt/req (app counters); "
            f"Redis commands/req: {commands}"
        )

    def redis_commands(self) -> dict[str, float]:
        stats: Any = self.redis.info("stats")
        return {"redis_cmds": float(stats["total_commands_processed"])}

    # -- scenarios ----------------------------------------------------------------------------------------------

    def contact_read(
        self,
        workers: int,
        cached: Server,
        db: Server,
        bare: Server,
        peer_app: Server | None,
        rate_limited: Server | None,
        relaxed: Server | None,
    ) -> dict[str, Measured]:
        """Scenarios 1 and 3: GET /contacts/{id}, cache on vs off vs bare FastAPI vs fastapi-cache2."""
        p = self.profile
        reads = Workload.single(f"contact-read-{workers}w", self.read_requests())
        contenders = [
            Contender("cached", cached, reads, p.connections),
            Contender("db", db, reads, p.connections),
            Contender("bare", bare, reads, p.connections),
        ]
        if rate_limited is not None:
            contenders.append(Contender("cached+rl", rate_limited, reads, p.connections))
        if relaxed is not None:
            contenders.append(Contender("cached+timeout", relaxed, reads, p.connections))
        if peer_app is not None:
            contenders.append(Contender("peer", peer_app, reads, p.connections))
        for contender in contenders:
            self.check(contender.server, reads)
        log(f"scenario 1/3 ({workers} worker(s)): {len(contenders)} contenders x {p.rounds} rounds x {p.seconds} s")
        m = interleaved(contenders, p.rounds, p.seconds, self.loadgen)
        ref = m["cached"]
        title = "GET /contacts/{id}"
        self.rows.append(
            measured_row("1", title, "ours, cache on (rate limit off)", workers, ref, outcomes(ref, "contact"))
        )
        self.rows.append(
            measured_row(
                "1",
                title,
                "ours, cache off: database only",
                workers,
                m["db"],
                f"cache-on / this = {ratio(ref, m['db'])}",
            )
        )
        self.rows.append(
            measured_row(
                "1",
                title,
                "bare FastAPI: no auth, no I/O",
                workers,
                m["bare"],
                f"cache-on / this = {ratio(ref, m['bare'])}",
            )
        )
        if rate_limited is not None:
            rl = m["cached+rl"]
            self.facts["redis_cmds_rl_off"] = self.redis_commands_per_request(cached)
            self.facts["redis_cmds_rl_on"] = self.redis_commands_per_request(rate_limited)
            self.rows.append(
                measured_row(
                    "1",
                    title,
                    "ours, cache on, rate limit ON",
                    workers,
                    rl,
                    joined(f"this / cache-on = {ratio(rl, ref)}", outcomes(rl, "contact")),
                )
            )
        if relaxed is not None:
            rx = m["cached+timeout"]
            self.rows.append(
                measured_row(
                    "1",
                    title,
                    f"ours, cache on, CACHE_OP_TIMEOUT={RELAXED_TIMEOUT}",
                    workers,
                    rx,
                    joined(f"this / cache-on = {ratio(rx, ref)}", outcomes(rx, "contact")),
                )
            )
        if "peer" in m:
            self.rows.append(
                measured_row(
                    "3",
                    title,
                    "fastapi-cache2 @cache peer (Redis)",
                    workers,
                    m["peer"],
                    f"cache-on / this = {ratio(ref, m['peer'])}",
                )
            )
        return m

    def staleness(self, cached: Server, peer_app: Server) -> None:
        """Scenario 3: a write through our API, then reads from the peer and from ours."""
        uid = min(self.data.contacts)
        token = self.data.tokens[uid]
        cid = self.data.contacts[uid][0][0]
        path = f"{API}/contacts/{cid}"
        for port in (cached.port, peer_app.port):  # both caches hold the contact
            request(port, "GET", path, token)
        new = f"changed {secrets.token_hex(4)}"
        status, _ = request(cached.port, "PATCH", path, token, {"notes": new})
        assert status == 200, status
        seen: dict[str, list[bool]] = {"peer": [], "ours": []}
        max_age = ""
        for wait in (0.0, 2.0):
            time.sleep(wait)
            _, headers, body = request_with_headers(peer_app.port, "GET", path, token)
            seen["peer"].append(json.loads(body)["notes"] == new)
            max_age = headers.get("cache-control", "")
            _, body = request(cached.port, "GET", path, token)
            seen["ours"].append(json.loads(body)["notes"] == new)
        title = "read after PATCH (acked)"
        peer_fresh, ours_fresh = all(seen["peer"]), all(seen["ours"])
        self.rows.append(
            Row(
                "3",
                title,
                "fastapi-cache2 peer",
                str(peer_app.workers),
                ratio=(
                    "fresh"
                    if peer_fresh
                    else f"STALE: old value 0 s and 2 s after the PATCH; entry lives on ({max_age})"
                ),
            )
        )
        self.rows.append(
            Row(
                "3",
                title,
                "ours, cache on",
                str(cached.workers),
                ratio=("fresh: new value at 0 s and 2 s" if ours_fresh else "STALE"),
            )
        )
        self.facts["stale_peer"] = "stale" if not peer_fresh else "fresh"
        self.facts["stale_ours"] = "fresh" if ours_fresh else "stale"
        # An UPDATE that bypasses the API invalidates nothing: both caches serve the old row until their TTL.
        cid2 = self.data.contacts[uid][1][0]
        path2 = f"{API}/contacts/{cid2}"
        for port in (cached.port, peer_app.port):
            request(port, "GET", path2, token)
        sql_value = f"sql {secrets.token_hex(4)}"

        async def update() -> None:
            connection = await asyncpg.connect(self.pg_dsn)
            try:
                await connection.execute("UPDATE contacts SET notes = $1 WHERE id = $2", sql_value, cid2)
            finally:
                await connection.close()

        asyncio.run(update())
        ours_sql = json.loads(request(cached.port, "GET", path2, token)[1])["notes"] == sql_value
        peer_sql = json.loads(request(peer_app.port, "GET", path2, token)[1])["notes"] == sql_value
        self.rows.append(
            Row(
                "3",
                "read after direct SQL UPDATE",
                "ours / peer",
                str(cached.workers),
                ratio=(
                    f"ours {'fresh' if ours_sql else 'stale'}, peer {'fresh' if peer_sql else 'stale'} "
                    "(no API write, so nothing is invalidated: both serve the cached row until TTL)"
                ),
            )
        )

    def lists(self, cached: Server, db: Server) -> None:
        """Scenario 2: GET /contacts?skip&limit and ?q=, cache on vs off."""
        p = self.profile
        lists = Workload.single("list", self.list_requests())
        search = Workload.single("search", self.search_requests())
        self.warm(cached, list(lists.pools[0][1]) + list(search.pools[0][1]))
        contenders = [
            Contender("list cached", cached, lists, p.connections),
            Contender("list db", db, lists, p.connections),
            Contender("search cached", cached, search, p.connections),
            Contender("search db", db, search, p.connections),
        ]
        log(f"scenario 2: {len(contenders)} contenders x {p.rounds} rounds x {p.seconds} s")
        m = interleaved(contenders, p.rounds, p.seconds, self.loadgen)
        for what, title in (("list", "GET /contacts?skip=0&limit=20"), ("search", "GET /contacts?q=<surname>")):
            on, off = m[f"{what} cached"], m[f"{what} db"]
            self.rows.append(
                measured_row("2", title, "ours, cache on", cached.workers, on, outcomes(on, "contacts_list"))
            )
            self.rows.append(
                measured_row("2", title, "ours, cache off", db.workers, off, f"cache-on / this = {ratio(on, off)}")
            )
        self.facts["list_redis"] = fmt(m["list cached"].per_request("redis"))

    def mixed(self, cached: Server, db: Server) -> None:
        """Scenario 4: 80 % reads, 20 % PATCH, users and contacts at random."""
        p = self.profile
        workload = Workload("mixed", ((0.8, tuple(self.read_requests())), (0.2, tuple(self.write_requests()))))
        self.warm(cached, self.read_requests())
        contenders = [
            Contender("mixed cached", cached, workload, p.connections),
            Contender("mixed db", db, workload, p.connections),
        ]
        log(f"scenario 4: 2 contenders x {p.rounds} rounds x {p.seconds} s")
        m = interleaved(contenders, p.rounds, p.seconds, self.loadgen)
        on, off = m["mixed cached"], m["mixed db"]
        hit = on.hit_ratio("contact")
        title = "80% GET / 20% PATCH, random users"
        self.rows.append(
            measured_row("4", title, f"ours, cache on (contact hits {fmt((hit or 0) * 100, 0)}%)", cached.workers, on)
        )
        self.rows.append(
            measured_row("4", title, "ours, cache off", db.workers, off, f"cache-on / this = {ratio(on, off)}")
        )

    def herd(self, server: Server, label: str, trials: int, peer_keys: bool = False) -> list[int]:
        """Scenario 5: N simultaneous requests for one cold contact (its user warm); DB queries they cost."""
        n = self.profile.herd_size
        uid = min(self.data.contacts)
        token = self.data.tokens[uid]
        warm_cid = self.data.contacts[uid][0][0]
        cold_cid = self.data.contacts[uid][-1][0]  # outside every workload's working set
        status, _ = request(server.port, "GET", f"{API}/contacts/{warm_cid}", token)  # the user is cached now
        assert status == 200, status
        req = raw_request("GET", f"{API}/contacts/{cold_cid}", token)
        counts, redis_counts, latencies, errors = [], [], [], 0
        for _ in range(trials):
            if peer_keys:
                for key in self.redis.scan_iter(match="bench-peer:*", count=1000):
                    self.redis.delete(key)
                before = int(self.redis.get("bench-peer-stats:db_queries") or 0)
            else:
                self.redis.delete(f"bench:contact:{cold_cid}:user:{uid}")  # what a write's invalidation does
                m0 = server.metrics()
            results = asyncio.run(burst(server.port, req, n))
            time.sleep(0.5)
            if peer_keys:
                counts.append(int(self.redis.get("bench-peer-stats:db_queries") or 0) - before)
            else:
                m1 = server.metrics()
                counts.append(round(m1["contacts_api_db_queries_total"] - m0["contacts_api_db_queries_total"]))
                redis_counts.append(
                    round(m1["contacts_api_redis_roundtrips_total"] - m0["contacts_api_redis_roundtrips_total"])
                )
            errors += sum(1 for status, _ in results if status != 200)
            latencies += [seconds for status, seconds in results if status == 200]
        latencies.sort()
        self.rows.append(
            Row(
                "5",
                f"herd: {n} concurrent GETs, one cold contact",
                label,
                str(server.workers),
                p50=fmt_ms(percentile(latencies, 50) * 1000),
                p99=fmt_ms(percentile(latencies, 99) * 1000),
                errors=str(errors),
                db=fmt(sum(counts) / (n * trials), 3),
                redis=fmt(sum(redis_counts) / (n * trials), 2) if redis_counts else "n/a",
                ratio=f"DB queries per burst of {n}: {', '.join(map(str, counts))}",
            )
        )
        return counts

    def growth(self, server: Server, backend: str) -> dict[str, dict[int, Measured]]:
        """Scenario 6: one user's address book at each size; list, deep page, search, birthdays; cache off."""
        p = self.profile
        plan = p.plan
        paths: dict[str, Callable[[int], str]] = {
            "list": lambda size: f"{API}/contacts?skip=0&limit=20",
            "deep page": lambda size: f"{API}/contacts?skip={size - 20}&limit=20",
            "search": lambda size: f"{API}/contacts?q={seed.SEARCH_TERM}&skip=0&limit=20",
            "birthdays": lambda size: f"{API}/contacts/birthdays?days=7&skip=0&limit=20",
        }
        out: dict[str, dict[int, Measured]] = {}
        for name, path_of in paths.items():
            by_size: dict[int, Workload] = {}
            lengths: dict[int, float] = {}
            for uid, size in zip(plan.growth_user_ids, plan.growth_sizes, strict=True):
                token = self.data.tokens[uid]
                start = time.perf_counter()
                status, body = request(server.port, "GET", path_of(size), token)
                # Slow queries get longer rounds, so that every round completes a fair number of requests.
                lengths[size] = min(12.0, max(p.growth_seconds, 8 * (time.perf_counter() - start)))
                if status != 200:
                    raise RuntimeError(f"{server.name} {path_of(size)}: {status} {body[:200]!r}")
                by_size[size] = Workload.single(
                    f"{backend}-{name.replace(' ', '-')}-{_size_label(size)}",
                    [raw_request("GET", path_of(size), token)],
                )
            contenders = [
                Contender(str(size), server, w, p.growth_connections, lengths[size]) for size, w in by_size.items()
            ]
            log(f"scenario 6 {backend} {name}: {len(contenders)} sizes x {p.growth_rounds} x {p.growth_seconds} s")
            m = interleaved(contenders, p.growth_rounds, p.growth_seconds, self.loadgen)
            out[name] = {int(k): v for k, v in m.items()}
            smallest = m[str(plan.growth_sizes[0])]
            for size in plan.growth_sizes:
                row = m[str(size)]
                note = (
                    ""
                    if size == plan.growth_sizes[0]
                    else (f"p50 / p50@{_size_label(plan.growth_sizes[0])} = {ratio(row, smallest, 'p50_ms')}")
                )
                self.rows.append(
                    measured_row(
                        "6",
                        f"growth {backend}: {name}",
                        f"{_size_label(size)} contacts, cache off",
                        server.workers,
                        row,
                        note,
                    )
                )
        return out

    # -- query plans --------------------------------------------------------------------------------------------

    def query_plans(self) -> None:
        plan = self.profile.plan
        timings: dict[str, dict[int, tuple[float, float]]] = {}
        pg_plans: list[str] = []
        sqlite_plans: list[str] = []
        for uid, size in zip(plan.growth_user_ids, plan.growth_sizes, strict=True):
            statements = asyncio.run(plans.capture(self.pg_url, uid, size))
            explained = asyncio.run(plans.explain_postgres(self.pg_dsn, statements))
            sqlite_statements = asyncio.run(plans.capture(f"sqlite+aiosqlite:///{self.sqlite_path}", uid, size))
            sqlite_explained = plans.explain_sqlite(self.sqlite_path, sqlite_statements)
            for (statement, text, ms), (_, sqlite_text, sqlite_ms) in zip(explained, sqlite_explained, strict=True):
                key = f"{statement.query}: {statement.part}"
                timings.setdefault(key, {})[size] = (ms, sqlite_ms)
                if size == plan.growth_sizes[-1]:
                    pg_plans.append(
                        f"-- {key} ({_size_label(size)} contacts)\n-- {plans.literal_sql(statement)}\n{text}"
                    )
                    sqlite_plans.append(f"-- {key} ({_size_label(size)} contacts)\n{sqlite_text}")
        sizes = plan.growth_sizes
        header = (
            "| query | "
            + " | ".join(f"PG {_size_label(s)}" for s in sizes)
            + " | "
            + " | ".join(f"SQLite {_size_label(s)}" for s in sizes)
            + " |"
        )
        lines = [
            "Database-side time per statement, ms (PostgreSQL: EXPLAIN ANALYZE execution time; SQLite: median "
            "of 5 runs through sqlite3)",
            "",
            header,
            "|" + "---|" * (1 + 2 * len(sizes)),
        ]
        for key, by_size in timings.items():
            pg = " | ".join(f"{by_size[s][0]:.2f}" for s in sizes)
            lite = " | ".join(f"{by_size[s][1]:.2f}" for s in sizes)
            lines.append(f"| {key} | {pg} | {lite} |")
        self.appendix.append("\n".join(lines))
        if self.explain:
            self.appendix.append(
                "PostgreSQL, EXPLAIN (ANALYZE, BUFFERS), the app's own statements:\n\n```\n"
                + "\n\n".join(pg_plans)
                + "\n```"
            )
            self.appendix.append("SQLite, EXPLAIN QUERY PLAN:\n\n```\n" + "\n\n".join(sqlite_plans) + "\n```")

    # -- the run ------------------------------------------------------------------------------------------------

    def run(self) -> str:
        started = time.perf_counter()
        header_facts: dict[str, str] = {}
        self.setup()
        pg_version, redis_version = asyncio.run(self._versions())
        header_facts["services"] = (
            f"PostgreSQL {pg_version}, Redis {redis_version} (db {self.redis_url.rsplit('/', 1)[-1]})"
        )
        header_facts["load generator"] = self.loadgen.description
        plan = self.profile.plan
        header_facts["data"] = (
            f"{plan.contact_count:,} contacts, {plan.user_count:,} users (PostgreSQL and SQLite alike); "
            f"read/write workloads: {plan.bench_users} users x {self.profile.working_set} contacts; "
            f"growth users: {', '.join(_size_label(s) for s in plan.growth_sizes)} contacts; "
            f"seeded in {self.data.seconds:.0f} s"
        )
        header_facts["method"] = (
            f"profile {self.profile.name}: {self.profile.rounds} interleaved rounds x {self.profile.seconds:g} s, "
            f"{self.profile.connections} connections (growth: {self.profile.growth_rounds} rounds x "
            f">= {self.profile.growth_seconds:g} s, {self.profile.growth_connections} connections); ratios are "
            "medians of per-round ratios (range in brackets); p50/p99 are medians over rounds"
        )
        description = machine.describe(header_facts)
        relaxed_env = {"CACHE_OP_TIMEOUT": RELAXED_TIMEOUT}

        # -- two workers: scenarios 1-5 ------------------------------------------------------------------------
        log("starting servers (2 workers)")
        cached = ours("ours-cached-2w", self.workdir, 2, self.ours_env(cache=True, rate_limit=False))
        db = ours("ours-db-2w", self.workdir, 2, self.ours_env(cache=False, rate_limit=False))
        limited = ours("ours-cached-rl-2w", self.workdir, 2, self.ours_env(cache=True, rate_limit=True))
        relaxed = ours(
            "ours-cached-timeout-2w", self.workdir, 2, self.ours_env(cache=True, rate_limit=False) | relaxed_env
        )
        peer2 = self.peer_app(2)
        self.start(cached, db, limited, relaxed, peer2)
        uid = min(self.data.contacts)
        status, body = request(db.port, "GET", f"{API}/contacts/{self.data.contacts[uid][0][0]}", self.data.tokens[uid])
        assert status == 200, (status, body)
        bare2 = self.bare_app(2, body)
        self.start(bare2)
        reads = self.read_requests()
        log(f"warming caches: {len(reads)} contacts")
        self.warm(cached, reads)  # ours share one Redis keyspace ("bench:"): this warms `limited` and `relaxed` too
        self.warm(peer2, reads)
        m2 = self.contact_read(2, cached, db, bare2, peer2, limited, relaxed)
        self.facts["unloaded_rl_off"] = self.redis_commands_per_request(cached)
        self.facts["unloaded_rl_on"] = self.redis_commands_per_request(limited)
        self.stop(limited, bare2)
        self.staleness(cached, peer2)
        self.lists(cached, db)
        self.mixed(cached, db)
        log("scenario 5: herd (2 workers)")
        herd: dict[str, list[int]] = {}
        herd["ours 2w"] = self.herd(cached, "ours, cache on", self.profile.herd_trials)
        herd["relaxed 2w"] = self.herd(
            relaxed, f"ours, cache on, CACHE_OP_TIMEOUT={RELAXED_TIMEOUT}", self.profile.herd_trials
        )
        self.herd(db, "ours, cache off", 1)
        herd["peer 2w"] = self.herd(peer2, "fastapi-cache2 peer", 1, peer_keys=True)
        self.stop(cached, relaxed, peer2)

        # -- growth on PostgreSQL (cache off, 2 workers) --------------------------------------------------------
        growth_pg = self.growth(db, "PostgreSQL")
        self.stop(db)

        # -- one worker: scenario 1 and the herd ---------------------------------------------------------------
        log("starting servers (1 worker)")
        cached1 = ours("ours-cached-1w", self.workdir, 1, self.ours_env(cache=True, rate_limit=False))
        db1 = ours("ours-db-1w", self.workdir, 1, self.ours_env(cache=False, rate_limit=False))
        relaxed1 = ours(
            "ours-cached-timeout-1w", self.workdir, 1, self.ours_env(cache=True, rate_limit=False) | relaxed_env
        )
        bare1 = self.bare_app(1, body)
        peer1 = self.peer_app(1)
        self.start(cached1, db1, relaxed1, bare1, peer1)
        self.warm(cached1, reads)
        self.warm(peer1, reads)
        m1 = self.contact_read(1, cached1, db1, bare1, peer1, None, relaxed1)
        log("scenario 5: herd (1 worker)")
        herd["ours 1w"] = self.herd(cached1, "ours, cache on", self.profile.herd_trials)
        herd["relaxed 1w"] = self.herd(
            relaxed1, f"ours, cache on, CACHE_OP_TIMEOUT={RELAXED_TIMEOUT}", self.profile.herd_trials
        )
        self.stop(cached1, db1, relaxed1, bare1, peer1)

        # -- growth on SQLite ----------------------------------------------------------------------------------
        lite = ours(
            "ours-sqlite-2w",
            self.workdir,
            2,
            self.ours_env(cache=False, rate_limit=False, database_url=f"sqlite+aiosqlite:///{self.sqlite_path}"),
        )
        self.start(lite)
        growth_lite = self.growth(lite, "SQLite")
        self.stop(lite)

        log("query plans")
        self.query_plans()
        self.assess(m2, m1, herd, {"PostgreSQL": growth_pg, "SQLite": growth_lite})
        elapsed = time.perf_counter() - started
        capacity = ", ".join(
            f"{w} worker(s) {m['bare'].rps:,.0f} req/s = {100 * m['bare'].rps / IDLE_BARE_RPS[w]:.0f}% of the "
            f"{IDLE_BARE_RPS[w]:,} measured idle"
            for w, m in ((2, m2), (1, m1))
        )
        out = [
            "Contacts API benchmark",
            "",
            *description,
            f"load average at end (1/5/15 min): {machine.load_average()}; whole run {elapsed / 60:.1f} min",
            f"machine share this run got (bare FastAPI vs shared/performance-facts.md): {capacity}",
            "",
            render(self.rows),
            "",
            "W = uvicorn workers. DB q/req and Redis rt/req: deltas of contacts_api_db_queries_total and "
            "contacts_api_redis_roundtrips_total over the requests the server handled (n/a: the peers have no such "
            "counters; the rate limiter's own Redis calls are not in the app's counter). Cache look-ups: what the "
            "cache answered (error = a Redis operation failed or timed out, bypass = circuit breaker open).",
            f"Warm contact read without load (50 sequential requests), rate limit off: {self.facts['unloaded_rl_off']}",
            f"Warm contact read without load (50 sequential requests), rate limit on: {self.facts['unloaded_rl_on']}",
            "",
            "Targets (2 workers unless stated):",
            *(target.line() for target in self.targets),
            "",
            *self.appendix,
        ]
        return "\n".join(out)

    def assess(
        self,
        m2: dict[str, Measured],
        m1: dict[str, Measured],
        herd: dict[str, list[int]],
        growth: dict[str, dict[str, dict[int, Measured]]],
    ) -> None:
        cached = m2["cached"]
        db_q, rt = cached.per_request("db") or 0.0, cached.per_request("redis") or 0.0
        self.targets.append(
            Target(
                "warm authenticated read: 0 DB queries and <= 1 Redis round trip per request, under load",
                db_q == 0 and rt <= 1.0,
                f"{db_q:.3f} DB q/req, {rt:.3f} Redis rt/req at {self.profile.connections} connections "
                f"({outcomes(cached, 'contact')}); without load: {self.facts['unloaded_rl_off']}",
            )
        )
        if "cached+rl" in m2:
            rl = m2["cached+rl"]
            rl_db, rl_rt = rl.per_request("db") or 0.0, rl.per_request("redis") or 0.0
            self.targets.append(
                Target(
                    "same with RATE_LIMIT_ENABLED=true",
                    rl_db == 0 and rl_rt <= 1.0,
                    f"under load {rl_db:.3f} DB q/req, {rl_rt:.3f} Redis rt/req by the app's counter, which leaves "
                    f"out the limiter's own round trip; without load: {self.facts['unloaded_rl_on']}; "
                    f"throughput {ratio(rl, cached)} of the limiter off",
                )
            )
        for workers, m in ((2, m2), (1, m1)):
            r = ratio(m["cached"], m["db"])
            self.targets.append(
                Target(
                    f"cached read >= 3x the database path ({workers}w)",
                    r.value >= 3,
                    f"{r}" + ("" if r.value >= 3 else f", short by {3 - r.value:.2f}x"),
                )
            )
            r = ratio(m["cached"], m["bare"])
            self.targets.append(
                Target(
                    f"cached read >= 50% of bare FastAPI ({workers}w)",
                    r.value >= 0.5,
                    f"{r.value * 100:.0f}%"
                    + ("" if r.value >= 0.5 else f", short by {(0.5 - r.value) * 100:.0f} points"),
                )
            )
            if "peer" in m:
                r = ratio(m["cached"], m["peer"])
                self.targets.append(
                    Target(f"cached read >= fastapi-cache2 peer ({workers}w)", r.value >= 1, f"{r} x the peer's req/s")
                )
            if "cached+timeout" in m:
                rx = m["cached+timeout"]
                self.targets.append(
                    Target(
                        f"(diagnostic, not a target) the same with CACHE_OP_TIMEOUT={RELAXED_TIMEOUT} ({workers}w)",
                        True,
                        f"{ratio(rx, m['db'])} x the database path, {ratio(rx, m['bare']).value * 100:.0f}% of bare, "
                        + (f"{ratio(rx, m['peer'])} x the peer, " if "peer" in m else "")
                        + f"{rx.per_request('db'):.3f} DB q/req, {rx.per_request('redis'):.3f} Redis rt/req",
                    )
                )
        ours_counts = herd["ours 2w"] + herd["ours 1w"]
        self.targets.append(
            Target(
                "herd of 200 -> exactly 1 DB query",
                all(c == 1 for c in ours_counts),
                f"2 workers: {herd['ours 2w']}, 1 worker: {herd['ours 1w']}; with CACHE_OP_TIMEOUT={RELAXED_TIMEOUT}: "
                f"{herd['relaxed 2w']} (2w), {herd['relaxed 1w']} (1w); fastapi-cache2 peer: {herd['peer 2w']}",
            )
        )
        sizes = self.profile.plan.growth_sizes
        for backend, by_query in growth.items():
            for name, by_size in by_query.items():
                first, last = by_size[sizes[0]], by_size[sizes[-1]]
                r = ratio(last, first, "p50_ms")
                if math.isnan(r.value):
                    detail = f"no request completed at {_size_label(sizes[-1])} within a round"
                else:
                    detail = f"{r} (p50 {first.p50:.1f} -> {last.p50:.1f} ms)" + (
                        "" if r.value <= 2 else f", {r.value / 2:.1f}x over the allowance"
                    )
                self.targets.append(
                    Target(
                        f"growth {_size_label(sizes[0])}->{_size_label(sizes[-1])}, {backend} {name}: p50 grows <= 2x",
                        r.value <= 2,
                        detail,
                    )
                )

    def close(self, keep: bool = False) -> None:
        for server in list(self.servers):
            server.stop()
        self.servers.clear()
        self.loadgen.close()
        if not keep:
            try:
                asyncio.run(seed.drop_postgres(self.pg_admin, self.database))
            except Exception as exc:
                log(f"could not drop {self.database}: {exc}")
            shutil.rmtree(self.workdir, ignore_errors=True)
        try:
            self.redis.flushdb()
        finally:
            self.redis.close()
