"""A worker outlives its server: surreal-commands' worker stopped receiving
jobs for good after a connection loss; errand's goes on."""

from __future__ import annotations

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
