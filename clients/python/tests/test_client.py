"""errand.Client and errand.AsyncClient against a real server."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import queue
import threading
import time
import uuid

import httpx
import pytest
from conftest import WEBHOOK_SECRET, wait_until

import errand


def test_submit_options_batch_list_and_typed_errors(client, workers):
    workers.start()
    job_id = client.submit(
        "sample.noop",
        {},
        context={"notebook_id": "42"},
        priority=5,
        max_attempts=4,
        idempotency_key="once-only",
    )
    assert client.submit("sample.noop", {}, idempotency_key="once-only") == job_id
    with pytest.raises(errand.IdempotencyConflict):
        client.submit("sample.noop", {"other": 1}, idempotency_key="once-only")
    job = client.wait(job_id, timeout=20)
    assert (job.status, job.priority, job.max_attempts) == (errand.JobStatus.COMPLETED, 5, 4)
    assert job.context == {"notebook_id": "42"}

    batch = client.submit_many(
        [errand.submit_body("sample.add", {"a": n, "b": 1}) for n in range(3)]
    )
    assert [s.created for s in batch] == [True, True, True]
    totals = sorted(client.wait(s.job_id, timeout=20).result["total"] for s in batch)
    assert totals == [1, 2, 3]
    listed = client.list(command="sample.add", status="completed", limit=2)
    assert len(listed.jobs) == 2 and listed.next_cursor
    every = list(client.iter_jobs(command="sample.add", status=errand.JobStatus.COMPLETED, limit=2))
    assert {s.job_id for s in batch} <= {j.job_id for j in every}

    with pytest.raises(errand.JobNotFound):
        client.get("no-such-job")
    with pytest.raises(errand.IllegalTransition):
        client.cancel(job_id)
    with pytest.raises(errand.UnknownCommand):
        client.submit("sample.nothing", {})
    with pytest.raises(errand.BadRequest):
        client.list(status="sleeping")
    retried = client.retry(
        client.wait(client.submit("sample.fails", {"permanent": True}), 20).job_id
    )
    assert retried.status == errand.JobStatus.NEW


def test_jobs_are_found_by_tag_and_context(client, workers):
    workers.start()
    notebook = uuid.uuid4().int % 10**9  # other tests share the server
    tag = f"podcast-{notebook}"
    first = client.submit(
        "sample.noop", {}, context={"notebook_id": notebook, "draft": True}, tags=[tag, "urgent"]
    )
    second = client.submit("sample.noop", {}, context={"notebook_id": str(notebook)}, tags=[tag])
    client.submit("sample.noop", {}, context={"notebook_id": notebook + 1})
    assert client.get(first).tags == [tag, "urgent"]

    def ids(page: errand.JobPage) -> list[str]:
        return [job.job_id for job in page.jobs]

    # A number and its text are the same value.
    assert ids(client.list(context={"notebook_id": notebook})) == [second, first]
    assert ids(client.list(tags=[tag, "urgent"])) == [first]
    assert ids(client.list(tags=[tag], context={"draft": True})) == [first]
    assert ids(client.list(tags=[tag], command="sample.noop", limit=1)) == [second]
    assert [j.job_id for j in client.iter_jobs(tags=[tag], limit=1)] == [second, first]
    with pytest.raises(errand.InvalidInput, match="tag"):
        client.submit("sample.noop", {}, tags=[""])
    with pytest.raises(errand.BadRequest, match="256"):
        client.list(context={"notebook_id": "x" * 300})


def verify_signature(secret: bytes, header: str, body: bytes, tolerance: int = 300) -> bool:
    """The receiver's check, as docs/api.md gives it."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    expected = hmac.new(secret, f"{fields['t']}.".encode() + body, hashlib.sha256).hexdigest()
    fresh = abs(time.time() - int(fields["t"])) <= tolerance
    return fresh and hmac.compare_digest(expected, fields["v1"])


def test_a_webhook_hears_the_end_of_a_job_signed(client, workers):
    workers.start()
    received: queue.Queue = queue.Queue()

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            received.put((self.headers["errand-signature"], body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    receiver = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    try:
        job_id = client.submit("sample.noop", {}, webhook=url)
        assert client.get(job_id).webhook == {"url": url, "on": "end"}
        signature, body = received.get(timeout=30)
        assert verify_signature(WEBHOOK_SECRET.encode(), signature, body)
        assert not verify_signature(b"another secret", signature, body)
        delivered = json.loads(body)
        assert delivered["event"]["job_id"] == job_id
        assert delivered["job"]["status"] == "completed"
        with pytest.raises(errand.InvalidInput, match="allow-list"):
            client.submit("sample.noop", {}, webhook="http://10.0.0.1/hook")
    finally:
        receiver.shutdown()


def test_a_job_link_reads_that_job_without_a_token(client, workers):
    workers.start()
    job_id = client.submit("sample.noop", {})
    link = client.link(job_id, ttl_secs=60)
    assert link.job_id == job_id and link.page_url.endswith(f"?link={link.token}")
    for url in (link.job_url, link.events_url, link.page_url):
        assert httpx.get(client.url + url).status_code == 200, url
    assert httpx.get(client.url + link.job_url).json()["job_id"] == job_id
    with pytest.raises(errand.InvalidInput, match="ttl_secs"):
        client.link(job_id, ttl_secs=10**7)
    with pytest.raises(errand.JobNotFound):
        client.link("no-such-job")


def test_an_unreachable_server_is_a_clear_error():
    with errand.Client("http://127.0.0.1:9") as nowhere:
        with pytest.raises(errand.ServerUnreachable) as err:
            nowhere.get("x")
    assert "127.0.0.1:9" in str(err.value)


async def test_the_async_client_does_what_the_client_does(server, workers):
    workers.start()
    async with errand.AsyncClient(server.url) as aclient:
        job_id = await aclient.submit("sample.steps", {"steps": 2})
        kinds = [event.event async for event in aclient.stream(job_id)]
        assert kinds[-1] == "end" and "log" in kinds
        job = await aclient.wait(job_id, timeout=20)
        assert job.result == {"steps": 2}
        events = await aclient.events(job_id)
        assert [e.data["line"] for e in events if e.kind == "log"] == ["did step 1", "did step 2"]
        # Resuming after the last event: the stream is over (204).
        assert [e async for e in aclient.stream(job_id, after=job.event_seq)] == []
        with pytest.raises(errand.JobNotFound):
            await aclient.get("no-such-job")
        page = await aclient.list(command="sample.steps")
        assert job_id in [j.job_id for j in page.jobs]


def _read_feed(url, enough, timeout=20.0, **filters):
    """Events of ``Client.feed`` read on a thread until ``enough(events)``;
    a feed that stalls fails the test instead of hanging it."""
    events: queue.Queue = queue.Queue()

    def reader() -> None:
        with errand.Client(url) as own:
            for event in own.feed(**filters):
                events.put(event)
                if not threading.main_thread().is_alive():
                    return

    threading.Thread(target=reader, daemon=True).start()
    seen: list = []
    deadline = time.monotonic() + timeout
    while not enough(seen):
        left = deadline - time.monotonic()
        assert left > 0, f"the feed stalled after {len(seen)} events"
        try:
            seen.append(events.get(timeout=left))
        except queue.Empty:
            pass
    return seen


def test_the_feed_follows_a_command_s_jobs_and_resumes_without_a_gap(client, server, workers):
    workers.start()
    ours = [client.submit("sample.steps", {"steps": 1}) for _ in range(2)]
    client.submit("sample.noop", {})
    for job_id in ours:
        client.wait(job_id, timeout=20)

    def both_ended(events):
        return set(ours) <= {e.data["job_id"] for e in events if e.event == "result"}

    # From the start of the stored log: every event of the command, in order.
    everything = _read_feed(server.url, both_ended, command="sample.steps", after=0)
    assert {e.data["command"] for e in everything} == {"steps"}
    ids = [int(e.id) for e in everything]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    mine = [e for e in everything if e.data["job_id"] in ours]
    assert {e.event for e in mine} >= {"status", "progress", "log", "result"}

    # Resumed after any event: exactly what followed it.
    middle = len(everything) // 2
    rest = _read_feed(
        server.url,
        lambda events: len(events) >= len(everything) - middle - 1,
        command="sample.steps",
        after=int(everything[middle].id),
    )
    assert [e.id for e in rest] == [e.id for e in everything[middle + 1 :]]


def test_a_paused_queue_holds_its_jobs_until_resumed(client, workers):
    workers.start("--queues", "held")
    assert client.pause_queue("held")["paused"] is True
    job_id = client.submit("sample.add", {"a": 1, "b": 2}, queue="held")
    time.sleep(1.5)
    assert client.get(job_id).status == errand.JobStatus.NEW
    held = next(q for q in client.queues() if q["name"] == "held")
    assert (held["paused"], held["new"]) == (True, 1)
    client.resume_queue("held")
    assert client.wait(job_id, timeout=20).result["total"] == 3


def test_a_schedule_ticks_into_jobs_run_by_a_python_worker(client, workers):
    workers.start()
    stored = client.set_schedule(
        "every-second", "sample.add", {"a": 2, "b": 3}, cron="* * * * * *", context={"who": "py"}
    )
    assert stored["next_run"] and stored["missed"] == "skip"
    ran = wait_until(
        lambda: next(
            (s["last_job_id"] for s in client.schedules() if s["name"] == "every-second"), None
        ),
        what="a tick's job",
    )
    job = client.wait(ran, timeout=20)
    assert job.result["total"] == 5
    assert job.context == {"who": "py"}
    assert client.pause_schedule("every-second")["paused"] is True
    assert client.resume_schedule("every-second")["paused"] is False
    with pytest.raises(errand.InvalidInput, match="61"):
        client.set_schedule("bad", "sample.add", {"a": 1, "b": 1}, cron="61 * * * *")
    client.delete_schedule("every-second")
    assert all(s["name"] != "every-second" for s in client.schedules())
    with pytest.raises(errand.ScheduleNotFound, match="no schedule named"):
        client.delete_schedule("every-second")


def test_a_limit_holds_a_users_second_job_until_the_first_ends(client, workers, tmp_path):
    workers.start()
    stored = client.set_limit("sample.sleepy", key="context.user", max_running=1)
    assert stored["max_running"] == 1
    assert client.limits() == [stored]
    first = client.submit(
        "sample.sleepy", {"marker": str(tmp_path / "1"), "secs": 30}, context={"user": "u"}
    )
    wait_until(lambda: client.get(first).status == errand.JobStatus.RUNNING, what="first runs")
    second = client.submit(
        "sample.sleepy", {"marker": str(tmp_path / "2"), "secs": 0.1}, context={"user": "u"}
    )
    other = client.submit(
        "sample.sleepy", {"marker": str(tmp_path / "3"), "secs": 0.1}, context={"user": "v"}
    )
    assert client.wait(other, timeout=20).status == errand.JobStatus.COMPLETED
    held = client.get(second)
    assert held.status == errand.JobStatus.NEW
    assert held.limit_key == "sample.sleepy:u"
    assert held.held == "held by its limit: 1 of 1 running for sample.sleepy:u"
    client.cancel(first)
    assert client.wait(second, timeout=20).status == errand.JobStatus.COMPLETED
    client.delete_limit("sample.sleepy")
    with pytest.raises(errand.LimitNotFound):
        client.delete_limit("sample.sleepy")
    with pytest.raises(errand.InvalidInput, match="input. or context."):
        client.set_limit("sample.sleepy", key="user", max_running=1)


def test_cancel_many_cancels_what_fits(client, workers):
    workers.start()
    held = [client.submit("sample.add", {"a": n, "b": 0}, queue="nobody-claims") for n in range(3)]
    answer = client.cancel_many("sample.add", queue="nobody-claims", status="new")
    assert answer == {"canceled": 3, "cancel_requested": 0}
    assert {client.get(j).status for j in held} == {errand.JobStatus.CANCELED}
    mine = client.submit("sample.add", {"a": 1, "b": 1}, queue="nobody-claims", context={"nb": 42})
    theirs = client.submit("sample.add", {"a": 1, "b": 1}, queue="nobody-claims", context={"nb": 7})
    assert client.cancel_many(context={"nb": 42}) == {"canceled": 1, "cancel_requested": 0}
    assert client.get(mine).status == errand.JobStatus.CANCELED
    assert client.get(theirs).status == errand.JobStatus.NEW
    client.cancel(theirs)
