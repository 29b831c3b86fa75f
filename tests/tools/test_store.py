"""The tool registry in Postgres: tools, stats, secrets, egress rules, MCP servers."""

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from core import tenants
from core.db import Pool
from core.errors import ConfigError, Conflict, InvalidInput, NotFound
from core.tools import egress as tool_egress
from core.tools import mcp_servers
from core.tools import secrets as tool_secrets
from core.tools import store as tools
from core.tools.names import RESERVED_TOOL_NAMES
from core.tools.policy import EgressRule, ToolPolicyDefaults
from core.tools.secrets import SecretCipher
from core.tools.spec import ToolSpec
from core.tools.store import percentile
from tests.conftest import make_settings

CIPHER = SecretCipher(os.urandom(32))


@pytest.fixture(scope="module", autouse=True)
async def _tenants(pool: Pool) -> None:
    async with pool.connection() as conn:
        for tenant in ("acme", "other"):
            await tenants.ensure_tenant(conn, tenant, tenant.title())


def http_spec(url: str = "https://api.example.com/v1/cities/{city}", **changes: Any) -> ToolSpec:
    values: dict[str, Any] = {
        "kind": "http",
        "description": "Weather for a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "units": {"type": "string"}},
            "required": ["city"],
        },
        "config": {"url_template": url, "headers": {"X-Key": {"secret": "WEATHER_KEY"}}},
        "timeout_s": 5,
        "policy": {"mode": "allow", "rate_limit_per_minute": 60},
    }
    values.update(changes)
    return ToolSpec.model_validate(values)


# -- tools ---------------------------------------------------------------------------


async def test_register_versions_and_identical_reregistration(pool: Pool) -> None:
    async with pool.connection() as conn:
        first, created = await tools.register_tool(conn, "acme", "weather", http_spec())
        assert created and first.version == 1 and first.kind == "http"
        assert first.policy == ToolPolicyDefaults(rate_limit_per_minute=60)
        assert first.http().headers["X-Key"].secret == "WEATHER_KEY"
        same, created = await tools.register_tool(conn, "acme", "weather", http_spec())
        assert not created and same.version == 1
        changed, created = await tools.register_tool(
            conn, "acme", "weather", http_spec(description="Weather, v2")
        )
        assert created and changed.version == 2
        assert (await tools.get_tool(conn, "acme", "weather")).description == "Weather, v2"
        assert (await tools.get_tool(conn, "acme", "weather", 1)).description == (
            "Weather for a city"
        )
        assert [t.version for t in await tools.list_tool_versions(conn, "acme", "weather")] == [
            2,
            1,
        ]
        listed = await tools.list_tools(conn, "acme")
        assert [(t.name, t.version) for t in listed] == [("weather", 2)]
        assert await tools.list_tools(conn, "acme", kind="mcp") == []
        found = await tools.get_latest_tools(conn, "acme", ["weather", "nope", "calculator"])
        assert list(found) == ["weather"] and found["weather"].version == 2


async def test_concurrent_registrations_get_consecutive_versions(pool: Pool) -> None:
    async def register(i: int) -> int:
        async with pool.connection() as conn:
            tool, _ = await tools.register_tool(
                conn, "acme", "racer", http_spec(description=f"version {i}")
            )
            return tool.version

    versions = await asyncio.gather(*(register(i) for i in range(5)))
    assert sorted(versions) == [1, 2, 3, 4, 5]


async def test_tools_are_tenant_isolated(pool: Pool) -> None:
    async with pool.connection() as conn:
        await tools.register_tool(conn, "acme", "private_api", http_spec())
        with pytest.raises(NotFound):
            await tools.get_tool(conn, "other", "private_api")
        assert "private_api" not in [t.name for t in await tools.list_tools(conn, "other")]
        assert await tools.get_latest_tools(conn, "other", ["private_api"]) == {}


@pytest.mark.parametrize("name", sorted(RESERVED_TOOL_NAMES))
async def test_builtin_names_are_reserved(pool: Pool, name: str) -> None:
    async with pool.connection() as conn:
        with pytest.raises(Conflict, match="built-in"):
            await tools.register_tool(conn, "acme", name, http_spec())


@pytest.mark.parametrize(
    ("name", "kind"),
    [("1bad", "http"), ("has space", "http"), ("mcp:github/x", "http"), ("github/x", "mcp")],
)
async def test_malformed_names_are_refused(pool: Pool, name: str, kind: str) -> None:
    spec = http_spec() if kind == "http" else ToolSpec(
        kind="mcp", description="d", input_schema={"type": "object"}
    )  # fmt: skip
    async with pool.connection() as conn:
        with pytest.raises(InvalidInput):
            await tools.register_tool(conn, "acme", name, spec)


async def test_mcp_tool_names_with_colon_and_slash(pool: Pool) -> None:
    spec = ToolSpec(
        kind="mcp",
        description="Create an issue",
        input_schema={"type": "object", "properties": {"title": {"type": "string"}}},
        config={"server": "github", "tool": "create_issue"},
        side_effects=True,
    )
    async with pool.connection() as conn:
        tool, _ = await tools.register_tool(conn, "acme", "mcp:github/create_issue", spec)
        assert (await tools.get_tool(conn, "acme", "mcp:github/create_issue")) == tool


async def test_enable_and_disable(pool: Pool) -> None:
    async with pool.connection() as conn:
        await tools.register_tool(conn, "acme", "toggle", http_spec())
        await tools.set_tool_enabled(conn, "acme", "toggle", False)
        assert not (await tools.get_tool(conn, "acme", "toggle")).enabled
        with pytest.raises(NotFound):
            await tools.set_tool_enabled(conn, "other", "toggle", True)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"input_schema": {"type": "array"}}, '"type": "object"'),
        ({"input_schema": {"type": "object", "properties": {"a": {"type": 5}}}}, "not a valid"),
        ({"output_schema": {"type": "nonsense"}}, "output_schema is not a valid"),
        ({"config": {"url_template": "ftp://x.com/"}}, "http:// or https://"),
        ({"config": {"url_template": "https://{host}/x"}}, "not in the host"),
        ({"config": {"url_template": "https://a.com/{nope}"}}, "not properties"),
        ({"config": {"url_template": "https://a.com/{units}"}}, "'required'"),
        ({"config": {"url_template": "https://u@a.com/{city}"}}, "user info"),
        ({"config": {"url_template": "https://a.com/{city"}}, "unbalanced"),
        (
            {"config": {"url_template": "https://a.com/", "headers": {"Authorization": {"value": "Bearer x"}}}},
            "looks like a credential",
        ),
        (
            {"config": {"url_template": "https://a.com/", "headers": {"Host": {"value": "x"}}}},
            "set by the HTTP client",
        ),
        (
            {"config": {"url_template": "https://a.com/", "headers": {"X": {"secret": "a", "value": "b"}}}},
            "either",
        ),
        ({"config": {"url_template": "https://a.com/", "extra": 1}}, "Extra inputs"),
    ],
)  # fmt: skip
def test_invalid_specs_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        http_spec(**changes)


# -- stats ---------------------------------------------------------------------------


def test_percentile_interpolates_like_numpy() -> None:
    assert percentile([], 0.5) is None
    assert percentile([7.0], 0.95) == 7.0
    samples = [float(x) for x in range(1, 101)]
    assert percentile(samples, 0.5) == pytest.approx(50.5)
    assert percentile(samples, 0.95) == pytest.approx(95.05)
    assert percentile([3.0, 1.0, 2.0], 0.0) == 1.0 and percentile([3.0, 1.0, 2.0], 1.0) == 3.0


async def test_stats_count_calls_and_compute_p50_p95(pool: Pool) -> None:
    async with pool.connection() as conn:
        for latency in range(100, 0, -1):  # order must not matter
            await tools.record_tool_call_stats(conn, "acme", "calc", latency % 10 != 0, latency)
        stats = (await tools.tool_stats(conn, "acme", ["calc"]))["calc"]
    assert (stats.calls, stats.successes, stats.failures) == (100, 90, 10)
    assert stats.success_rate == pytest.approx(0.9)
    assert stats.mean_ms == pytest.approx(50.5)
    assert stats.p50_ms == pytest.approx(50.5)
    assert stats.p95_ms == pytest.approx(95.05)
    assert stats.window == 100 and stats.last_called_at is not None


async def test_stats_keep_a_window_of_recent_latencies(pool: Pool) -> None:
    total = tools.LATENCY_WINDOW + 44
    async with pool.connection() as conn:
        for latency in range(1, total + 1):
            await tools.record_tool_call_stats(conn, "acme", "windowed", True, latency)
        stats = (await tools.tool_stats(conn, "acme", ["windowed"]))["windowed"]
    recent = [float(x) for x in range(total - tools.LATENCY_WINDOW + 1, total + 1)]
    assert stats.calls == total and stats.window == tools.LATENCY_WINDOW
    assert stats.p50_ms == pytest.approx(percentile(recent, 0.5))
    assert stats.p95_ms == pytest.approx(percentile(recent, 0.95))


async def test_concurrent_stat_updates_are_not_lost(pool: Pool) -> None:
    async def record(i: int) -> None:
        async with pool.connection() as conn:
            await tools.record_tool_call_stats(conn, "acme", "busy", i % 2 == 0, 1.5)

    await asyncio.gather(*(record(i) for i in range(20)))
    async with pool.connection() as conn:
        stats = (await tools.tool_stats(conn, "acme"))["busy"]
        assert (stats.calls, stats.successes, stats.window) == (20, 10, 20)
        assert "busy" not in await tools.tool_stats(conn, "other")


# -- secrets -------------------------------------------------------------------------


async def test_secret_lifecycle_and_encryption_at_rest(pool: Pool) -> None:
    async with pool.connection() as conn:
        info, created = await tool_secrets.put_secret(
            conn, CIPHER, "acme", "WEATHER_KEY", "s3cr3t-v1"
        )
        assert created and info.name == "WEATHER_KEY"
        _, created = await tool_secrets.put_secret(conn, CIPHER, "acme", "WEATHER_KEY", "s3cr3t-v2")
        assert not created
        assert (
            await tool_secrets.get_secret_value(conn, CIPHER, "acme", "WEATHER_KEY") == "s3cr3t-v2"
        )
        cur = await conn.execute(
            "SELECT ciphertext FROM secrets WHERE tenant_id = 'acme' AND name = 'WEATHER_KEY'"
        )
        row = await cur.fetchone()
        assert row is not None and b"s3cr3t" not in bytes(row["ciphertext"])
        assert [s.name for s in await tool_secrets.list_secret_names(conn, "acme")] == [
            "WEATHER_KEY"
        ]
        assert await tool_secrets.missing_secrets(conn, "acme", ["WEATHER_KEY", "NOPE"]) == ["NOPE"]
        await tool_secrets.delete_secret(conn, "acme", "WEATHER_KEY")
        with pytest.raises(NotFound):
            await tool_secrets.get_secret_value(conn, CIPHER, "acme", "WEATHER_KEY")
        with pytest.raises(NotFound):
            await tool_secrets.delete_secret(conn, "acme", "WEATHER_KEY")


async def test_secrets_are_tenant_isolated_and_bound_to_their_row(pool: Pool) -> None:
    async with pool.connection() as conn:
        await tool_secrets.put_secret(conn, CIPHER, "acme", "TOKEN", "acme-token")
        with pytest.raises(NotFound):
            await tool_secrets.get_secret_value(conn, CIPHER, "other", "TOKEN")
        assert await tool_secrets.list_secret_names(conn, "other") == []
        # A ciphertext copied to another tenant's row does not decrypt there.
        await conn.execute(
            "INSERT INTO secrets (tenant_id, name, ciphertext, key_id)"
            " SELECT 'other', name, ciphertext, key_id FROM secrets"
            " WHERE tenant_id = 'acme' AND name = 'TOKEN'"
        )
        with pytest.raises(ConfigError, match="cannot be decrypted"):
            await tool_secrets.get_secret_value(conn, CIPHER, "other", "TOKEN")
        with pytest.raises(ConfigError, match="COLONY_SECRETS_KEY"):
            await tool_secrets.get_secret_value(conn, SecretCipher(os.urandom(32)), "acme", "TOKEN")


async def test_the_secrets_key_rotates_without_losing_a_secret(pool: Pool) -> None:
    old, new = SecretCipher.generate_key(), SecretCipher.generate_key()
    before = SecretCipher.from_text(old)
    async with pool.connection() as conn:
        await tool_secrets.put_secret(conn, before, "acme", "TOKEN", "acme-token")
        await tool_secrets.put_secret(conn, before, "other", "TOKEN", "other-token")
        during = SecretCipher.from_text(new, previous=[old])
        # Old rows still decrypt while the new key is current ...
        assert await tool_secrets.get_secret_value(conn, during, "acme", "TOKEN") == "acme-token"
        # ... until every row is re-encrypted; then the old key can go.
        assert await tool_secrets.rotate_secrets(conn, during) == 2
        assert await tool_secrets.rotate_secrets(conn, during) == 0
        after = SecretCipher.from_text(new)
        assert await tool_secrets.get_secret_value(conn, after, "other", "TOKEN") == "other-token"
        with pytest.raises(ConfigError, match="COLONY_SECRETS_PREVIOUS_KEYS"):
            await tool_secrets.get_secret_value(conn, before, "acme", "TOKEN")


@pytest.mark.parametrize(("name", "value"), [("bad name", "v"), ("OK", ""), ("9x", "v")])
async def test_bad_secrets_are_refused(pool: Pool, name: str, value: str) -> None:
    async with pool.connection() as conn:
        with pytest.raises(InvalidInput):
            await tool_secrets.put_secret(conn, CIPHER, "acme", name, value)


def test_cipher_key_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    settings = make_settings(COLONY_DATA_DIR=str(tmp_path))
    first = tool_secrets.cipher_from_settings(settings)
    second = tool_secrets.cipher_from_settings(settings)
    assert first.key_id == second.key_id
    key_file = tmp_path / tool_secrets.SECRETS_KEY_FILE
    assert key_file.stat().st_mode & 0o777 == 0o600
    blob = first.encrypt("t", "n", "value")
    assert second.decrypt("t", "n", blob) == "value"
    with pytest.raises(ConfigError):
        second.decrypt("t", "other-name", blob)
    with pytest.raises(ConfigError, match="32 bytes"):
        SecretCipher(b"short")
    with pytest.raises(ConfigError, match="base64"):
        SecretCipher.from_text("not base64 !!")


# -- egress --------------------------------------------------------------------------


async def test_egress_rules_replace_add_delete(pool: Pool) -> None:
    rules = [
        EgressRule(pattern="api.example.com"),
        EgressRule(pattern="*.example.org", port=8443),
        EgressRule(pattern="API.example.com"),  # duplicate after normalisation
    ]
    async with pool.connection() as conn:
        stored = await tool_egress.replace_egress_rules(conn, "acme", rules)
        assert stored == [
            EgressRule(pattern="*.example.org", port=8443),
            EgressRule(pattern="api.example.com"),
        ]
        assert await tool_egress.get_egress_rules(conn, "other") == []
        assert await tool_egress.add_egress_rule(conn, "acme", EgressRule(pattern="b.com"))
        assert not await tool_egress.add_egress_rule(conn, "acme", EgressRule(pattern="b.com"))
        await tool_egress.delete_egress_rule(conn, "acme", EgressRule(pattern="b.com"))
        with pytest.raises(NotFound):
            await tool_egress.delete_egress_rule(conn, "acme", EgressRule(pattern="b.com"))
        assert await tool_egress.replace_egress_rules(conn, "acme", []) == []


# -- MCP servers ---------------------------------------------------------------------


async def test_mcp_server_crud(pool: Pool) -> None:
    config = {
        "url": "https://mcp.example.com/mcp",
        "headers": {"Authorization": {"secret": "GITHUB_TOKEN"}},
    }
    async with pool.connection() as conn:
        server, created = await mcp_servers.upsert_mcp_server(
            conn, "acme", "github", "streamable_http", config
        )
        assert created and server.status == "pending" and server.config == config
        await mcp_servers.set_mcp_server_status(conn, "acme", "github", "error", "boom" * 1000)
        failed = await mcp_servers.get_mcp_server(conn, "acme", "github")
        assert failed.status == "error" and len(failed.last_error or "") == 2000
        again, created = await mcp_servers.upsert_mcp_server(
            conn, "acme", "github", "streamable_http", config
        )
        assert not created and again.status == "pending" and again.last_error is None
        assert [s.name for s in await mcp_servers.list_mcp_servers(conn, "acme")] == ["github"]
        assert await mcp_servers.list_mcp_servers(conn, "other") == []
        with pytest.raises(NotFound):
            await mcp_servers.get_mcp_server(conn, "other", "github")
        await mcp_servers.delete_mcp_server(conn, "acme", "github")
        with pytest.raises(NotFound):
            await mcp_servers.delete_mcp_server(conn, "acme", "github")


async def test_mcp_config_must_not_hold_inline_credentials(pool: Pool) -> None:
    config = {"command": "npx", "env": {"GITHUB_TOKEN": "ghp_live_value"}}
    async with pool.connection() as conn:
        with pytest.raises(InvalidInput) as info:
            await mcp_servers.upsert_mcp_server(conn, "acme", "gh", "stdio", config)
    assert info.value.details == {"fields": ["env.GITHUB_TOKEN"]}
    assert "ghp_live_value" not in info.value.message
