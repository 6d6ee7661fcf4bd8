"""A worker killed (SIGKILL) in the middle of a podcast: the job's next
attempt, on another worker, continues from the last line checkpointed
and speaks only the lines that were left."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import errand
import httpx

from conftest import Stack, wait_until

SENTENCES = [f"This is sentence number {n} of the test." for n in range(1, 11)]
# The line the first worker's synthesiser never finishes: the opening is
# line 0, so this sentence is line 6.
STUCK_AT = 5
SENTENCES[STUCK_AT] = "The worker stops on this sentence."


def blocking_espeak(folder: Path, real: str) -> Path:
    """An espeak-ng in front of the real one that hangs on the marked
    sentence, after noting that it got there: the test then kills the
    worker at a known line, however fast the host is."""
    folder.mkdir(parents=True, exist_ok=True)
    reached = folder / "reached"
    wrapper = folder / "espeak-ng"
    wrapper.write_text(
        "#!/bin/sh\n"
        'for arg in "$@"; do\n'
        '  case "$arg" in *"worker stops on this"*) touch '
        + str(reached)
        + "; exec sleep 3600;; esac\n"
        "done\n"
        f'exec {real} "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return reached


def only_a_stuck_worker(stack: Stack, folder: str, *args: str) -> tuple[subprocess.Popen, Path]:
    """Stops every worker and starts one whose synthesiser hangs on the
    marked line; answers it and the file that says it got there."""
    real = shutil.which("espeak-ng")
    assert real, "espeak-ng is not installed"
    for worker in stack.workers:
        stack.kill(worker)
    reached = blocking_espeak(stack.data / folder, real)
    path = f"{stack.data / folder}{os.pathsep}{os.environ['PATH']}"
    return stack.start_worker(*args, PATH=path), reached


def submit_podcast(app: httpx.Client, name: str, **fields: str) -> dict:
    answer = app.post(
        "/api/podcasts/generate",
        json={
            "episode_profile": "deep_dive",
            "episode_name": name,
            "content": " ".join(SENTENCES),
            **fields,
        },
    )
    assert answer.status_code == 202, answer.text
    return answer.json()


def test_a_killed_podcast_continues_from_its_checkpoint(
    stack: Stack, app: httpx.Client, jobs: errand.Client
) -> None:
    # Only the worker of this test runs podcasts until it is killed.
    doomed, reached = only_a_stuck_worker(stack, "blocking-espeak", "--lease-secs", "2")
    submitted = submit_podcast(app, "Resuming")
    job_id = submitted["job_id"]
    wait_until(reached.exists, "the first worker to reach the marked line")
    job = jobs.get(job_id)
    assert job.status == "running" and job.attempt == 1
    assert job.checkpoint["lines_done"] == STUCK_AT + 1

    stack.kill(doomed)
    stack.start_worker()
    done = jobs.wait(job_id, timeout=300)
    assert done.status == "completed", done.error_message
    assert done.attempt == 2
    result = done.result
    assert result["lines"] == len(SENTENCES) + 2
    assert result["resumed_from_line"] == STUCK_AT + 1
    # Fewer lines spoken the second time: only those after the checkpoint.
    assert result["lines_synthesised"] == result["lines"] - (STUCK_AT + 1)
    kinds = [e.kind for e in jobs.events(job_id)]
    assert "failure" in kinds  # the lost lease, recorded
    logs = [e.data["line"] for e in jobs.events(job_id) if e.kind == "log"]
    assert f"continuing from line {STUCK_AT + 2} of {result['lines']} (checkpoint)" in logs
    # The episode's audio holds every line, the early ones from attempt 1.
    episode = app.get(f"/api/podcasts/episodes/{submitted['episode_id']}").json()
    folder = Path(episode["audio_path"]).parent
    assert len(list(folder.glob("line-*.wav"))) == result["lines"]
    assert not list(folder.glob("*.partial.wav"))


def test_a_canceled_podcast_retried_keeps_its_settings_and_its_lines(
    stack: Stack, app: httpx.Client, jobs: errand.Client
) -> None:
    stuck, reached = only_a_stuck_worker(stack, "blocking-espeak-2")
    submitted = submit_podcast(app, "Canceled once", speaker_profile="brisk_pair")
    episode_id = submitted["episode_id"]
    wait_until(reached.exists, "the worker to reach the marked line")

    canceled = app.post(f"/api/podcasts/episodes/{episode_id}/cancel")
    assert canceled.status_code == 200, canceled.text
    assert jobs.wait(submitted["job_id"], timeout=120).status == "canceled"
    listed = app.get("/api/podcasts/episodes").json()["episodes"]
    shown = next(e for e in listed if e["id"] == episode_id)
    assert shown["job"]["status"] == "canceled" and shown["job"]["can_retry"]

    # Its synthesiser is still hung: that worker goes, a healthy one comes.
    stack.kill(stuck)
    stack.start_worker()
    retried = app.post(f"/api/podcasts/episodes/{episode_id}/retry")
    assert retried.status_code == 200, retried.text
    done = jobs.wait(submitted["job_id"], timeout=300)
    assert done.status == "completed", done.error_message
    assert done.result["resumed_from_line"] == STUCK_AT + 1
    assert done.result["lines_synthesised"] == done.result["lines"] - (STUCK_AT + 1)
    assert done.input["speakers"][0]["name"] == "Alan"  # brisk_pair, as submitted
    assert {line["speaker"] for line in done.result["transcript"]} == {"Alan", "Joan"}
    episode = app.get(f"/api/podcasts/episodes/{episode_id}").json()
    assert episode["name"] == "Canceled once" and episode["speaker_profile"] == "brisk_pair"
