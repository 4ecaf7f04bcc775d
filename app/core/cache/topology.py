"""Which Redis the cache and the rate limiter use: one server, a Redis Cluster, or a master watched by Sentinels.

Chosen by the settings (see `Settings.redis_dsn`): `REDIS_URL` (`redis://`, `rediss://`, or `redis+cluster://h:p,h:p`
and `redis+sentinel://h:p,h:p/<master>[/<db>]`), `REDIS_CLUSTER_NODES`, or `REDIS_SENTINELS` with
`REDIS_SENTINEL_MASTER`. A password in the URL (or `REDIS_PASSWORD`) is the data servers'; sentinels are asked
without one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

Kind = Literal["single", "cluster", "sentinel"]
SCHEMES: dict[str, Kind] = {"redis": "single", "rediss": "single", "redis+cluster": "cluster"}
SCHEMES["redis+sentinel"] = "sentinel"


@dataclass(frozen=True)
class Topology:
    kind: Kind
    url: str
    nodes: tuple[tuple[str, int], ...] = ()  # cluster startup nodes, or sentinels
    service: str = ""  # the Sentinel master's name
    username: str | None = None
    password: str | None = None
    db: int = 0

    @property
    def hash_tags(self) -> bool:
        """Whether keys carry a hash tag, so that the keys of one user share one cluster slot."""
        return self.kind == "cluster"

    @property
    def replicated(self) -> bool:
        """Whether a failover can promote a replica: a tombstone must then reach one (WAIT) to count."""
        return self.kind != "single"

    def auth(self) -> dict[str, Any]:
        return {"username": self.username, "password": self.password}

    def limits_uri(self) -> str:
        """The `limits` library's storage URI for this topology (its async redis-py storages)."""
        if self.kind == "single":
            return "async+" + self.url
        locations = ",".join(f"{host}:{port}" for host, port in self.nodes)
        if self.kind == "cluster":
            return f"async+redis+cluster://{locations}"
        return f"async+redis+sentinel://{locations}/{self.service}"


def parse(url: str) -> Topology:
    """The topology a Redis URL names. ValueError for an unknown scheme or a malformed node list."""
    parts = urlsplit(url)
    kind = SCHEMES.get(parts.scheme)
    if kind is None:
        raise ValueError(
            f"unsupported Redis URL scheme {parts.scheme!r}: use redis, rediss, redis+cluster or redis+sentinel"
        )
    if kind == "single":
        return Topology("single", url)
    netloc = parts.netloc.rpartition("@")[2]
    userinfo = parts.netloc.rpartition("@")[0]
    username, _, password = userinfo.partition(":")
    nodes = tuple(_node(entry) for entry in netloc.split(",") if entry)
    if not nodes:
        raise ValueError(f"a {parts.scheme} URL needs host:port of at least one node")
    path = [unquote(segment) for segment in parts.path.split("/") if segment]
    service, db = "", 0
    if kind == "sentinel":
        if not path:
            raise ValueError("a redis+sentinel URL names the master: redis+sentinel://host:port,.../<master>[/<db>]")
        service = path[0]
        db = int(path[1]) if len(path) > 1 else 0
    return Topology(kind, url, nodes, service, unquote(username) or None, unquote(password) if password else None, db)


def _node(entry: str) -> tuple[str, int]:
    host, _, port = entry.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{entry!r} is not host:port")
    return host, int(port)
