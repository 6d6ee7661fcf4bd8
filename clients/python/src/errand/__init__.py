"""errand for Python: a client for errand's HTTP API, a worker for Python
commands over its worker protocol, and a drop-in for surreal-commands.

    import errand

    @errand.command("greet", app="demo")
    async def greet(data: GreetInput) -> GreetOutput: ...

    python -m errand worker --import-modules my_app.commands

    with errand.Client() as client:
        job = client.wait(client.submit("demo.greet", {"name": "Ada"}))
"""

from .client import AsyncClient, Client, submit_body
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
from .compat import (
    CommandResult,
    CommandStatus,
    execute_command_sync,
    get_command_status,
    get_command_status_sync,
    install_as_surreal_commands,
    submit_command,
    submit_command_async,
    wait_for_command,
    wait_for_command_sync,
)
from .errors import (
    BadRequest,
    ErrandError,
    IdempotencyConflict,
    IllegalTransition,
    InvalidInput,
    JobNotFound,
    LeaseLost,
    LimitNotFound,
    ScheduleNotFound,
    ServerUnreachable,
    StoreUnavailable,
    TooManyRequests,
    Unauthorized,
    UnknownCommand,
)
from .models import (
    Job,
    JobEvent,
    JobLink,
    JobPage,
    JobStatus,
    Progress,
    StreamEvent,
    Submitted,
)
from .worker import Worker

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "BadRequest",
    "Client",
    "CommandInput",
    "CommandOutput",
    "CommandRegistry",
    "CommandRegistryItem",
    "CommandResult",
    "CommandStatus",
    "ErrandError",
    "ExecutionContext",
    "IdempotencyConflict",
    "IllegalTransition",
    "InvalidInput",
    "Job",
    "JobEvent",
    "JobNotFound",
    "ScheduleNotFound",
    "LimitNotFound",
    "JobPage",
    "LeaseLost",
    "JobStatus",
    "Progress",
    "RetryConfig",
    "RetryLogLevel",
    "RetryStrategy",
    "ServerUnreachable",
    "StoreUnavailable",
    "StreamEvent",
    "Submitted",
    "JobLink",
    "TooManyRequests",
    "Unauthorized",
    "UnknownCommand",
    "Worker",
    "command",
    "execute_command_sync",
    "get_command_status",
    "get_command_status_sync",
    "install_as_surreal_commands",
    "registry",
    "submit_body",
    "submit_command",
    "submit_command_async",
    "wait_for_command",
    "wait_for_command_sync",
]
