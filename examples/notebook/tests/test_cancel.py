"""Canceling a transcription stops the recognition itself: the job ends
canceled before it has heard the whole recording, and no transcript is
stored."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import errand
import httpx

from conftest import Stack, wait_until


def long_recording(folder: Path) -> bytes:
    """Two minutes of speech (under the tests' upload limit)."""
    text = " ".join(f"Paragraph {n} says the queue keeps every job safe." for n in range(25))
    path = folder / "long.wav"
    subprocess.run(["espeak-ng", "-v", "en-us+f2", "-s", "110", "-w", str(path), text], check=True)
    return path.read_bytes()


def test_cancel_stops_a_running_transcription(
    app: httpx.Client, jobs: errand.Client, stack: Stack, tmp_path: Path
) -> None:
    added = app.post(
        "/api/transcriptions", files={"file": ("long.wav", long_recording(tmp_path), "audio/wav")}
    ).json()
    job_id = added["job_id"]

    def heard_some() -> bool:
        job = jobs.get(job_id)
        return job.status == "running" and job.progress is not None and job.progress.fraction > 0.01

    wait_until(heard_some, "the recogniser to hear a first stretch", timeout=300)
    canceled = app.post(f"/api/transcriptions/{added['transcription_id']}/cancel")
    assert canceled.status_code == 200, canceled.text
    job = jobs.wait(job_id, timeout=300)
    assert job.status == "canceled"
    # The handler itself saw the cancel and stopped between two stretches
    # of speech, well before the end (a handler that ignored it would be
    # abandoned by its worker after the grace period, and say nothing).
    events = jobs.events(job_id)
    stopped = [
        m
        for e in events
        if e.kind == "log"
        and (
            m := re.fullmatch(
                r"recognition stopped after (\d+) s of (\d+) s: canceled", e.data["line"]
            )
        )
    ]
    assert stopped, (
        "the handler never said it stopped; the job's events:\n"
        + "\n".join(f"{e.kind} {e.data}" for e in events)
        + f"\nthe worker's log:\n{stack.workers[0].log.read_text()[-4000:]}"
    )
    heard, total = (int(n) for n in stopped[0].groups())
    assert heard < 0.9 * total, f"it heard {heard} s of {total} s before stopping"
    assert app.get(f"/api/transcriptions/{added['transcription_id']}").json()["text"] is None
    refused = app.post(f"/api/transcriptions/{added['transcription_id']}/cancel")
    assert refused.status_code == 409
