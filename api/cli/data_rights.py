"""`colony runs delete`, `colony end-users delete|export`, `colony export`: data rights."""

import sys
from typing import Any

import click

from api.cli.output import api_client, console, fail_api
from core.errors import ColonyError


def _deleted(body: dict[str, Any]) -> None:
    console.print(
        f"deleted {body['runs']} run(s), {body['swarms']} swarm(s), {body['memories']} "
        f"memories, {body['eval_cases']} eval case(s), {body['workflows']} Temporal history(ies)",
        highlight=False,
    )
    for run_id in body["run_ids"]:
        console.print(f"  {run_id}", highlight=False)


@click.group("runs")
def runs_group() -> None:
    """Delete runs (data-subject requests)."""


@runs_group.command("delete")
@click.argument("run_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def delete_run(run_id: str, yes: bool) -> None:
    """Delete an ended run with its messages, child runs, memories and Temporal history."""
    _delete(f"/v1/runs/{run_id}", f"Delete run {run_id} and everything derived from it?", yes)


@click.group("end-users")
def end_users_group() -> None:
    """Export or delete the runs made for an end user (`end_user` of `POST /v1/runs`)."""


@end_users_group.command("delete")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def delete_end_user(name: str, yes: bool) -> None:
    """Delete every run made for end user NAME, with what derives from them (admin key)."""
    _delete(f"/v1/end-users/{name}", f"Delete every run of end user {name!r}?", yes)


def _delete(path: str, question: str, yes: bool) -> None:
    """Confirm (unless `yes`), send the DELETE and print what went."""
    if not yes:
        click.confirm(question, abort=True)
    try:
        with api_client() as api:
            body = api.request("DELETE", path)
    except ColonyError as exc:
        fail_api(exc)
    _deleted(body)


@end_users_group.command("export")
@click.argument("name")
def export_end_user(name: str) -> None:
    """Write end user NAME's runs, messages, events and memories to stdout (NDJSON)."""
    _download(f"/v1/end-users/{name}/export")


@click.command("export")
def export_command() -> None:
    """Write everything the tenant has to stdout as NDJSON (admin key; no secret values)."""
    _download("/v1/export")


def _download(path: str) -> None:
    try:
        with api_client() as api:
            for chunk in api.download(path):
                sys.stdout.buffer.write(chunk)
    except ColonyError as exc:
        fail_api(exc)
    sys.stdout.buffer.flush()
