"""What the compose file and the Kubernetes manifests must agree on with the code: the
environment variables Colony reads, the CLI commands the containers run, the lanes."""

from collections.abc import Iterable, Sequence
from pathlib import Path

import click
from pydantic import AliasChoices

from api.cli.main import cli
from core.queues import TaskQueue
from core.settings import Settings
from workers import cli as workers_cli

ROOT = Path(__file__).resolve().parents[2]
LANES = {queue.lane for queue in TaskQueue}

# Variables a Colony container may get that are not Settings fields, and who reads them.
LIBRARY_PREFIXES = ("OTEL_",)  # the OpenTelemetry SDK (service name, resource, exporters)


def settings_env_names() -> set[str]:
    """Every environment variable a Settings field reads."""
    names: set[str] = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, str):
            names.add(alias)
        elif isinstance(alias, AliasChoices):
            names.update(choice for choice in alias.choices if isinstance(choice, str))
    return names


def unknown_env(names: Iterable[str], also: Iterable[str] = ()) -> list[str]:
    """The names Colony does not read: not a Settings field, not an OpenTelemetry variable,
    not one of `also` (variables a non-Colony container of the same config reads)."""
    known = settings_env_names() | set(also)
    return sorted(n for n in names if n not in known and not n.startswith(LIBRARY_PREFIXES))


def colony_commands() -> dict[str, click.Command]:
    """The `colony` CLI's top-level commands, as workers.cli.main assembles them."""
    commands = dict(cli.commands)
    for command in (workers_cli.up, workers_cli.doctor, workers_cli.worker, workers_cli.demo):
        assert command.name
        commands[command.name] = command
    return commands


def parse_colony_args(args: Sequence[str]) -> tuple[str, dict[str, object]]:
    """Parse a container's arguments to `colony` as the CLI would, without running it.

    Returns the command name and its parsed parameters; raises click.UsageError (or
    AssertionError for an unknown command) where the container would fail at start.
    """
    assert args, "no command: the image's CMD would run"
    name, *rest = args
    command = colony_commands().get(name)
    assert command is not None, f"`colony {name}` is not a command"
    with command.make_context(f"colony {name}", list(rest)) as ctx:
        return name, dict(ctx.params)


def worker_lanes(args: Sequence[str]) -> list[str] | None:
    """The lanes a `colony worker ...` command serves (None for other commands)."""
    name, params = parse_colony_args(args)
    if name != "worker":
        return None
    lanes = params["lanes"]
    assert isinstance(lanes, tuple)
    return [str(lane) for lane in lanes]
