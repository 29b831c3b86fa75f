"""MCP server registrations and tool names (core/tools/mcp.py): no servers needed."""

import json
import re

import pytest
from pydantic import ValidationError

from core.errors import ConfigError, NotFound
from core.tools.mcp import (
    HttpServerConfig,
    SecretRef,
    StdioServerConfig,
    config_fingerprint,
    is_qualified,
    parse_qualified,
    parse_server_config,
    provider_name_map,
    provider_safe_name,
    qualified_name,
    secret_references,
)

SAFE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _error(data: dict[str, object]) -> str:
    with pytest.raises(ValidationError) as info:
        parse_server_config(data)
    return str(info.value)


def test_stdio_and_http_shapes_parse() -> None:
    stdio = parse_server_config(
        {
            "name": "time",
            "transport": "stdio",
            "command": "mcp-server-time",
            "args": ["--local-timezone", "UTC"],
            "env": {"TZ": "UTC", "API_TOKEN": {"secret": "TIME_TOKEN"}},
        }
    )
    assert isinstance(stdio, StdioServerConfig)
    assert stdio.args == ("--local-timezone", "UTC")
    assert stdio.env["API_TOKEN"] == SecretRef(secret="TIME_TOKEN")

    http = parse_server_config(
        json.dumps(
            {
                "name": "docs-1",
                "transport": "http",
                "url": "https://mcp.example.com/mcp?x=1",
                "headers": {"Authorization": {"secret": "DOCS_AUTH"}, "X-Team": "blue"},
            }
        )
    )
    assert isinstance(http, HttpServerConfig)
    assert secret_references(http) == {"DOCS_AUTH"}
    # The API's spelling of the transport is accepted too.
    alias = parse_server_config({"name": "d", "transport": "streamable_http", "url": "http://h/"})
    assert isinstance(alias, HttpServerConfig)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"name": "Time", "transport": "stdio", "command": "x"}, "must be 1-40 characters of a-z"),
        ({"name": "-x", "transport": "stdio", "command": "x"}, "starting with a letter or digit"),
        ({"name": "a" * 41, "transport": "stdio", "command": "x"}, "1-40 characters"),
        ({"name": "t", "transport": "stdio", "command": "  "}, "command must not be empty"),
        ({"name": "t", "transport": "stdio", "command": ""}, "command must not be empty"),
        ({"name": "t", "transport": "stdio"}, "command"),
        ({"name": "t", "transport": "ftp", "command": "x"}, "'stdio', 'http'"),
        ({"name": "t", "command": "x"}, "transport"),
        ({"name": "t", "transport": "stdio", "command": "x", "url": "http://h"}, "url"),
        ({"name": "t", "transport": "stdio", "command": "x", "env": {"1X": "v"}}, "env name '1X'"),
        (
            {"name": "t", "transport": "stdio", "command": "x", "env": {"GITHUB_TOKEN": "ghp_1"}},
            "looks like a credential",
        ),
        (
            {"name": "t", "transport": "stdio", "command": "x", "env": {"A": {"secret": "1 bad"}}},
            "references secret '1 bad'",
        ),
        (
            {"name": "t", "transport": "stdio", "command": "x", "env": {"A": {"name": "S"}}},
            'must be a string or {"secret": "NAME"}',
        ),
        ({"name": "t", "transport": "http", "url": "ftp://h/mcp"}, "http:// or https://"),
        ({"name": "t", "transport": "http", "url": "localhost:8000"}, "http:// or https://"),
        ({"name": "t", "transport": "http", "url": "http:///mcp"}, "has no host"),
        (
            {"name": "t", "transport": "http", "url": "https://u:p@h/mcp"},
            "must not carry credentials",
        ),
        ({"name": "t", "transport": "http", "url": "http://h:99999/"}, "not a valid URL"),
        (
            {
                "name": "t",
                "transport": "http",
                "url": "http://h/",
                "headers": {"Authorization": "Bearer x"},
            },
            "looks like a credential",
        ),
        (
            {
                "name": "t",
                "transport": "http",
                "url": "http://h/",
                "headers": {"Mcp-Session-Id": "1"},
            },
            "set by the MCP client",
        ),
        (
            {"name": "t", "transport": "http", "url": "http://h/", "headers": {"Bad Name": "1"}},
            "not a valid HTTP header name",
        ),
        (
            {
                "name": "t",
                "transport": "http",
                "url": "http://h/",
                "headers": {"X-A": "1\r\nX-B: 2"},
            },
            "line break",
        ),
    ],
)
def test_invalid_registrations_say_what_is_wrong(data: dict[str, object], expected: str) -> None:
    assert expected in _error(data)


async def test_secrets_are_references_only_and_resolved_through_the_callable() -> None:
    value = "tok-5ecr3t-value"
    config = parse_server_config(
        {
            "name": "svc",
            "transport": "stdio",
            "command": "svc",
            "env": {"SERVICE_TOKEN": {"secret": "SVC_TOKEN"}, "MODE": "fast"},
        }
    )
    assert isinstance(config, StdioServerConfig)
    asked: list[str] = []

    def resolve(name: str) -> str:
        asked.append(name)
        return {"SVC_TOKEN": value}[name]

    assert await config.resolved_env(resolve) == {"SERVICE_TOKEN": value, "MODE": "fast"}
    assert asked == ["SVC_TOKEN"]
    for text in (
        repr(config),
        str(config),
        config.model_dump_json(),
        json.dumps(config.model_dump()),
    ):
        assert value not in text
        assert "SVC_TOKEN" in text
    assert config_fingerprint(config) == config_fingerprint(
        parse_server_config(config.model_dump())
    )

    with pytest.raises(ConfigError) as missing:
        await config.resolved_env(dict[str, str]().__getitem__)
    assert (
        "env SERVICE_TOKEN references secret 'SVC_TOKEN', which is not set" in missing.value.message
    )
    with pytest.raises(ConfigError, match="no secret store is configured"):
        await config.resolved_env(None)


async def test_async_resolvers_and_store_errors() -> None:
    config = parse_server_config(
        {"name": "s", "transport": "stdio", "command": "s", "env": {"A": {"secret": "S"}}}
    )
    assert isinstance(config, StdioServerConfig)

    async def resolve(name: str) -> str:
        return f"value-of-{name}"

    assert await config.resolved_env(resolve) == {"A": "value-of-S"}

    def not_found(name: str) -> str:
        raise NotFound(f"secret {name!r} not found")

    with pytest.raises(ConfigError, match="references secret 'S', which is not set"):
        await config.resolved_env(not_found)

    def undecryptable(name: str) -> str:
        raise ConfigError(f"secret {name!r} cannot be decrypted with this process's secrets key")

    with pytest.raises(ConfigError, match=r"secret 'S' for env A cannot be read: .*decrypted"):
        await config.resolved_env(undecryptable)


async def test_header_secret_must_be_a_valid_header_value() -> None:
    config = parse_server_config(
        {
            "name": "h",
            "transport": "http",
            "url": "http://h/",
            "headers": {"X-Key": {"secret": "K"}},
        }
    )
    assert isinstance(config, HttpServerConfig)
    assert await config.resolved_headers(lambda _: "Bearer abc") == {"X-Key": "Bearer abc"}
    with pytest.raises(ConfigError, match="line break") as info:
        await config.resolved_headers(lambda _: "abc\r\nInjected: 1")
    assert "abc" not in info.value.message


def test_qualified_names_round_trip() -> None:
    assert qualified_name("time", "get_current_time") == "mcp:time/get_current_time"
    assert parse_qualified("mcp:time/get_current_time") == ("time", "get_current_time")
    # Tool names may hold '/' and '.': only the first '/' separates.
    assert parse_qualified("mcp:fs/dir/read.file") == ("fs", "dir/read.file")
    for bad in ("time/get", "mcp:time", "mcp:Time/x", "mcp:/x", "mcp:t/", "mcp:t/a b"):
        assert not is_qualified(bad)
        with pytest.raises(ValueError):
            parse_qualified(bad)
    with pytest.raises(ValueError, match="1-128"):
        qualified_name("t", "x" * 129)


def test_provider_names_are_readable_when_they_can_be() -> None:
    assert provider_safe_name("mcp:time/get_current_time") == "mcp__time__get_current_time"
    assert provider_safe_name("mcp:git-local/git_status") == "mcp__git-local__git_status"
    assert provider_safe_name("mcp:my_srv/x") == "mcp__my_srv__x"


@pytest.mark.parametrize(
    "qualified",
    [
        "mcp:fs/read.file",  # '.' is not accepted by providers
        "mcp:fs/dir/read",
        "mcp:a__b/c",  # would read as server 'a', tool 'b__c'
        "mcp:a_/tool",  # would read as server 'a', tool '_tool'
        "mcp:" + "s" * 40 + "/" + "t" * 40,  # too long
        "mcp:t/" + "ü" * 10,
    ],
)
def test_provider_names_fall_back_to_a_hashed_form(qualified: str) -> None:
    name = provider_safe_name(qualified)
    assert SAFE.fullmatch(name), name
    assert name.startswith("mcp_") and not name.startswith("mcp__")
    assert re.search(r"_[0-9a-f]{10}$", name)
    assert provider_safe_name(qualified) == name  # deterministic


def test_provider_names_are_collision_free_and_reversible() -> None:
    names = [
        "mcp:a/b__c",
        "mcp:a__b/c",
        "mcp:a_/_x",
        "mcp:a/__x",
        "mcp:fs/read.file",
        "mcp:fs/read_file",
        "mcp:fs/read-file",
        "mcp:" + "s" * 40 + "/" + "t" * 60 + "1",
        "mcp:" + "s" * 40 + "/" + "t" * 60 + "2",
        *(f"mcp:srv{i}/tool{j}" for i in range(20) for j in range(20)),
    ]
    mapping = provider_name_map(names)
    assert len(mapping) == len(names)
    assert sorted(mapping.values()) == sorted(names)
    assert all(SAFE.fullmatch(safe) for safe in mapping)
    for safe, qualified in mapping.items():
        assert provider_safe_name(qualified) == safe
    # A readable name decodes at its first '__' after the prefix.
    for safe, qualified in mapping.items():
        if safe.startswith("mcp__"):
            server, tool = safe.removeprefix("mcp__").split("__", 1)
            assert qualified == f"mcp:{server}/{tool}"
    assert provider_name_map(["mcp:a/b", "mcp:a/b"]) == {"mcp__a__b": "mcp:a/b"}
