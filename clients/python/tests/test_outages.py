"""A worker outlives its server: surreal-commands' worker stopped receiving
jobs for good after a connection loss; errand's goes on."""

from __future__ import annotations

import time

from conftest import Workers, start_server, stop_server

import errand


def test_a_worker_picks_jobs_up_again_after_its_server_restarts(tmp_path):
    store = f"sqlite://{tmp_path / 'errand.db'}"
    served = start_server(store, tmp_path)
    port = int(served.url.rsplit(":", 1)[1])
    workers = Workers(served, tmp_path)
    try:
        workers.start()
        with errand.Client(served.url) as client:
            first = client.wait(client.submit("sample.add", {"a": 1, "b": 1}), timeout=20)
            assert first.result["total"] == 2
        stop_server(served)
        served = start_server(store, tmp_path, port)
        with errand.Client(served.url) as client:
            job = client.wait(client.submit("sample.add", {"a": 2, "b": 2}), timeout=30)
            assert job.status == errand.JobStatus.COMPLETED, job
            assert job.worker_id == first.worker_id, "the same worker process ran it"
    finally:
        workers.stop_all()
        stop_server(served)


def test_what_a_job_reports_while_its_server_is_down_arrives_after(tmp_path):
    """Log lines, progress and the outcome of a job that ends while the
    server is away are sent once it is back: the job completes on its
    first attempt, nothing lost, nothing run twice."""
    store = f"sqlite://{tmp_path / 'errand.db'}"
    served = start_server(store, tmp_path)
    port = int(served.url.rsplit(":", 1)[1])
    workers = Workers(served, tmp_path)
    try:
        workers.start()
        with errand.Client(served.url) as client:
            job_id = client.submit("sample.steps", {"steps": 3})
            while client.get(job_id).status != errand.JobStatus.RUNNING:
                time.sleep(0.05)
        stop_server(served)
        time.sleep(1.5)  # the job ends meanwhile
        served = start_server(store, tmp_path, port)
        with errand.Client(served.url) as client:
            job = client.wait(job_id, timeout=10)
            assert (job.status, job.attempt) == (errand.JobStatus.COMPLETED, 1), job
            logs = [e.data["line"] for e in client.events(job_id) if e.kind == "log"]
            assert logs == ["did step 1", "did step 2", "did step 3"]
            assert job.progress.message == "step 3"
    finally:
        workers.stop_all()
        stop_server(served)
