"""What the app shows about jobs, read from errand: a job's status for
each record on a page in one list call, a job's stream turned into page
fragments, and the global event feed turned into "something changed"
signals for the live tables."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import errand

APP = "notebook"
TERMINAL = {"completed", "failed", "canceled"}
# How often a live table may be told to redraw: events closer together
# than this are sent as one.
REDRAW_EVERY_SECS = 0.3
KEEPALIVE_SECS = 15.0


async def jobs_of(
    client: errand.AsyncClient, records: list[dict[str, Any]], command: str
) -> dict[str, errand.Job]:
    """The jobs of ``records`` (each with ``job_id`` and ``created_at``):
    one list call for the time span the records cover (a record's job is
    submitted right after the record is written), then a single get for
    any job that call did not hold."""
    wanted = {r["job_id"] for r in records if r.get("job_id")}
    if not wanted:
        return {}
    oldest = min(datetime.fromisoformat(r["created_at"]) for r in records if r.get("job_id"))
    page = await client.list(
        command=f"{APP}.{command}",
        created_after=oldest - timedelta(minutes=5),
        limit=1000,
    )
    found = {job.job_id: job for job in page.jobs if job.job_id in wanted}
    missing = wanted - found.keys()
    if missing:
        for job in await asyncio.gather(*(job_or_none(client, j) for j in missing)):
            if job is not None:
                found[job.job_id] = job
    return found


async def job_or_none(client: errand.AsyncClient, job_id: str) -> errand.Job | None:
    try:
        return await client.get(job_id)
    except errand.JobNotFound:
        return None


def view(job: errand.Job | None) -> dict[str, Any]:
    """A job as the templates draw it."""
    if job is None:
        return {"status": "unknown", "fraction": None, "message": "no job", "ended": True}
    status = job.status.value  # the wire name ("running"), not the enum's
    progress = job.progress
    retrying = job.status == "new" and job.error is not None
    message = progress.message if progress and progress.message else None
    if job.status == "failed" or retrying:
        message = job.error_message or message
    if job.status == "completed":
        message = None
    if job.held and job.status == "new":
        message = job.held
    return {
        "id": job.job_id,
        "status": "retrying" if retrying else status,
        "fraction": progress.fraction if progress else None,
        "message": message,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "cancel_requested": job.cancel_requested,
        "ended": job.status in TERMINAL,
        "can_retry": job.status in {"failed", "canceled"},
        "can_cancel": job.status not in TERMINAL and not job.cancel_requested,
        "result": job.result,
    }


async def changes(client: errand.AsyncClient, command: str) -> AsyncIterator[str]:
    """Server-Sent Events for a live table: ``event: changed`` (data: the
    job ids) whenever jobs of ``command`` have new events in errand, at
    most one per ``REDRAW_EVERY_SECS``, and a comment now and then so that
    proxies keep the stream open."""
    changed: set[str] = set()
    signal = asyncio.Event()

    async def follow() -> None:
        # errand's feed resumes by itself after a dropped connection.
        async for event in client.feed(command=f"{APP}.{command}"):
            if event.event in {"status", "progress", "result", "failure"}:
                changed.add(event.data.get("job_id", ""))
                signal.set()

    reader = asyncio.create_task(follow())
    try:
        yield "retry: 2000\n\n"
        while not reader.done():
            try:
                await asyncio.wait_for(signal.wait(), KEEPALIVE_SECS)
            except asyncio.TimeoutError:
                yield ": keepalive\n\n"
                continue
            signal.clear()
            ids = " ".join(sorted(changed))
            changed.clear()
            yield sse_message("changed", ids)
            await asyncio.sleep(REDRAW_EVERY_SECS)
    finally:
        reader.cancel()


def sse_message(event: str, data: str, id: str | None = None) -> str:
    """One SSE message; each line of ``data`` gets its own ``data:``."""
    head = f"event: {event}\n" + (f"id: {id}\n" if id else "")
    return head + "".join(f"data: {line}\n" for line in data.splitlines() or [""]) + "\n"
