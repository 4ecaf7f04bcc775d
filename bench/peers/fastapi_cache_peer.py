"""A contact read cached the way most FastAPI projects do it: fastapi-cache2's `@cache` decorator on Redis.

It reads the service's own `contacts` table (async SQLAlchemy Core on asyncpg, the same pool size as the service)
and checks the bearer token minimally (PyJWT HS256 with the service's secret, audience and issuer; no user look-up).
Nothing invalidates its cache: a write made elsewhere stays invisible until the entry's TTL runs out, which the
benchmark demonstrates.

Environment: BENCH_PEER_DATABASE_URL, BENCH_PEER_REDIS_URL, BENCH_PEER_JWT_SECRET, BENCH_PEER_TTL (seconds, default
1800 like the service's CACHE_CONTACT_TTL), BENCH_PEER_PREFIX. Each database read also increments the Redis counter
`{prefix}-stats:db_queries`, so that the benchmark can count them (only on misses: the hit path is untouched).
Like the service (app/main.py), it calls gc.collect(); gc.freeze() once start-up is done, and nothing else.
"""

from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, datetime
from typing import Annotated, Any

import jwt
from fastapi import Depends, FastAPI, HTTPException, Path
from fastapi.security import OAuth2PasswordBearer
from fastapi_cache import FastAPICache
from fastapi_cache.backends.redis import RedisBackend
from fastapi_cache.decorator import cache
from pydantic import BaseModel
from redis.asyncio import Redis
from sqlalchemy import BigInteger, Column, Date, DateTime, MetaData, SmallInteger, String, Table, select
from sqlalchemy.ext.asyncio import create_async_engine

DATABASE_URL = os.environ.get("BENCH_PEER_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/contacts_bench")
REDIS_URL = os.environ.get("BENCH_PEER_REDIS_URL", "redis://127.0.0.1:6379/11")
JWT_SECRET = os.environ.get("BENCH_PEER_JWT_SECRET", "")
TTL = int(os.environ.get("BENCH_PEER_TTL", "1800"))
PREFIX = os.environ.get("BENCH_PEER_PREFIX", "bench-peer")
DB_QUERIES_KEY = f"{PREFIX}-stats:db_queries"

contacts = Table(
    "contacts",
    MetaData(),
    Column("id", BigInteger, primary_key=True),
    Column("user_id", BigInteger),
    Column("first_name", String),
    Column("last_name", String),
    Column("email", String),
    Column("phone", String),
    Column("birthday", Date),
    Column("birthday_key", SmallInteger),
    Column("notes", String),
    Column("search_text", String),
    Column("created_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True)),
)
COLUMNS = [
    contacts.c[name]
    for name in (
        "id",
        "user_id",
        "first_name",
        "last_name",
        "email",
        "phone",
        "birthday",
        "notes",
        "created_at",
        "updated_at",
    )
]

engine = create_async_engine(DATABASE_URL, pool_size=10, max_overflow=10)
redis = Redis.from_url(REDIS_URL)


class ContactOut(BaseModel):
    id: int
    user_id: int
    first_name: str
    last_name: str | None
    email: str | None
    phone: str | None
    birthday: date | None
    notes: str | None
    created_at: datetime
    updated_at: datetime


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    FastAPICache.init(RedisBackend(redis), prefix=PREFIX, expire=TTL)
    gc.collect()
    gc.freeze()
    yield
    await redis.aclose()
    await engine.dispose()


app = FastAPI(title="fastapi-cache2 peer", lifespan=lifespan)
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/token")


async def current_user_id(token: Annotated[str, Depends(oauth2_scheme)]) -> int:
    try:
        claims = jwt.decode(
            token, JWT_SECRET, algorithms=["HS256"], audience="contacts-api:access", issuer="contacts-api"
        )
    except jwt.PyJWTError as exc:
        raise HTTPException(status_code=401, detail="invalid token") from exc
    return int(claims["sub"])


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/api/v1/contacts/{contact_id}", response_model=ContactOut)
@cache(expire=TTL)
async def read_contact(
    contact_id: Annotated[int, Path(ge=1, le=2**63 - 1)], user_id: Annotated[int, Depends(current_user_id)]
) -> dict[str, Any]:
    async with engine.connect() as connection:
        result = await connection.execute(
            select(*COLUMNS).where(contacts.c.id == contact_id, contacts.c.user_id == user_id)
        )
        row = result.mappings().first()
    await redis.incr(DB_QUERIES_KEY)
    if row is None:
        raise HTTPException(status_code=404, detail="contact not found")
    return dict(row)
