"""Bad input everywhere gets a clear refusal (a 4xx with a JSON error
naming what was wrong, or a message on the page), and a file that cannot
be read fails its job for good with a message, never with a retry loop or
a stack trace."""

from __future__ import annotations

import re
import socket

import errand
import httpx
import pytest

from conftest import MAX_UPLOAD_MB


def refused(answer: httpx.Response, status: int, code: str, *words: str) -> None:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code, error
    for word in words:
        assert word in error["message"], error


@pytest.mark.parametrize(
    "fields, status, code, words",
    [
        ({"episode_profile": "nope", "content": "Hi."}, 404, "episode_profile_not_found", ["nope"]),
        (
            {"episode_profile": "short_summary", "speaker_profile": "ghosts", "content": "Hi."},
            404,
            "speaker_profile_not_found",
            ["ghosts"],
        ),
        ({"episode_profile": "short_summary"}, 422, "invalid_request", ["content", "source_id"]),
        ({"episode_profile": "short_summary", "content": "   "}, 422, "invalid_request", ["blank"]),
        (
            {"episode_profile": "short_summary", "content": "Hi.", "source_id": "x"},
            422,
            "invalid_request",
            ["not both"],
        ),
        (
            {"episode_profile": "short_summary", "source_id": "missing"},
            404,
            "source_not_found",
            ["missing"],
        ),
    ],
)
def test_generate_refuses_what_it_cannot_make(
    app: httpx.Client, fields: dict, status: int, code: str, words: list[str]
) -> None:
    before = len(app.get("/api/podcasts/episodes").json()["episodes"])
    answer = app.post("/api/podcasts/generate", json={"episode_name": "Bad", **fields})
    refused(answer, status, code, *words)
    # A refusal leaves no episode behind.
    assert len(app.get("/api/podcasts/episodes").json()["episodes"]) == before


def test_a_blank_episode_name_is_refused(app: httpx.Client) -> None:
    answer = app.post(
        "/api/podcasts/generate",
        json={"episode_profile": "short_summary", "episode_name": " ", "content": "Hi."},
    )
    refused(answer, 422, "invalid_request", "episode_name", "blank")


@pytest.mark.parametrize(
    "name, body, status, code, words",
    [
        ("notes.docx", b"PK\x03\x04", 415, "unsupported_type", ["notes.docx", ".pdf"]),
        ("empty.txt", b"", 422, "empty_upload", ["empty.txt", "empty"]),
        (
            "huge.txt",
            b"a" * (MAX_UPLOAD_MB * 1024 * 1024 + 1),
            413,
            "upload_too_large",
            [f"{MAX_UPLOAD_MB} MB"],
        ),
    ],
)
def test_uploads_are_checked(
    app: httpx.Client, name: str, body: bytes, status: int, code: str, words: list[str]
) -> None:
    refused(app.post("/api/sources", files={"file": (name, body)}), status, code, *words)
    audio = name.replace(".txt", ".wav") if name.endswith(".txt") else "voice.ogg"
    answer = app.post("/api/transcriptions", files={"file": (audio, body)})
    assert answer.status_code == (status if name.endswith(".txt") else 415), answer.text


def test_a_source_needs_a_file(app: httpx.Client) -> None:
    refused(app.post("/api/sources", data={"title": "x"}), 422, "no_file")


@pytest.mark.parametrize(
    "name, body, words",
    [
        ("scan.pdf", b"%PDF-1.4 this is not really a PDF", ["scan.pdf", "PDF"]),
        ("latin1.txt", "caf\u00e9".encode("latin-1"), ["latin1.txt", "not UTF-8"]),
        ("blank.html", b"<html><script>var x</script></html>", ["blank.html", "no text"]),
    ],
)
def test_an_unreadable_source_fails_for_good_with_its_reason(
    app: httpx.Client, jobs: errand.Client, name: str, body: bytes, words: list[str]
) -> None:
    added = app.post("/api/sources", files={"file": (name, body)})
    assert added.status_code == 202, added.text
    job = jobs.wait(added.json()["job_id"], timeout=120)
    assert job.status == "failed"
    assert job.attempt == 1, "an unreadable file must not be retried"
    assert job.error.kind == "UnreadableSource" and not job.error.retryable
    for word in words:
        assert word in job.error_message
    listed = {s["id"]: s for s in app.get("/api/sources").json()["sources"]}
    shown = listed[added.json()["source_id"]]["job"]
    assert shown["status"] == "failed" and words[0] in shown["message"]
    # The page shows the same message.
    assert words[0] in app.get("/").text


def test_a_recording_that_is_not_audio_fails_for_good(
    app: httpx.Client, jobs: errand.Client
) -> None:
    added = app.post("/api/transcriptions", files={"file": ("voice.mp3", b"not audio at all")})
    assert added.status_code == 202, added.text
    job = jobs.wait(added.json()["job_id"], timeout=120)
    assert job.status == "failed" and job.attempt == 1
    assert job.error.kind == "UnreadableAudio"
    assert "voice.mp3" in job.error_message


def test_unknown_records_and_wrong_states(app: httpx.Client, jobs: errand.Client) -> None:
    refused(app.get("/api/podcasts/episodes/nope"), 404, "episode_not_found", "nope")
    refused(app.get("/api/podcasts/episodes/nope/audio"), 404, "episode_not_found")
    refused(app.post("/api/podcasts/episodes/nope/retry"), 404, "episode_not_found")
    refused(app.get("/api/transcriptions/nope"), 404, "transcription_not_found")
    refused(app.get("/api/sources/nope"), 404, "source_not_found")
    submitted = app.post(
        "/api/podcasts/generate",
        json={"episode_profile": "short_summary", "episode_name": "Ok", "content": "One. Two."},
    ).json()
    assert jobs.wait(submitted["job_id"], timeout=120).status == "completed"
    episode = submitted["episode_id"]
    refused(app.post(f"/api/podcasts/episodes/{episode}/retry"), 409, "not_retryable")
    refused(app.post(f"/api/podcasts/episodes/{episode}/cancel"), 409, "already_ended")


def test_profiles_are_checked(app: httpx.Client) -> None:
    speakers = [{"name": "A", "voice": "en-us+f2"}, {"name": "B", "voice": "zz-voice"}]
    refused(
        app.post("/api/speaker-profiles", json={"name": "pair", "speakers": speakers}),
        422,
        "unknown_voice",
        "zz-voice",
    )
    refused(
        app.post("/api/speaker-profiles", json={"name": "Bad Name!", "speakers": speakers[:1]}),
        422,
        "invalid_request",
        "name",
        "speakers",
    )
    refused(
        app.post("/api/episode-profiles", json={"name": "ep", "speaker_profile": "ghosts"}),
        404,
        "speaker_profile_not_found",
    )
    good = app.post(
        "/api/speaker-profiles",
        json={"name": "pair", "speakers": [speakers[0], {"name": "B", "voice": "en-us+f5"}]},
    )
    assert good.status_code == 201, good.text
    made = app.post(
        "/api/episode-profiles",
        json={"name": "tiny", "speaker_profile": "pair", "max_lines": 3},
    )
    assert made.status_code == 201, made.text
    assert made.json()["max_lines"] == 3


def test_a_form_refusal_is_a_message_on_the_page(app: httpx.Client) -> None:
    answer = app.post(
        "/ui/podcasts/generate",
        data={"episode_profile": "nope", "episode_name": "X", "content": "Hi."},
        headers={"HX-Request": "true"},
    )
    assert answer.status_code == 404
    assert answer.headers["HX-Retarget"] == "#flash"
    assert 'role="alert"' in answer.text and "no episode profile &#39;nope&#39;" in answer.text
    assert "Traceback" not in answer.text


def test_the_profile_forms_save_or_say_what_is_wrong(app: httpx.Client) -> None:
    htmx = {"HX-Request": "true"}
    speakers = {
        "speaker1_name": "Lin",
        "speaker1_voice": "en-us+f2",
        "speaker2_name": "Sam",
        "speaker2_voice": "en-us+f5",
        "speaker2_rate": "120",
    }
    saved = app.post("/ui/speaker-profiles", data={"name": "duo", **speakers}, headers=htmx)
    assert saved.status_code == 200, saved.text
    assert "Saved speaker profile duo" in saved.text and "Sam (en-us+f5, 120 wpm)" in saved.text
    bad = app.post("/ui/speaker-profiles", data={"name": "Duo!", **speakers}, headers=htmx)
    assert bad.status_code == 422 and bad.headers["HX-Retarget"] == "#flash"
    assert "name: String should match pattern" in bad.text
    episode = app.post(
        "/ui/episode-profiles",
        data={"name": "long", "speaker_profile": "duo", "max_lines": "1000"},
        headers=htmx,
    )
    assert episode.status_code == 422 and "max_lines" in episode.text
    episode = app.post(
        "/ui/episode-profiles",
        data={"name": "long", "speaker_profile": "duo", "max_lines": "100"},
        headers=htmx,
    )
    assert episode.status_code == 200 and "long</strong>" in episode.text


def test_audio_is_served_only_from_the_data_folder(
    stack, app: httpx.Client, jobs: errand.Client
) -> None:
    import sqlite3

    submitted = app.post(
        "/api/podcasts/generate",
        json={"episode_profile": "short_summary", "episode_name": "Moved", "content": "One. Two."},
    ).json()
    assert jobs.wait(submitted["job_id"], timeout=120).status == "completed"
    assert app.get(f"/api/podcasts/episodes/{submitted['episode_id']}/audio").status_code == 200
    # A real file next to the data folder, reached through "..".
    outside = stack.data.parent / f"{stack.data.name}-secret.wav"
    outside.write_bytes(b"RIFF not for you")
    with sqlite3.connect(stack.data / "notebook.db") as db:
        db.execute(
            "UPDATE episodes SET audio_path = ? WHERE id = ?",
            (str(stack.data / "episodes" / ".." / ".." / outside.name), submitted["episode_id"]),
        )
    refused(
        app.get(f"/api/podcasts/episodes/{submitted['episode_id']}/audio"), 404, "audio_missing"
    )


def test_an_upload_announced_too_large_is_refused_before_it_is_read(stack) -> None:
    # Only the headers are sent: the answer must come without the body.
    too_large = MAX_UPLOAD_MB * 1024 * 1024 + 2 * 1024 * 1024
    port = int(stack.app_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(
            b"POST /api/sources HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: multipart/form-data; boundary=x\r\n"
            b"Content-Length: %d\r\n\r\n" % too_large
        )
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += conn.recv(65536)
        head, _, body = answer.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        while len(body) < length:
            body += conn.recv(65536)
    assert head.startswith(b"HTTP/1.1 413"), head
    assert b"upload_too_large" in body and f"{MAX_UPLOAD_MB} MB".encode() in body
