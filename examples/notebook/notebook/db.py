"""The notebook's own data in SQLite: sources and their chunks, the
podcast profiles, episodes and transcriptions. Nothing about jobs is kept
here beyond each record's job id: status, progress, errors and the event
log are errand's, read from it when a page is drawn.

The web app and the worker processes open the same file, so it runs in
WAL mode with a busy timeout, and every write is one short transaction.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS sources (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    filename TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    job_id TEXT,
    text TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    source_id TEXT NOT NULL REFERENCES sources(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (source_id, idx)
);
CREATE TABLE IF NOT EXISTS speaker_profiles (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    speakers TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS episode_profiles (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    speaker_profile TEXT NOT NULL,
    max_lines INTEGER NOT NULL,
    briefing TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS episodes (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    episode_profile TEXT NOT NULL,
    speaker_profile TEXT NOT NULL,
    briefing_suffix TEXT,
    source_id TEXT,
    job_id TEXT,
    audio_path TEXT,
    transcript TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS episodes_by_created ON episodes (created_at DESC);
CREATE TABLE IF NOT EXISTS transcriptions (
    id TEXT PRIMARY KEY,
    filename TEXT NOT NULL,
    path TEXT NOT NULL,
    job_id TEXT,
    text TEXT,
    created_at TEXT NOT NULL
);
"""

# What a new notebook starts with: two voices the offline recogniser
# follows well (espeak-ng's female variants at a calm rate), and two
# episode lengths.
DEFAULT_SPEAKER_PROFILES = [
    {
        "name": "two_hosts",
        "description": "Two hosts, espeak-ng voices en-us+f2 and en-us+f5",
        "speakers": [
            {"name": "Ada", "voice": "en-us+f2", "rate": 110, "pitch": 50},
            {"name": "Grace", "voice": "en-us+f5", "rate": 110, "pitch": 50},
        ],
    },
    {
        "name": "brisk_pair",
        "description": "A faster pair, easier to listen to, harder to transcribe",
        "speakers": [
            {"name": "Alan", "voice": "en-us+m3", "rate": 150, "pitch": 45},
            {"name": "Joan", "voice": "en-gb+f3", "rate": 150, "pitch": 55},
        ],
    },
]
DEFAULT_EPISODE_PROFILES = [
    {
        "name": "short_summary",
        "description": "A short episode: the content's main points",
        "speaker_profile": "two_hosts",
        "max_lines": 12,
        "briefing": "Cover the main points briefly.",
    },
    {
        "name": "deep_dive",
        "description": "A longer episode that goes through the whole content",
        "speaker_profile": "two_hosts",
        "max_lines": 60,
        "briefing": "Go through the content in order.",
    },
]


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def new_id() -> str:
    return uuid.uuid4().hex[:16]


class Database:
    def __init__(self, path: Path):
        self.path = path

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.row_factory = sqlite3.Row
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            yield conn
        finally:
            conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self.connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def init(self) -> None:
        """Creates the tables, and the default profiles on a new file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as conn:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript(SCHEMA)
        with self.transaction() as conn:
            for profile in DEFAULT_SPEAKER_PROFILES:
                conn.execute(
                    "INSERT OR IGNORE INTO speaker_profiles VALUES (?, ?, ?)",
                    (profile["name"], profile["description"], json.dumps(profile["speakers"])),
                )
            for profile in DEFAULT_EPISODE_PROFILES:
                conn.execute(
                    "INSERT OR IGNORE INTO episode_profiles VALUES (?, ?, ?, ?, ?)",
                    (
                        profile["name"],
                        profile["description"],
                        profile["speaker_profile"],
                        profile["max_lines"],
                        profile["briefing"],
                    ),
                )

    # Sources

    def add_source(self, source_id: str, title: str, filename: str, path: str, size: int) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO sources (id, title, filename, path, size, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (source_id, title, filename, path, size, now()),
            )

    def set_source_job(self, source_id: str, job_id: str) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE sources SET job_id = ? WHERE id = ?", (job_id, source_id))

    def store_chunks(self, source_id: str, text: str, chunks: list[str]) -> None:
        """The extracted text and its chunks, replacing an earlier run's."""
        with self.transaction() as conn:
            conn.execute("UPDATE sources SET text = ? WHERE id = ?", (text, source_id))
            conn.execute("DELETE FROM chunks WHERE source_id = ?", (source_id,))
            conn.executemany(
                "INSERT INTO chunks (source_id, idx, text) VALUES (?, ?, ?)",
                [(source_id, i, chunk) for i, chunk in enumerate(chunks)],
            )

    def sources(self) -> list[dict[str, Any]]:
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT s.id, s.title, s.filename, s.size, s.job_id, s.created_at,"
                " s.text IS NOT NULL AS ready,"
                " (SELECT count(*) FROM chunks c WHERE c.source_id = s.id) AS chunks"
                " FROM sources s ORDER BY s.created_at DESC"
            ).fetchall()
        return [dict(row) for row in rows]

    def source(self, source_id: str) -> dict[str, Any] | None:
        with self.connect() as conn:
            row = conn.execute("SELECT * FROM sources WHERE id = ?", (source_id,)).fetchone()
            if row is None:
                return None
            source = dict(row)
            source["chunks"] = [
                r["text"]
                for r in conn.execute(
                    "SELECT text FROM chunks WHERE source_id = ? ORDER BY idx", (source_id,)
                )
            ]
        return source

    # Profiles

    def speaker_profiles(self) -> list[dict[str, Any]]:
        with self.connect() as conn:
            rows = conn.execute("SELECT * FROM speaker_profiles ORDER BY name").fetchall()
        return [{**dict(row), "speakers": json.loads(row["speakers"])} for row in rows]

    def speaker_profile(self, name: str) -> dict[str, Any] | None:
        return next((p for p in self.speaker_profiles() if p["name"] == name), None)

    def put_speaker_profile(self, name: str, description: str, speakers: list[dict]) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO speaker_profiles VALUES (?, ?, ?)",
                (name, description, json.dumps(speakers)),
            )

    def episode_profiles(self) -> list[dict[str, Any]]:
        with self.connect() as conn:
            rows = conn.execute("SELECT * FROM episode_profiles ORDER BY name").fetchall()
        return [dict(row) for row in rows]

    def episode_profile(self, name: str) -> dict[str, Any] | None:
        return next((p for p in self.episode_profiles() if p["name"] == name), None)

    def put_episode_profile(self, profile: dict[str, Any]) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO episode_profiles VALUES (?, ?, ?, ?, ?)",
                (
                    profile["name"],
                    profile["description"],
                    profile["speaker_profile"],
                    profile["max_lines"],
                    profile["briefing"],
                ),
            )

    # Episodes

    def add_episode(self, episode: dict[str, Any]) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO episodes (id, name, episode_profile, speaker_profile,"
                " briefing_suffix, source_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    episode["id"],
                    episode["name"],
                    episode["episode_profile"],
                    episode["speaker_profile"],
                    episode.get("briefing_suffix"),
                    episode.get("source_id"),
                    now(),
                ),
            )

    def set_episode_job(self, episode_id: str, job_id: str) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE episodes SET job_id = ? WHERE id = ?", (job_id, episode_id))

    def delete_episode(self, episode_id: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM episodes WHERE id = ?", (episode_id,))

    def finish_episode(self, episode_id: str, audio_path: str, transcript: list[dict]) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE episodes SET audio_path = ?, transcript = ? WHERE id = ?",
                (audio_path, json.dumps(transcript), episode_id),
            )

    def episodes(self, limit: int = 50) -> list[dict[str, Any]]:
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT * FROM episodes ORDER BY created_at DESC LIMIT ?", (limit,)
            ).fetchall()
        return [_episode(row) for row in rows]

    def episode(self, episode_id: str) -> dict[str, Any] | None:
        with self.connect() as conn:
            row = conn.execute("SELECT * FROM episodes WHERE id = ?", (episode_id,)).fetchone()
        return _episode(row) if row else None

    # Transcriptions

    def add_transcription(self, transcription_id: str, filename: str, path: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO transcriptions (id, filename, path, created_at) VALUES (?, ?, ?, ?)",
                (transcription_id, filename, path, now()),
            )

    def set_transcription_job(self, transcription_id: str, job_id: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE transcriptions SET job_id = ? WHERE id = ?", (job_id, transcription_id)
            )

    def finish_transcription(self, transcription_id: str, text: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE transcriptions SET text = ? WHERE id = ?", (text, transcription_id)
            )

    def transcriptions(self) -> list[dict[str, Any]]:
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT * FROM transcriptions ORDER BY created_at DESC LIMIT 50"
            ).fetchall()
        return [dict(row) for row in rows]

    def transcription(self, transcription_id: str) -> dict[str, Any] | None:
        with self.connect() as conn:
            row = conn.execute(
                "SELECT * FROM transcriptions WHERE id = ?", (transcription_id,)
            ).fetchone()
        return dict(row) if row else None


def _episode(row: sqlite3.Row) -> dict[str, Any]:
    episode = dict(row)
    episode["transcript"] = json.loads(row["transcript"]) if row["transcript"] else None
    return episode
