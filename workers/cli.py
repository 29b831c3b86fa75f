"""The `colony` command: the API's commands (api/cli/main.py) plus those that run the stack.

`up`, `demo`, `doctor` and `worker` start or inspect worker processes and embedded
servers, which only the workers package may import (tests/unit/test_layout.py). They
import them when they run, so that the API's commands start quickly.
"""

import asyncio
import sys
from collections.abc import Sequence
from typing import Any

import click
from rich.table import Table

from api.cli.demo import main_job
from api.cli.main import api_is_up, cli, setup_logging
from api.cli.output import console
from api.cli.output import fail as _fail
from core.errors import ColonyError
from core.settings import Settings


@click.command()
@click.option(
    "--split-lanes", is_flag=True, help="One worker process per lane instead of one for all."
)
@click.option("--no-api", is_flag=True, help="Do not start the HTTP API.")
@click.option("-v", "--verbose", is_flag=True)
def up(split_lanes: bool, no_api: bool, verbose: bool) -> None:
    """Start the embedded stack in the foreground (Ctrl-C stops everything)."""
    from workers.stack import AlreadyRunning, StackOptions, serve

    setup_logging(verbose)
    settings = Settings()
    options = StackOptions(split_lanes=split_lanes, start_api=not no_api)
    try:
        asyncio.run(_up(settings, options, serve))
    except AlreadyRunning as exc:
        _print_already_running(exc.state, settings)
    except ColonyError as exc:
        _fail(exc.message)
    except KeyboardInterrupt:
        pass


async def _up(settings: Settings, options: Any, serve: Any) -> None:
    ready = asyncio.Event()
    task = asyncio.ensure_future(serve(settings, options, ready))
    waiter = asyncio.ensure_future(ready.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if ready.is_set():
        _print_ready(settings, options)
    else:
        waiter.cancel()
    await task


def _print_ready(settings: Settings, options: Any) -> None:
    from core.tenants import ADMIN_KEY_FILE

    table = Table(title="Colony is up", show_header=False, title_justify="left")
    table.add_row(
        "API",
        f"{settings.effective_api_url}  (OpenAPI: /docs)" if options.start_api else "not started",
    )
    table.add_row("Temporal", settings.effective_temporal_address)
    table.add_row("Temporal UI", settings.effective_temporal_ui_url or "-")
    table.add_row("Postgres", "embedded" if settings.database_url is None else "DATABASE_URL")
    table.add_row("Admin key", str(settings.data_path / ADMIN_KEY_FILE))
    table.add_row("Logs", str(settings.data_path / "logs"))
    console.print(table)
    console.print(
        "Ctrl-C stops everything. In another terminal: [bold]colony demo[/] or [bold]colony doctor[/]."
    )


def _print_already_running(state: dict[str, Any], settings: Settings) -> None:
    console.print(
        f"Colony is already running on {settings.data_path} (pid {state.get('pid', '?')}); reusing it.\n"
        f"  API:         {state.get('api_url', '?')}\n"
        f"  Temporal UI: {state.get('temporal_ui_url') or '-'}"
    )


@click.command()
def doctor() -> None:
    """Check every component; exit code 0 only when all are ready."""
    from workers.doctor import diagnose

    settings = Settings()
    diagnosis = asyncio.run(diagnose(settings))
    results = diagnosis.components
    if diagnosis.stack is not None:
        _print_doctor_stack(settings, diagnosis.stack.state.pid, diagnosis.stack.differences)
    table = Table(title="colony doctor", title_justify="left")
    for column in ("component", "status", "detail", "fix"):
        table.add_column(column, overflow="fold")
    for r in results:
        mark = "[green]ready[/]" if r.ok else "[red]NOT READY[/]"
        table.add_row(r.name, mark, r.detail, r.fix)
    console.print(table)
    not_ready = [r.name for r in results if not r.ok]
    if not_ready:
        _fail(f"not ready: {', '.join(not_ready)}")
    console.print("[green]all components ready[/]")


def _print_doctor_stack(settings: Settings, pid: int, differences: list[str]) -> None:
    """Say that the checks use the running stack's configuration, and how this shell differs."""
    console.print(
        f"Colony is running on {settings.data_path} (pid {pid}): checking the configuration "
        "its workers use, as `colony up` recorded it.",
        markup=False, highlight=False,
    )  # fmt: skip
    if not differences:
        console.print("This shell's environment matches it.", markup=False, highlight=False)
        return
    console.print("This shell's environment differs from the running stack's:", markup=False)
    for sentence in differences:
        console.print(f"  - {sentence}", markup=False, highlight=False, soft_wrap=True)


@click.command()
@click.option("--lane", "lanes", multiple=True, default=("all",), show_default=True,
              help="Lane to serve (orchestration, llm, tools, memory, all); repeatable.")  # fmt: skip
def worker(lanes: Sequence[str]) -> None:
    """Run a worker process for one or more lanes (add replicas by running more)."""
    from workers import main as worker_main

    argv: list[str] = []
    for lane in lanes:
        argv += ["--lane", lane]
    try:
        worker_main.main(argv)
    except ValueError as exc:
        _fail(str(exc))


@click.command()
@click.option(
    "--keep-running/--no-keep-running",
    default=None,
    help="Keep a stack this command started running until Ctrl-C, so the Temporal UI link "
    "works (default: yes in a terminal, no otherwise).",
)
def demo(keep_running: bool | None) -> None:
    """The main job end to end on the embedded default (starts the stack when needed)."""
    setup_logging()
    settings = Settings()
    if keep_running is None:
        keep_running = sys.stdin.isatty() and sys.stdout.isatty()
    try:
        ok = asyncio.run(_demo(settings, keep_running))
    except ColonyError as exc:
        _fail(exc.message)
    if not ok:
        _fail("the demo did not do its job: see the summary above")


async def _demo(settings: Settings, keep_running: bool) -> bool:
    if await api_is_up(settings):
        console.print(f"Using the running stack at {settings.effective_api_url}")
        return await asyncio.to_thread(main_job, settings)

    from workers.stack import StackOptions, serve

    console.print("Starting the embedded stack (Temporal, Postgres, workers, API)...")
    ready, stop = asyncio.Event(), asyncio.Event()
    stack = asyncio.ensure_future(serve(settings, StackOptions(), ready, stop))
    waiter = asyncio.ensure_future(ready.wait())
    await asyncio.wait({stack, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if not ready.is_set():
        waiter.cancel()
        await stack  # raises the start-up error
        return False
    try:
        ok = await asyncio.to_thread(main_job, settings)
        if keep_running:
            console.print("The stack keeps running so the Temporal UI link works; Ctrl-C stops it.")
            await stack
        return ok
    finally:
        if not stack.done():
            stop.set()
            await stack
        console.print(
            f"Stack stopped. `colony up` brings it (and the Temporal UI at {settings.effective_temporal_ui_url}) back."
        )


def main() -> None:
    """Console-script entry point."""
    for command in (up, doctor, worker, demo):
        cli.add_command(command)
    cli()


if __name__ == "__main__":
    main()
