"""The server's records as pydantic models (field names as on the wire)."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict


class JobStatus(str, Enum):
    NEW = "new"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_terminal(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED)


class _Record(BaseModel):
    # A newer server may add fields: they are kept, not refused.
    model_config = ConfigDict(extra="allow")


class Progress(_Record):
    fraction: float | None = None
    message: str | None = None
    stage: str | None = None
    data: Any = None
    updated: datetime | None = None


class JobError(_Record):
    kind: str
    message: str
    retryable: bool
    attempt: int


class Job(_Record):
    job_id: str
    app: str
    command: str
    input: Any = None
    context: Any = None
    status: JobStatus
    result: Any = None
    error_message: str | None = None
    error: JobError | None = None
    progress: Progress | None = None
    attempt: int = 0
    max_attempts: int = 1
    priority: int = 0
    queue: str = "default"
    run_at: datetime | None = None
    timeout_secs: float | None = None
    idempotency_key: str | None = None
    parent_id: str | None = None
    cancel_requested: bool = False
    worker_id: str | None = None
    created: datetime | None = None
    updated: datetime | None = None
    started: datetime | None = None
    finished: datetime | None = None
    event_seq: int = 0
    checkpoint: Any = None
    #: When its command has limits: the key they count it under.
    limit_key: str | None = None
    #: For a waiting job its limit holds back: why.
    held: str | None = None
    #: What the job can be found by (``list(tags=[...])``).
    tags: list[str] = []
    #: Where the server reports the job's end: ``{"url": ..., "on": ...}``.
    webhook: dict[str, Any] | None = None

    @property
    def full_command(self) -> str:
        return f"{self.app}.{self.command}"


class Submitted(_Record):
    job_id: str
    status: str
    message: str
    created: bool


class JobLink(_Record):
    """A signed, expiring, read-only link to one job: its URLs (paths on
    the server, the token included) open it without the API token."""

    job_id: str
    token: str
    expires: datetime
    job_url: str
    events_url: str
    stream_url: str
    page_url: str


class Cancelled(_Record):
    job_id: str
    cancelled: bool
    status: JobStatus
    cancel_requested: bool


class JobPage(_Record):
    jobs: list[Job]
    next_cursor: str | None = None


class JobEvent(_Record):
    """One entry of a job's event log (``kind``: status, progress, log, ...)."""

    id: int | None = None
    job_id: str
    seq: int
    kind: str
    status: JobStatus
    data: Any = None
    at: datetime | None = None


class StreamEvent(_Record):
    """One message of a job's SSE stream: ``event`` is the event's kind
    (``status``, ``progress``, ``log``...) or ``end``, after which the
    stream closes."""

    event: str
    id: str | None = None
    data: Any = None
