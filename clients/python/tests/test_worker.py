"""Python commands run by Python worker processes, followed from Python."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
from conftest import wait_until

import errand


def test_a_decorated_command_runs_in_a_worker_and_its_result_comes_back(client, workers):
    workers.start()
    job_id = errand.submit_command("sample", "add", {"a": 2, "b": 3})
    result = errand.wait_for_command_sync(job_id, timeout=20)
    assert result.is_success(), result
    assert result.result["total"] == 5
    # CommandOutput's fields are filled in, as surreal-commands does.
    assert result.result["command_id"] == job_id
    assert result.result["execution_time"] >= 0
    assert result.result["execution_metadata"]["command_name"] == "add"


def test_invalid_input_is_refused_naming_the_field_before_any_job_exists(client, workers):
    workers.start()
    before = client.list(command="sample.add", limit=1000).jobs
    # This process did not import the command: the server checks it
    # against the schema the worker published.
    with pytest.raises(errand.InvalidInput) as refused:
        client.submit("sample.add", {"a": "three", "b": 1})
    assert refused.value.status == 422
    assert "/a" in refused.value.message
    assert client.list(command="sample.add", limit=1000).jobs == before


def test_progress_and_log_lines_reach_an_sse_client(client, workers):
    workers.start()
    job_id = client.submit("sample.steps", {"steps": 3})
    events = list(client.stream(job_id))
    kinds = [e.event for e in events]
    assert kinds[-1] == "end"
    assert events[-1].data["status"] == "completed"
    logs = [e.data["data"]["line"] for e in events if e.event == "log"]
    assert logs == ["did step 1", "did step 2", "did step 3"]
    progress = [e.data["data"] for e in events if e.event == "progress"]
    assert progress, kinds
    # The last progress is never dropped by the throttle.
    assert client.get(job_id).progress.message == "step 3"


def test_cancel_stops_a_running_async_handler(client, workers, tmp_path):
    workers.start("--cancel-grace", "0.5")
    marker = tmp_path / "sleepy"
    job_id = client.submit("sample.sleepy", {"marker": str(marker), "secs": 60})
    wait_until(marker.exists, what="the handler to start")
    client.cancel(job_id)
    job = client.wait(job_id, timeout=20)
    assert job.status == errand.JobStatus.CANCELED
    wait_until(lambda: "cancelled" in marker.read_text(), what="the handler to be cancelled")


def test_a_sync_handler_sees_its_cancel(client, workers, tmp_path):
    workers.start("--cancel-grace", "30")
    job_id = client.submit("sample.blocking", {"marker": str(tmp_path / "m"), "secs": 60})
    wait_until(lambda: client.get(job_id).status == errand.JobStatus.RUNNING)
    client.cancel(job_id)
    # Well inside the grace: the handler itself stopped.
    assert client.wait(job_id, timeout=15).status == errand.JobStatus.CANCELED


def test_failures_follow_the_commands_retry_config(client, workers):
    workers.start()
    retried = client.submit("sample.fails", {})
    permanent = client.submit("sample.fails", {"permanent": True})
    job = client.wait(retried, timeout=20)
    assert (job.status, job.attempt) == (errand.JobStatus.FAILED, 2)
    assert job.error.kind == "RuntimeError"
    assert job.error_message == "the provider timed out"
    job = client.wait(permanent, timeout=20)
    # KeyError is in stop_on: no second attempt.
    assert (job.status, job.attempt) == (errand.JobStatus.FAILED, 1)
    assert job.error.retryable is False


def test_a_handler_past_its_timeout_fails_the_attempt(client, workers):
    workers.start()
    job = client.wait(client.submit("sample.slow", {}, max_attempts=1), timeout=20)
    assert job.status == errand.JobStatus.FAILED
    assert job.error.kind == "timeout"
    assert "0.5 s" in job.error_message


def test_a_worker_killed_mid_job_loses_it_and_another_finishes_it_once(client, workers, tmp_path):
    marker = tmp_path / "once"
    first = workers.start("--lease-secs", "2")
    job_id = client.submit("sample.once", {"marker": str(marker), "secs": 3})
    wait_until(lambda: marker.exists() and "start" in marker.read_text())
    first.send_signal(signal.SIGKILL)
    first.wait()
    workers.start("--lease-secs", "2")
    job = client.wait(job_id, timeout=30)
    assert job.status == errand.JobStatus.COMPLETED
    assert job.attempt == 2
    lines = marker.read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["start", "start", "done"], lines
    assert lines[1].endswith("attempt 2")


def test_a_job_killed_mid_way_resumes_from_its_checkpoint_in_a_new_worker(
    client, workers, tmp_path
):
    marker = tmp_path / "lines"
    first = workers.start("--lease-secs", "2")
    job_id = client.submit("sample.resumable", {"marker": str(marker), "lines": 8, "pause": 0.3})
    wait_until(lambda: marker.exists() and len(marker.read_text().splitlines()) >= 3)
    first.send_signal(signal.SIGKILL)
    first.wait()
    spoken_first = [line.split() for line in marker.read_text().splitlines()]
    workers.start("--lease-secs", "2")
    job = client.wait(job_id, timeout=30)
    assert job.status == errand.JobStatus.COMPLETED, job
    assert job.result["attempt"] == 2
    # The second attempt began where the first one's last checkpoint said,
    # not at line 0.
    assert job.result["started_at"] >= len(spoken_first) - 1 >= 2
    assert job.checkpoint == 8
    lines = [line.split() for line in marker.read_text().splitlines()]
    second = [int(n) for attempt, n in lines if attempt == "2"]
    assert second == list(range(job.result["started_at"], 8))
    saved = [e for e in client.events(job_id) if e.kind == "checkpoint"]
    assert saved[-1].data["checkpoint"] == 8


def test_a_sync_handler_saves_checkpoints_and_a_retry_continues_from_them(client, workers):
    workers.start()
    job = client.wait(client.submit("sample.resumable_sync", {"marker": "-"}), timeout=30)
    assert job.status == errand.JobStatus.COMPLETED
    assert job.result == {"started_at": 2, "attempt": 2}


def test_sigterm_releases_running_jobs_without_counting_an_attempt(client, workers, tmp_path):
    marker = tmp_path / "sleepy"
    worker = workers.start("--shutdown-timeout", "0.5")
    job_id = client.submit("sample.sleepy", {"marker": str(marker), "secs": 60})
    wait_until(marker.exists)
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(20) == 0, worker.log.read_text()
    assert time.monotonic() - started < 15
    job = client.get(job_id)
    assert job.status == errand.JobStatus.NEW, job
    marker.unlink()
    workers.start()
    wait_until(marker.exists)
    assert client.get(job_id).attempt == 1, "the released attempt was not counted"
    client.cancel(job_id)


async def test_a_worker_that_lost_its_lease_gets_lease_lost_and_its_result_is_dropped(
    client, workers, server
):
    """An in-process worker cut off from its heartbeats (a partition that
    lets only its job's result through): the server gives the job to
    another worker, and the late result is refused."""
    release = asyncio.Event()
    commands = errand.CommandRegistry()

    async def slow(data: dict) -> dict:
        await release.wait()
        return {"by": "the worker that lost its lease"}

    commands.register("sample", "once", slow)
    cut_off = errand.Worker(server.url, commands=commands, lease_secs=1, max_tasks=1)

    async def no_heartbeats() -> None:
        await asyncio.Event().wait()

    cut_off._heartbeat = no_heartbeats  # type: ignore[method-assign]
    stop = asyncio.Event()
    running = asyncio.create_task(cut_off.run(stop))
    async with errand.AsyncClient(server.url) as aclient:
        job_id = await aclient.submit("sample.once", {"marker": os.devnull, "secs": 0})
        while (await aclient.get(job_id)).worker_id != cut_off.worker_id:
            await asyncio.sleep(0.05)
        # Another worker gets it once the lease has expired, and finishes it.
        await asyncio.to_thread(workers.start)
        job = await aclient.wait(job_id, timeout=30)
        assert job.status == errand.JobStatus.COMPLETED
        assert job.attempt == 2
        release.set()
        while cut_off.lease_lost_total == 0:
            await asyncio.sleep(0.05)
        assert (await aclient.get(job_id)).result == job.result
    stop.set()
    await asyncio.wait_for(running, 30)


async def test_a_heartbeat_that_fails_with_a_bug_is_started_again_and_keeps_the_lease(
    client, workers, server, caplog
):
    """A bug that kills the heartbeat once must not let the lease expire
    under a handler that is still working: the worker starts it again."""
    commands = errand.CommandRegistry()

    async def longer_than_the_lease(data: dict) -> dict:
        await asyncio.sleep(6)
        return {"done": True}

    commands.register("sample", "long", longer_than_the_lease)
    worker = errand.Worker(server.url, commands=commands, lease_secs=4, max_tasks=1)
    post, bugs = worker._post, 1

    async def buggy_post(call: str, body: dict, timeout: float | None = None):
        nonlocal bugs
        if call == "heartbeat" and bugs:
            bugs -= 1
            raise RuntimeError("a bug in the heartbeat")
        return await post(call, body, timeout)

    worker._post = buggy_post  # type: ignore[method-assign]
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    while worker.worker_id is None:
        await asyncio.sleep(0.05)
    async with errand.AsyncClient(server.url) as aclient:
        job = await aclient.wait(await aclient.submit("sample.long", {}), timeout=60)
    stop.set()
    await asyncio.wait_for(running, 30)
    assert bugs == 0
    assert "heartbeat failed; starting it again" in caplog.text
    assert job.status == errand.JobStatus.COMPLETED
    assert job.attempt == 1 and job.worker_id == worker.worker_id
    assert worker.lease_lost_total == 0


def test_a_heartbeat_answer_about_an_earlier_attempt_does_not_stop_the_next_one():
    # A heartbeat sent while attempt 1's outcome was in flight answers that
    # attempt 1 is lost; by then this worker may be running attempt 2.
    from datetime import datetime, timezone

    from errand.commands import ExecutionContext
    from errand.worker import _Attempt

    worker = errand.Worker("http://127.0.0.1:9", "token")
    ctx = ExecutionContext("j", datetime.now(timezone.utc), "t", "c", attempt=2)
    job = {"job_id": "j", "attempt": 2, "app": "t", "command": "c"}
    worker.running["j"] = _Attempt(job=job, item=None, ctx=ctx)
    assert not worker._stop("j", "lost", 0, only_attempt=1)
    assert not ctx.cancelled
    assert worker._stop("j", "lost", 0, only_attempt=2)
    assert ctx.cancelled
