"""Commands written in Python: the ``@command`` decorator, the registry,
the input/output base models and the execution context, with the names
and signatures of surreal-commands so that its users' code runs as is."""

from __future__ import annotations

import inspect
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator
from pydantic.json_schema import SkipJsonSchema

log = logging.getLogger("errand")


class RetryStrategy(str, Enum):
    FIXED = "fixed"
    EXPONENTIAL = "exponential"
    RANDOM = "random"
    EXPONENTIAL_JITTER = "exponential_jitter"


class RetryLogLevel(str, Enum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    NONE = "none"


class RetryConfig(BaseModel):
    """How often and when a failed command runs again. Unlike
    surreal-commands, the waits happen in the queue (the job goes back to
    ``new`` with a time), not inside a worker slot."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    enabled: bool = True
    max_attempts: int = Field(default=3, ge=1)
    wait_strategy: RetryStrategy = RetryStrategy.EXPONENTIAL
    wait_time: float = Field(default=1.0, ge=0)
    wait_min: float = Field(default=1.0, ge=0)
    wait_max: float = Field(default=60.0, ge=0)
    wait_multiplier: float = Field(default=2.0, ge=1)
    retry_on: list[type[BaseException]] | None = None
    stop_on: list[type[BaseException]] | None = None
    retry_log_level: RetryLogLevel = RetryLogLevel.INFO

    @model_validator(mode="after")
    def _max_not_below_min(self) -> RetryConfig:
        if self.wait_max < self.wait_min:
            raise ValueError("wait_max must be greater than or equal to wait_min")
        return self

    def policy(self) -> dict[str, Any]:
        """The retry policy errand stores with each job. Exception types stay
        in the worker, which decides whether an error is retryable."""
        return {
            "max_attempts": self.max_attempts if self.enabled else 1,
            "wait_strategy": self.wait_strategy.value,
            "wait_time": self.wait_time,
            "wait_min": self.wait_min,
            "wait_max": self.wait_max,
            "wait_multiplier": self.wait_multiplier,
        }

    def retries(self, error: BaseException) -> bool:
        """Whether ``error`` may be retried: surreal-commands' filter."""
        if self.retry_on and not isinstance(error, tuple(self.retry_on)):
            return False
        return not (self.stop_on and isinstance(error, tuple(self.stop_on)))


_TRUE = {"true", "1", "yes", "on"}


def global_retry_config() -> RetryConfig | None:
    """The process-wide policy from ``SURREAL_COMMANDS_RETRY_*`` (or
    ``ERRAND_RETRY_*``), used when enabled there, as surreal-commands does."""
    for prefix in ("ERRAND_RETRY_", "SURREAL_COMMANDS_RETRY_"):
        if os.environ.get(prefix + "ENABLED", "").lower() in _TRUE:
            break
    else:
        return None
    fields = {}
    for name in (
        "max_attempts",
        "wait_strategy",
        "wait_time",
        "wait_min",
        "wait_max",
        "wait_multiplier",
    ):
        value = os.environ.get(prefix + name.upper())
        if value is not None:
            fields[name] = value
    try:
        return RetryConfig(**fields)
    except ValidationError as err:
        log.warning("ignoring %s* settings: %s", prefix, err)
        return RetryConfig()


def _retry_config(retry: dict[str, Any] | RetryConfig | None) -> RetryConfig | None:
    if retry is None:
        return None
    if isinstance(retry, RetryConfig):
        return retry if retry.enabled else RetryConfig(enabled=False, max_attempts=1)
    if retry.get("enabled") is False:
        return RetryConfig(enabled=False, max_attempts=1)
    return RetryConfig(**retry)


@dataclass
class ExecutionContext:
    """What a running command knows about its job: surreal-commands' fields,
    and errand's progress, log and cancel."""

    command_id: str
    execution_started_at: datetime
    app_name: str
    command_name: str
    user_context: dict[str, Any] | None = None
    attempt: int = 1
    # The last checkpoint saved: by an earlier attempt when the handler
    # starts (None on a fresh start), then by this one.
    checkpoint: Any = None
    _reporter: Any = field(default=None, repr=False)
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def job_id(self) -> str:
        return self.command_id

    @property
    def cancelled(self) -> bool:
        """True once the job's cancel was requested (or the worker is
        stopping): wrap up and return, or raise."""
        return self._cancel.is_set()

    def progress(
        self,
        fraction: float | None = None,
        message: str | None = None,
        *,
        stage: str | None = None,
        data: Any = None,
    ) -> None:
        """Reports progress (``fraction`` from 0 to 1). Writes are throttled;
        the last one before the job ends is always written."""
        if self._reporter is not None:
            report = {"fraction": fraction, "message": message, "stage": stage, "data": data}
            self._reporter.progress(self, {k: v for k, v in report.items() if v is not None})

    def log(self, line: str) -> None:
        """Appends a line to the job's event log."""
        if self._reporter is not None:
            self._reporter.log(self, str(line))

    async def save_checkpoint(self, value: Any) -> None:
        """Saves where the handler got to (any JSON value): durable when this
        returns, and what the job's next attempt starts with
        (``ctx.checkpoint``) after a crash, a timeout or a retry. Raises
        ``LeaseLost`` if this attempt no longer holds the job."""
        if self._reporter is not None:
            await self._reporter.save_checkpoint(self, value)
        self.checkpoint = value

    def save_checkpoint_sync(self, value: Any) -> None:
        """``save_checkpoint`` for sync handlers (which run in threads)."""
        if self._reporter is not None:
            self._reporter.save_checkpoint_from_thread(self, value)
        self.checkpoint = value


class CommandInput(BaseModel):
    """Base of command inputs; the worker sets ``execution_context``."""

    # Not part of the input's schema: it is not sent, it is given.
    execution_context: SkipJsonSchema[ExecutionContext | None] = Field(default=None, exclude=True)

    model_config = ConfigDict(arbitrary_types_allowed=True)


class CommandOutput(BaseModel):
    """Base of command outputs; the worker fills what is left as None."""

    command_id: str | None = None
    execution_time: float | None = None
    execution_metadata: dict[str, Any] | None = None


def _json_schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()


@dataclass
class CommandRegistryItem:
    app_id: str
    name: str
    runnable: Callable[..., Any]
    retry_config: RetryConfig | None = None
    description: str | None = None
    timeout_secs: float | None = None
    queue: str | None = None
    priority: int | None = None
    max_concurrency: int | None = None
    input_model: type[BaseModel] | None = None
    output_model: type[BaseModel] | None = None
    takes_context: bool = False

    @property
    def full_name(self) -> str:
        return f"{self.app_id}.{self.name}"

    @property
    def input_schema(self) -> type[BaseModel] | None:
        return self.input_model

    @property
    def output_schema(self) -> type[BaseModel] | None:
        return self.output_model

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.runnable)

    def parse_input(self, args: dict[str, Any]) -> Any:
        if self.input_model is None:
            return args
        return self.input_model.model_validate(args)

    def spec(self) -> dict[str, Any]:
        """What the worker publishes about the command (its schema and
        defaults), so any errand server checks submits for it."""
        retry = self.retry_config or global_retry_config() or RetryConfig(max_attempts=1)
        defaults: dict[str, Any] = {"retry": retry.policy()}
        for key in ("timeout_secs", "queue", "priority", "max_concurrency"):
            if getattr(self, key) is not None:
                defaults[key] = getattr(self, key)
        spec: dict[str, Any] = {"app": self.app_id, "name": self.name, "defaults": defaults}
        if self.description:
            spec["description"] = self.description
        if self.input_model is not None:
            spec["input_schema"] = _json_schema(self.input_model)
        if self.output_model is not None:
            spec["output_schema"] = _json_schema(self.output_model)
        return spec


class CommandRegistry:
    """The commands of this process, by app and name."""

    def __init__(self) -> None:
        self._commands: dict[str, CommandRegistryItem] = {}
        self._lock = threading.Lock()

    def register(
        self,
        app: str,
        name: str,
        command: Callable[..., Any],
        retry_config: RetryConfig | None = None,
        **options: Any,
    ) -> CommandRegistryItem:
        """Registers ``command``; a second registration of the same
        ``app.name`` is ignored (the first one wins, as in surreal-commands)."""
        with self._lock:
            existing = self._commands.get(f"{app}.{name}")
            if existing is not None:
                return existing
            input_model, output_model, takes_context = _signature(command)
            item = CommandRegistryItem(
                app,
                name,
                command,
                retry_config,
                input_model=input_model,
                output_model=output_model,
                takes_context=takes_context,
                **options,
            )
            self._commands[item.full_name] = item
            return item

    def get_command(self, app: str, name: str) -> CommandRegistryItem | None:
        return self._commands.get(f"{app}.{name}")

    def get_command_by_id(self, command_id: str) -> CommandRegistryItem | None:
        return self._commands.get(command_id)

    def list_commands(self) -> dict[str, dict[str, CommandRegistryItem]]:
        listed: dict[str, dict[str, CommandRegistryItem]] = {}
        for item in self._commands.values():
            listed.setdefault(item.app_id, {})[item.name] = item
        return listed

    def get_all_commands(self) -> list[CommandRegistryItem]:
        return list(self._commands.values())

    def clear(self) -> None:
        with self._lock:
            self._commands.clear()


registry = CommandRegistry()


def _signature(
    fn: Callable[..., Any],
) -> tuple[type[BaseModel] | None, type[BaseModel] | None, bool]:
    """The input model (the first parameter's annotation: a pydantic model,
    or a model made from plain annotated parameters), the output model, and
    whether the function takes the context as its second parameter."""
    try:
        hints = get_type_hints(fn)
    except Exception:  # unresolvable forward references: no schema
        hints = {}
    params = list(inspect.signature(fn).parameters.values())
    output = hints.get("return")
    output_model = output if isinstance(output, type) and issubclass(output, BaseModel) else None
    if not params:
        return None, output_model, False
    first = hints.get(params[0].name)
    takes_context = len(params) > 1 and (
        hints.get(params[1].name) is ExecutionContext or params[1].name in ("ctx", "context")
    )
    if isinstance(first, type) and issubclass(first, BaseModel):
        return first, output_model, takes_context
    if first in (dict, None) or first is Any:
        return None, output_model, takes_context
    model = create_model(f"{fn.__name__}_input", **{params[0].name: (first, ...)})
    return model, output_model, takes_context


def _detect_app_name(module: str) -> str:
    """The app is the defining module's top package (``my_app.tasks`` →
    ``my_app``); ``app`` for a script run as ``__main__``."""
    if not module or module == "__main__":
        return "app"
    return module.split(".")[0]


def command(
    name: str,
    app: str | None = None,
    retry: dict[str, Any] | RetryConfig | None = None,
    *,
    description: str | None = None,
    timeout_secs: float | None = None,
    queue: str | None = None,
    priority: int | None = None,
    max_concurrency: int | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Registers the function as command ``app.name`` and returns it as is.

    ``retry``: a ``RetryConfig`` or its dict form (``{"enabled": False}``
    disables retries); left out, ``SURREAL_COMMANDS_RETRY_*`` decides, and
    without it a failure is final, as in surreal-commands."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        app_name = app or _detect_app_name(getattr(fn, "__module__", ""))
        registry.register(
            app_name,
            name,
            fn,
            _retry_config(retry),
            description=description or (inspect.getdoc(fn) or None),
            timeout_secs=timeout_secs,
            queue=queue,
            priority=priority,
            max_concurrency=max_concurrency,
        )
        return fn

    return register


def now() -> datetime:
    return datetime.now(timezone.utc)
