"""The notebook end to end: a text becomes a two-voice podcast, the
podcast's audio becomes text again, and most of the words come back."""

from __future__ import annotations

import re
from pathlib import Path

import errand
import httpx

KNOWN_TEXT = (
    "A job queue keeps work safe when a server stops. "
    "Each job waits in a table until a worker takes it. "
    "The worker holds a lease and sends a heartbeat while it runs. "
    "If the worker dies, the lease runs out and another worker takes the job again. "
    "A checkpoint lets the new worker start where the old one stopped. "
    "Every change of state is a compare and set, so no job runs twice at the same time."
)


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


def generate(app: httpx.Client, **fields: object) -> dict:
    answer = app.post(
        "/api/podcasts/generate",
        json={"episode_profile": "deep_dive", "episode_name": "Queues", **fields},
    )
    assert answer.status_code == 202, answer.text
    return answer.json()


def test_a_podcast_transcribed_gives_back_most_of_its_text(
    app: httpx.Client, jobs: errand.Client
) -> None:
    submitted = generate(app, content=KNOWN_TEXT)
    # The episode exists while its job runs, with the job's live status.
    episode = app.get(f"/api/podcasts/episodes/{submitted['episode_id']}").json()
    assert episode["job_id"] == submitted["job_id"]
    assert episode["job"]["status"] in {"new", "running", "completed"}

    job = jobs.wait(submitted["job_id"], timeout=300)
    assert job.status == "completed", job.error_message
    result = job.result
    assert result["episode_id"] == submitted["episode_id"]
    assert result["lines"] == 8  # an opening, the six sentences, a closing
    assert result["lines_synthesised"] == 8 and result["resumed_from_line"] == 0
    spoken = " ".join(line["dialogue"] for line in result["transcript"])
    assert words(KNOWN_TEXT) <= words(spoken)
    assert {line["speaker"] for line in result["transcript"]} == {"Ada", "Grace"}
    assert Path(result["audio_file_path"]).stat().st_size > 100_000

    audio = app.get(f"/api/podcasts/episodes/{submitted['episode_id']}/audio?download=true")
    assert audio.status_code == 200
    assert audio.headers["content-type"] == "audio/wav"
    assert "attachment" in audio.headers["content-disposition"]

    uploaded = app.post(
        "/api/transcriptions", files={"file": ("episode.wav", audio.content, "audio/wav")}
    )
    assert uploaded.status_code == 202, uploaded.text
    heard = jobs.wait(uploaded.json()["job_id"], timeout=600)
    assert heard.status == "completed", heard.error_message
    text = heard.result["text"]
    overlap = len(words(KNOWN_TEXT) & words(text)) / len(words(KNOWN_TEXT))
    print(f"word overlap after the round trip: {overlap:.2f} of {len(words(KNOWN_TEXT))} words")
    # Measured 0.47 to 0.49 here with the default speaker profile (README):
    # pocketsphinx's small English model on a synthetic voice.
    assert overlap >= 0.4, f"only {overlap:.2f} of the words came back: {text!r}"
    assert (
        app.get(f"/api/transcriptions/{uploaded.json()['transcription_id']}").json()["text"] == text
    )


def test_a_processed_source_is_an_episode_s_content(app: httpx.Client, jobs: errand.Client) -> None:
    added = app.post(
        "/api/sources",
        files={"file": ("queues.md", b"# Queues\n\n" + KNOWN_TEXT.encode(), "text/markdown")},
        data={"title": "On queues"},
    )
    assert added.status_code == 202, added.text
    processed = jobs.wait(added.json()["job_id"], timeout=120)
    assert processed.status == "completed", processed.error_message
    source = app.get(f"/api/sources/{added.json()['source_id']}").json()
    assert source["title"] == "On queues"
    assert source["text"].startswith("Queues\n\nA job queue")
    assert " ".join(source["chunks"]) == source["text"].replace("\n\n", " ")

    submitted = generate(app, source_id=source["id"], episode_profile="short_summary")
    job = jobs.wait(submitted["job_id"], timeout=300)
    assert job.status == "completed", job.error_message
    assert job.result["transcript"][1]["dialogue"] == "Queues"
