"""The `colony` command: the API's commands (api/cli/main.py) plus those that run the stack.

`up`, `demo`, `doctor` and `worker` start or inspect worker processes and embedded
servers, which only the workers package may import (tests/unit/test_layout.py); `replay`
needs every workflow class (workers/registry.py) and `deploy` this code's build id. They
import them when they run, so that the API's commands start quickly.
"""

import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
from rich.table import Table

from api.cli.demo import main_job
from api.cli.main import api_is_up, cli, setup_logging
from api.cli.output import console
from api.cli.output import fail as _fail
from core.errors import ColonyError
from core.settings import Settings

T = TypeVar("T")


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


@click.command()
@click.option(
    "--since",
    default="24h",
    show_default=True,
    help="Workflows started this long ago or later (30m, 24h, 7d).",
)
@click.option("--workflow-id", default=None, help="Only this workflow id.")
@click.option(
    "--type", "workflow_type", default=None, help="Only this workflow type (e.g. AgentRunWorkflow)."
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=None, help="Replay at most this many histories."
)
@click.option("--running/--no-running", default=True, show_default=True,
              help="Also replay running workflows started before the window.")  # fmt: skip
def replay(
    since: str, workflow_id: str | None, workflow_type: str | None, limit: int | None, running: bool
) -> None:
    """Replay recent workflow histories against this code; non-zero exit on any failure.

    Run it with the new release's code against the live Temporal before rolling it out
    (docs/deploy.md#upgrades-and-rollback).
    """
    from workers import replay as replays

    settings = Settings()
    try:
        window = replays.parse_since(since)
        query = replays.visibility_query(
            settings,
            since=datetime.now(UTC) - window,
            workflow_id=workflow_id,
            workflow_type=workflow_type,
            running=running,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    try:
        report = asyncio.run(_replay(settings, query, limit))
    except RuntimeError as exc:  # the client could not connect
        _fail(f"cannot reach Temporal at {settings.effective_temporal_address}: {exc}")
    for failure in report.failures:
        console.print(
            f"[red]FAILED[/] {failure.workflow_type} {failure.workflow_id} "
            f"(run {failure.run_id}): {failure.error}",
            highlight=False, soft_wrap=True,
        )  # fmt: skip
    console.print(f"replayed {report.replayed}, failed {len(report.failures)}", highlight=False)
    if not report.ok:
        _fail("some histories do not replay against this code: do not deploy it as is")


async def _replay(settings: Settings, query: str, limit: int | None) -> Any:
    from core.temporal import connect
    from workers.registry import ALL_WORKFLOWS
    from workers.replay import replay_recent

    client = await connect(settings)
    return await replay_recent(client, query, ALL_WORKFLOWS, settings=settings, limit=limit)


@click.group()
def deploy() -> None:
    """Worker versioning: which deployment version new runs start on (COLONY_DEPLOYMENT_NAME)."""


def _deployment(settings: Settings) -> str:
    if not settings.deployment_name:
        _fail(
            "worker versioning is off: set COLONY_DEPLOYMENT_NAME (docs/deploy.md#upgrades-and-rollback)"
        )
    return settings.deployment_name


@deploy.command("build-id")
def deploy_build_id() -> None:
    """Print this code's build id (COLONY_BUILD_ID, or the hash of the workflow code)."""
    from workers.versioning import build_id

    console.print(build_id(Settings()), highlight=False)


@deploy.command("status")
def deploy_status() -> None:
    """Show the current and ramping versions and every version's state."""
    from workers.versioning import build_id, describe

    settings = Settings()
    name = _deployment(settings)
    state = _run_temporal(settings, lambda client: describe(client, name))
    if state is None:
        _fail(f"no worker of deployment {name!r} has polled Temporal yet")
    table = Table(title=f"deployment {name}", title_justify="left")
    for column in ("build id", "status", "routing"):
        table.add_column(column)
    for version in state.versions:
        routing = ""
        if version.build_id == state.current_build_id:
            routing = "current"
        elif version.build_id == state.ramping_build_id:
            routing = f"ramping {state.ramping_percentage:g}%"
        table.add_row(version.build_id, version.status, routing)
    console.print(table)
    console.print(f"this code's build id: {build_id(settings)}", highlight=False)


@deploy.command("promote")
@click.option(
    "--build-id",
    "target",
    default=None,
    help="Version to make current (default: this code's build id).",
)
@click.option("--ignore-missing-task-queues", is_flag=True,
              help="Promote even if a lane of the current version has no worker of this one.")  # fmt: skip
def deploy_promote(target: str | None, ignore_missing_task_queues: bool) -> None:
    """Make a version current: new runs start on it, auto-upgrading ones move to it.

    Pinned runs stay on the version they started on. Rolling back is promoting the old
    build id again.
    """
    from workers.versioning import build_id, set_current

    settings = Settings()
    name = _deployment(settings)
    target = target or build_id(settings)
    previous = _run_temporal(
        settings,
        lambda client: set_current(
            client, name, target, ignore_missing_task_queues=ignore_missing_task_queues
        ),
    )
    console.print(
        f"{name}: current version {previous or 'unversioned'} -> {target}", highlight=False
    )


@deploy.command("ramp")
@click.argument("percent", type=click.FloatRange(0, 100))
@click.option("--build-id", "target", default=None,
              help="Version to ramp (default: this code's build id).")  # fmt: skip
def deploy_ramp(percent: float, target: str | None) -> None:
    """Start PERCENT of new runs on a version (0 stops the ramp)."""
    from workers.versioning import build_id, set_ramping

    settings = Settings()
    name = _deployment(settings)
    target = None if percent == 0 else target or build_id(settings)
    _run_temporal(settings, lambda client: set_ramping(client, name, target, percent))
    console.print(
        f"{name}: ramping {target} at {percent:g}%" if target else f"{name}: no ramping version",
        highlight=False,
    )


def _run_temporal(settings: Settings, call: Callable[[Any], Awaitable[T]]) -> T:
    from temporalio.service import RPCError

    from core.temporal import connect

    async def go() -> T:
        return await call(await connect(settings))

    try:
        return asyncio.run(go())
    except RPCError as exc:
        _fail(f"Temporal refused: {exc.message}")
    except RuntimeError as exc:  # the client could not connect
        _fail(f"cannot reach Temporal at {settings.effective_temporal_address}: {exc}")


def main() -> None:
    """Console-script entry point."""
    for command in (up, doctor, worker, demo, replay, deploy):
        cli.add_command(command)
    cli()


if __name__ == "__main__":
    main()
