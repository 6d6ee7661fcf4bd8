"""How fast Python gets work done through errand, beside the in-process
Rust worker measured in the same run (the baseline of the ratios).

    python clients/python/bench.py target/release/errand [--runs 3] [--jobs 20000]

Each run starts its own `errand serve --no-worker` on a fresh SQLite file
and measures, in order:

- submit: one `Client.submit` after another over one keep-alive connection;
- drain: N no-op jobs queued, then one Python worker (this process, an
  `errand.Worker`) runs them all; from its start to the last outcome the
  server acknowledged;
- pickup: a Python worker process idle, one job at a time submitted from
  this process, from the moment the submit is sent to the moment its
  handler starts (both read CLOCK_MONOTONIC, one clock for all processes);
- baseline: `errand bench drain` (the Rust worker in process, 256 slots).

Medians over the runs are printed, and with --json written as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

import errand


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(binary: str, folder: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            "serve",
            "--no-worker",
            "--bind",
            f"127.0.0.1:{port}",
            "--store",
            f"sqlite://{folder / 'bench.db'}",
        ],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "ERRAND_LOG": "warn"},
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/api/ready", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("errand serve did not start")


class CountingWorker(errand.Worker):
    """Stops once the server has acknowledged `target` outcomes."""

    def __init__(self, *args: Any, target: int, stop: asyncio.Event, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.target, self.stop, self.done = target, stop, 0

    async def _post(self, call: str, body: dict[str, Any], timeout: float | None = None) -> Any:
        answer = await super()._post(call, body, timeout)
        if call == "finish":
            self.done += sum(1 for result in answer["results"] if result["ok"])
            if self.done >= self.target:
                self.stop.set()
        return answer


def commands(started: dict[str, float], arrived: asyncio.Event) -> errand.CommandRegistry:
    registry = errand.CommandRegistry()

    async def noop(data: dict) -> None:
        return None

    async def pickup(data: dict) -> float:
        started[data["key"]] = now = time.perf_counter()
        arrived.set()
        return now

    registry.register("bench", "noop", noop)
    registry.register("bench", "pickup", pickup)
    return registry


def publish(url: str) -> None:
    """Publishes the bench commands, as a worker would, so submits pass."""
    specs = [item.spec() for item in commands({}, asyncio.Event()).get_all_commands()]
    body = {"worker_id": "bench-publisher", "slots": 1, "commands": specs}
    httpx.post(f"{url}/api/worker/v1/register", json=body).raise_for_status()


def measure_submit(url: str, count: int) -> float:
    with errand.Client(url) as client:
        client.submit("bench.noop", {})  # the connection is open
        began = time.perf_counter()
        for _ in range(count):
            client.submit("bench.noop", {})
        return count / (time.perf_counter() - began)


async def measure_drain(url: str, jobs: int, slots: int) -> float:
    async with errand.AsyncClient(url) as client:
        body = errand.submit_body("bench.noop", {})
        for start in range(0, jobs, 1000):
            await client.submit_many([body] * min(1000, jobs - start))
    stop = asyncio.Event()
    worker = CountingWorker(
        url, commands=commands({}, asyncio.Event()), max_tasks=slots, target=jobs, stop=stop
    )
    began = time.perf_counter()
    await worker.run(stop)
    return jobs / (time.perf_counter() - began)


def run_pickup_worker(url: str) -> None:
    """The worker process of the pickup measure (`bench.py --worker URL`)."""
    worker = errand.Worker(url, commands=commands({}, asyncio.Event()), max_tasks=4)
    stop = asyncio.Event()

    async def run() -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await worker.run(stop)

    asyncio.run(run())


def measure_pickup(url: str, samples: int) -> list[float]:
    worker = subprocess.Popen([sys.executable, __file__, "--worker", url])
    latencies = []
    try:
        with errand.Client(url) as client:
            client.wait(client.submit("bench.pickup", {"key": "warm-up"}), timeout=30)
            for n in range(samples):
                sent = time.perf_counter()
                job_id = client.submit("bench.pickup", {"key": str(n)})
                started = client.wait(job_id, timeout=30).result
                latencies.append((started - sent) * 1000)
                time.sleep(0.02)  # idle again: the worker waits in its claim
    finally:
        worker.terminate()
        worker.wait()
    return latencies


def rust_drain(binary: str, jobs: int) -> float:
    out = subprocess.run(
        [binary, "bench", "drain", "--runs", "1", "--jobs", str(jobs), "--json"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "ERRAND_LOG": "warn"},
    ).stdout
    # One JSON object per line, one line per workload.
    for line in out.splitlines():
        row = json.loads(line)
        if row.get("workload") == "drain":
            return float(row["jobs_per_sec"])
    raise SystemExit(f"no drain figure in: {out[:500]}")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p * len(ordered)) - 1))]


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        return run_pickup_worker(sys.argv[2])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("errand", help="the errand binary (a release build)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=20000, help="jobs drained per run")
    parser.add_argument("--submits", type=int, default=3000, help="submits per run")
    parser.add_argument("--samples", type=int, default=300, help="pickups per run")
    parser.add_argument("--slots", type=int, default=200, help="the Python worker's max_tasks")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.errand = os.path.abspath(args.errand)
    runs: list[dict[str, float]] = []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as folder:
            server, url = start_server(args.errand, Path(folder))
            try:
                publish(url)
                submit = measure_submit(url, args.submits)
                drain = asyncio.run(measure_drain(url, args.jobs, args.slots))
                pickups = measure_pickup(url, args.samples)
            finally:
                server.terminate()
                server.wait()
        baseline = rust_drain(args.errand, args.jobs)
        runs.append(
            {
                "submit_per_sec": submit,
                "drain_per_sec": drain,
                "rust_drain_per_sec": baseline,
                "drain_ratio": drain / baseline,
                "pickup_p50_ms": percentile(pickups, 0.50),
                "pickup_p99_ms": percentile(pickups, 0.99),
            }
        )
        print(
            f"run {run + 1}: " + ", ".join(f"{k} {v:,.3f}" for k, v in runs[-1].items()),
            file=sys.stderr,
        )
    medians = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    if args.json:
        print(json.dumps({"runs": runs, "median": medians}, indent=2))
    else:
        for key, value in medians.items():
            print(f"{key:>20}  {value:,.3f}")


if __name__ == "__main__":
    main()
