"""Side-by-side measurement: contenders run in interleaved rounds (A B C, C B A, A B C, ...), each round bracketed by
/metrics scrapes of the server under load, and every comparison is a ratio of rounds measured next to each other."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.loadgen import LoadGenerator, LoadResult, Workload, median
from bench.servers import Server

DB = "contacts_api_db_queries_total"
REDIS = "contacts_api_redis_roundtrips_total"
CACHE = "contacts_api_cache_requests_total"


def _sum_prefix(metrics: dict[str, float], prefix: str) -> float:
    return sum(value for key, value in metrics.items() if key.startswith(prefix))


def counters(metrics: dict[str, float]) -> dict[str, float]:
    """The counters a benchmark reads, from one /metrics scrape."""
    out = {
        "db": metrics.get(DB, 0.0),
        "redis": metrics.get(REDIS, 0.0),
        # Every authenticated request looks its user up exactly once (hit, miss or bypass): the number of requests
        # the server actually handled, unlike the generator's count, which misses those cut off at the end.
        "requests": _sum_prefix(metrics, f'{CACHE}{{kind="user"'),
    }
    for kind in ("user", "contact", "contacts_list"):
        for result in ("hit", "miss", "error", "bypass"):
            out[f"{kind}_{result}"] = metrics.get(f'{CACHE}{{kind="{kind}",result="{result}"}}', 0.0)
    return out


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    a, b = counters(before), counters(after)
    return {key: b[key] - a[key] for key in a}


@dataclass
class Contender:
    label: str
    server: Server
    workload: Workload
    connections: int
    seconds: float | None = None  # this contender's round length, when not the comparison's
    # Extra counters read around each round (e.g. Redis's own command count), merged into the deltas.
    probe: Callable[[], dict[str, float]] | None = None


@dataclass
class Round:
    result: LoadResult
    deltas: dict[str, float]


@dataclass
class Measured:
    label: str
    server: Server
    rounds: list[Round] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(r.result.requests for r in self.rounds)

    @property
    def rps(self) -> float:
        duration = sum(r.result.duration for r in self.rounds)
        return self.requests / duration if duration else 0.0

    @property
    def p50(self) -> float:
        return median([r.result.p50_ms for r in self.rounds])

    @property
    def p99(self) -> float:
        return median([r.result.p99_ms for r in self.rounds])

    @property
    def errors(self) -> int:
        return sum(r.result.errors for r in self.rounds)

    def error_note(self) -> str:
        kinds: dict[str, int] = {}
        for r in self.rounds:
            for kind, n in r.result.error_kinds.items():
                kinds[kind] = kinds.get(kind, 0) + n
        return ("errors: " + ", ".join(f"{kind} {n}" for kind, n in kinds.items())) if kinds else ""

    def total(self, key: str) -> float:
        return sum(r.deltas.get(key, 0.0) for r in self.rounds)

    def per_request(self, key: str) -> float | None:
        if not self.server.has_metrics:
            return None
        handled = self.total("requests") or self.requests
        return self.total(key) / handled if handled else None

    def hit_ratio(self, kind: str) -> float | None:
        hits, misses = self.total(f"{kind}_hit"), self.total(f"{kind}_miss")
        return hits / (hits + misses) if hits + misses else None

    def cache_outcomes(self, kind: str) -> str:
        """How the cache answered look-ups of `kind`: "hit 99.9%" and any misses, errors, bypasses."""
        counts = {result: self.total(f"{kind}_{result}") for result in ("hit", "miss", "error", "bypass")}
        total = sum(counts.values())
        if not total:
            return ""
        parts = [f"{result} {100 * n / total:.1f}%" for result, n in counts.items() if n and (result == "hit" or n)]
        return f"{kind} look-ups: " + ", ".join(parts)


def interleaved(
    contenders: list[Contender], rounds: int, seconds: float, loadgen: LoadGenerator, settle: float = 0.3
) -> dict[str, Measured]:
    out = {c.label: Measured(c.label, c.server) for c in contenders}
    for index in range(rounds):
        order = contenders if index % 2 == 0 else contenders[::-1]
        for contender in order:
            probed = contender.probe() if contender.probe else {}
            before = contender.server.metrics()
            length = contender.seconds or seconds
            result = loadgen.run(contender.server.port, contender.workload, length, contender.connections)
            after = settled(contender.server, settle)
            deltas = delta(before, after) if before else {}
            if contender.probe:
                deltas |= {key: value - probed[key] for key, value in contender.probe().items()}
            out[contender.label].rounds.append(Round(result, deltas))
    return out


def settled(server: Server, interval: float, limit: float = 15.0) -> dict[str, float]:
    """/metrics once the requests the generator cut off at its stop have finished (counters stop moving)."""
    time.sleep(interval)
    current = server.metrics()
    if not current:
        return current
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        time.sleep(interval)
        following = server.metrics()
        if counters(following) == counters(current):
            return following
        current = following
    return current


@dataclass(frozen=True)
class Ratio:
    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.2f} ({self.low:.2f}-{self.high:.2f})"


def ratio(numerator: Measured, denominator: Measured, what: str = "rps") -> Ratio:
    """Median over rounds of numerator/denominator, each round's pair measured next to each other; with the range."""
    values = []
    for a, b in zip(numerator.rounds, denominator.rounds, strict=True):
        if not a.result.requests or not b.result.requests:
            continue  # a round in which nothing completed has no latency to compare
        if what == "rps":
            x, y = a.result.rps, b.result.rps
        else:
            x, y = getattr(a.result, what), getattr(b.result, what)
        if y:
            values.append(x / y)
    if not values:
        return Ratio(math.nan, math.nan, math.nan)
    return Ratio(median(values), min(values), max(values))
