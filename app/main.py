"""The application factory."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text

from app.auth.app_password_router import router as app_passwords_router
from app.auth.router import router as auth_router
from app.contacts import service as contacts_service
from app.contacts.batch import BatchOperationFailed
from app.contacts.router import labels_router as contacts_labels_router
from app.contacts.router import router as contacts_router
from app.contacts.sync_router import batch_failure_response
from app.contacts.sync_router import batch_router as contacts_batch_router
from app.contacts.sync_router import router as contacts_sync_router
from app.contacts.trash import run_clean_up_periodically
from app.core.cache import Cache, cache
from app.core.config import Settings, get_settings, with_jwt_secret
from app.core.db import Database
from app.core.email import Mailer
from app.core.errors import install_error_handlers
from app.core.events import user_deleting
from app.core.metrics import CONTENT_TYPE, check_metrics_access, render_metrics
from app.core.middleware import BodySizeLimit
from app.core.openapi import document_body_errors, errors
from app.core.rate_limit import RateLimiter
from app.core.storage import MEDIA_URL_PATH, local_storage
from app.dav.router import router as dav_router
from app.dav.xml import DavError, dav_error_response
from app.interchange.jobs import run_jobs_periodically
from app.interchange.jobs_router import router as import_jobs_router
from app.interchange.router import IMPORT_PATH
from app.interchange.router import router as interchange_router
from app.users import service as users_service
from app.users.account_router import router as account_router
from app.users.router import admin_router
from app.users.router import router as users_router
from app.web.setup import install as install_web_pages

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"


async def _database_ok(database: Database, seconds: float) -> bool:
    try:
        async with asyncio.timeout(seconds):
            async with database.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


def create_app(settings: Settings | None = None, database: Database | None = None) -> FastAPI:
    """Build the application. Tests pass their own settings and database; production reads the environment."""
    settings = with_jwt_secret(settings or get_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owns_database = database is None
        app.state.db = database or Database.from_settings(settings)
        # The process's one cache (the services import it as `cache`), bound to this app's settings.
        cache.configure(settings)
        app.state.cache = cache
        # Invalidations that writes recorded in the database (their worker could not reach Redis) are replayed.
        cache.start_replaying(app.state.db.sessionmaker)
        app.state.rate_limiter = RateLimiter(settings)
        app.state.mailer = Mailer(settings)
        app.state.storage = local_storage(settings)
        # Objects alive after start-up never die: keep them out of the collector's full passes (see
        # performance-facts: this cuts p99 pauses from ~85 ms to a few ms).
        gc.collect()
        gc.freeze()
        # Purges the expired trash, forgets old sync history and idempotency keys (bounded work per pass).
        cleanup = (
            asyncio.create_task(run_clean_up_periodically(app.state.db, settings))
            if settings.sync_cleanup_interval > 0
            else None
        )
        # Imports too large for their request: run (and resumed after a worker died) in the background.
        import_jobs = (
            asyncio.create_task(run_jobs_periodically(app.state.db, settings))
            if settings.import_job_interval > 0
            else None
        )
        try:
            yield
        finally:
            for task in (cleanup, import_jobs):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await app.state.mailer.drain()
            await cache.close()
            if owns_database:
                await app.state.db.dispose()

    app = FastAPI(
        title=settings.app_name,
        version="0.1.0",
        lifespan=lifespan,
        description="Multi-user contacts service with a Redis cache that is never staler than its database.",
    )
    app.state.settings = settings
    # The features meet here, not in each other's imports: auth checks the accounts users keeps, and contacts
    # forgets what it cached of a user who is being deleted.
    app.state.accounts = users_service.accounts
    user_deleting.subscribe(contacts_service.forget_contacts_of_user)
    install_error_handlers(app)
    app.add_exception_handler(BatchOperationFailed, batch_failure_response)
    app.add_exception_handler(DavError, dav_error_response)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.include_router(account_router, prefix=API_PREFIX)
    app.include_router(auth_router, prefix=API_PREFIX)
    app.include_router(users_router, prefix=API_PREFIX)
    app.include_router(app_passwords_router, prefix=API_PREFIX)
    # Before the contact routes: `/contacts/{contact_id}` would take `trash`, `changes` and `batch` for ids.
    app.include_router(contacts_sync_router, prefix=API_PREFIX)
    app.include_router(contacts_batch_router, prefix=API_PREFIX)
    app.include_router(interchange_router, prefix=API_PREFIX)
    app.include_router(import_jobs_router, prefix=API_PREFIX)
    app.include_router(contacts_router, prefix=API_PREFIX)
    app.include_router(contacts_labels_router, prefix=API_PREFIX)
    app.include_router(admin_router, prefix=API_PREFIX)
    app.include_router(dav_router)  # CardDAV at /dav and /.well-known/carddav, beside the REST API
    install_web_pages(app)  # the web pages at the site's root (/login, /contacts, ...), beside both
    app.openapi = document_body_errors(app)  # type: ignore[method-assign]
    media = Path(settings.media_root)
    media.mkdir(parents=True, exist_ok=True)
    app.mount(MEDIA_URL_PATH, StaticFiles(directory=media), name="media")
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_request_bytes,
        larger={
            f"{API_PREFIX}/users/me/avatar": settings.avatar_max_bytes + 64 * 1024,
            "/settings/avatar": settings.avatar_max_bytes + 64 * 1024,  # the web page's upload form
            f"{API_PREFIX}{IMPORT_PATH}": settings.import_max_bytes + 64 * 1024,
        },
    )

    @app.get("/health", tags=["ops"])
    async def health(request: Request, response: Response) -> dict[str, Any]:
        """Liveness and readiness: 503 only when the database does not answer; a cache outage is `degraded`."""
        db_ok = await _database_ok(request.app.state.db, settings.database_timeout)
        cache: Cache = request.app.state.cache
        cache_ok = await cache.ping()
        if not db_ok:
            response.status_code = 503
        if cache.off_reason:
            # Off on purpose (not an outage): every read goes to the database, and the body says why.
            return {
                "status": "ok" if db_ok else "degraded",
                "database": {"ok": db_ok},
                "cache": {"backend": "off", "ok": True, "reason": cache.off_reason},
            }
        return {
            "status": "ok" if db_ok and cache_ok else "degraded",
            "database": {"ok": db_ok},
            "cache": {"backend": cache.backend.name, "ok": cache_ok},
        }

    @app.get("/metrics", tags=["ops"], response_class=Response, responses=errors(403))
    async def metrics(request: Request) -> Response:
        """Prometheus metrics: cache hits, misses, errors and bypasses per kind, hit ratio, queries, round trips.
        Only for clients in METRICS_ALLOW (default: this machine) or bearing METRICS_TOKEN."""
        check_metrics_access(request, settings)
        return Response(render_metrics(), media_type=CONTENT_TYPE)

    return app
