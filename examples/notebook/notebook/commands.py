"""The notebook's background work as errand commands (app ``notebook``),
run by ``python -m errand worker --import-modules notebook.commands``:

- ``process_source``: a source's text, cut into chunks and stored;
- ``generate_podcast``: a script, each line spoken in its speaker's voice
  with a checkpoint after each, then one audio file;
- ``transcribe``: an uploaded recording back to text.

The handlers are sync functions (they run in the worker's threads) since
their work is subprocesses and CPU-bound decoding."""

from __future__ import annotations

import time
from functools import cache
from pathlib import Path
from typing import Any

import errand
from errand import CommandInput, CommandOutput, ExecutionContext
from pydantic import BaseModel, Field

from . import settings
from .db import Database
from .extract import UnreadableSource, chunk, extract_text
from .model_script import ModelEndpoint, write_script_with_model
from .script import write_script
from .speech import (
    SpeechUnavailable,
    UnreadableAudio,
    join_wavs,
    pcm_for_recogniser,
    recognise,
    speak,
)


class MissingRecord(Exception):
    """The record a job was submitted for is gone (deleted meanwhile)."""


class Stopped(Exception):
    """The job's cancel was requested: the handler stops between two steps."""


@cache
def _db() -> Database:
    database = Database(settings.load().database)
    database.init()
    return database


def _data_dir() -> Path:
    return settings.load().data_dir


# Sources


class ProcessSourceInput(CommandInput):
    source_id: str


class ProcessSourceOutput(CommandOutput):
    source_id: str
    characters: int
    chunks: int


@errand.command(
    "process_source",
    app="notebook",
    retry={"max_attempts": 3, "wait_time": 1, "stop_on": [UnreadableSource, MissingRecord]},
)
def process_source(data: ProcessSourceInput, ctx: ExecutionContext) -> ProcessSourceOutput:
    """Extracts an uploaded source's text and stores it in chunks."""
    source = _db().source(data.source_id)
    if source is None:
        raise MissingRecord(f"source {data.source_id} no longer exists")
    ctx.progress(0.1, f"reading {source['filename']}", stage="extract")
    text = extract_text(Path(source["path"]))
    ctx.progress(0.6, f"{len(text)} characters; cutting into chunks", stage="chunk")
    chunks = chunk(text)
    ctx.progress(0.8, f"storing {len(chunks)} chunks", stage="store")
    _db().store_chunks(data.source_id, text, chunks)
    ctx.progress(1.0, f"{len(chunks)} chunks stored", stage="done")
    return ProcessSourceOutput(source_id=data.source_id, characters=len(text), chunks=len(chunks))


# Podcasts


class Speaker(BaseModel):
    name: str = Field(min_length=1, max_length=40)
    voice: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9+_-]+$")
    rate: int = Field(default=110, ge=80, le=450)
    pitch: int = Field(default=50, ge=0, le=99)


class GeneratePodcastInput(CommandInput):
    episode_id: str
    episode_profile: str
    speaker_profile: str
    episode_name: str = Field(min_length=1, max_length=200)
    content: str = Field(min_length=1)
    briefing: str = ""
    speakers: list[Speaker] = Field(min_length=2, max_length=2)
    max_lines: int = Field(ge=3, le=500)


class GeneratePodcastOutput(CommandOutput):
    episode_id: str
    audio_file_path: str
    audio_seconds: float
    transcript: list[dict[str, str]]
    outline: list[dict[str, Any]]
    # "extractive", or the language model that wrote the script.
    script_by: str
    processing_time: float
    lines: int
    # Lines spoken by this attempt: fewer than ``lines`` when it continued
    # from an earlier attempt's checkpoint.
    lines_synthesised: int
    resumed_from_line: int


def _line_file(folder: Path, index: int) -> Path:
    return folder / f"line-{index:04d}.wav"


@errand.command(
    "generate_podcast",
    app="notebook",
    retry={"max_attempts": 3, "wait_time": 2, "stop_on": [SpeechUnavailable, MissingRecord]},
)
def generate_podcast(data: GeneratePodcastInput, ctx: ExecutionContext) -> GeneratePodcastOutput:
    """Writes an episode's dialogue and speaks it, line by line, resuming
    from the last line a previous attempt finished."""
    started = time.monotonic()
    folder = _data_dir() / "episodes" / data.episode_id
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = ctx.checkpoint or {}
    script = checkpoint.get("script")
    if script is None:
        ctx.progress(0.0, "writing the outline and the dialogue", stage="script")
        endpoint = ModelEndpoint.from_env()
        arguments = (
            data.content,
            data.episode_name,
            data.briefing,
            [s.model_dump() for s in data.speakers],
            data.max_lines,
        )
        if endpoint is None:
            script = write_script(*arguments)
        else:
            ctx.log(f"writing the script with {endpoint.model} at {endpoint.url}")
            script = write_script_with_model(endpoint, *arguments)
        ctx.save_checkpoint_sync({"script": script, "lines_done": 0})
    lines = script["dialogue"]
    voices = {s.name: s for s in data.speakers}
    # A line counts as done only if its file is still there: a checkpoint
    # from a host whose data folder is gone speaks those lines again.
    done = checkpoint.get("lines_done", 0)
    resumed_from = next((i for i in range(done) if not _line_file(folder, i).exists()), done)
    if resumed_from:
        ctx.log(f"continuing from line {resumed_from + 1} of {len(lines)} (checkpoint)")
    spoken = 0
    for index in range(resumed_from, len(lines)):
        if ctx.cancelled:
            raise Stopped("canceled between two lines")
        line = lines[index]
        voice = voices.get(line["speaker"]) or data.speakers[index % 2]
        speak(line["text"], voice.voice, voice.rate, voice.pitch, _line_file(folder, index))
        spoken += 1
        ctx.save_checkpoint_sync({"script": script, "lines_done": index + 1})
        ctx.progress(
            (index + 1) / (len(lines) + 1),
            f"line {index + 1} of {len(lines)} ({line['speaker']})",
            stage="speaking",
            data={"line": index + 1, "lines": len(lines)},
        )
    ctx.progress(len(lines) / (len(lines) + 1), "joining the lines", stage="mixing")
    audio = folder / "episode.wav"
    seconds = join_wavs([_line_file(folder, i) for i in range(len(lines))], audio)
    transcript = [{"speaker": line["speaker"], "dialogue": line["text"]} for line in lines]
    _db().finish_episode(data.episode_id, str(audio), transcript)
    return GeneratePodcastOutput(
        episode_id=data.episode_id,
        audio_file_path=str(audio),
        audio_seconds=round(seconds, 2),
        transcript=transcript,
        outline=script["outline"],
        script_by=script.get("written_by", "extractive"),
        processing_time=round(time.monotonic() - started, 3),
        lines=len(lines),
        lines_synthesised=spoken,
        resumed_from_line=resumed_from,
    )


# Transcription


class TranscribeInput(CommandInput):
    transcription_id: str


class TranscribeOutput(CommandOutput):
    transcription_id: str
    text: str
    segments: list[dict[str, Any]]
    audio_seconds: float


@errand.command(
    "transcribe",
    app="notebook",
    retry={"max_attempts": 2, "wait_time": 1, "stop_on": [UnreadableAudio, MissingRecord]},
)
def transcribe(data: TranscribeInput, ctx: ExecutionContext) -> TranscribeOutput:
    """Recognises the speech in an uploaded recording, offline."""
    record = _db().transcription(data.transcription_id)
    if record is None:
        raise MissingRecord(f"transcription {data.transcription_id} no longer exists")
    ctx.progress(0.0, f"decoding {record['filename']}", stage="decode")
    pcm, seconds = pcm_for_recogniser(Path(record["path"]))
    ctx.progress(0.01, f"{seconds:.1f} s of audio", stage="recognise")
    segments = []
    for heard in recognise(pcm, cancelled=lambda: ctx.cancelled):
        segments.append(
            {"start": round(heard.start, 2), "end": round(heard.end, 2), "text": heard.text}
        )
        ctx.progress(
            min(heard.end / seconds, 0.99),
            f"{heard.end:.0f} s of {seconds:.0f} s heard",
            stage="recognise",
            data={"text": heard.text},
        )
    if ctx.cancelled:
        heard_until = segments[-1]["end"] if segments else 0.0
        ctx.log(f"recognition stopped after {heard_until:.0f} s of {seconds:.0f} s: canceled")
        raise Stopped("canceled during recognition")
    text = " ".join(s["text"] for s in segments)
    _db().finish_transcription(data.transcription_id, text)
    return TranscribeOutput(
        transcription_id=data.transcription_id,
        text=text,
        segments=segments,
        audio_seconds=round(seconds, 2),
    )
