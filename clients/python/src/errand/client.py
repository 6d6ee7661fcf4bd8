"""``Client`` and ``AsyncClient``: submit, follow and manage jobs over HTTP.

Both keep one connection pool (keep-alive) for their lifetime; use them as
context managers, or call ``close()``. Every method of one is the method of
the other, ``async`` or not: each request is described once (``_Call``) and
sent by either.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx
import httpx_sse

from . import _wire, errors
from .models import (
    Cancelled,
    Job,
    JobEvent,
    JobLink,
    JobPage,
    JobStatus,
    StreamEvent,
    Submitted,
)

DEFAULT_URL = "http://127.0.0.1:5055"

# A long poll asks for at most this much at a time, so a proxy's idle
# timeout never cuts it; wait() asks again until its own timeout.
_LONG_POLL_SECS = 60.0


def default_url() -> str:
    return os.environ.get("ERRAND_URL", DEFAULT_URL)


def _headers(token: str | None) -> dict[str, str]:
    token = token if token is not None else os.environ.get("ERRAND_API_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


@dataclass
class _Call:
    method: str
    path: str
    parse: Callable[[Any], Any]
    json: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    timeout: float | None = None


def _options(
    priority: int | None,
    queue: str | None,
    run_at: datetime | str | None,
    delay_secs: float | None,
    timeout_secs: float | None,
    max_attempts: int | None,
    idempotency_key: str | None,
    retry: dict[str, Any] | None,
) -> dict[str, Any] | None:
    options = {
        "priority": priority,
        "queue": queue,
        "run_at": run_at.isoformat() if isinstance(run_at, datetime) else run_at,
        "delay_secs": delay_secs,
        "timeout_secs": timeout_secs,
        "max_attempts": max_attempts,
        "idempotency_key": idempotency_key,
        "retry": retry,
    }
    options = {k: v for k, v in options.items() if v is not None}
    return options or None


def submit_body(
    command: str,
    input: dict[str, Any] | None = None,
    *,
    app: str | None = None,
    context: dict[str, Any] | None = None,
    tags: list[str] | None = None,
    priority: int | None = None,
    queue: str | None = None,
    run_at: datetime | str | None = None,
    delay_secs: float | None = None,
    timeout_secs: float | None = None,
    max_attempts: int | None = None,
    idempotency_key: str | None = None,
    retry: dict[str, Any] | None = None,
    webhook: str | dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON body of one submit (also an item of ``submit_many``).
    ``webhook`` is a URL the server POSTs to when the job ends, or
    ``{"url": ..., "on": "status"}`` for every change of status."""
    body: dict[str, Any] = {"command": command, "input": input if input is not None else {}}
    if app is not None:
        body["app"] = app
    if context is not None:
        body["context"] = context
    if tags:
        body["tags"] = list(tags)
    options = _options(
        priority, queue, run_at, delay_secs, timeout_secs, max_attempts, idempotency_key, retry
    )
    if webhook is not None:
        options = options or {}
        options["webhook"] = {"url": webhook} if isinstance(webhook, str) else dict(webhook)
    if options:
        body["options"] = options
    return body


def _list_params(
    command: str | None,
    status: JobStatus | str | None,
    app: str | None,
    queue: str | None,
    parent_id: str | None,
    created_after: datetime | str | None,
    created_before: datetime | str | None,
    limit: int | None,
    cursor: str | None,
    tags: list[str] | None,
    context: dict[str, Any] | None,
) -> dict[str, Any]:
    def when(value: datetime | str | None) -> str | None:
        return value.isoformat() if isinstance(value, datetime) else value

    def as_text(value: Any) -> str:
        # As the server indexes it: a string as is, anything else as JSON
        # writes it (42, true).
        return value if isinstance(value, str) else json.dumps(value)

    params = {
        "command_filter": command,
        "status_filter": status.value if isinstance(status, JobStatus) else status,
        "app": app,
        "queue": queue,
        "parent_id": parent_id,
        "created_after": when(created_after),
        "created_before": when(created_before),
        "limit": limit,
        "cursor": cursor,
        "tag": list(tags) if tags else None,
    }
    for key, value in (context or {}).items():
        params[f"context.{key}"] = as_text(value)
    return {k: v for k, v in params.items() if v is not None}


def _feed_params(command: str | None, status: str | None, app: str | None) -> dict[str, str]:
    given = {"command": command, "status": status, "app": app}
    return {k: v for k, v in given.items() if v is not None}


def _is_preamble(sse: httpx_sse.ServerSentEvent) -> bool:
    """A message with neither a name nor data (the server's opening
    ``retry:``): the SSE standard dispatches no event for it."""
    return sse.event == "message" and not sse.data


def _stream_event(sse: httpx_sse.ServerSentEvent) -> StreamEvent:
    try:
        data = json.loads(sse.data) if sse.data else None
    except ValueError:
        data = sse.data
    return StreamEvent(event=sse.event, id=sse.id or None, data=data)


class _Calls:
    """Every request of the API, described once."""

    @staticmethod
    def submit(*args: Any, **kwargs: Any) -> _Call:
        return _Call(
            "POST", "/api/commands/jobs", Submitted.model_validate, submit_body(*args, **kwargs)
        )

    @staticmethod
    def submit_many(jobs: list[dict[str, Any]]) -> _Call:
        def parse(body: Any) -> list[Submitted]:
            return [Submitted.model_validate(item) for item in body["jobs"]]

        return _Call("POST", "/api/commands/jobs/batch", parse, {"jobs": jobs})

    @staticmethod
    def get(job_id: str, wait: float | None = None) -> _Call:
        params = {"wait": wait} if wait else {}
        timeout = wait + 30.0 if wait else None
        return _Call(
            "GET", f"/api/commands/jobs/{job_id}", Job.model_validate, None, params, timeout
        )

    @staticmethod
    def cancel(job_id: str) -> _Call:
        return _Call("DELETE", f"/api/commands/jobs/{job_id}", Cancelled.model_validate)

    @staticmethod
    def cancel_many(filters: dict[str, Any]) -> _Call:
        body = {
            k: v.value if isinstance(v, JobStatus) else v
            for k, v in filters.items()
            if v is not None
        }
        return _Call("POST", "/api/commands/jobs/cancel", lambda b: b, body)

    @staticmethod
    def retry(job_id: str, clear_checkpoint: bool) -> _Call:
        params = {"clear_checkpoint": "true"} if clear_checkpoint else {}
        return _Call("POST", f"/api/commands/jobs/{job_id}/retry", Job.model_validate, None, params)

    @staticmethod
    def link(job_id: str, ttl_secs: float | None) -> _Call:
        params = {"ttl_secs": str(ttl_secs)} if ttl_secs is not None else {}
        return _Call(
            "POST", f"/api/commands/jobs/{job_id}/links", JobLink.model_validate, None, params
        )

    @staticmethod
    def events(job_id: str, after: int = 0, limit: int = 1000) -> _Call:
        def parse(body: Any) -> list[JobEvent]:
            return [JobEvent.model_validate(event) for event in body["events"]]

        params = {"after": after, "limit": limit}
        return _Call("GET", f"/api/commands/jobs/{job_id}/events", parse, None, params)

    @staticmethod
    def list(**filters: Any) -> _Call:
        return _Call(
            "GET", "/api/commands/jobs", JobPage.model_validate, None, _list_params(**filters)
        )

    @staticmethod
    def queues() -> _Call:
        return _Call("GET", "/api/queues", lambda body: body["queues"])

    @staticmethod
    def pause(queue: str, pause: bool) -> _Call:
        action = "pause" if pause else "resume"
        return _Call("POST", f"/api/queues/{quote(queue, safe='')}/{action}", lambda body: body, {})

    @staticmethod
    def limits() -> _Call:
        return _Call("GET", "/api/limits", lambda body: body["limits"])

    @staticmethod
    def set_limit(
        command: str,
        key: str | None,
        max_running: int | None,
        max_starts: int | None,
        per_secs: float | None,
    ) -> _Call:
        limit = {
            "key": key,
            "max_running": max_running,
            "max_starts": max_starts,
            "per_secs": per_secs,
        }
        body = {k: v for k, v in limit.items() if v is not None}
        return _Call("PUT", f"/api/limits/{quote(command, safe='')}", lambda b: b, body)

    @staticmethod
    def delete_limit(command: str) -> _Call:
        return _Call("DELETE", f"/api/limits/{quote(command, safe='')}", lambda b: None)

    @staticmethod
    def schedules() -> _Call:
        return _Call("GET", "/api/schedules", lambda body: body["schedules"])

    @staticmethod
    def set_schedule(
        name: str,
        command: str,
        input: dict[str, Any] | None,
        cron: str,
        timezone: str,
        missed: str,
        paused: bool | None,
        options: dict[str, Any],
    ) -> _Call:
        body: dict[str, Any] = {
            "cron": cron,
            "timezone": timezone,
            "missed": missed,
            "job": submit_body(command, input, **options),
        }
        if paused is not None:
            body["paused"] = paused
        return _Call("PUT", f"/api/schedules/{quote(name, safe='')}", lambda b: b, body)

    @staticmethod
    def change_schedule(name: str, action: str) -> _Call:
        path = f"/api/schedules/{quote(name, safe='')}"
        if action == "delete":
            return _Call("DELETE", path, lambda b: None)
        return _Call("POST", f"{path}/{action}", lambda b: b, {})

    @staticmethod
    def commands() -> _Call:
        return _Call("GET", "/api/commands", lambda body: body["commands"])


def _refused(response: httpx.Response) -> errors.ErrandError:
    """The error of a stream's answer that is not a stream."""
    try:
        body = response.json()
    except ValueError:
        body = None
    return errors.from_response(response.status_code, body)


def _list_filters(
    command: str | None = None,
    status: JobStatus | str | None = None,
    app: str | None = None,
    queue: str | None = None,
    parent_id: str | None = None,
    created_after: datetime | str | None = None,
    created_before: datetime | str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
    tags: list[str] | None = None,
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return dict(
        command=command,
        status=status,
        app=app,
        queue=queue,
        parent_id=parent_id,
        created_after=created_after,
        created_before=created_before,
        limit=limit,
        cursor=cursor,
        tags=tags,
        context=context,
    )


class Client:
    """A blocking client. ``url`` and ``token`` default to ``ERRAND_URL``
    and ``ERRAND_API_TOKEN``."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ):
        self.url = (url or default_url()).rstrip("/")
        self._headers = _headers(token)
        self._timeout = httpx.Timeout(timeout)
        self._transport = transport or httpx.HTTPTransport()
        # The full client only for SSE streams; both share one pool.
        self._http = httpx.Client(
            base_url=self.url, headers=self._headers, timeout=timeout, transport=self._transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: _Call) -> Any:
        timeout = httpx.Timeout(call.timeout) if call.timeout else self._timeout
        request = _wire.build(
            self.url, self._headers, call.method, call.path, call.json, call.params, timeout
        )
        status, content = _wire.send(self._transport, request)
        return call.parse(_wire.decode(self.url, status, content))

    def submit(self, command: str, input: dict[str, Any] | None = None, **options: Any) -> str:
        """Submits a job; returns its id. ``command`` is ``app.name`` (or the
        name, with ``app=``); options: ``context``, ``priority``, ``queue``,
        ``run_at``, ``delay_secs``, ``timeout_secs``, ``max_attempts``,
        ``idempotency_key``, ``retry``."""
        return self._send(_Calls.submit(command, input, **options)).job_id

    def submit_many(self, jobs: list[dict[str, Any]]) -> list[Submitted]:
        """Submits jobs (bodies made by ``submit_body``) in one transaction."""
        return self._send(_Calls.submit_many(jobs))

    def get(self, job_id: str) -> Job:
        return self._send(_Calls.get(job_id))

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Returns the job once it has ended, by long poll (the server answers
        the moment it ends). Raises ``TimeoutError`` after ``timeout``
        seconds; the job goes on."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = _LONG_POLL_SECS if deadline is None else deadline - time.monotonic()
            job = self._send(_Calls.get(job_id, wait=max(0.0, min(left, _LONG_POLL_SECS))))
            if job.status.is_terminal:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} is still {job.status.value} after {timeout} s")

    def cancel(self, job_id: str) -> Cancelled:
        return self._send(_Calls.cancel(job_id))

    def cancel_many(
        self,
        command: str | None = None,
        *,
        app: str | None = None,
        queue: str | None = None,
        status: JobStatus | str | None = None,
        parent_id: str | None = None,
        context: dict[str, Any] | None = None,
    ) -> dict[str, int]:
        """Cancels every job that fits and has not ended (``status``: new or
        running; ``context``: jobs whose context has each of these keys with
        this value); answers ``{"canceled", "cancel_requested"}``."""
        filters = dict(
            command=command,
            app=app,
            queue=queue,
            status=status,
            parent_id=parent_id,
            context=context,
        )
        return self._send(_Calls.cancel_many(filters))

    def retry(self, job_id: str, clear_checkpoint: bool = False) -> Job:
        """Runs a failed or canceled job again, from its last checkpoint (or
        from scratch with ``clear_checkpoint``)."""
        return self._send(_Calls.retry(job_id, clear_checkpoint))

    def link(self, job_id: str, ttl_secs: float | None = None) -> JobLink:
        """A signed, read-only link to the job, good for ``ttl_secs`` (an
        hour by default, a week at most): its ``stream_url`` or
        ``page_url`` lets a browser follow the job without the API token."""
        return self._send(_Calls.link(job_id, ttl_secs))

    def events(self, job_id: str, after: int = 0, limit: int = 1000) -> list[JobEvent]:
        """The job's event log after sequence number ``after``."""
        return self._send(_Calls.events(job_id, after, limit))

    def list(self, **filters: Any) -> JobPage:
        """One page of jobs, newest first: ``command``, ``status``, ``app``,
        ``queue``, ``parent_id``, ``created_after``, ``created_before``,
        ``limit``, ``cursor``; ``tags`` (jobs carrying all of them) and
        ``context`` (jobs whose context has each key with that value,
        compared as text: ``{"notebook_id": 42}`` matches 42 and "42")."""
        return self._send(_Calls.list(**_list_filters(**filters)))

    def iter_jobs(self, **filters: Any) -> Iterator[Job]:
        """Every job that fits the filters, page after page."""
        while True:
            page = self.list(**filters)
            yield from page.jobs
            if not page.next_cursor:
                return
            filters["cursor"] = page.next_cursor

    def commands(self) -> list[dict[str, Any]]:
        return self._send(_Calls.commands())

    def queues(self) -> list[dict[str, Any]]:
        """Queues with waiting or running jobs, or paused: ``name``, ``new``,
        ``running``, ``paused``."""
        return self._send(_Calls.queues())

    def pause_queue(self, queue: str) -> dict[str, Any]:
        """Pauses ``queue`` for every worker: submits are taken, none of its
        jobs starts until ``resume_queue``; running ones finish."""
        return self._send(_Calls.pause(queue, True))

    def resume_queue(self, queue: str) -> dict[str, Any]:
        return self._send(_Calls.pause(queue, False))

    def limits(self) -> list[dict[str, Any]]:
        """Every command's limits."""
        return self._send(_Calls.limits())

    def set_limit(
        self,
        command: str,
        *,
        key: str | None = None,
        max_running: int | None = None,
        max_starts: int | None = None,
        per_secs: float | None = None,
    ) -> dict[str, Any]:
        """Sets (or replaces) ``command``'s limits for every worker on every
        host: at most ``max_running`` running at once, at most ``max_starts``
        starts per ``per_secs``, per value of ``key`` (``context.user_id``)
        or for the command as a whole. Jobs held back stay ``new``."""
        return self._send(_Calls.set_limit(command, key, max_running, max_starts, per_secs))

    def delete_limit(self, command: str) -> None:
        """Lifts ``command``'s limits."""
        self._send(_Calls.delete_limit(command))

    def schedules(self) -> list[dict[str, Any]]:
        """Every schedule: ``cron``, ``timezone``, ``job``, ``paused``,
        ``next_run``, ``last_job_id``, ``last_error``..."""
        return self._send(_Calls.schedules())

    def set_schedule(
        self,
        name: str,
        command: str,
        input: dict[str, Any] | None = None,
        *,
        cron: str,
        timezone: str = "UTC",
        missed: str = "skip",
        paused: bool | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """Creates the schedule ``name`` (or replaces it): at each tick of
        ``cron`` (five fields, or six with seconds first) in ``timezone``,
        one job of ``command`` with ``input`` and the submit ``options``
        (``queue``, ``priority``, ``context``, ``max_attempts``...).
        ``missed``: ``skip`` or ``run_once`` for ticks missed while no
        server ran. Returns the stored schedule with its ``next_run``."""
        call = _Calls.set_schedule(name, command, input, cron, timezone, missed, paused, options)
        return self._send(call)

    def pause_schedule(self, name: str) -> dict[str, Any]:
        return self._send(_Calls.change_schedule(name, "pause"))

    def resume_schedule(self, name: str) -> dict[str, Any]:
        return self._send(_Calls.change_schedule(name, "resume"))

    def delete_schedule(self, name: str) -> None:
        """Deletes the schedule; the jobs it enqueued stay."""
        self._send(_Calls.change_schedule(name, "delete"))

    def stream(self, job_id: str, after: int | None = None) -> Iterator[StreamEvent]:
        """The job's live events over SSE until it ends (the last is ``end``).
        A dropped connection is resumed where it stopped."""
        return self._follow(f"/api/commands/jobs/{job_id}/stream", {}, after)

    def feed(
        self,
        command: str | None = None,
        status: str | None = None,
        app: str | None = None,
        after: int | None = None,
    ) -> Iterator[StreamEvent]:
        """Every job's events, live (``/api/events``), filtered by command
        (``name`` or ``app.name``), the job's status after the event, and
        app; ``data`` is the whole event (``job_id``, ``kind``, ``status``,
        ``data``...). Runs until the caller stops iterating; a dropped
        connection resumes after the last event seen, without a gap."""
        return self._follow("/api/events", _feed_params(command, status, app), after)

    def _follow(
        self, path: str, params: dict[str, str], after: int | None
    ) -> Iterator[StreamEvent]:
        """An SSE stream, resumed with ``Last-Event-ID`` after a drop, until
        an ``end`` event or a 204 (a job's stream; the feed never ends)."""
        last = str(after) if after is not None else None
        while True:
            headers = {"Last-Event-ID": last} if last is not None else {}
            try:
                with httpx_sse.connect_sse(
                    self._http,
                    "GET",
                    path,
                    params=params,
                    headers=headers,
                    timeout=httpx.Timeout(30.0, read=None),
                ) as source:
                    if source.response.status_code == 204:
                        return
                    if source.response.status_code >= 400:
                        source.response.read()
                        raise _refused(source.response)
                    for sse in source.iter_sse():
                        if _is_preamble(sse):
                            continue
                        event = _stream_event(sse)
                        if event.id:
                            last = event.id
                        yield event
                        if event.event == "end":
                            return
            except (httpx.TransportError, httpx_sse.SSEError):
                time.sleep(0.5)


class AsyncClient:
    """The same API as ``Client``, for event loops (FastAPI handlers...)."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.url = (url or default_url()).rstrip("/")
        self._headers = _headers(token)
        self._timeout = httpx.Timeout(timeout)
        self._transport = transport or httpx.AsyncHTTPTransport()
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=self._headers, timeout=timeout, transport=self._transport
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: _Call) -> Any:
        timeout = httpx.Timeout(call.timeout) if call.timeout else self._timeout
        request = _wire.build(
            self.url, self._headers, call.method, call.path, call.json, call.params, timeout
        )
        status, content = await _wire.asend(self._transport, request)
        return call.parse(_wire.decode(self.url, status, content))

    async def submit(
        self, command: str, input: dict[str, Any] | None = None, **options: Any
    ) -> str:
        return (await self._send(_Calls.submit(command, input, **options))).job_id

    async def submit_many(self, jobs: list[dict[str, Any]]) -> list[Submitted]:
        return await self._send(_Calls.submit_many(jobs))

    async def get(self, job_id: str) -> Job:
        return await self._send(_Calls.get(job_id))

    async def wait(self, job_id: str, timeout: float | None = None) -> Job:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            left = _LONG_POLL_SECS if deadline is None else deadline - loop.time()
            job = await self._send(_Calls.get(job_id, wait=max(0.0, min(left, _LONG_POLL_SECS))))
            if job.status.is_terminal:
                return job
            if deadline is not None and loop.time() >= deadline:
                raise TimeoutError(f"job {job_id} is still {job.status.value} after {timeout} s")

    async def cancel(self, job_id: str) -> Cancelled:
        return await self._send(_Calls.cancel(job_id))

    async def cancel_many(
        self,
        command: str | None = None,
        *,
        app: str | None = None,
        queue: str | None = None,
        status: JobStatus | str | None = None,
        parent_id: str | None = None,
        context: dict[str, Any] | None = None,
    ) -> dict[str, int]:
        filters = dict(
            command=command,
            app=app,
            queue=queue,
            status=status,
            parent_id=parent_id,
            context=context,
        )
        return await self._send(_Calls.cancel_many(filters))

    async def retry(self, job_id: str, clear_checkpoint: bool = False) -> Job:
        return await self._send(_Calls.retry(job_id, clear_checkpoint))

    async def link(self, job_id: str, ttl_secs: float | None = None) -> JobLink:
        return await self._send(_Calls.link(job_id, ttl_secs))

    async def events(self, job_id: str, after: int = 0, limit: int = 1000) -> list[JobEvent]:
        return await self._send(_Calls.events(job_id, after, limit))

    async def list(self, **filters: Any) -> JobPage:
        return await self._send(_Calls.list(**_list_filters(**filters)))

    async def iter_jobs(self, **filters: Any) -> AsyncIterator[Job]:
        while True:
            page = await self.list(**filters)
            for job in page.jobs:
                yield job
            if not page.next_cursor:
                return
            filters["cursor"] = page.next_cursor

    async def commands(self) -> list[dict[str, Any]]:
        return await self._send(_Calls.commands())

    async def queues(self) -> list[dict[str, Any]]:
        return await self._send(_Calls.queues())

    async def pause_queue(self, queue: str) -> dict[str, Any]:
        return await self._send(_Calls.pause(queue, True))

    async def resume_queue(self, queue: str) -> dict[str, Any]:
        return await self._send(_Calls.pause(queue, False))

    async def limits(self) -> list[dict[str, Any]]:
        return await self._send(_Calls.limits())

    async def set_limit(
        self,
        command: str,
        *,
        key: str | None = None,
        max_running: int | None = None,
        max_starts: int | None = None,
        per_secs: float | None = None,
    ) -> dict[str, Any]:
        return await self._send(_Calls.set_limit(command, key, max_running, max_starts, per_secs))

    async def delete_limit(self, command: str) -> None:
        await self._send(_Calls.delete_limit(command))

    async def schedules(self) -> list[dict[str, Any]]:
        return await self._send(_Calls.schedules())

    async def set_schedule(
        self,
        name: str,
        command: str,
        input: dict[str, Any] | None = None,
        *,
        cron: str,
        timezone: str = "UTC",
        missed: str = "skip",
        paused: bool | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        call = _Calls.set_schedule(name, command, input, cron, timezone, missed, paused, options)
        return await self._send(call)

    async def pause_schedule(self, name: str) -> dict[str, Any]:
        return await self._send(_Calls.change_schedule(name, "pause"))

    async def resume_schedule(self, name: str) -> dict[str, Any]:
        return await self._send(_Calls.change_schedule(name, "resume"))

    async def delete_schedule(self, name: str) -> None:
        await self._send(_Calls.change_schedule(name, "delete"))

    def stream(self, job_id: str, after: int | None = None) -> AsyncIterator[StreamEvent]:
        """The job's live events; as ``Client.stream``."""
        return self._follow(f"/api/commands/jobs/{job_id}/stream", {}, after)

    def feed(
        self,
        command: str | None = None,
        status: str | None = None,
        app: str | None = None,
        after: int | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Every job's events, live; as ``Client.feed``."""
        return self._follow("/api/events", _feed_params(command, status, app), after)

    async def _follow(
        self, path: str, params: dict[str, str], after: int | None
    ) -> AsyncIterator[StreamEvent]:
        last = str(after) if after is not None else None
        while True:
            headers = {"Last-Event-ID": last} if last is not None else {}
            try:
                async with httpx_sse.aconnect_sse(
                    self._http,
                    "GET",
                    path,
                    params=params,
                    headers=headers,
                    timeout=httpx.Timeout(30.0, read=None),
                ) as source:
                    if source.response.status_code == 204:
                        return
                    if source.response.status_code >= 400:
                        await source.response.aread()
                        raise _refused(source.response)
                    async for sse in source.aiter_sse():
                        if _is_preamble(sse):
                            continue
                        event = _stream_event(sse)
                        if event.id:
                            last = event.id
                        yield event
                        if event.event == "end":
                            return
            except (httpx.TransportError, httpx_sse.SSEError):
                await asyncio.sleep(0.5)
