"""Errors the server answers, one class per stable error code.

Every error carries the server's ``code`` and ``message`` and the HTTP
``status``; the classes also derive from the built-in exception an app
would catch anyway (a missing job is a ``LookupError``, bad input a
``ValueError``).
"""

from __future__ import annotations


class ErrandError(Exception):
    """An error answered by the errand server (or reaching it)."""

    code: str = "error"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.status = status

    def __str__(self) -> str:
        return f"{self.message} ({self.code})"


class BadRequest(ErrandError, ValueError):
    code = "bad_request"


class Unauthorized(ErrandError, PermissionError):
    code = "unauthorized"


class JobNotFound(ErrandError, LookupError):
    code = "job_not_found"


class ScheduleNotFound(ErrandError, LookupError):
    code = "schedule_not_found"


class LimitNotFound(ErrandError, LookupError):
    code = "limit_not_found"


class IllegalTransition(ErrandError):
    """The job's status does not allow it (a cancel of a finished job...)."""

    code = "illegal_transition"


class IdempotencyConflict(ErrandError):
    code = "idempotency_conflict"


class InvalidInput(ErrandError, ValueError):
    """The input does not fit the command's schema; the message names the field."""

    code = "invalid_input"


class UnknownCommand(InvalidInput):
    code = "unknown_command"


class LeaseLost(ErrandError):
    """This attempt no longer holds the job (its lease expired and the job
    moved on, or it already ended): nothing it sends is recorded."""

    code = "lease_lost"


class TooManyRequests(ErrandError):
    code = "too_many_requests"


class StoreUnavailable(ErrandError, ConnectionError):
    code = "store_unavailable"


class ServerUnreachable(ErrandError, ConnectionError):
    """No answer from the server at all (refused, reset, timed out)."""

    code = "server_unreachable"


_BY_CODE: dict[str, type[ErrandError]] = {
    cls.code: cls
    for cls in (
        BadRequest,
        Unauthorized,
        JobNotFound,
        ScheduleNotFound,
        LimitNotFound,
        IllegalTransition,
        IdempotencyConflict,
        InvalidInput,
        UnknownCommand,
        StoreUnavailable,
        LeaseLost,
    )
}
_BY_CODE["too_many_guesses"] = TooManyRequests
_BY_CODE["too_many_streams"] = TooManyRequests


def from_detail(detail: dict, status: int | None = None) -> ErrandError:
    """The error of one item of a batch answer (``{"code", "message"}``)."""
    code = str(detail.get("code", "error"))
    return _BY_CODE.get(code, ErrandError)(
        str(detail.get("message", code)), code=code, status=status
    )


def from_response(status: int, body: object) -> ErrandError:
    """The error an answer with a status of 400 or more stands for."""
    code, message = "error", f"the server answered {status}"
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = str(body["error"].get("code", code))
        message = str(body["error"].get("message", message))
    cls = _BY_CODE.get(code, ErrandError)
    return cls(message, code=code, status=status)
