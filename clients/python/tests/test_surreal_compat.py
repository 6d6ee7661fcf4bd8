"""A program written against surreal-commands runs on errand unchanged,
once ``errand.install_as_surreal_commands()`` has run."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from conftest import HERE

import errand

PROGRAM = textwrap.dedent(
    """
    import asyncio, json, errand
    errand.install_as_surreal_commands()

    from surreal_commands import (
        CommandStatus, execute_command_sync, get_command_status, get_command_status_sync,
        submit_command, wait_for_command, wait_for_command_sync,
    )
    import legacy_commands  # as Open Notebook's API imports its commands before submitting

    job_id = submit_command("legacy_commands", "greet", {"name": "Ada"})
    result = wait_for_command_sync(job_id, timeout=20)
    status = asyncio.run(get_command_status(job_id))
    again = execute_command_sync("legacy_commands", "greet", {"name": "Bob"}, timeout=20)
    try:
        submit_command("legacy_commands", "greet", {})
        invalid = None
    except Exception as err:  # the pydantic error, raised before anything is sent
        invalid = type(err).__name__
    try:
        get_command_status_sync("command:missing")
        missing = None
    except ValueError as err:
        missing = str(err)
    try:
        from surreal_commands import db_connection  # noqa: F401
        refused = None
    except ImportError as err:
        refused = str(err)
    print(json.dumps({
        "success": result.is_success(), "complete": result.is_complete(),
        "greeting": result.result["greeting"], "status": status.status == CommandStatus.COMPLETED,
        "again": again.result["greeting"], "invalid": invalid, "missing": missing,
        "refused": refused,
    }))
    """
)


def test_a_surreal_commands_program_runs_on_errand(client, workers, server):
    workers.start("--as-surreal-commands", modules="legacy_commands")
    run = subprocess.run(
        [sys.executable, "-c", PROGRAM],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=60,
        env={**__import__("os").environ, "ERRAND_URL": server.url},
    )
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    assert seen["success"] and seen["complete"] and seen["status"]
    assert seen["greeting"] == "hello Ada from legacy_commands"
    assert seen["again"] == "hello Bob from legacy_commands"
    assert seen["invalid"] == "ValidationError"
    assert seen["missing"] == "Command command:missing not found"
    assert "no equivalent in errand" in seen["refused"]


def test_the_surreal_commands_api_has_its_names_and_shapes():
    assert errand.CommandStatus.CANCELED.value == "canceled"
    config = errand.RetryConfig(max_attempts=4, wait_strategy="fixed", wait_time=2)
    assert config.policy()["max_attempts"] == 4
    assert errand.RetryConfig(enabled=False).policy()["max_attempts"] == 1
    assert errand.RetryConfig(retry_on=[ValueError]).retries(KeyError()) is False
    result = errand.CommandResult(command_id="j", status="completed", result={"x": 1})
    assert result.is_success() and result.is_complete()
    commands = errand.CommandRegistry()

    def handler(data: errand.CommandInput) -> errand.CommandOutput:
        return errand.CommandOutput()

    item = commands.register("app", "name", handler)
    assert commands.get_command_by_id("app.name") is item
    assert commands.list_commands() == {"app": {"name": item}}
    assert item.input_schema is errand.CommandInput
    assert "execution_context" not in item.spec()["input_schema"].get("properties", {})
