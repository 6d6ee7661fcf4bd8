"""What the app does, shared by its JSON API and its pages: checks the
request, writes the notebook's record, submits the record's job to
errand. Every refusal is a ``NotebookError`` with an HTTP status, a
stable code and a message naming what was wrong."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, BinaryIO

import errand
from fastapi import UploadFile
from pydantic import BaseModel, Field, field_validator, model_validator

from . import jobs
from .commands import Speaker
from .db import Database, new_id
from .extract import SOURCE_TYPES, kind_of
from .settings import Settings
from .speech import AUDIO_TYPES

MAX_CONTENT_CHARS = 200_000
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,39}$"


class NotebookError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class GenerateRequest(BaseModel):
    """``POST /api/podcasts/generate``: Open Notebook's fields."""

    episode_profile: str = Field(min_length=1, max_length=40)
    speaker_profile: str | None = Field(default=None, max_length=40)
    episode_name: str = Field(min_length=1, max_length=200)
    content: str | None = Field(default=None, max_length=MAX_CONTENT_CHARS)
    source_id: str | None = Field(default=None, max_length=64)
    briefing_suffix: str | None = Field(default=None, max_length=2000)

    @field_validator("episode_name")
    @classmethod
    def _name_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the episode name is blank")
        return value.strip()

    @model_validator(mode="after")
    def _one_content(self) -> GenerateRequest:
        given = [self.content is not None and self.content != "", bool(self.source_id)]
        if all(given):
            raise ValueError("give either content or a source_id, not both")
        if not any(given):
            raise ValueError("give the content, or the source_id of a processed source")
        if self.content is not None and self.content != "" and not self.content.strip():
            raise ValueError("the content is blank")
        return self


class SpeakerProfileRequest(BaseModel):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = Field(default="", max_length=500)
    speakers: list[Speaker] = Field(min_length=2, max_length=2)


class EpisodeProfileRequest(BaseModel):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = Field(default="", max_length=500)
    speaker_profile: str = Field(min_length=1, max_length=40)
    max_lines: int = Field(default=20, ge=3, le=500)
    briefing: str = Field(default="", max_length=2000)


def safe_filename(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name).name)[-100:].lstrip(".")
    return cleaned or "upload"


def voice_exists(voice: str) -> bool:
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        return True  # checked again, and reported, when the job runs
    spoken = subprocess.run(
        [espeak, "-v", voice, "-q", "voice check"], capture_output=True, timeout=10
    )
    return spoken.returncode == 0


def _copy_capped(source: BinaryIO, path: Path, limit: int) -> int:
    """Copies at most ``limit`` bytes; answers the size, or ``limit + 1``
    (and keeps nothing) when there was more, and keeps nothing when empty."""
    path.parent.mkdir(parents=True, exist_ok=True)
    size = 0
    with path.open("wb") as out:
        while block := source.read(1 << 16):
            size += len(block)
            if size > limit:
                break
            out.write(block)
    if size == 0 or size > limit:
        shutil.rmtree(path.parent, ignore_errors=True)
    return min(size, limit + 1)


class Notebook:
    def __init__(self, settings: Settings, db: Database, client: errand.AsyncClient):
        self.settings = settings
        self.db = db
        self.client = client

    async def _save_upload(self, upload: UploadFile, folder: Path) -> tuple[Path, int]:
        """Copies the upload (already spooled by the server) into ``folder``
        in a thread, refusing it past the size limit or when empty."""
        limit = self.settings.max_upload_bytes
        path = folder / safe_filename(upload.filename or "upload")
        size = await asyncio.to_thread(_copy_capped, upload.file, path, limit)
        if size > limit:
            raise NotebookError(
                413,
                "upload_too_large",
                f"{upload.filename}: larger than the limit of {limit // (1024 * 1024)} MB",
            )
        if size == 0:
            raise NotebookError(422, "empty_upload", f"{upload.filename}: the file is empty")
        return path, size

    async def _submit(self, command: str, input: dict[str, Any], record: str) -> str:
        try:
            return await self.client.submit(
                f"{jobs.APP}.{command}",
                input,
                context={"record": record},
                idempotency_key=f"{command}:{record}",
            )
        except errand.ServerUnreachable as err:
            raise NotebookError(
                503, "errand_unreachable", f"errand is not reachable: {err}"
            ) from err

    # Sources

    async def add_source(self, upload: UploadFile | None, title: str | None) -> dict[str, str]:
        if upload is None or not upload.filename:
            raise NotebookError(422, "no_file", "choose a file to upload")
        if kind_of(upload.filename) is None:
            raise NotebookError(
                415,
                "unsupported_type",
                f"{upload.filename}: a source is a {', '.join(sorted(SOURCE_TYPES))} file",
            )
        source_id = new_id()
        path, size = await self._save_upload(upload, self.settings.data_dir / "sources" / source_id)
        self.db.add_source(
            source_id, (title or "").strip() or upload.filename, upload.filename, str(path), size
        )
        job_id = await self._submit("process_source", {"source_id": source_id}, source_id)
        self.db.set_source_job(source_id, job_id)
        return {"source_id": source_id, "job_id": job_id}

    async def sources(self) -> list[dict[str, Any]]:
        records = self.db.sources()
        found = await jobs.jobs_of(self.client, records, "process_source")
        return [{**r, "job": jobs.view(found.get(r["job_id"]))} for r in records]

    def source(self, source_id: str) -> dict[str, Any]:
        source = self.db.source(source_id)
        if source is None:
            raise NotebookError(404, "source_not_found", f"no source {source_id}")
        return source

    # Profiles

    def put_speaker_profile(self, request: SpeakerProfileRequest) -> dict[str, Any]:
        for speaker in request.speakers:
            if not voice_exists(speaker.voice):
                raise NotebookError(
                    422, "unknown_voice", f"espeak-ng has no voice {speaker.voice!r}"
                )
        self.db.put_speaker_profile(
            request.name, request.description, [s.model_dump() for s in request.speakers]
        )
        return self.db.speaker_profile(request.name) or {}

    def put_episode_profile(self, request: EpisodeProfileRequest) -> dict[str, Any]:
        if self.db.speaker_profile(request.speaker_profile) is None:
            raise NotebookError(
                404,
                "speaker_profile_not_found",
                f"no speaker profile {request.speaker_profile!r}",
            )
        self.db.put_episode_profile(request.model_dump())
        return self.db.episode_profile(request.name) or {}

    # Podcasts

    async def generate(self, request: GenerateRequest) -> dict[str, str]:
        profile = self.db.episode_profile(request.episode_profile)
        if profile is None:
            raise NotebookError(
                404, "episode_profile_not_found", f"no episode profile {request.episode_profile!r}"
            )
        speaker_name = request.speaker_profile or profile["speaker_profile"]
        speakers = self.db.speaker_profile(speaker_name)
        if speakers is None:
            raise NotebookError(
                404, "speaker_profile_not_found", f"no speaker profile {speaker_name!r}"
            )
        if request.source_id:
            source = self.source(request.source_id)
            if source["text"] is None:
                raise NotebookError(
                    409,
                    "source_not_ready",
                    f"source {request.source_id} has no text yet: its processing has not finished",
                )
            content = source["text"]
        else:
            content = (request.content or "").strip()
        briefing = " ".join(filter(None, [profile["briefing"], request.briefing_suffix]))
        episode_id = new_id()
        self.db.add_episode(
            {
                "id": episode_id,
                "name": request.episode_name,
                "episode_profile": profile["name"],
                "speaker_profile": speaker_name,
                "briefing_suffix": request.briefing_suffix,
                "source_id": request.source_id,
            }
        )
        try:
            job_id = await self._submit(
                "generate_podcast",
                {
                    "episode_id": episode_id,
                    "episode_profile": profile["name"],
                    "speaker_profile": speaker_name,
                    "episode_name": request.episode_name,
                    "content": content,
                    "briefing": briefing,
                    "speakers": speakers["speakers"],
                    "max_lines": profile["max_lines"],
                },
                episode_id,
            )
        except BaseException:
            self.db.delete_episode(episode_id)
            raise
        self.db.set_episode_job(episode_id, job_id)
        return {
            "job_id": job_id,
            "episode_id": episode_id,
            "status": "submitted",
            "message": f"generating {request.episode_name!r} in the background",
        }

    async def episodes(self) -> list[dict[str, Any]]:
        records = self.db.episodes()
        found = await jobs.jobs_of(self.client, records, "generate_podcast")
        return [{**r, "job": jobs.view(found.get(r["job_id"]))} for r in records]

    def episode_record(self, episode_id: str) -> dict[str, Any]:
        episode = self.db.episode(episode_id)
        if episode is None:
            raise NotebookError(404, "episode_not_found", f"no episode {episode_id}")
        return episode

    async def episode(self, episode_id: str) -> dict[str, Any]:
        episode = self.episode_record(episode_id)
        job = await jobs.job_or_none(self.client, episode["job_id"]) if episode["job_id"] else None
        return {**episode, "job": jobs.view(job)}

    def episode_audio(self, episode_id: str) -> Path:
        episode = self.episode_record(episode_id)
        if not episode["audio_path"]:
            raise NotebookError(409, "audio_not_ready", f"episode {episode_id} has no audio yet")
        path = Path(episode["audio_path"])
        if not self.settings.contains(path) or not path.is_file():
            raise NotebookError(404, "audio_missing", f"the audio of episode {episode_id} is gone")
        return path

    async def cancel_episode(self, episode_id: str) -> dict[str, Any]:
        episode = self.episode_record(episode_id)
        try:
            await self.client.cancel(episode["job_id"])
        except errand.IllegalTransition as err:
            raise NotebookError(
                409, "already_ended", f"episode {episode_id}: {err.message}"
            ) from None
        return await self.episode(episode_id)

    async def retry_episode(self, episode_id: str) -> dict[str, Any]:
        """Runs a failed or canceled episode's job again with the same
        settings, from its last checkpoint."""
        episode = self.episode_record(episode_id)
        try:
            await self.client.retry(episode["job_id"])
        except errand.IllegalTransition as err:
            raise NotebookError(
                409,
                "not_retryable",
                f"episode {episode_id}: only a failed or canceled episode runs again"
                f" ({err.message})",
            ) from None
        return await self.episode(episode_id)

    async def episode_events(self, episode_id: str) -> list[dict[str, Any]]:
        episode = self.episode_record(episode_id)
        events = await self.client.events(episode["job_id"])
        return [e.model_dump(mode="json") for e in events]

    # Transcriptions

    async def add_transcription(self, upload: UploadFile | None) -> dict[str, str]:
        if upload is None or not upload.filename:
            raise NotebookError(422, "no_file", "choose a recording to upload")
        if Path(upload.filename).suffix.lower() not in AUDIO_TYPES:
            raise NotebookError(
                415,
                "unsupported_type",
                f"{upload.filename}: a recording is a {', '.join(sorted(AUDIO_TYPES))} file",
            )
        transcription_id = new_id()
        path, _ = await self._save_upload(
            upload, self.settings.data_dir / "recordings" / transcription_id
        )
        self.db.add_transcription(transcription_id, upload.filename, str(path))
        job_id = await self._submit(
            "transcribe", {"transcription_id": transcription_id}, transcription_id
        )
        self.db.set_transcription_job(transcription_id, job_id)
        return {"transcription_id": transcription_id, "job_id": job_id}

    def transcription_record(self, transcription_id: str) -> dict[str, Any]:
        record = self.db.transcription(transcription_id)
        if record is None:
            raise NotebookError(
                404, "transcription_not_found", f"no transcription {transcription_id}"
            )
        return record

    async def transcription(self, transcription_id: str) -> dict[str, Any]:
        record = self.transcription_record(transcription_id)
        job = await jobs.job_or_none(self.client, record["job_id"]) if record["job_id"] else None
        return {**record, "job": jobs.view(job)}

    async def transcriptions(self) -> list[dict[str, Any]]:
        records = self.db.transcriptions()
        found = await jobs.jobs_of(self.client, records, "transcribe")
        return [{**r, "job": jobs.view(found.get(r["job_id"]))} for r in records]

    async def cancel_transcription(self, transcription_id: str) -> dict[str, Any]:
        record = self.transcription_record(transcription_id)
        try:
            await self.client.cancel(record["job_id"])
        except errand.IllegalTransition as err:
            raise NotebookError(
                409, "already_ended", f"transcription {transcription_id}: {err.message}"
            ) from None
        return await self.transcription(transcription_id)
