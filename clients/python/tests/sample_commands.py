"""Commands the tests' workers run (app ``sample``)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from pydantic import BaseModel

import errand
from errand import CommandInput, CommandOutput, ExecutionContext


class AddInput(CommandInput):
    a: int
    b: int


class AddOutput(CommandOutput):
    total: int


@errand.command("add", app="sample")
async def add(data: AddInput) -> AddOutput:
    return AddOutput(total=data.a + data.b)


class StepsInput(BaseModel):
    steps: int = 3


@errand.command("steps", app="sample")
async def steps(data: StepsInput, ctx: ExecutionContext) -> dict:
    # The last progress comes right before the end, within the throttle's
    # interval: only the flush before the outcome can send it.
    for step in range(data.steps):
        await asyncio.sleep(0.3)
        ctx.log(f"did step {step + 1}")
        ctx.progress(step / data.steps, f"before step {step + 1}")
        ctx.progress((step + 1) / data.steps, f"step {step + 1}")
    return {"steps": data.steps}


class MarkerInput(BaseModel):
    marker: str
    secs: float = 60.0


@errand.command("sleepy", app="sample")
async def sleepy(data: MarkerInput) -> dict:
    """Sleeps; notes in its marker file that it started, and how it ended."""
    Path(data.marker).write_text(f"started {os.getpid()}\n")
    try:
        await asyncio.sleep(data.secs)
    except asyncio.CancelledError:
        with open(data.marker, "a") as marker:
            marker.write("cancelled\n")
        raise
    return {"slept": data.secs}


@errand.command("once", app="sample", retry={"max_attempts": 3})
def once(data: MarkerInput, ctx: ExecutionContext) -> dict:
    """A sync handler that leaves a line per start and per finish."""
    with open(data.marker, "a") as marker:
        marker.write(f"start {os.getpid()} attempt {ctx.attempt}\n")
    time.sleep(data.secs)
    with open(data.marker, "a") as marker:
        marker.write(f"done {os.getpid()}\n")
    return {"pid": os.getpid()}


@errand.command("blocking", app="sample")
def blocking(data: MarkerInput, ctx: ExecutionContext) -> dict:
    """A sync handler that stops when it sees its job canceled."""
    deadline = time.monotonic() + data.secs
    while time.monotonic() < deadline:
        if ctx.cancelled:
            raise RuntimeError("stopped: canceled")
        time.sleep(0.05)
    return {"finished": True}


@errand.command(
    "fails",
    app="sample",
    retry={"max_attempts": 2, "wait_strategy": "fixed", "wait_time": 0, "stop_on": [KeyError]},
)
async def fails(data: dict) -> dict:
    if data.get("permanent"):
        raise KeyError("no such notebook")
    raise RuntimeError("the provider timed out")


@errand.command("noop", app="sample")
async def noop(data: dict) -> dict:
    return {}


@errand.command("slow", app="sample", timeout_secs=0.5)
async def slow(data: dict) -> dict:
    await asyncio.sleep(30)
    return {}


class LinesInput(BaseModel):
    marker: str
    lines: int = 6
    pause: float = 0.3


@errand.command("resumable", app="sample", retry={"max_attempts": 3})
async def resumable(data: LinesInput, ctx: ExecutionContext) -> dict:
    """Speaks its lines one by one, saving a checkpoint after each."""
    start = ctx.checkpoint or 0
    for line in range(start, data.lines):
        await asyncio.sleep(data.pause)
        with open(data.marker, "a") as marker:
            marker.write(f"{ctx.attempt} {line}\n")
        await ctx.save_checkpoint(line + 1)
    return {"started_at": start, "attempt": ctx.attempt}


@errand.command("resumable_sync", app="sample", retry={"max_attempts": 3})
def resumable_sync(data: LinesInput, ctx: ExecutionContext) -> dict:
    start = ctx.checkpoint or 0
    for line in range(start, data.lines):
        if ctx.attempt == 1 and line == 2:
            raise RuntimeError("the TTS provider timed out")
        ctx.save_checkpoint_sync(line + 1)
    return {"started_at": start, "attempt": ctx.attempt}
