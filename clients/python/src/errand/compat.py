"""surreal-commands' client functions on errand: same names, signatures
and results, so an app's ``from surreal_commands import ...`` lines work
unchanged after ``install_as_surreal_commands()``.

What differs, on purpose: waits are long polls (answered the moment the
job ends, not on the next poll), one connection pool serves every call,
and a submit of a command this process has not imported is checked by the
server against the schema its worker published."""

from __future__ import annotations

import asyncio
import sys
import types
from datetime import datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict

from . import errors
from .client import AsyncClient, Client
from .commands import (
    CommandInput,
    CommandOutput,
    CommandRegistry,
    CommandRegistryItem,
    ExecutionContext,
    RetryConfig,
    RetryLogLevel,
    RetryStrategy,
    command,
    registry,
)
from .models import Job


class CommandStatus(str, Enum):
    NEW = "new"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


class CommandResult(BaseModel):
    """A job as surreal-commands describes a command, plus errand's
    progress, attempt and error details."""

    model_config = ConfigDict(extra="allow")

    command_id: str
    status: CommandStatus
    result: dict[str, Any] | list[Any] | None = None
    error_message: str | None = None
    created: datetime | None = None
    updated: datetime | None = None
    progress: dict[str, Any] | None = None
    attempt: int = 0

    def is_complete(self) -> bool:
        return self.status in (
            CommandStatus.COMPLETED,
            CommandStatus.FAILED,
            CommandStatus.CANCELED,
        )

    def is_success(self) -> bool:
        return self.status == CommandStatus.COMPLETED

    @classmethod
    def of(cls, job: Job) -> CommandResult:
        result = job.result
        if result is not None and not isinstance(result, (dict, list)):
            result = {"output": result}
        return cls(
            command_id=job.job_id,
            status=CommandStatus(job.status.value),
            result=result,
            error_message=job.error_message,
            created=job.created,
            updated=job.updated,
            progress=job.progress.model_dump() if job.progress else None,
            attempt=job.attempt,
        )


_sync_client: Client | None = None
_async_clients: dict[int, AsyncClient] = {}


def _client() -> Client:
    global _sync_client
    if _sync_client is None:
        _sync_client = Client()
    return _sync_client


def _async_client() -> AsyncClient:
    # One per event loop: an httpx pool belongs to the loop it was made on.
    loop = asyncio.get_running_loop()
    client = _async_clients.get(id(loop))
    if client is None:
        client = _async_clients[id(loop)] = AsyncClient()
    return client


def _checked_args(app: str, command: str, args: dict[str, Any]) -> dict[str, Any]:
    """Validates with the command's model when this process imported it
    (as surreal-commands does); the server checks the rest."""
    item = registry.get_command(app, command)
    if item is None or item.input_model is None:
        return args
    return item.input_model(**args).model_dump(mode="json")


def submit_command(
    app: str, command: str, args: dict[str, Any], context: dict[str, Any] | None = None
) -> str:
    """Submits a job and returns its id (blocking, like surreal-commands)."""
    return _client().submit(command, _checked_args(app, command, args), app=app, context=context)


async def submit_command_async(
    app: str, command: str, args: dict[str, Any], context: dict[str, Any] | None = None
) -> str:
    """``submit_command`` without blocking the event loop."""
    args = _checked_args(app, command, args)
    return await _async_client().submit(command, args, app=app, context=context)


def _not_found(command_id: str) -> ValueError:
    return ValueError(f"Command {command_id} not found")


async def get_command_status(command_id: str) -> CommandResult:
    try:
        return CommandResult.of(await _async_client().get(str(command_id)))
    except errors.JobNotFound:
        raise _not_found(command_id) from None


def get_command_status_sync(command_id: str) -> CommandResult:
    try:
        return CommandResult.of(_client().get(str(command_id)))
    except errors.JobNotFound:
        raise _not_found(command_id) from None


async def wait_for_command(
    command_id: str, timeout: float | None = None, poll_interval: float = 1.0
) -> CommandResult:
    """Returns once the job ended; ``TimeoutError`` after ``timeout`` s (the
    job goes on). ``poll_interval`` is accepted and unused: the server
    answers the moment the job ends."""
    try:
        return CommandResult.of(await _async_client().wait(str(command_id), timeout))
    except errors.JobNotFound:
        raise _not_found(command_id) from None


def wait_for_command_sync(
    command_id: str, timeout: float | None = None, poll_interval: float = 1.0
) -> CommandResult:
    try:
        return CommandResult.of(_client().wait(str(command_id), timeout))
    except errors.JobNotFound:
        raise _not_found(command_id) from None


def execute_command_sync(
    app: str,
    command: str,
    args: dict[str, Any],
    context: dict[str, Any] | None = None,
    timeout: float | None = None,
) -> CommandResult:
    """Submits and waits (a worker still runs it). Unlike surreal-commands',
    it works inside a running event loop too."""
    return wait_for_command_sync(submit_command(app, command, args, context), timeout)


# surreal-commands names that belong to SurrealDB and have no meaning here.
_REFUSED = {
    "CommandService": "submit with errand.Client or submit_command",
    "command_service": "submit with errand.Client or submit_command",
    "CommandExecutor": "run commands with `python -m errand worker`",
    "CommandRequest": "submit with errand.Client or submit_command",
    "CommandResponse": "submit with errand.Client or submit_command",
    "db_connection": "errand keeps jobs in its own store; talk to it over errand.Client",
    "sync_db_connection": "errand keeps jobs in its own store; talk to it over errand.Client",
    "repo_query": "errand keeps jobs in its own store",
    "repo_create": "errand keeps jobs in its own store",
    "repo_relate": "errand keeps jobs in its own store",
    "repo_upsert": "errand keeps jobs in its own store",
    "repo_update": "errand keeps jobs in its own store",
    "ensure_record_id": "errand's job ids are plain strings",
    "parse_record_ids": "errand's job ids are plain strings",
}

__all__ = [
    "command",
    "registry",
    "submit_command",
    "get_command_status",
    "get_command_status_sync",
    "wait_for_command",
    "wait_for_command_sync",
    "execute_command_sync",
    "CommandStatus",
    "CommandResult",
    "CommandInput",
    "CommandOutput",
    "ExecutionContext",
    "RetryConfig",
    "RetryStrategy",
    "RetryLogLevel",
    "CommandRegistryItem",
    "CommandRegistry",
    "submit_command_async",
]


def refused(name: str) -> ImportError:
    # ImportError, not AttributeError: `from surreal_commands import x`
    # would replace an AttributeError's message with a generic one.
    return ImportError(
        f"surreal_commands.{name} has no equivalent in errand (it belongs to SurrealDB): "
        f"{_REFUSED[name]}"
    )


class _SurrealCommands(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name in _REFUSED:
            raise refused(name)
        raise AttributeError(f"module 'surreal_commands' (errand) has no attribute {name!r}")


def install_as_surreal_commands() -> None:
    """Makes ``import surreal_commands`` (and ``from surreal_commands import
    ...``) give errand's equivalents; names that only make sense with
    SurrealDB raise an error saying so."""
    module = _SurrealCommands("surreal_commands", __doc__)
    for name in __all__:
        setattr(module, name, globals()[name])
    module.__all__ = list(__all__)
    module.__version__ = "errand"
    sys.modules["surreal_commands"] = module
