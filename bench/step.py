"""`uv run python -m bench.step`: a step from idle to 64 connections on a warm cache, round by round: warm reads,
bypasses and database queries in the first 5 s of load against the later rounds.

The service runs as deployed (`contacts-api serve`, 2 workers, PostgreSQL, Redis, rate limits on). Each trial
starts a fresh server, reads every request of the workload once (every contact, list, search, birthday page and
change-feed poll of 1,000 users is then in the cache), leaves it idle for a few seconds, then runs wrk with 64
connections in rounds of 5 s; the server's /metrics are read around each round. With `--base REV` the same is done
for REV's `app` (from a git worktree) in interleaved trials, so both sides get the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from bench import seed
from bench.loadgen import LoadGenerator, Workload, raw_request, replay, request
from bench.measure import delta, settled
from bench.servers import PROJECT_ROOT, Server, free_port, ours

API = "/api/v1"
CONTACTS_READ = 5  # contacts per user in the workload (all of them warm)


@dataclass
class Side:
    label: str
    root: Path


@dataclass
class Data:
    tokens: dict[int, str]
    contacts: dict[int, list[tuple[int, str]]]
    change_tokens: dict[int, str]


def log(message: str) -> None:
    print(f"[step {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True).stdout.strip()


def workload(data: Data) -> tuple[Workload, list[bytes]]:
    """70% contact reads, 10% first pages, 5% searches, 5% birthday pages, 10% change-feed polls (nothing new)."""
    contacts, pages, searches, birthdays, polls = [], [], [], [], []
    for uid, rows in sorted(data.contacts.items()):
        token = data.tokens[uid]
        contacts += [raw_request("GET", f"{API}/contacts/{cid}", token) for cid, _ in rows[:CONTACTS_READ]]
        pages.append(raw_request("GET", f"{API}/contacts?skip=0&limit=20", token))
        searches.append(raw_request("GET", f"{API}/contacts?q={rows[0][1].lower()}&skip=0&limit=20", token))
        birthdays.append(raw_request("GET", f"{API}/contacts/birthdays?days=7&skip=0&limit=20", token))
        polls.append(raw_request("GET", f"{API}/contacts/changes?since={data.change_tokens[uid]}", token))
    pools = ((0.7, contacts), (0.1, pages), (0.05, searches), (0.05, birthdays), (0.1, polls))
    every = [req for _, pool in pools for req in pool]
    return Workload("step", tuple((weight, tuple(pool)) for weight, pool in pools)), every


def change_tokens(server: Server, tokens: dict[int, str]) -> dict[int, str]:
    """Each user's change token after reading the whole feed (a poll with it finds nothing new)."""
    out = {}
    for uid, token in tokens.items():
        status, body = request(server.port, "GET", f"{API}/contacts/changes?limit=500", token)
        page = json.loads(body)
        if status != 200 or page["has_more"]:
            raise RuntimeError(f"change feed of user {uid}: {status} {body[:200]!r}")
        out[uid] = page["next_token"]
    return out


class Step:
    def __init__(self, args: argparse.Namespace, sides: list[Side]) -> None:
        self.args = args
        self.sides = sides
        self.secret = secrets.token_urlsafe(36)
        self.admin = args.pg
        self.dsn = args.pg.rsplit("/", 1)[0] + f"/{args.database}"
        self.url = self.dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
        self.redis = redis.Redis.from_url(args.redis)
        self.workdir = Path(tempfile.mkdtemp(prefix="contacts-bench-step-"))
        self.loadgen = LoadGenerator(args.loadgen)
        self.plan = seed.DataPlan(bench_users=args.users, contacts_per_bench_user=20, growth_sizes=(), total_contacts=0)

    def env(self, prefix: str) -> dict[str, str]:
        return {
            "ENVIRONMENT": "production",
            "DATABASE_URL": self.url,
            "REDIS_URL": self.args.redis,
            "CACHE_KEY_PREFIX": prefix,
            "RATE_LIMIT_ENABLED": "true",
            "JWT_SECRET": self.secret,
            "ACCESS_TOKEN_TTL": str(3 * 3600),
            "PUBLIC_BASE_URL": "http://127.0.0.1",
            "LOG_LEVEL": "WARNING",
            "MAIL_BACKEND": "console",
        }

    def seed(self) -> Data:
        self.redis.flushdb()
        asyncio.run(seed.create_postgres(self.admin, self.args.database))
        asyncio.run(seed.migrate(self.url, self.secret))
        rows = seed.contact_rows(self.plan)
        asyncio.run(seed.seed_postgres(self.dsn, self.plan, seed.hash_password_once(self.secret), rows))
        contacts = asyncio.run(seed.bench_contacts_postgres(self.dsn, self.plan.bench_users))
        tokens = seed.mint_tokens(seed.bench_settings(self.secret), sorted(contacts))
        server = ours("step-tokens", self.workdir, 1, self.env("step-tokens:"), root=self.sides[-1].root)
        server.start().wait_ready()
        try:
            changes = change_tokens(server, tokens)
        finally:
            server.stop()
        return Data(tokens, contacts, changes)

    def trial(self, side: Side, number: int, load: Workload, every: list[bytes]) -> list[dict[str, float]]:
        """One fresh server: warm every request, idle, then `rounds` rounds of load; the deltas of each round."""
        server = ours(
            f"step-{side.label}-{number}", self.workdir, 2, self.env(f"step-{side.label}-{number}:"), root=side.root
        )
        server.start().wait_ready()
        try:
            statuses = asyncio.run(replay(server.port, every, 16))
            if set(statuses) != {200}:
                raise RuntimeError(f"{server.name}: warm-up statuses {dict(statuses)}")
            quiet = settled(server, 0.3)
            time.sleep(self.args.idle)
            # What the server queries by itself while idle (each worker replays recorded invalidations every second).
            idle = {"idle_db_per_s": delta(quiet, server.metrics())["db"] / self.args.idle}
            out = []
            for _ in range(self.args.rounds):
                before = server.metrics()
                result = self.loadgen.run(server.port, load, self.args.seconds, self.args.connections)
                deltas = delta(before, settled(server, 0.3))
                deltas["wrk_requests"] = result.requests
                deltas["wrk_errors"] = result.errors
                out.append(deltas | idle)
            return out
        finally:
            server.stop()

    def run(self) -> str:
        log(f"seeding {self.plan.contact_count:,} contacts of {self.plan.user_count:,} users")
        data = self.seed()
        load, every = workload(data)
        results: dict[str, list[list[dict[str, float]]]] = {side.label: [] for side in self.sides}
        for number in range(1, self.args.trials + 1):
            order = self.sides if number % 2 else self.sides[::-1]
            for side in order:
                log(f"trial {number}: {side.label}")
                results[side.label].append(self.trial(side, number, load, every))
        return report(self.args, self.sides, results)

    def close(self) -> None:
        self.loadgen.close()
        asyncio.run(seed.drop_postgres(self.admin, self.args.database))
        self.redis.flushdb()
        shutil.rmtree(self.workdir, ignore_errors=True)


def report(args: argparse.Namespace, sides: list[Side], results: dict[str, list[list[dict[str, float]]]]) -> str:
    lines = [
        f"## Step from idle to {args.connections} connections ({args.trials} trials, {args.rounds} rounds of "
        f"{args.seconds:.0f} s, 2 workers, rate limits on, {args.idle:.0f} s idle after the warm-up)",
        "",
        "| side | trial | round | requests | contact reads | contact bypass+error | list look-ups | "
        "list bypass+error | user bypass+error | misses (user/contact/list) | DB queries |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for side in sides:
        for number, rounds in enumerate(results[side.label], 1):
            for index, d in enumerate(rounds, 1):
                lines.append(
                    f"| {side.label} | {number} | {index} | {d['requests']:,.0f} | {reads(d, 'contact'):,.0f} | "
                    f"{lost(d, 'contact'):,.0f} | {reads(d, 'contacts_list'):,.0f} | {lost(d, 'contacts_list'):,.0f} "
                    f"| {lost(d, 'user'):,.0f} | {misses(d)} | {d['db']:,.0f} |"
                )
    lines.append("")
    for side in sides:
        for name, pick in (("first round", slice(0, 1)), ("later rounds", slice(1, None))):
            picked = [d for rounds in results[side.label] for d in rounds[pick]]
            total = {key: sum(d[key] for d in picked) for key in ("db", "user_bypass", "user_error")}
            background = sum(d["idle_db_per_s"] for d in picked) / len(picked) * args.seconds if picked else 0.0
            lines.append(
                f"- {side.label}, {name}: contact reads {sum(reads(d, 'contact') for d in picked):,.0f}, "
                f"bypassed or failed {sum(lost(d, 'contact') for d in picked):,.0f}; list look-ups "
                f"{sum(reads(d, 'contacts_list') for d in picked):,.0f}, bypassed or failed "
                f"{sum(lost(d, 'contacts_list') for d in picked):,.0f}; user look-ups bypassed or failed "
                f"{total['user_bypass'] + total['user_error']:,.0f}; database queries {total['db']:,.0f} (of which "
                f"about {background * len(picked):,.0f} the idle server's own, {background:.0f} a round)"
            )
    return "\n".join(lines)


def reads(d: dict[str, float], kind: str) -> float:
    return sum(d[f"{kind}_{result}"] for result in ("hit", "miss", "error", "bypass"))


def misses(d: dict[str, float]) -> str:
    return "/".join(f"{d[f'{kind}_miss']:,.0f}" for kind in ("user", "contact", "contacts_list"))


def lost(d: dict[str, float], kind: str) -> float:
    return d[f"{kind}_bypass"] + d[f"{kind}_error"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.step", description=__doc__)
    parser.add_argument("--base", help="also measure this git revision's app (a worktree), interleaved")
    parser.add_argument("--new", help="measure this git revision's app (a worktree) instead of the working tree's")
    parser.add_argument("--trials", type=int, default=2, help="fresh servers per side (default 2)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--idle", type=float, default=3, help="seconds idle between the warm-up and the step")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--users", type=int, default=1000, help="users with 20 contacts each (default 1000)")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--database", default="contacts_bench_step", help="created and dropped")
    parser.add_argument(
        "--redis", help="a Redis URL whose database index is flushed (default: a redis-server of its own, free port)"
    )
    args = parser.parse_args(argv)

    scratch = Path(tempfile.mkdtemp(prefix="contacts-bench-step-base-"))
    sides = [Side("new", PROJECT_ROOT)]
    step: Step | None = None
    own_redis: subprocess.Popen[bytes] | None = None
    try:
        if not args.redis:
            port = free_port()
            binary = shutil.which("redis-server") or "redis-server"
            options = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(scratch)]
            own_redis = subprocess.Popen(
                [binary, "--port", str(port), *options, "--loglevel", "warning"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            args.redis = f"redis://127.0.0.1:{port}/0"
            wait_for_redis(args.redis)
        for name, rev in (("new", args.new), ("base", args.base)):
            if rev:
                sha = git("rev-parse", "--verify", f"{rev}^{{commit}}")
                git("worktree", "add", "--detach", str(scratch / name), sha)
                side = Side(f"{name}-{sha[:7]}", scratch / name)
                sides = [side] if name == "new" else [side, *sides]
        step = Step(args, sides)
        print(step.run())
    finally:
        if step is not None:
            step.close()
        for name in ("new", "base"):
            if (scratch / name).exists():
                git("worktree", "remove", "--force", str(scratch / name))
        if own_redis is not None:
            own_redis.kill()
            own_redis.wait(10)
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def wait_for_redis(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            redis.Redis.from_url(url).ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main())
