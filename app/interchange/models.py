"""The import jobs' tables: a job (its file's name and type, its mode, where it has got to, its report) and the
file itself in chunks of at most a megabyte, so that any worker can read it back a chunk at a time and resume."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, BigIntId, UTCDateTime, utcnow


class ImportJob(Base):
    """An import too large for its request. `position` is the last record (card number or CSV row) whose work is
    committed, with `report` as it stood then: a worker that dies loses only the batch it had not committed, and
    the next one resumes after `position`. `heartbeat` says the running job's worker is alive."""

    __tablename__ = "import_jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("users.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(10), default="pending")
    mode: Mapped[str] = mapped_column(String(10))
    mapping: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    filename: Mapped[str | None] = mapped_column(String(255), default=None)
    content_type: Mapped[str | None] = mapped_column(String(255), default=None)
    size: Mapped[int] = mapped_column(BigIntId, default=0)
    position: Mapped[int] = mapped_column(Integer, default=0)
    bytes_read: Mapped[int] = mapped_column(BigIntId, default=0)
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    heartbeat: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    __table_args__ = (
        Index("ix_import_jobs_user_id", "user_id"),
        Index("ix_import_jobs_status", "status"),
    )


class ImportJobChunk(Base):
    """A piece of a job's file, in order (`number` from 0)."""

    __tablename__ = "import_job_chunks"

    job_id: Mapped[str] = mapped_column(String(32), ForeignKey("import_jobs.id", ondelete="CASCADE"), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    data: Mapped[bytes] = mapped_column(LargeBinary)
