"""Where the notebook keeps its files and how it reaches errand, from the
environment, so that the web app and the worker processes agree."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    errand_url: str
    errand_token: str | None
    max_upload_bytes: int

    @property
    def database(self) -> Path:
        return self.data_dir / "notebook.db"

    def contains(self, path: Path) -> bool:
        """Whether ``path`` (once resolved) lies inside the data folder: the
        only files the app hands out."""
        return path.resolve().is_relative_to(self.data_dir.resolve())


def load() -> Settings:
    return Settings(
        data_dir=Path(os.environ.get("NOTEBOOK_DATA", "notebook-data")).absolute(),
        errand_url=os.environ.get("ERRAND_URL", "http://127.0.0.1:5055"),
        errand_token=os.environ.get("ERRAND_API_TOKEN") or None,
        max_upload_bytes=int(float(os.environ.get("NOTEBOOK_MAX_UPLOAD_MB", "20")) * 1024 * 1024),
    )
