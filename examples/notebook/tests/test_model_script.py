"""With an OpenAI-compatible endpoint configured, the script comes from
the model: here a chat-completions server started by the test, which
records what it was asked and answers a fixed dialogue (or nonsense)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import errand
import httpx
import pytest

from conftest import Stack, start_stack, wait_until

DIALOGUE = [
    {"speaker": "Ada", "text": "Today we talk about queues."},
    {"speaker": "Grace", "text": "A queue keeps every job safe."},
    {"speaker": "Ada", "text": "Thanks for listening."},
]


class ChatServer(ThreadingHTTPServer):
    requests: list[dict]
    answer: str


class ChatHandler(BaseHTTPRequestHandler):
    server: ChatServer

    def do_POST(self) -> None:  # noqa: N802 (the name http.server calls)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(
            {"path": self.path, "auth": self.headers.get("Authorization"), **body}
        )
        reply = json.dumps(
            {"choices": [{"message": {"role": "assistant", "content": self.server.answer}}]}
        )
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def chat() -> Iterator[ChatServer]:
    server = ChatServer(("127.0.0.1", 0), ChatHandler)
    server.requests = []
    server.answer = ""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, chat: ChatServer) -> Iterator[Stack]:
    started = start_stack(tmp_path_factory.mktemp("notebook-model"), worker=False)
    started.start_worker(
        NOTEBOOK_LLM_URL=f"http://127.0.0.1:{chat.server_address[1]}/v1",
        NOTEBOOK_LLM_MODEL="test-model",
        NOTEBOOK_LLM_API_KEY="sk-test",
    )
    yield started
    started.stop()


def generate(app: httpx.Client) -> dict:
    answer = app.post(
        "/api/podcasts/generate",
        json={
            "episode_profile": "short_summary",
            "episode_name": "Model made",
            "content": "Queues keep jobs safe.",
            "briefing_suffix": "Keep it short.",
        },
    )
    assert answer.status_code == 202, answer.text
    return answer.json()


def test_the_model_writes_the_script(
    app: httpx.Client, jobs: errand.Client, chat: ChatServer
) -> None:
    chat.answer = json.dumps({"outline": [{"title": "Queues", "lines": 3}], "dialogue": DIALOGUE})
    submitted = generate(app)
    job = jobs.wait(submitted["job_id"], timeout=300)
    assert job.status == "completed", job.error_message
    assert job.result["script_by"] == "test-model"
    assert [(line["speaker"], line["dialogue"]) for line in job.result["transcript"]] == [
        (line["speaker"], line["text"]) for line in DIALOGUE
    ]
    assert Path(job.result["audio_file_path"]).exists()
    asked = chat.requests[-1]
    assert asked["path"] == "/v1/chat/completions" and asked["model"] == "test-model"
    assert asked["auth"] == "Bearer sk-test"
    assert asked["messages"][1]["content"] == "Queues keep jobs safe."
    assert "Keep it short." in asked["messages"][0]["content"]
    assert "Ada" in asked["messages"][0]["content"] and "Grace" in asked["messages"][0]["content"]


@pytest.mark.parametrize(
    "answer, words",
    [
        ("Sure! Here is your podcast.", "not a script"),
        (
            json.dumps(
                {
                    "outline": [{"title": "x", "lines": 1}],
                    "dialogue": [{"speaker": "Bob", "text": "Hi."}],
                }
            ),
            "Bob",
        ),
    ],
)
def test_a_model_answer_that_is_not_a_script_fails_the_attempt_saying_why(
    app: httpx.Client, jobs: errand.Client, chat: ChatServer, answer: str, words: str
) -> None:
    chat.answer = answer
    submitted = generate(app)
    job_id = submitted["job_id"]

    def failed_once() -> bool:
        return any(e.kind == "failure" for e in jobs.events(job_id))

    wait_until(failed_once, "the first attempt to fail")
    failure = next(e for e in jobs.events(job_id) if e.kind == "failure")
    assert failure.data["error"]["kind"] == "ModelUnusable"
    assert failure.data["error"]["retryable"] is True
    assert words in failure.data["error"]["message"]
    jobs.cancel(job_id)
