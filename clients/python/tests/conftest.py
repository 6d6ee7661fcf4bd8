"""A real ``errand serve`` (the built binary, no worker of its own) on
SQLite and, when ``ERRAND_TEST_PG_URL`` is set, on a PostgreSQL database
made for the run; Python workers as real processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

HERE = Path(__file__).parent
REPO = HERE.parents[2]


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


class Server:
    def __init__(self, url: str, process: subprocess.Popen, log: Path):
        self.url = url
        self.process = process
        self.log = log


# Test servers sign webhooks with it, and may call any port on the loopback.
WEBHOOK_SECRET = "python-tests-webhook-secret"


def start_server(store: str, workdir: Path, port: int | None = None) -> Server:
    port = port or free_port()
    log = workdir / "serve.log"
    process = subprocess.Popen(
        [errand_binary(), "serve", "--no-worker", "--bind", f"127.0.0.1:{port}", "--store", store],
        cwd=workdir,
        stdout=log.open("a"),
        stderr=subprocess.STDOUT,
        env={
            **os.environ,
            "ERRAND_LOG": "info",
            "ERRAND_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "ERRAND_WEBHOOK_ALLOW": "127.0.0.1",
        },
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/api/ready", timeout=1).status_code == 200:
                return Server(url, process, log)
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"errand serve did not start:\n{log.read_text()}")


def _postgres_database(base: str) -> tuple[str, Callable[[], None]]:
    """A new database on the server of ``base``, and how to drop it."""
    name = f"errand_py_{uuid.uuid4().hex[:12]}"

    def psql(sql: str) -> None:
        result = subprocess.run(
            ["psql", base, "-v", "ON_ERROR_STOP=1", "-qc", sql], capture_output=True, text=True
        )
        if result.returncode != 0:
            pytest.fail(f"ERRAND_TEST_PG_URL is set but PostgreSQL refused: {result.stderr}")

    psql(f"CREATE DATABASE {name}")
    parts = urlsplit(base)
    url = urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))
    return url, lambda: psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp(f"serve-{request.param}")
    drop = None
    if request.param == "sqlite":
        store = f"sqlite://{workdir / 'errand.db'}"
    else:
        base = os.environ.get("ERRAND_TEST_PG_URL")
        if not base:
            pytest.skip("PostgreSQL suites skipped: set ERRAND_TEST_PG_URL to run them")
        store, drop = _postgres_database(base)
    served = start_server(store, workdir)
    yield served
    stop_server(served)
    if drop:
        drop()


def stop_server(served: Server) -> None:
    served.process.send_signal(signal.SIGTERM)
    try:
        served.process.wait(10)
    except subprocess.TimeoutExpired:
        served.process.kill()
        served.process.wait()


class Workers:
    """Python worker processes (``python -m errand worker``) for a server."""

    def __init__(self, server: Server, tmp: Path):
        self.server = server
        self.tmp = tmp
        self.processes: list[subprocess.Popen] = []

    def start(self, *args: str, modules: str = "sample_commands") -> subprocess.Popen:
        log = self.tmp / f"worker-{len(self.processes)}.log"
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "errand",
                "worker",
                "--import-modules",
                modules,
                "--url",
                self.server.url,
                *args,
            ],
            cwd=HERE,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        process.log = log  # type: ignore[attr-defined]
        self.processes.append(process)
        self.wait_registered(process)
        return process

    def wait_registered(self, process: subprocess.Popen) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            workers = httpx.get(f"{self.server.url}/api/workers").json()["workers"]
            if any(w["pid"] == process.pid for w in workers):
                return
            if process.poll() is not None:
                break
            time.sleep(0.05)
        pytest.fail(f"the worker did not register:\n{process.log.read_text()}")

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def workers(server: Server, tmp_path: Path) -> Iterator[Workers]:
    started = Workers(server, tmp_path)
    yield started
    started.stop_all()


@pytest.fixture
def client(server: Server, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    import errand

    # The surreal-commands functions read the server from the environment.
    monkeypatch.setenv("ERRAND_URL", server.url)
    errand.compat._sync_client = None
    errand.compat._async_clients.clear()
    with errand.Client(server.url) as c:
        yield c
    if errand.compat._sync_client is not None:
        errand.compat._sync_client.close()
        errand.compat._sync_client = None


def wait_until(condition: Callable[[], object], timeout: float = 20.0, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or condition}")
