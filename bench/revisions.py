"""Two revisions of the service side by side in one run: `uv run --group bench python -m bench.revisions --base REV`.

The base revision runs from a git worktree (`git worktree add --detach`, removed at the end) with this virtualenv's
Python, its tree first on PYTHONPATH; the new side is this working tree. One small PostgreSQL database is seeded
once (the harness's seeding, the newer tree's migrations), then both services run with 2 workers on PostgreSQL and
Redis, cache on, rate limits off and on (four servers), and wrk measures the warm authenticated contact read and a
cached list page in interleaved rounds. See bench/README.md, "Two revisions in one run".
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
from alembic.script import ScriptDirectory

from bench import machine, seed
from bench.loadgen import Workload
from bench.measure import Contender, Measured, delta, interleaved, ratio, settled
from bench.report import Row, measured_row, render
from bench.run import Bench, Profile, log, outcomes
from bench.servers import PROJECT_ROOT, Server, clean_environment, ours

CLI = "from app.cli import main; main()"
KINDS = ("user", "contact", "contacts_list")
NEW_TREE = "BENCH_REVISIONS_NEW_TREE"  # set in the process that `--new` starts: the new revision's worktree
# A round is marked disturbed when processes other than this run's (servers, wrk, Redis, this script) used more
# than this many cores on average during it.
DISTURBED_CORES = 0.25


def git(*args: str) -> str:
    out = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def subject(rev: str) -> str:
    text = git("log", "-1", "--format=%s", rev)
    return text if len(text) <= 80 else text[:77] + "..."


# -- migrations -----------------------------------------------------------------------------------------------------


def revision_chain(tree: Path) -> list[tuple[str, bytes]]:
    """The tree's Alembic revisions from the first to the head, each with its file's bytes (one head required)."""
    script = ScriptDirectory(str(tree / "migrations"))
    heads = script.get_heads()
    if len(heads) != 1:
        raise SystemExit(f"{tree}: {len(heads)} migration heads; expected one")
    chain = []
    for revision in reversed(list(script.walk_revisions())):
        assert revision.path is not None
        chain.append((revision.revision, Path(revision.path).read_bytes()))
    return chain


def check_migrations(base: Path, new: Path) -> None:
    """The base's Alembic revisions must be a prefix of the new tree's (else one database cannot serve both:
    refused); a shared revision whose file differs between the trees is reported."""
    old, current = revision_chain(base), revision_chain(new)
    old_ids, new_ids = [r for r, _ in old], [r for r, _ in current]
    if new_ids[: len(old_ids)] != old_ids:
        raise SystemExit(f"the base's migrations {old_ids} are not a prefix of the new tree's {new_ids}")
    differing = [r for (r, a), (_, b) in zip(old, current, strict=False) if a != b]
    log(
        f"migrations: the base's {len(old_ids)} are a prefix of the new tree's {len(new_ids)} (later ones: "
        f"{new_ids[len(old_ids) :] or 'none'}; shared files that differ: {differing or 'none'})"
    )


async def vacuum(dsn: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("VACUUM ANALYZE")
    finally:
        await connection.close()


# -- other processes' share of the machine --------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _machine_busy() -> float:
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / _TICK  # user nice system idle iowait irq softirq steal


def _group_cpu(pgids: set[int], pids: set[int]) -> float:
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command: state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime
        if int(fields[2]) in pgids or int(entry.name) in pids:
            total += int(fields[11]) + int(fields[12])
    return total / _TICK


def cpu_probe(servers: list[Server], redis_pid: int | None) -> Callable[[], dict[str, float]]:
    """Counters whose deltas around a round give the CPU that other processes took from the machine meanwhile:
    machine-wide busy time minus this run's servers (their process groups), wrk and this script (our rusage) and
    the Redis server; everything else (other tests, PostgreSQL) counts as other."""

    def sample() -> dict[str, float]:
        pgids = {s.process.pid for s in servers if s.process is not None}
        own = sum(
            usage.ru_utime + usage.ru_stime
            for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
        )
        return {
            "cpu_busy": _machine_busy(),
            "cpu_ours": own + _group_cpu(pgids, {redis_pid} if redis_pid else set()),
            "wall": time.monotonic(),
        }

    return sample


def other_cores(m: Measured) -> list[float]:
    return [
        max(0.0, (r.deltas["cpu_busy"] - r.deltas["cpu_ours"]) / r.deltas["wall"]) if r.deltas.get("wall") else 0.0
        for r in m.rounds
    ]


# -- the run --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    label: str  # "base" or "new"
    commit: str  # abbreviated hash
    subject: str
    root: Path
    prefix: str  # its own cache and rate-limit keyspace in the shared Redis database
    origin: str = "a worktree"


class Revisions(Bench):
    def __init__(self, args: argparse.Namespace, base: Side, new: Side) -> None:
        profile = Profile(
            "revisions",
            seed.DataPlan(bench_users=args.users, contacts_per_bench_user=20, growth_sizes=(), total_contacts=0),
            working_set=3,
            rounds=args.rounds,
            seconds=args.seconds,
            connections=args.connections,
            growth_rounds=0,
            growth_seconds=0,
            growth_connections=0,
            herd_trials=0,
        )
        super().__init__(profile, args.pg, args.redis, args.database, args.loadgen, explain=False)
        self.base, self.new = base, new

    def setup(self) -> None:
        """The base tree's migrations, the harness's rows (its seed writes the base's schema), then the new tree's
        migrations, which carry the rows over as an upgrade in production would; then VACUUM ANALYZE."""
        plan = self.profile.plan
        start = time.perf_counter()
        self.redis.flushdb()
        hashed = seed.hash_password_once(self.secret)
        rows = seed.contact_rows(plan, check=False, shape="v1")
        check_migrations(self.base.root, self.new.root)
        asyncio.run(seed.create_postgres(self.pg_admin, self.database))
        self.run_cli(self.base, "migrate")
        asyncio.run(seed.seed_postgres(self.pg_dsn, plan, hashed, rows))
        asyncio.run(seed.migrate(self.pg_url, self.secret))  # the new tree's `app` is the one imported here
        asyncio.run(vacuum(self.pg_dsn))
        self.data.contacts = asyncio.run(seed.bench_contacts_postgres(self.pg_dsn, plan.bench_users))
        self.data.tokens = seed.mint_tokens(seed.bench_settings(self.secret), sorted(self.data.contacts))
        self.data.seconds = time.perf_counter() - start
        log(f"seeded {plan.contact_count:,} contacts of {plan.user_count} users in {self.data.seconds:.0f} s")

    def env(self, side: Side, rate_limit: bool) -> dict[str, str]:
        return self.ours_env(cache=True, rate_limit=rate_limit) | {"CACHE_KEY_PREFIX": side.prefix}

    def run_cli(self, side: Side, *argv: str) -> None:
        subprocess.run(
            [sys.executable, "-c", CLI, *argv],
            env=clean_environment(side.root) | self.env(side, rate_limit=False),
            cwd=self.workdir,
            check=True,
        )

    def imported_from(self, side: Side) -> str:
        """Where a server of this side imports `app` from (its environment, its working folder): checked."""
        out = subprocess.run(
            [sys.executable, "-c", "import app; print(app.__file__)"],
            env=clean_environment(side.root) | self.env(side, rate_limit=False),
            cwd=self.workdir,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if not Path(out).resolve().is_relative_to(side.root.resolve()):
            raise SystemExit(f"{side.label}: app imported from {out}, not from {side.root}")
        return out

    def warm_fully(self, server: Server, requests: list[bytes], passes: int = 6) -> int:
        """Replay `requests` until one pass is served from the cache alone (a fill that failed under load leaves a
        lease that lives CACHE_LEASE_TTL: wait it out); the passes it took."""
        for n in range(1, passes + 1):
            before = server.metrics()
            self.warm(server, requests)
            d = delta(before, settled(server, 0.2))
            if not any(d[f"{kind}_{result}"] for kind in KINDS for result in ("miss", "error", "bypass")):
                return n
            time.sleep(1)
        raise RuntimeError(f"{server.name}: still missing the cache after {passes} warm-up passes")

    def measure(self) -> str:
        started = time.perf_counter()
        load_at_start = machine.load_average()
        self.setup()
        sides = (self.base, self.new)
        where = {side.label: self.imported_from(side) for side in sides}
        servers: dict[tuple[str, bool], Server] = {
            (side.label, rl): ours(
                f"{side.label}-rl-{'on' if rl else 'off'}", self.workdir, 2, self.env(side, rl), root=side.root
            )
            for rl in (False, True)
            for side in sides
        }
        log("starting 4 servers (2 workers each)")
        self.start(*servers.values())
        reads, lists = self.read_requests(), self.list_requests()
        log(f"warming: {len(reads)} contacts and {len(lists)} list pages per revision")
        for side in sides:  # the rate-limited server of a side shares its keyspace: warmed too
            passes = self.warm_fully(servers[side.label, False], reads + lists)
            log(f"{side.label}: warm after {passes} passes")
        info = self.redis.info("server")
        probe = cpu_probe(list(servers.values()), int(info["process_id"]) if "process_id" in info else None)
        p = self.profile
        rows: list[Row] = []
        summary: list[str] = []
        details: list[str] = []
        workloads = (
            ("GET /contacts/{id}", Workload.single("rev-contact-read", reads), "contact"),
            ("GET /contacts?skip=0&limit=20", Workload.single("rev-contact-list", lists), "contacts_list"),
        )
        for title, workload, kind in workloads:
            contenders = []
            for rl in (False, True):
                for side in sides:
                    server = servers[side.label, rl]
                    self.check(server, workload)
                    contenders.append(Contender(f"{side.label}/{rl}", server, workload, p.connections, probe=probe))
            log(f"{title}: {len(contenders)} servers x {p.rounds} rounds x {p.seconds:g} s")
            m = interleaved(contenders, p.rounds, p.seconds, self.loadgen)
            for rl in (False, True):
                base, new = m[f"base/{rl}"], m[f"new/{rl}"]
                variant = f"rate limit {'ON' if rl else 'off'}"
                r, lat = ratio(new, base), ratio(new, base, "p50_ms")
                slower = sum(1 for a, b in zip(new.rounds, base.rounds, strict=True) if a.result.rps < b.result.rps)
                rows.append(
                    measured_row("", title, f"base {self.base.commit}, {variant}", 2, base, outcomes(base, kind))
                )
                rows.append(
                    measured_row(
                        "",
                        title,
                        f"new {self.new.commit}, {variant}",
                        2,
                        new,
                        f"new/base req/s {r}; p50 new/base {lat}; {outcomes(new, kind)}",
                    )
                )
                disturbed = sum(
                    1 for a, b in zip(other_cores(base), other_cores(new), strict=True) if max(a, b) > DISTURBED_CORES
                )
                summary.append(
                    f"- {title}, {variant}: new/base req/s = {r}, p50 new/base = {lat}; new slower in {slower} of "
                    f"{len(new.rounds)} rounds; rounds disturbed by other processes: {disturbed}"
                )
                for label, measured in (("base", base), ("new", new)):
                    cores = other_cores(measured)
                    marks = [
                        f"{rnd.result.rps:,.0f}"
                        + (f" (DISTURBED: others {c:.2f} cores)" if c > DISTURBED_CORES else "")
                        for rnd, c in zip(measured.rounds, cores, strict=True)
                    ]
                    details.append(
                        f"- {title}, {variant}, {label}: req/s per round {', '.join(marks)}; other processes' CPU "
                        f"per round, cores: {', '.join(f'{c:.2f}' for c in cores)}"
                    )
        self.stop(*servers.values())
        elapsed = time.perf_counter() - started
        plan = p.plan
        facts = {
            "base": f"{self.base.commit} {self.base.subject!r}, from {self.base.origin} ({where['base']})",
            "new": f"{self.new.commit} {self.new.subject!r}, from {self.new.origin} ({where['new']})",
            "services": "PostgreSQL, Redis db " + self.redis_url.rsplit("/", 1)[-1] + ", cache on, 2 workers each",
            "data": f"{plan.contact_count:,} contacts of {plan.user_count} users; reads: {len(reads)} contacts "
            f"(3 per user), lists: the first page of each user",
            "load generator": self.loadgen.description,
            "method": f"{p.rounds} interleaved rounds x {p.seconds:g} s, {p.connections} connections, 4 servers "
            "up at once; ratios are medians of per-round ratios (range in brackets), p50/p99 medians over rounds",
        }
        return "\n".join(
            [
                "Contacts API: two revisions in one run",
                "",
                *machine.describe(facts, load_at_start),
                f"load average at end (1/5/15 min): {machine.load_average()}; whole run {elapsed / 60:.1f} min",
                "",
                render(rows),
                "",
                *summary,
                "",
                "Rounds (req/s, and the CPU that processes other than this run's took meanwhile; a round is marked "
                f"disturbed above {DISTURBED_CORES} cores):",
                *details,
                "",
                "DB q/req and Redis rt/req: deltas of contacts_api_db_queries_total and "
                "contacts_api_redis_roundtrips_total over the requests each server handled (the rate limiter's own "
                "Redis calls are not in the app's counter).",
            ]
        )


def git_dirty() -> str:
    changed = git("status", "--porcelain", "--", "app", "migrations")
    return "WITH uncommitted changes in app/ or migrations/" if changed else "app/ and migrations/ clean"


def worktree(scratch: Path, name: str, sha: str) -> Path:
    tree = scratch / name
    git("worktree", "add", "--detach", str(tree), sha)
    return tree


def measure_new_revision(argv: list[str], new_sha: str) -> int:
    """`--new REV`: run this module again with REV's `app` (a worktree) in place of this tree's, and this tree's
    `bench`: one folder holding the two as symbolic links, first on PYTHONPATH. Then the seeding, the migrations and
    the tokens come from REV too, whatever this working tree holds meanwhile."""
    scratch = Path(tempfile.mkdtemp(prefix="contacts-bench-new-"))
    try:
        tree = worktree(scratch, "tree", new_sha)
        overlay = scratch / "overlay"
        overlay.mkdir()
        (overlay / "app").symlink_to(tree / "app")
        (overlay / "bench").symlink_to(PROJECT_ROOT / "bench")
        path = os.environ.get("PYTHONPATH")
        env = os.environ | {
            NEW_TREE: str(tree),
            "PYTHONPATH": str(overlay) + (os.pathsep + path if path else ""),
        }
        return subprocess.run([sys.executable, "-m", "bench.revisions", *argv], cwd=overlay, env=env).returncode
    finally:
        git("worktree", "remove", "--force", str(scratch / "tree"))
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m bench.revisions", description=__doc__)
    parser.add_argument("--base", required=True, help="the git revision measured against the new one")
    parser.add_argument(
        "--new", help="the new revision, from a worktree of its own (default: this working tree, as it is)"
    )
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds per workload (default 4)")
    parser.add_argument("--seconds", type=float, default=5, help="seconds per round (default 5)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--users", type=int, default=500, help="users with 20 contacts each (default 500)")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--database", default="contacts_bench_revisions", help="created and dropped")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/11", help="its database index is flushed")
    parser.add_argument("--output", type=Path, help="also write the report to this file")
    args = parser.parse_args(argv)

    base_sha = git("rev-parse", "--verify", f"{args.base}^{{commit}}")
    if args.new:
        new_sha = git("rev-parse", "--verify", f"{args.new}^{{commit}}")
        if NEW_TREE not in os.environ:
            return measure_new_revision(argv, new_sha)
        new = Side("new", new_sha[:7], subject(new_sha), Path(os.environ[NEW_TREE]), "bench-new:", "a worktree")
    else:
        head = git("rev-parse", "HEAD")
        new = Side("new", head[:7], subject(head), PROJECT_ROOT, "bench-new:", f"this working tree, {git_dirty()}")
    scratch = Path(tempfile.mkdtemp(prefix="contacts-bench-base-"))
    bench: Revisions | None = None
    try:
        base = Side("base", base_sha[:7], subject(base_sha), worktree(scratch, "tree", base_sha), "bench-base:")
        log(f"base {base.commit} {base.subject!r}; new {new.commit} {new.subject!r} ({new.origin})")
        bench = Revisions(args, base, new)
        report = bench.measure()
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        if bench is not None:
            bench.close()
        if (scratch / "tree").exists():
            git("worktree", "remove", "--force", str(scratch / "tree"))
        shutil.rmtree(scratch, ignore_errors=True)
    print(report)
    if args.output:
        args.output.write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
