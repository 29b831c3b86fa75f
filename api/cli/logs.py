"""`colony logs RUN_ID`: a run's events, Temporal history and log records on one timeline."""

import sys
from collections.abc import Iterator
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from api.cli.output import api_client, console, errors, fail, fail_api
from core.errors import ColonyError
from core.settings import Settings
from core.timeline import TimelineEntry, log_entries, merge

_STYLE = {"history": "cyan", "event": "green", "log": "yellow"}


@click.command("logs")
@click.argument("run_id")
@click.option(
    "--log-file", "log_files", multiple=True, type=click.Path(dir_okay=False, allow_dash=True),
    help="A file of JSON log lines to search for the run's records; `-` reads stdin. "
    "Repeatable.",
)  # fmt: skip
@click.option(
    "--stack-logs/--no-stack-logs", default=True, show_default=True,
    help="Search the embedded stack's log files (COLONY_DATA_DIR/logs/*.log) too.",
)  # fmt: skip
@click.option("--no-history", is_flag=True, help="Leave out the Temporal history.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per entry (NDJSON).")
def logs_command(
    run_id: str, log_files: tuple[str, ...], stack_logs: bool, no_history: bool, as_json: bool
) -> None:
    """A run's events, Temporal history and log records, in time order.

    The events and history come from the API (GET /v1/runs/RUN_ID/timeline); log records
    are the JSON lines that carry the run's id, from the stack's log files and --log-file.
    """
    try:
        with api_client() as api:
            answer = api.get(f"/v1/runs/{run_id}/timeline", params={"history": not no_history})
    except ColonyError as exc:
        fail_api(exc)
    if answer.get("history_error"):
        errors.print(f"[yellow]note: {escape(answer['history_error'])}[/]", highlight=False)
    remote = [TimelineEntry.model_validate(e) for e in answer["entries"]]
    paths = [Path(p) for p in log_files if p != "-"]
    if stack_logs:
        found = Settings().data_path / "logs"
        paths += sorted(p for p in found.glob("*.log") if p not in paths) if found.is_dir() else []
    local = [entry for path in paths for entry in _from_file(path, run_id)]
    if "-" in log_files:
        local += log_entries(sys.stdin, run_id, origin="stdin")
    entries = merge(remote, local)
    if as_json:
        for entry in entries:
            click.echo(entry.model_dump_json())
        return
    console.print(_table(run_id, entries))


def _from_file(path: Path, run_id: str) -> Iterator[TimelineEntry]:
    try:
        with path.open(encoding="utf-8", errors="replace") as lines:
            yield from log_entries(lines, run_id, origin=path.name)
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")


def _table(run_id: str, entries: list[TimelineEntry]) -> Table:
    table = Table(title=f"timeline of {run_id}", title_justify="left")
    table.add_column("time (UTC)", no_wrap=True)
    table.add_column("source")
    table.add_column("kind")
    table.add_column("what", overflow="fold")
    for e in entries:
        style = _STYLE[e.source]
        where = f" ({e.data['origin']})" if e.source == "log" and "origin" in e.data else ""
        table.add_row(
            f"{e.time:%H:%M:%S.%f}"[:-3], f"[{style}]{e.source}{escape(where)}[/]",
            escape(e.kind), escape(e.summary),
        )  # fmt: skip
    return table
