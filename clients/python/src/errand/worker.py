"""A worker for Python commands over errand's worker protocol.

One asyncio loop holds a few long-lived parts: the claim loop (a long poll
that returns as soon as a job is there, for as many jobs as there are free
slots), one task per running job, a heartbeat that renews every lease in
one request and learns which jobs were canceled or lost, and a reporter
that sends progress, log lines and outcomes in batches (everything that
piled up while the previous request was in flight goes in the next one).
Async handlers run on the loop; sync ones in a thread pool.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from pydantic import BaseModel, ValidationError
from pydantic_core import to_jsonable_python

from . import _wire, errors
from .client import default_url
from .commands import (
    CommandInput,
    CommandOutput,
    CommandRegistry,
    CommandRegistryItem,
    ExecutionContext,
    now,
    registry,
)

log = logging.getLogger("errand.worker")

PROTOCOL = "/api/worker/v1"


def worker_token(token: str | None) -> str | None:
    if token is not None:
        return token
    return os.environ.get("ERRAND_WORKER_TOKEN") or os.environ.get("ERRAND_API_TOKEN")


@dataclass
class _Attempt:
    job: dict[str, Any]
    item: CommandRegistryItem | None
    ctx: ExecutionContext
    task: asyncio.Task[None] | None = None
    # Why the worker stops it: "canceled", "timeout", "lost" or "shutdown".
    stop_reason: str | None = None
    # Progress not sent yet (the newest wins) and when progress was last sent.
    progress: dict[str, Any] | None = None
    progress_sent: float = 0.0
    logs: list[str] = field(default_factory=list)

    @property
    def ref(self) -> dict[str, Any]:
        return {"job_id": self.job["job_id"], "attempt": self.job["attempt"]}

    @property
    def command(self) -> str:
        return f"{self.job['app']}.{self.job['command']}"


def format_result(result: Any, ctx: ExecutionContext, started: float) -> Any:
    """The JSON a command's return value is stored as. Outputs derived from
    ``CommandOutput`` get their id, run time and metadata filled in."""
    if isinstance(result, CommandOutput):
        if result.command_id is None:
            result.command_id = ctx.command_id
        if result.execution_time is None:
            result.execution_time = time.monotonic() - started
        if result.execution_metadata is None:
            result.execution_metadata = {
                "app_name": ctx.app_name,
                "command_name": ctx.command_name,
                "started_at": ctx.execution_started_at.isoformat(),
                "completed_at": now().isoformat(),
            }
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    try:
        return to_jsonable_python(result)
    except Exception:  # not JSON: its text, as surreal-commands stores it
        return {"output": str(result)}


class Worker:
    """Runs the commands of ``registry`` for an errand server.

    ``url`` and ``token`` default to ``ERRAND_URL`` and
    ``ERRAND_WORKER_TOKEN`` (else ``ERRAND_API_TOKEN``)."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        commands: CommandRegistry = registry,
        max_tasks: int = 5,
        queues: Iterable[str] = ("default",),
        worker_id: str | None = None,
        lease_secs: float | None = None,
        claim_wait_secs: float = 5.0,
        shutdown_timeout: float = 30.0,
        cancel_grace: float = 10.0,
        progress_interval: float = 0.25,
    ):
        if max_tasks < 1:
            raise ValueError("max_tasks must be at least 1")
        self.url = (url or default_url()).rstrip("/")
        self.token = worker_token(token)
        self.registry = commands
        self.max_tasks = max_tasks
        self.queues = list(queues)
        self.worker_id = worker_id
        self.lease_secs = lease_secs
        self.claim_wait_secs = claim_wait_secs
        self.shutdown_timeout = shutdown_timeout
        self.cancel_grace = cancel_grace
        self.progress_interval = progress_interval
        self.running: dict[str, _Attempt] = {}
        self._outcomes: list[dict[str, Any]] = []
        # Ended attempts whose outcome waits to be sent, with their last
        # progress and log lines, which are sent before it.
        self._finishing: dict[str, _Attempt] = {}
        # Updates whose request failed in transit, sent first next round.
        self._unsent: list[dict[str, Any]] = []
        self._released: list[dict[str, Any]] = []
        self._slot_freed = asyncio.Event()
        self._report_due = asyncio.Event()
        # Set while every outcome has been sent.
        self._reported = asyncio.Event()
        self._reported.set()
        self._transport: httpx.AsyncHTTPTransport | None = None
        self._headers = {"authorization": f"Bearer {self.token}"} if self.token else {}
        self._pool: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.heartbeat_secs = 5.0
        self.lease_lost_total = 0

    # -- the protocol's calls ------------------------------------------------

    async def _post(self, call: str, body: dict[str, Any], timeout: float | None = None) -> Any:
        assert self._transport is not None
        request = _wire.build(
            self.url,
            self._headers,
            "POST",
            f"{PROTOCOL}/{call}",
            body,
            None,
            httpx.Timeout(timeout or 30.0),
        )
        status, content = await _wire.asend(self._transport, request)
        return _wire.decode(self.url, status, content)

    async def register(self) -> None:
        commands = [item.spec() for item in self.registry.get_all_commands()]
        body: dict[str, Any] = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queues": self.queues,
            "slots": self.max_tasks,
            "commands": commands,
        }
        if self.worker_id:
            body["worker_id"] = self.worker_id
        answer = await self._post("register", body)
        self.worker_id = answer["worker_id"]
        self.heartbeat_secs = (self.lease_secs or answer["lease_secs"]) / 3.0
        log.info("worker %s registered %d commands at %s", self.worker_id, len(commands), self.url)

    # -- running -----------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Runs until ``stop`` is set, then drains: no more claims, running
        jobs get ``shutdown_timeout`` to finish, the rest are stopped and
        released (back to the queue, their attempt not counted)."""
        stop = stop or asyncio.Event()
        self._loop = asyncio.get_running_loop()
        limits = httpx.Limits(max_connections=8, max_keepalive_connections=8)
        self._transport = httpx.AsyncHTTPTransport(limits=limits)
        self._pool = ThreadPoolExecutor(self.max_tasks, thread_name_prefix="errand-job")
        try:
            await self._register_patiently(stop)
            services = [
                asyncio.create_task(self._supervised(self._heartbeat), name="errand-heartbeat"),
                asyncio.create_task(self._supervised(self._reporter), name="errand-reporter"),
            ]
            await self._claim_loop(stop)
            await self._drain()
            await self._flush_reports()
            for service in services:
                service.cancel()
            await asyncio.gather(*services, return_exceptions=True)
            try:
                await self._post("deregister", {"worker_id": self.worker_id})
            except errors.ErrandError as err:
                log.warning("could not deregister: %s", err)
            log.info("worker %s stopped", self.worker_id)
        finally:
            await self._transport.aclose()
            # Sync handlers still in their threads are left to end alone.
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def _supervised(self, service: Callable[[], Awaitable[None]]) -> None:
        """Runs a background service for as long as the worker runs. A
        service that dies of a bug is logged and started again: a silently
        dead heartbeat would let every lease expire while handlers go on
        working for nothing."""
        while True:
            try:
                await service()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s failed; starting it again", service.__name__.lstrip("_"))
                await asyncio.sleep(0.5)

    async def _register_patiently(self, stop: asyncio.Event) -> None:
        wait = 0.1
        while True:
            try:
                await self.register()
                return
            except errors.ServerUnreachable as err:
                if stop.is_set():
                    raise
                log.warning("cannot reach errand at %s yet (%s); retrying", self.url, err)
                await asyncio.sleep(wait)
                wait = min(wait * 2, 5.0)

    def _claim_body(self, free: int) -> dict[str, Any]:
        items = self.registry.get_all_commands()
        busy: dict[str, int] = {}
        for attempt in self.running.values():
            busy[attempt.command] = busy.get(attempt.command, 0) + 1
        limits = {
            item.full_name: max(0, item.max_concurrency - busy.get(item.full_name, 0))
            for item in items
            if item.max_concurrency is not None
        }
        body: dict[str, Any] = {
            "worker_id": self.worker_id,
            "queues": self.queues,
            "commands": [item.full_name for item in items],
            "limit": min(free, 1000),
            "wait_secs": self.claim_wait_secs,
        }
        if limits:
            body["limits"] = limits
        if self.lease_secs:
            body["lease_secs"] = self.lease_secs
        return body

    async def _claim_loop(self, stop: asyncio.Event) -> None:
        stopping = asyncio.create_task(stop.wait())
        wait = 0.1
        try:
            while not stop.is_set():
                free = self.max_tasks - len(self.running)
                if free <= 0:
                    self._slot_freed.clear()
                    freed = asyncio.create_task(self._slot_freed.wait())
                    await asyncio.wait({freed, stopping}, return_when=asyncio.FIRST_COMPLETED)
                    freed.cancel()
                    continue
                # A claim in flight is awaited even when stopping: cut off,
                # the jobs it took would wait for their leases to expire.
                timeout = self.claim_wait_secs + 30.0
                try:
                    answer = await self._post("claim", self._claim_body(free), timeout)
                except (errors.ServerUnreachable, errors.StoreUnavailable) as err:
                    log.warning("claim failed: %s; retrying in %.1f s", err, wait)
                    await asyncio.wait({stopping}, timeout=wait)
                    wait = min(wait * 2, 5.0)
                    continue
                wait = 0.1
                for job in answer["jobs"]:
                    if stop.is_set():
                        self._released.append({**job_ref(job), "outcome": "released"})
                        self._reported.clear()
                        self._report_due.set()
                    else:
                        self._start(job)
                # The new jobs' handlers start before the next claim is sent.
                await asyncio.sleep(0)
                if answer["jobs"] and len(self.running) >= self.max_tasks:
                    continue
                if not answer["jobs"] and self._slot_freed.is_set():
                    self._slot_freed.clear()
        finally:
            stopping.cancel()

    def _start(self, job: dict[str, Any]) -> None:
        item = self.registry.get_command(job["app"], job["command"])
        ctx = ExecutionContext(
            command_id=job["job_id"],
            execution_started_at=_parse_time(job.get("started")) or now(),
            app_name=job["app"],
            command_name=job["command"],
            user_context=job.get("context"),
            attempt=job["attempt"],
            checkpoint=job.get("checkpoint"),
            _reporter=self,
        )
        attempt = _Attempt(job, item, ctx)
        self.running[job["job_id"]] = attempt
        attempt.task = asyncio.create_task(
            self._execute(attempt), name=f"errand-job-{job['job_id']}"
        )

    async def _execute(self, attempt: _Attempt) -> None:
        outcome = await self._outcome_of(attempt)
        if outcome is not None:
            self._outcomes.append({**attempt.ref, **outcome})
            self._finishing[attempt.job["job_id"]] = attempt
            self._reported.clear()
        self._report_due.set()
        self.running.pop(attempt.job["job_id"], None)
        self._slot_freed.set()

    async def _outcome_of(self, attempt: _Attempt) -> dict[str, Any] | None:
        job, item, ctx = attempt.job, attempt.item, attempt.ctx
        if item is None:
            return failed(
                f"no handler for {attempt.command} on worker {self.worker_id}",
                "unknown_command",
                retryable=False,
            )
        started = time.monotonic()
        try:
            value = item.parse_input(job["input"] if job["input"] is not None else {})
        except ValidationError as err:
            return failed(
                f"input does not fit {attempt.command}: {err}", "invalid_input", retryable=False
            )
        if isinstance(value, CommandInput):
            value.execution_context = ctx
        args = (value, ctx) if item.takes_context else (value,)
        try:
            if item.is_async:
                running = item.runnable(*args)
            else:
                assert self._loop is not None and self._pool is not None
                call = functools.partial(contextvars.copy_context().run, item.runnable, *args)
                running = self._loop.run_in_executor(self._pool, call)
            timeout = job.get("timeout_secs")
            result = await asyncio.wait_for(running, timeout)
        except asyncio.TimeoutError:
            if attempt.stop_reason is None:
                ctx._cancel.set()
                return failed(f"the attempt ran past its timeout of {timeout} s", "timeout")
            return self._stopped(attempt)
        except asyncio.CancelledError:
            return self._stopped(attempt)
        except Exception as err:
            if attempt.stop_reason is not None:
                return self._stopped(attempt)
            retryable = item.retry_config.retries(err) if item.retry_config else True
            log.info("job %s failed: %r", job["job_id"], err)
            return failed(str(err) or type(err).__name__, type(err).__name__, retryable)
        if attempt.stop_reason == "lost":
            return None
        try:
            return {"outcome": "completed", "result": format_result(result, ctx, started)}
        except Exception as err:
            return failed(f"the result is not JSON: {err}", "invalid_output", retryable=False)

    def _stopped(self, attempt: _Attempt) -> dict[str, Any] | None:
        reason = attempt.stop_reason
        if reason == "canceled":
            return {"outcome": "canceled"}
        if reason == "shutdown":
            return {"outcome": "released"}
        return None  # lost: the job is someone else's now

    def _stop(
        self, job_id: str, reason: str, grace: float, only_attempt: int | None = None
    ) -> bool:
        """Asks a running job to stop (its context says ``cancelled``) and
        cancels its task after ``grace`` seconds if it has not ended; with
        ``only_attempt``, only while that attempt is the one running.
        Whether it asked."""
        attempt = self.running.get(job_id)
        if attempt is None or attempt.stop_reason is not None:
            return False
        if only_attempt is not None and attempt.job["attempt"] != only_attempt:
            return False
        attempt.stop_reason = reason
        attempt.ctx._cancel.set()
        task = attempt.task
        if task is None:
            return True
        if grace <= 0:
            task.cancel()
        else:
            assert self._loop is not None
            self._loop.call_later(grace, task.cancel)
        return True

    async def _drain(self) -> None:
        tasks = [a.task for a in self.running.values() if a.task is not None]
        if not tasks:
            return
        log.info(
            "stopping: waiting up to %s s for %d running jobs", self.shutdown_timeout, len(tasks)
        )
        done, pending = await asyncio.wait(tasks, timeout=self.shutdown_timeout)
        if pending:
            log.warning("releasing %d jobs that did not finish in time", len(pending))
            for job_id in list(self.running):
                self._stop(job_id, "shutdown", 0)
            await asyncio.wait(pending)

    # -- heartbeat -----------------------------------------------------------

    async def _heartbeat(self) -> None:
        last_ok = time.monotonic()
        while True:
            due = time.monotonic() + self.heartbeat_secs
            await asyncio.sleep(self.heartbeat_secs)
            late = time.monotonic() - due
            if late >= self.heartbeat_secs:
                # Leases expire after three missed beats: say why, before
                # the jobs come back as lost.
                log.warning(
                    "the heartbeat ran %.1f s late: something held the event loop "
                    "(an async handler that blocks, or native code holding the GIL)",
                    late,
                )
            sent = [a.ref for a in self.running.values()]
            body: dict[str, Any] = {"worker_id": self.worker_id, "running": sent}
            if self.lease_secs:
                body["lease_secs"] = self.lease_secs
            try:
                answer = await self._post("heartbeat", body)
            except errors.ErrandError as err:
                log.warning("heartbeat failed: %s", err)
                lease = self.lease_secs or self.heartbeat_secs * 3
                if time.monotonic() - last_ok >= lease:
                    # The leases ran out meanwhile: those jobs are others' now.
                    for job_id in list(self.running):
                        self._stop(job_id, "lost", 0)
                continue
            last_ok = time.monotonic()
            if answer["unknown_worker"]:
                log.warning("the server forgot this worker; registering again")
                try:
                    await self.register()
                except errors.ErrandError as err:
                    log.warning("could not register again: %s", err)
            # The answer is about the attempts sent: one whose outcome was
            # recorded meanwhile may have given way to the job's next
            # attempt on this worker, which it must not stop.
            attempts = {ref["job_id"]: ref["attempt"] for ref in sent}
            for job_id in answer["cancel_requested"]:
                self._stop(job_id, "canceled", self.cancel_grace, attempts.get(job_id))
            for job_id in answer["lost"]:
                if self._stop(job_id, "lost", 0, attempts.get(job_id)):
                    log.warning("lost the lease on job %s; its outcome is dropped", job_id)

    # -- progress, logs and outcomes ------------------------------------------

    def progress(self, ctx: ExecutionContext, report: dict[str, Any]) -> None:
        self._from_any_thread(self._add_progress, ctx.command_id, report)

    def log(self, ctx: ExecutionContext, line: str) -> None:
        self._from_any_thread(self._add_log, ctx.command_id, line)

    async def save_checkpoint(self, ctx: ExecutionContext, value: Any) -> None:
        """Sends a checkpoint at once (not batched): the handler goes on only
        once it is durable."""
        item = {
            "job_id": ctx.command_id,
            "attempt": ctx.attempt,
            "checkpoint": to_jsonable_python(value),
        }
        answer = await self._post("updates", {"worker_id": self.worker_id, "updates": [item]})
        result = answer["results"][0]
        if not result["ok"]:
            raise errors.from_detail(result["error"])

    def save_checkpoint_from_thread(self, ctx: ExecutionContext, value: Any) -> None:
        assert self._loop is not None
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError("in an async handler, use `await ctx.save_checkpoint(...)`")
        asyncio.run_coroutine_threadsafe(self.save_checkpoint(ctx, value), self._loop).result()

    def _from_any_thread(self, fn: Any, *args: Any) -> None:
        assert self._loop is not None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def _add_progress(self, job_id: str, report: dict[str, Any]) -> None:
        attempt = self.running.get(job_id)
        if attempt is not None:
            attempt.progress = report
            self._report_due.set()

    def _add_log(self, job_id: str, line: str) -> None:
        attempt = self.running.get(job_id)
        if attempt is not None:
            attempt.logs.append(line)
            self._report_due.set()

    def _take_updates(self) -> tuple[list[dict[str, Any]], float | None]:
        """The running jobs' updates to send now, and how soon throttled
        progress is due."""
        updates, due = [], None
        clock = time.monotonic()
        for attempt in self.running.values():
            update: dict[str, Any] = {}
            if attempt.progress is not None:
                ready = attempt.progress_sent + self.progress_interval
                if clock >= ready:
                    update["progress"] = attempt.progress
                    attempt.progress, attempt.progress_sent = None, clock
                else:
                    due = ready - clock if due is None else min(due, ready - clock)
            if attempt.logs:
                update["logs"], attempt.logs = attempt.logs, []
            if update:
                updates.append({**attempt.ref, **update})
        return updates, due

    async def _reporter(self) -> None:
        wait = 0.05
        if self._outcomes or self._released or self._unsent:
            self._report_due.set()  # started again with work left over
        while True:
            due: float | None = None
            try:
                await self._report_due.wait()
                self._report_due.clear()
                outcomes, self._outcomes = self._outcomes, []
                released, self._released = self._released, []
                finishing = [
                    self._finishing.pop(o["job_id"])
                    for o in outcomes
                    if o["job_id"] in self._finishing
                ]
                updates, due = self._take_updates()
                updates = self._unsent + updates + self._final_updates(finishing)
                self._unsent = []
                try:
                    if updates:
                        answer = await self._post(
                            "updates", {"worker_id": self.worker_id, "updates": updates}
                        )
                        self._count_lost(answer, "updates")
                        updates = []
                    if outcomes or released:
                        answer = await self._post(
                            "finish",
                            {"worker_id": self.worker_id, "outcomes": outcomes + released},
                        )
                        self._count_lost(answer, "outcome")
                except (errors.ServerUnreachable, errors.StoreUnavailable):
                    # Nothing is dropped: sent again, in order, next round.
                    self._unsent = updates
                    self._outcomes = outcomes + self._outcomes
                    self._released = released + self._released
                    raise
                wait = 0.05
            except (errors.ServerUnreachable, errors.StoreUnavailable) as err:
                log.warning("cannot report to errand: %s; retrying in %.2f s", err, wait)
                await asyncio.sleep(wait)
                wait = min(wait * 2, 2.0)
                self._report_due.set()
                continue
            idle = not (self._outcomes or self._released or self._unsent)
            if idle and not self._report_due.is_set():
                self._reported.set()
            if due is not None:
                self._loop.call_later(due, self._report_due.set)  # type: ignore[union-attr]

    def _final_updates(self, finishing: list[_Attempt]) -> list[dict[str, Any]]:
        updates = []
        for attempt in finishing:
            update: dict[str, Any] = {}
            if attempt.progress is not None:
                update["progress"], attempt.progress = attempt.progress, None
            if attempt.logs:
                update["logs"], attempt.logs = attempt.logs, []
            if update:
                updates.append({**attempt.ref, **update})
        return updates

    def _count_lost(self, answer: dict[str, Any], what: str) -> None:
        for result in answer["results"]:
            if not result["ok"]:
                self.lease_lost_total += result["error"]["code"] == "lease_lost"
                log.warning("%s not recorded: %s", what, result["error"]["message"])

    async def _flush_reports(self) -> None:
        """Returns once every outcome is sent (the reporter may be sending
        the last ones right now)."""
        if self._reported.is_set() and not (self._outcomes or self._released or self._unsent):
            return
        self._report_due.set()
        try:
            await asyncio.wait_for(self._reported.wait(), 30.0)
        except asyncio.TimeoutError:
            log.warning("could not report every outcome before stopping")


def job_ref(job: dict[str, Any]) -> dict[str, Any]:
    return {"job_id": job["job_id"], "attempt": job["attempt"]}


def failed(message: str, kind: str, retryable: bool = True) -> dict[str, Any]:
    return {
        "outcome": "failed",
        "error": {"message": message, "kind": kind, "retryable": retryable},
    }


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
