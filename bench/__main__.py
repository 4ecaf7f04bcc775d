"""`uv run python -m bench [--quick]`: start the service and its peers, seed, load them side by side, print one
table of ratios. Needs PostgreSQL and Redis (127.0.0.1:5432 / :6379 by default); uses wrk when installed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.run import FULL, QUICK, Bench, log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a ~3 minute smoke run (smaller data, short rounds)")
    parser.add_argument(
        "--loadgen",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="wrk if installed (auto), or force one; python = the asyncio raw-socket fallback",
    )
    parser.add_argument(
        "--pg",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="an administrative PostgreSQL URL (the benchmark database is created beside it)",
    )
    parser.add_argument("--database", default="contacts_bench", help="name of the database to create and drop")
    parser.add_argument(
        "--redis",
        default="redis://127.0.0.1:6379/11",
        help="Redis URL; its database index is flushed at the start and the end",
    )
    parser.add_argument("--no-explain", action="store_true", help="leave the query plans out of the report")
    parser.add_argument("--output", type=Path, help="also write the report to this file")
    parser.add_argument("--keep", action="store_true", help="keep the database and the work directory (debugging)")
    args = parser.parse_args(argv)

    try:
        import fastapi_cache  # noqa: F401
    except ImportError as exc:
        parser.exit(
            2,
            f"the fastapi-cache2 peer cannot be imported ({exc}); run with the bench dependency group: "
            "`uv run --group bench python -m bench`\n",
        )

    bench = Bench(
        QUICK if args.quick else FULL, args.pg, args.redis, args.database, args.loadgen, explain=not args.no_explain
    )
    try:
        report = bench.run()
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        bench.close(keep=args.keep)
    print(report)
    if args.output:
        args.output.write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
