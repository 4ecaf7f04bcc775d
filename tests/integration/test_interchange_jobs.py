"""Background imports: a file over IMPORT_SYNC_MAX_BYTES answers 202 with its job's URL; the job reports pending,
running, done with its report; a worker killed mid-import leaves only whole committed batches, and the job,
taken over once its worker is stale, resumes without duplicates; a finished job runs again changing nothing."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from app.contacts.models import Contact
from app.interchange import importing, jobs
from tests.factories import auth_headers, make_user

API = "/api/v1"
CARD = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:job-{n}\r\nN:Person;Number{n};;;\r\nEMAIL:p{n}@example.com\r\nEND:VCARD\r\n"
FILE = "".join(CARD.format(n=n) for n in range(1, 61)).encode()


@pytest.fixture
async def owner(db, settings):
    return await make_user(db, settings)


@pytest.fixture
def headers(settings, owner):
    return auth_headers(settings, owner)


@pytest.fixture
def small_sync_limit(settings, monkeypatch):
    monkeypatch.setattr(settings, "import_sync_max_bytes", 2048)
    monkeypatch.setattr(importing, "CHECKPOINT_EVERY", 10)
    monkeypatch.setattr(importing, "BATCH", 10)
    return settings


async def start(client, headers) -> str:
    response = await client.post(
        f"{API}/contacts/import", content=FILE, headers={**headers, "Content-Type": "text/vcard"}
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"{API}/imports/{job['id']}"
    assert (job["status"], job["progress"]["bytes_total"], job["report"]) == ("pending", len(FILE), None)
    return str(job["id"])


async def count(db) -> int:
    return int(await db.scalar(select(func.count()).select_from(Contact)) or 0)


async def test_a_large_file_runs_as_a_job_that_reports_when_done(client, db, app, headers, small_sync_limit):
    job_id = await start(client, headers)
    assert await count(db) == 0

    assert await jobs.run_job(app.state.db, small_sync_limit) is True

    response = await client.get(f"{API}/imports/{job_id}", headers=headers)
    assert response.status_code == 200
    job = response.json()
    assert job["status"] == "done"
    assert job["progress"] == {"bytes_total": len(FILE), "bytes_read": len(FILE), "records": 60}
    assert (job["report"]["created"], job["report"]["refused_count"]) == (60, 0)
    assert await count(db) == 60
    assert await jobs.run_job(app.state.db, small_sync_limit) is False  # nothing left to claim


async def test_a_worker_killed_mid_import_leaves_whole_batches_and_the_job_resumes(
    client, db, app, headers, small_sync_limit, monkeypatch
):
    job_id = await start(client, headers)
    store = importing._store
    calls = 0

    async def dies_at_the_25th(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == 25:
            raise asyncio.CancelledError  # what a worker being stopped raises where it stands
        return await store(*args, **kwargs)

    monkeypatch.setattr(importing, "_store", dies_at_the_25th)
    with pytest.raises(asyncio.CancelledError):
        await jobs.run_job(app.state.db, small_sync_limit)

    # Two batches of ten committed; the third's four contacts rolled back with it.
    assert await count(db) == 20
    job = (await client.get(f"{API}/imports/{job_id}", headers=headers)).json()
    assert (job["status"], job["progress"]["records"], job["report"]["created"]) == ("running", 20, 20)
    # Not taken over while its worker may be alive...
    assert await jobs.run_job(app.state.db, small_sync_limit) is False
    # ...but once it is stale.
    monkeypatch.setattr(small_sync_limit, "import_job_stale_seconds", 0.01)
    await asyncio.sleep(0.05)

    assert await jobs.run_job(app.state.db, small_sync_limit) is True

    job = (await client.get(f"{API}/imports/{job_id}", headers=headers)).json()
    assert (job["status"], job["attempts"], job["report"]["created"], job["report"]["unchanged"]) == ("done", 2, 60, 0)
    uids = (await db.execute(select(Contact.uid))).scalars().all()
    assert sorted(uids) == sorted(f"job-{n}" for n in range(1, 61))


async def test_a_finished_job_runs_again_changing_nothing(client, db, app, headers, small_sync_limit):
    job_id = await start(client, headers)
    conflict = await client.post(f"{API}/imports/{job_id}/run", headers=headers)
    await jobs.run_job(app.state.db, small_sync_limit)

    again = await client.post(f"{API}/imports/{job_id}/run", headers=headers)
    await jobs.run_job(app.state.db, small_sync_limit)

    assert conflict.status_code == 409
    assert again.json()["status"] == "pending"
    job = (await client.get(f"{API}/imports/{job_id}", headers=headers)).json()
    assert (job["status"], job["report"]["created"], job["report"]["unchanged"]) == ("done", 0, 60)
    assert await count(db) == 60


async def test_a_job_is_its_owners_alone(client, db, settings, headers, small_sync_limit):
    job_id = await start(client, headers)
    stranger = auth_headers(settings, await make_user(db, settings))

    assert (await client.get(f"{API}/imports/{job_id}", headers=stranger)).status_code == 404
    assert (await client.post(f"{API}/imports/{job_id}/run", headers=stranger)).status_code == 404
    assert (await client.get(f"{API}/imports/{'0' * 32}", headers=headers)).json()["error"] == "ImportJobNotFound"


async def test_a_file_over_the_largest_import_answers_413_and_stores_no_job(
    client, db, headers, small_sync_limit, monkeypatch
):
    monkeypatch.setattr(small_sync_limit, "import_max_bytes", 4096)

    response = await client.post(
        f"{API}/contacts/import", content=FILE, headers={**headers, "Content-Type": "text/vcard"}
    )

    assert response.status_code == 413
    assert await db.scalar(select(func.count()).select_from(jobs.ImportJob)) == 0


async def test_the_runner_picks_up_a_new_job_by_itself(client, app, headers, small_sync_limit, monkeypatch):
    monkeypatch.setattr(small_sync_limit, "import_job_interval", 30.0)
    runner = asyncio.create_task(jobs.run_jobs_periodically(app.state.db, small_sync_limit))
    try:
        job_id = await start(client, headers)  # wakes the runner: no 30 s wait
        for _ in range(200):
            job = (await client.get(f"{API}/imports/{job_id}", headers=headers)).json()
            if job["status"] == "done":
                break
            await asyncio.sleep(0.05)
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
    assert job["report"]["created"] == 60
