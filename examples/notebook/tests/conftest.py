"""The whole notebook as real processes: ``errand serve`` (the built
binary) on a SQLite file, Python workers for the notebook's commands, and
the web app under uvicorn, each test module with its own data folder."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import errand
import httpx
import pytest

HERE = Path(__file__).parent
EXAMPLE = HERE.parent
REPO = EXAMPLE.parents[1]
# Small enough that a test can go past it without a large file.
MAX_UPLOAD_MB = 8


def errand_binary() -> str:
    binary = os.environ.get("ERRAND_BIN") or str(REPO / "target" / "debug" / "errand")
    if not os.access(binary, os.X_OK):
        pytest.fail(
            f"no errand binary at {binary}: run `cargo build --bin errand` or set ERRAND_BIN"
        )
    return binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition: Callable[[], object], what: str, timeout: float = 60.0) -> object:
    """Polls ``condition`` until it holds; the timeout only keeps a broken
    run from hanging (a slow host waits longer, it does not fail)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


@dataclass
class Stack:
    data: Path
    errand_url: str
    app_url: str
    processes: list[subprocess.Popen] = field(default_factory=list)
    workers: list[subprocess.Popen] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "NOTEBOOK_DATA": str(self.data),
            "ERRAND_URL": self.errand_url,
            "NOTEBOOK_MAX_UPLOAD_MB": str(MAX_UPLOAD_MB),
            **extra,
        }

    def spawn(self, name: str, args: list[str], **env: str) -> subprocess.Popen:
        log = self.data / f"{name}.log"
        process = subprocess.Popen(
            args,
            cwd=EXAMPLE,
            env=self.env(**env),
            stdout=log.open("a"),
            stderr=subprocess.STDOUT,
            # Its own process group: a kill reaches the programs it runs.
            start_new_session=True,
        )
        process.log = log  # type: ignore[attr-defined]
        self.processes.append(process)
        return process

    def start_worker(self, *args: str, **env: str) -> subprocess.Popen:
        worker = self.spawn(
            f"worker-{len(self.workers)}",
            [
                sys.executable,
                "-m",
                "errand",
                "worker",
                "--import-modules",
                "notebook.commands",
                *args,
            ],
            **env,
        )
        self.workers.append(worker)

        def registered() -> bool:
            if worker.poll() is not None:
                raise AssertionError(f"the worker exited:\n{worker.log.read_text()}")
            listed = httpx.get(f"{self.errand_url}/api/workers").json()["workers"]
            return any(w["pid"] == worker.pid for w in listed)

        wait_until(registered, "the worker to register")
        return worker

    def kill(self, process: subprocess.Popen) -> None:
        """SIGKILL to the process and everything it started."""
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    self.kill(process)


def _ready(url: str, process: subprocess.Popen) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"{process.args[0]} exited:\n{process.log.read_text()}")
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def start_stack(data: Path, worker: bool = True) -> Stack:
    data.mkdir(parents=True, exist_ok=True)
    errand_port, app_port = free_port(), free_port()
    stack = Stack(data, f"http://127.0.0.1:{errand_port}", f"http://127.0.0.1:{app_port}")
    serve = stack.spawn(
        "serve",
        [
            errand_binary(),
            "serve",
            "--no-worker",
            "--bind",
            f"127.0.0.1:{errand_port}",
            "--store",
            f"sqlite://{data / 'errand.db'}",
        ],
        ERRAND_LOG="info",
    )
    wait_until(lambda: _ready(f"{stack.errand_url}/api/ready", serve), "errand serve")
    app = stack.spawn(
        "app",
        [sys.executable, "-m", "uvicorn", "notebook.app:app", "--port", str(app_port)],
    )
    wait_until(lambda: _ready(f"{stack.app_url}/api/episode-profiles", app), "the notebook app")
    if worker:
        # A long grace: the cancel test checks that the handler itself saw
        # the cancel between two stretches of speech, and on a slow or busy
        # host one stretch takes longer than the default 10 s, after which
        # the worker abandons the handler (which then says nothing).
        stack.start_worker("--cancel-grace", "60")
    return stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    started = start_stack(tmp_path_factory.mktemp("notebook"))
    yield started
    started.stop()


@pytest.fixture(scope="module")
def app(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.app_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def jobs(stack: Stack) -> Iterator[errand.Client]:
    with errand.Client(stack.errand_url) as client:
        yield client
