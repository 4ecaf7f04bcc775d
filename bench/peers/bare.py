"""The framework's ceiling: a bare FastAPI endpoint that answers GET /api/v1/contacts/{id} with the bytes of a real
contact's JSON (the same body the service returns), with no authentication and no I/O.

Run like the service (`uvicorn bench.peers.bare:app --loop uvloop --http httptools --workers N`). The body comes
from the file named by BENCH_BARE_BODY_FILE (the benchmark writes the JSON the service serves for its contact).
Like the service (app/main.py), it calls gc.collect(); gc.freeze() once start-up is done, and nothing else.
"""

from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, Response
from fastapi import Path as PathParam

_SAMPLE = (
    b'{"id":1,"user_id":1,"first_name":"Grace","last_name":"Hopper","email":"grace.hopper.1@example.com",'
    b'"phone":"+1 555 0000001","birthday":"1906-12-09","notes":null,'
    b'"created_at":"2026-11-27T12:00:00Z","updated_at":"2026-11-27T12:00:00Z"}'
)
BODY = Path(os.environ["BENCH_BARE_BODY_FILE"]).read_bytes() if os.environ.get("BENCH_BARE_BODY_FILE") else _SAMPLE


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    gc.collect()
    gc.freeze()
    yield


app = FastAPI(title="bare", lifespan=lifespan)


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/api/v1/contacts/{contact_id}")
async def read_contact(contact_id: Annotated[int, PathParam(ge=1, le=2**63 - 1)]) -> Response:
    """The same JSON the service sends, from memory."""
    return Response(content=BODY, media_type="application/json")
