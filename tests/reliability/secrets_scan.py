"""What must never leave the service or reach its cache: password hashes, tokens, pickled objects."""

from __future__ import annotations

import base64
import binascii
import json
import pickletools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

ARGON2_HASH = re.compile(rb"\$argon2(?:id|i|d)\$")
# A JWT: base64url JSON header and payload (both begin `{"` = `eyJ`) and a signature.
JWT = re.compile(rb"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{8,}")
# Protocol 2+ pickles start with PROTO (0x80) and the protocol number.
PICKLE_HEADER = re.compile(rb"\A\x80[\x02-\x05]")
# Base64 of the same header: "gAI", "gAN", "gAS", "gAW".
PICKLE_BASE64 = re.compile(r"\AgA[INSW][A-Za-z0-9+/=_-]{4,}\Z")

# The only responses that carry tokens by design: the token pair of a login, a refresh, a password change.
TOKEN_ISSUERS = frozenset({"/api/v1/auth/login", "/api/v1/auth/refresh", "/api/v1/users/me/password"})


def is_pickle(raw: bytes) -> bool:
    """True if `raw` is a complete pickle (any protocol): opcodes parse up to a final STOP. Nothing is loaded."""
    if not raw or raw[-1:] != b".":
        return False
    if PICKLE_HEADER.match(raw):
        return True
    try:
        ops = list(pickletools.genops(raw))
    except (ValueError, KeyError, IndexError, UnicodeDecodeError, binascii.Error):
        return False
    return bool(ops) and ops[-1][0].name == "STOP" and ops[-1][2] == len(raw) - 1


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _pickle_in_text(text: str) -> bool:
    if PICKLE_BASE64.match(text):
        try:
            return is_pickle(base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_"))
        except (binascii.Error, ValueError):
            return False
    return False


def find_secrets(raw: bytes, *, tokens_allowed: bool = False) -> list[str]:
    """The kinds of secret found in `raw` (and in the strings of its JSON, if it is JSON)."""
    found = []
    if ARGON2_HASH.search(raw):
        found.append("password hash")
    if not tokens_allowed and JWT.search(raw):
        found.append("token")
    if is_pickle(raw) or PICKLE_HEADER.match(raw):
        found.append("pickle")
    else:
        try:
            decoded = json.loads(raw)
        except ValueError:
            decoded = None
        if any(_pickle_in_text(text) for text in _strings(decoded)):
            found.append("pickle (base64)")
    return found


def _redis_values(client: Any, key: bytes) -> list[tuple[bytes, bool]]:
    """Everything stored under `key`: (bytes, whether they are a value, as opposed to a hash field's name)."""
    kind = client.type(key)
    if kind == b"string":
        value = client.get(key)
        return [(value, True)] if value is not None else []
    if kind == b"hash":
        return [item for name, value in client.hgetall(key).items() for item in ((name, False), (value, True))]
    if kind == b"list":
        return [(value, True) for value in client.lrange(key, 0, -1)]
    if kind == b"set":
        return [(value, True) for value in client.smembers(key)]
    if kind == b"zset":
        return [(member, True) for member, _ in client.zrange(key, 0, -1, withscores=True)]
    if kind == b"stream":
        return [(part, True) for _, entry in client.xrange(key) for pair in entry.items() for part in pair]
    return [(b"", False)] if kind == b"none" else [(kind, True)]


def _decodable(raw: bytes) -> bool:
    """Every value the service stores is JSON (cached data, lease markers) or a number (counters)."""
    try:
        json.loads(raw)
    except ValueError:
        return False
    return True


@dataclass
class SecretScanner:
    """Collects the findings of every response body and Redis value passed to it (nothing else is kept)."""

    bodies: int = 0
    body_bytes: int = 0
    findings: list[str] = field(default_factory=list)
    redis_keys: int = 0
    redis_values: int = 0
    redis_findings: list[str] = field(default_factory=list)
    undecodable: list[str] = field(default_factory=list)

    def scan_redis(self, url: str, label: str) -> None:
        """Read and decode every key of every database of the Redis at `url`."""
        import redis

        client = redis.Redis.from_url(url)
        try:
            databases = [int(name[2:]) for name in client.info("keyspace")]
        finally:
            client.close()
        for db in databases:
            client = redis.Redis.from_url(url, db=db)
            try:
                for key in client.scan_iter(count=500):
                    self.redis_keys += 1
                    if find_secrets(key):
                        self.redis_findings.append(f"{label} db{db} key {key[:300]!r}")
                    for raw, is_value in _redis_values(client, key):
                        self.redis_values += is_value
                        kinds = find_secrets(raw)
                        if kinds:
                            self.redis_findings.append(f"{label} db{db} {key!r}: {', '.join(kinds)}: {raw[:300]!r}")
                        elif is_value and not _decodable(raw):
                            self.undecodable.append(f"{label} db{db} {key!r}: {raw[:200]!r}")
            finally:
                client.close()

    def scan_response(self, path: str, status: int, body: bytes) -> None:
        self.bodies += 1
        self.body_bytes += len(body)
        kinds = find_secrets(body, tokens_allowed=path in TOKEN_ISSUERS and status == 200)
        if kinds:
            self.findings.append(f"{status} {path}: {', '.join(kinds)}: {body[:300]!r}")
