"""The import job routes: `GET /imports/{id}` (status, progress, report) and `POST /imports/{id}/run` (run a done
or failed job again)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from app.contacts.router import ContactsUser
from app.core.db import SessionDep
from app.core.openapi import errors
from app.interchange import jobs
from app.interchange.schemas import ImportJobRead

router = APIRouter(prefix="/imports", tags=["import and export"])
JobId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="The job's id, from the import's Location")]


@router.get("/{job_id}", response_model=ImportJobRead, responses=errors(401, 403, 404, 429))
async def read_import_job(job_id: JobId, user: ContactsUser, session: SessionDep) -> dict[str, Any]:
    """A background import of yours: its status, its progress and, once done, its report."""
    return await jobs.read_job(session, job_id, user.id)


@router.post("/{job_id}/run", response_model=ImportJobRead, responses=errors(401, 403, 404, 409, 429))
async def rerun_import_job(job_id: JobId, user: ContactsUser, session: SessionDep) -> dict[str, Any]:
    """Run a done or failed import again from its first record: records already imported are matched and left
    unchanged, so nothing is imported twice. 409 while the job is pending or running."""
    return await jobs.rerun_job(session, job_id, user.id)
