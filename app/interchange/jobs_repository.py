"""SQL of the import jobs: a job and its file's chunks written, read back a chunk at a time, a job claimed by one
worker (a pending one, or a running one whose worker stopped beating), its progress and its end."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import utcnow
from app.interchange.models import ImportJob, ImportJobChunk


async def add_job(session: AsyncSession, job: ImportJob) -> None:
    session.add(job)
    await session.flush()


async def add_chunk(session: AsyncSession, job_id: str, number: int, data: bytes) -> None:
    piece = ImportJobChunk(job_id=job_id, number=number, data=data)
    session.add(piece)
    await session.flush()
    session.expunge(piece)  # written: the session need not hold the file


async def set_size(session: AsyncSession, job_id: str, size: int) -> None:
    await session.execute(update(ImportJob).where(ImportJob.id == job_id).values(size=size))


async def chunk(session: AsyncSession, job_id: str, number: int) -> bytes | None:
    found = await session.scalar(
        select(ImportJobChunk.data).where(ImportJobChunk.job_id == job_id, ImportJobChunk.number == number)
    )
    return bytes(found) if found is not None else None


async def get_job(session: AsyncSession, job_id: str, user_id: int | None = None) -> ImportJob | None:
    query = select(ImportJob).where(ImportJob.id == job_id)
    if user_id is not None:
        query = query.where(ImportJob.user_id == user_id)
    return (await session.execute(query)).scalar_one_or_none()


async def claim(session: AsyncSession, stale_after: float, job_id: str | None = None) -> ImportJob | None:
    """Take one job to run: a pending one, or a running one whose worker has not beaten for `stale_after`
    seconds (it died). Row-locked with SKIP LOCKED on PostgreSQL, so two workers never take the same job."""
    stale: datetime = utcnow() - timedelta(seconds=stale_after)
    query = select(ImportJob).where(
        or_(ImportJob.status == "pending", (ImportJob.status == "running") & (ImportJob.heartbeat < stale))
    )
    if job_id is not None:
        query = query.where(ImportJob.id == job_id)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    job = (await session.execute(query.order_by(ImportJob.created_at).limit(1))).scalar_one_or_none()
    if job is not None:
        job.status, job.heartbeat, job.attempts = "running", utcnow(), job.attempts + 1
        await session.flush()
    return job


async def save_progress(
    session: AsyncSession, job_id: str, position: int, bytes_read: int, report: dict[str, Any]
) -> None:
    await session.execute(
        update(ImportJob)
        .where(ImportJob.id == job_id)
        .values(position=position, bytes_read=bytes_read, report=report, heartbeat=utcnow())
    )


async def finish(
    session: AsyncSession, job_id: str, status: str, report: dict[str, Any] | None, error: str | None
) -> None:
    values: dict[str, Any] = {"status": status, "error": error, "finished_at": utcnow(), "heartbeat": utcnow()}
    if report is not None:
        values["report"] = report
    await session.execute(update(ImportJob).where(ImportJob.id == job_id).values(**values))


async def restart(session: AsyncSession, job_id: str) -> None:
    """A finished or failed job to run again from its first record (each record is matched again, so nothing is
    imported twice)."""
    await session.execute(
        update(ImportJob)
        .where(ImportJob.id == job_id)
        .values(status="pending", position=0, bytes_read=0, report=None, error=None, finished_at=None)
    )
