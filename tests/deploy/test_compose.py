"""docker-compose.yaml is a valid Compose file (the Compose Specification's JSON schema,
vendored in tests/deploy/schemas/) and agrees with the code: dependencies, commands,
environment variables and lanes. No Docker engine is needed."""

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.colony_config import (
    LANES,
    ROOT,
    parse_colony_args,
    unknown_env,
    worker_lanes,
)

COMPOSE_FILE = ROOT / "docker-compose.yaml"
SCHEMA_FILE = Path(__file__).parent / "schemas" / "compose-spec.json"

# Variables the file requires (`${VAR:?...}`), as an operator's .env would set them.
REQUIRED_ENV = {"COLONY_PAYLOAD_KEYS": "k1:" + "A" * 43 + "="}

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


class MissingVariableError(Exception):
    """A `${VAR:?message}` whose variable is unset."""


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's variable substitution over every string value (not keys), as
    `docker compose config` does it: `$$`, `$VAR`, `${VAR}`, `${VAR:-default}`,
    `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`, `${VAR:+alt}`, `${VAR+alt}`."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["bare"]
        op, arg = match["op"] or "", match["arg"] or ""
        present = name in env
        filled = present and env[name] != ""
        set_ = filled if op.startswith(":") else present
        if op.endswith("-"):
            return env[name] if set_ else arg
        if op.endswith("?"):
            if not set_:
                raise MissingVariableError(f"{name}: {arg}")
            return env[name]
        if op.endswith("+"):
            return arg if set_ else ""
        return env.get(name, "")

    return _VARIABLE.sub(substitute, value)


def load_compose(env: Mapping[str, str] = REQUIRED_ENV) -> dict[str, Any]:
    """docker-compose.yaml with YAML merge keys resolved and variables substituted."""
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    loaded = interpolate(raw, env)
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


def is_colony(service: Mapping[str, Any]) -> bool:
    """Services that run the Colony image (API, worker lanes, migrate)."""
    build = service.get("build") or {}
    return service.get("image") == "colony:local" or build.get("dockerfile") == "deploy/Dockerfile"


def env_names(environment: Any) -> set[str]:
    if isinstance(environment, dict):
        return set(environment)
    return {str(entry).split("=", 1)[0] for entry in environment or ()}


def test_the_vendored_schema_is_a_valid_draft_2020_12_schema() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    errors = [
        f"{'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
        for error in validator.iter_errors(compose)
    ]
    assert errors == []


def test_the_schema_check_catches_a_wrong_key() -> None:
    """The validator really rejects a mistake: a typo'd service key and a bad type."""
    broken = load_compose()
    broken["services"]["api"]["helthcheck"] = broken["services"]["api"].pop("healthcheck")
    broken["services"]["worker-llm"]["stop_grace_period"] = ["90s"]
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    paths = {"/".join(map(str, error.absolute_path)) for error in validator.iter_errors(broken)}
    assert {"services/api", "services/worker-llm/stop_grace_period"} <= paths


def test_the_payload_key_is_required() -> None:
    with pytest.raises(MissingVariableError, match="COLONY_PAYLOAD_KEYS"):
        load_compose(env={})


def test_depends_on_targets_exist_and_can_meet_their_condition(
    services: dict[str, dict[str, Any]],
) -> None:
    problems = []
    for name, service in services.items():
        depends_on = service.get("depends_on") or {}
        if isinstance(depends_on, list):
            depends_on = {target: {"condition": "service_started"} for target in depends_on}
        for target, spec in depends_on.items():
            if target not in services:
                problems.append(f"{name} depends on missing service {target}")
                continue
            condition = spec.get("condition", "service_started")
            if condition == "service_healthy" and "healthcheck" not in services[target]:
                problems.append(f"{name} waits for {target} healthy; it has no healthcheck")
            if condition == "service_completed_successfully" and services[target].get(
                "restart"
            ) in ("always", "unless-stopped"):
                problems.append(f"{name} waits for {target} to exit; it restarts forever")
    assert problems == []


def test_volumes_configs_and_bind_mounts_exist(compose: dict[str, Any]) -> None:
    declared_volumes = set(compose.get("volumes") or {})
    declared_configs = set(compose.get("configs") or {})
    problems = []
    for name, service in compose["services"].items():
        for mount in service.get("volumes") or ():
            source = mount.split(":", 1)[0] if isinstance(mount, str) else mount.get("source")
            if source.startswith(("./", "../", "/")):
                if not (ROOT / source).exists():
                    problems.append(f"{name} mounts missing file {source}")
            elif source not in declared_volumes:
                problems.append(f"{name} mounts undeclared volume {source}")
        for config in service.get("configs") or ():
            source = config if isinstance(config, str) else config["source"]
            if source not in declared_configs:
                problems.append(f"{name} uses undeclared config {source}")
    assert problems == []


def test_colony_services_build_one_image_and_run_real_commands(
    services: dict[str, dict[str, Any]],
) -> None:
    colony = {name: s for name, s in services.items() if is_colony(s)}
    assert {"migrate", "api"} <= set(colony)
    for name, service in colony.items():
        build = service["build"]
        assert (ROOT / build["context"] / build["dockerfile"]).is_file(), name
        parse_colony_args(service["command"])  # raises where `colony` would refuse them


def test_colony_services_get_only_variables_colony_reads(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        if is_colony(service):
            assert unknown_env(env_names(service.get("environment"))) == [], name


def test_one_worker_service_per_lane(services: dict[str, dict[str, Any]]) -> None:
    lanes: dict[str, str] = {}
    for name, service in services.items():
        if not is_colony(service):
            continue
        served = worker_lanes(service["command"])
        if served is None:
            continue
        assert len(served) == 1, f"{name} serves {served}: one lane per service scales alone"
        assert name == f"worker-{served[0]}"
        lanes[served[0]] = name
    assert set(lanes) == LANES
