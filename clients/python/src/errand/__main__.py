"""``python -m errand worker``: runs the commands of the given modules.

The options of ``surreal-commands-worker`` (``--import-modules``,
``--max-tasks``, ``--debug``), plus where the server is and how to stop."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import sys

from .commands import registry
from .compat import install_as_surreal_commands
from .worker import Worker


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m errand")
    commands = parser.add_subparsers(dest="subcommand", required=True)
    worker = commands.add_parser("worker", help="run Python commands for an errand server")
    worker.add_argument(
        "-i",
        "--import-modules",
        default=os.environ.get("ERRAND_IMPORT_MODULES")
        or os.environ.get("SURREAL_COMMANDS_MODULES"),
        help="comma-separated modules that define the commands "
        "[env ERRAND_IMPORT_MODULES or SURREAL_COMMANDS_MODULES]",
    )
    worker.add_argument(
        "-m",
        "--max-tasks",
        type=int,
        default=int(os.environ.get("ERRAND_MAX_TASKS", "5")),
        help="jobs run at once [default 5; env ERRAND_MAX_TASKS]",
    )
    worker.add_argument("-d", "--debug", action="store_true", help="log at debug level")
    worker.add_argument(
        "--as-surreal-commands",
        action="store_true",
        help="let the modules import surreal_commands (errand stands in for it)",
    )
    worker.add_argument("--url", help="the errand server [env ERRAND_URL; http://127.0.0.1:5055]")
    worker.add_argument("--token", help="bearer token [env ERRAND_WORKER_TOKEN, ERRAND_API_TOKEN]")
    worker.add_argument("-q", "--queues", default="default", help="comma-separated queues")
    worker.add_argument("--worker-id", help="unique id [default: host-pid-random]")
    worker.add_argument("--lease-secs", type=float, help="lease per job [default: the server's]")
    worker.add_argument(
        "--shutdown-timeout",
        type=float,
        default=30.0,
        help="on SIGTERM, seconds running jobs get before they are released",
    )
    worker.add_argument(
        "--cancel-grace",
        type=float,
        default=10.0,
        help="seconds a canceled handler gets before it is stopped",
    )
    return parser


def import_modules(names: str | None) -> None:
    """Imports each module (the working directory first on the path). A
    module that fails to import stops the worker: running without its
    commands would leave their jobs waiting."""
    sys.path.insert(0, os.getcwd())
    for name in filter(None, (n.strip() for n in (names or "").split(","))):
        try:
            importlib.import_module(name)
        except Exception as err:
            raise SystemExit(f"errand worker: cannot import {name}: {err!r}") from err


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.as_surreal_commands:
        install_as_surreal_commands()
    # A line per request is noise at info level.
    logging.getLogger("httpx").setLevel(logging.DEBUG if args.debug else logging.WARNING)
    import_modules(args.import_modules)
    if not registry.get_all_commands():
        raise SystemExit("errand worker: no commands registered; pass --import-modules")
    worker = Worker(
        args.url,
        args.token,
        max_tasks=args.max_tasks,
        queues=[q for q in args.queues.split(",") if q],
        worker_id=args.worker_id,
        lease_secs=args.lease_secs,
        shutdown_timeout=args.shutdown_timeout,
        cancel_grace=args.cancel_grace,
    )

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await worker.run(stop)

    asyncio.run(run())


if __name__ == "__main__":
    main()
