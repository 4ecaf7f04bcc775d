"""Import jobs: a file too large for its request is stored in chunks and imported in the background by any worker,
committing every CHECKPOINT_EVERY records with its position and report; a worker that dies mid-import leaves no
half-written contact (the batch it had not committed is rolled back), and the job is taken over after
IMPORT_JOB_STALE_SECONDS and resumes after its last committed record. A finished job can be run again: each record
is matched again, so nothing is imported twice."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.contacts import import_service as contacts
from app.core.config import Settings
from app.core.db import Database, after_commit, commit, utcnow
from app.core.errors import AppError, Conflict, NotFound
from app.interchange import importing, jobs_repository
from app.interchange.models import ImportJob
from app.interchange.schemas import ImportMode, ImportReport

logger = logging.getLogger(__name__)
CHUNK_BYTES = 1024 * 1024
# Set when a job is added in this process: the runner starts on it at once instead of at its next look.
_wake = asyncio.Event()


class ImportJobNotFound(NotFound):
    """Import job not found."""

    code = "ImportJobNotFound"


class ImportJobRunning(Conflict):
    """The import job is still pending or running; it can be run again once it is done or failed."""

    code = "ImportJobRunning"


async def _wake_runner() -> None:
    _wake.set()


async def create_job(
    db: AsyncSession,
    user_id: int,
    chunks: AsyncIterator[bytes],
    *,
    mode: ImportMode,
    mapping: Mapping[str, str] | None,
    content_type: str | None,
    filename: str | None,
    limit: int,
) -> dict[str, Any]:
    """Store a file (at most `limit` bytes, else ImportTooLarge and nothing stored) as a pending job."""
    job = ImportJob(
        id=uuid.uuid4().hex,
        user_id=user_id,
        status="pending",
        mode=mode,
        mapping=dict(mapping) if mapping else None,
        filename=(filename or "")[:255] or None,
        content_type=(content_type or "")[:255] or None,
        size=0,
        position=0,
        bytes_read=0,
        attempts=0,
        created_at=utcnow(),
    )
    await jobs_repository.add_job(db, job)
    held = bytearray()
    size = number = 0
    async for piece in chunks:
        size += len(piece)
        if size > limit:
            raise importing.too_large(size, limit)
        held += piece
        while len(held) >= CHUNK_BYTES:
            await jobs_repository.add_chunk(db, job.id, number, bytes(held[:CHUNK_BYTES]))
            del held[:CHUNK_BYTES]
            number += 1
    if held:
        await jobs_repository.add_chunk(db, job.id, number, bytes(held))
    job.size = size
    await db.flush()
    after_commit(db, _wake_runner)
    return job_json(job)


def job_json(job: ImportJob) -> dict[str, Any]:
    return {
        "id": job.id,
        "status": job.status,
        "progress": {"bytes_total": job.size, "bytes_read": job.bytes_read, "records": job.position},
        "report": job.report,
        "error": job.error,
        "attempts": job.attempts,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
    }


async def read_job(db: AsyncSession, job_id: str, user_id: int) -> dict[str, Any]:
    job = await jobs_repository.get_job(db, job_id, user_id)
    if job is None:
        raise ImportJobNotFound
    return job_json(job)


async def rerun_job(db: AsyncSession, job_id: str, user_id: int) -> dict[str, Any]:
    """Run a done or failed job again from its first record."""
    job = await jobs_repository.get_job(db, job_id, user_id)
    if job is None:
        raise ImportJobNotFound
    if job.status not in ("done", "failed"):
        raise ImportJobRunning
    await jobs_repository.restart(db, job_id)
    after_commit(db, _wake_runner)
    await db.refresh(job)
    return job_json(job)


async def _import(database: Database, settings: Settings, job: dict[str, Any]) -> ImportReport:
    job_id, user_id = job["id"], job["user_id"]
    read = 0
    async with database.sessionmaker() as reader, database.sessionmaker() as session:

        async def chunks() -> AsyncIterator[bytes]:
            nonlocal read
            number = 0
            while (data := await jobs_repository.chunk(reader, job_id, number)) is not None:
                read += len(data)
                yield data
                number += 1

        async def checkpoint(position: int, report: ImportReport) -> None:
            await jobs_repository.save_progress(session, job_id, position, read, report.model_dump(mode="json"))
            await commit(session)
            await contacts.lock_address_book(session, user_id)

        resume = importing.Resume(
            job["position"], ImportReport.model_validate(job["report"]) if job["report"] else None, checkpoint
        )
        report = await importing.import_stream(
            session,
            user_id,
            chunks(),
            mode=job["mode"],
            mapping=job["mapping"],
            content_type=job["content_type"],
            filename=job["filename"],
            max_record=settings.import_max_record_bytes,
            fallback_region=settings.default_phone_region,
            resume=resume,
        )
        await jobs_repository.finish(session, job_id, "done", report.model_dump(mode="json"), None)
        await commit(session)
        return report


async def run_job(database: Database, settings: Settings, job_id: str | None = None) -> bool:
    """Claim one job (that one, with `job_id`) and run it to its end; False when there was none to claim."""
    async with database.sessionmaker() as session:
        claimed = await jobs_repository.claim(session, settings.import_job_stale_seconds, job_id)
        if claimed is None:
            return False
        job = {name: getattr(claimed, name) for name in ("id", "user_id", "mode", "mapping", "content_type")}
        job |= {"filename": claimed.filename, "position": claimed.position, "report": claimed.report}
        await commit(session)
    try:
        await _import(database, settings, job)
    except AppError as exc:
        await _fail(database, job["id"], exc.detail)
    except Exception:
        logger.exception("import job %s failed", job["id"])
        await _fail(database, job["id"], "An unexpected error stopped the import; run it again.")
    return True


async def _fail(database: Database, job_id: str, detail: str) -> None:
    async with database.sessionmaker() as session:
        await jobs_repository.finish(session, job_id, "failed", None, detail)
        await commit(session)


async def run_jobs_periodically(database: Database, settings: Settings) -> None:
    """The worker's runner: every IMPORT_JOB_INTERVAL seconds (or at once when a job is added here), run the jobs
    waiting, and those whose worker died."""
    while True:
        try:
            while await run_job(database, settings):
                pass
        except Exception:
            logger.exception("import job runner")
        try:
            await asyncio.wait_for(_wake.wait(), settings.import_job_interval)
        except TimeoutError:
            pass
        _wake.clear()
