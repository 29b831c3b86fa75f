"""HTTP tools and http_fetch against a real local HTTP server."""

import json
import os
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import pytest

from activities.tools.framework import (
    BadToolArgumentsError,
    ToolContext,
    ToolError,
    ToolExecutionError,
    run_tool,
)
from activities.tools.http import (
    HttpToolExecutor,
    StoreResolvers,
    html_to_text,
    http_fetch_tool,
    load_registry,
    redact,
)
from activities.tools.limits import RetryableToolError
from core import tenants
from core.db import Pool
from core.errors import ErrorType, NotFound
from core.payloads import ToolCallRequest
from core.tools import egress as tool_egress
from core.tools import secrets as tool_secrets
from core.tools.policy import EgressRule
from core.tools.secrets import SecretCipher
from core.tools.spec import ToolSpec
from core.tools.store import StoredTool
from tests.tools.conftest import LocalServer
from workers.process import free_port

SECRET = "sk-live-0123456789abcdef"
CTX = ToolContext(tenant_id="acme", run_id="run-1", step=1, now=datetime.now(UTC))
SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "id": {"type": "integer"},
        "units": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["city", "id"],
    "additionalProperties": False,
}


async def secrets(tenant_id: str, name: str) -> str:
    if tenant_id == "acme" and name == "WEATHER_KEY":
        return SECRET
    raise NotFound(f"secret {name!r} not found")


class Egress:
    def __init__(self, rules: Sequence[EgressRule]) -> None:
        self.rules = list(rules)

    async def __call__(self, tenant_id: str) -> list[EgressRule]:
        return self.rules if tenant_id == "acme" else []


def make_tool(
    url: str,
    *,
    method: str = "GET",
    schema: dict[str, Any] | None = None,
    headers: dict[str, Any] | None = None,
    timeout_s: float = 5,
    side_effects: bool = False,
    arguments_in: str = "auto",
    name: str = "weather",
) -> StoredTool:
    spec = ToolSpec.model_validate(
        {
            "kind": "http",
            "description": "test tool",
            "input_schema": schema or {"type": "object", "properties": {}},
            "config": {
                "url_template": url,
                "method": method,
                "headers": headers if headers is not None else {"X-Key": {"secret": "WEATHER_KEY"}},
                "arguments_in": arguments_in,
            },
            "timeout_s": timeout_s,
            "side_effects": side_effects,
        }
    )
    return StoredTool(name=name, version=1, created_at=datetime.now(UTC), **spec.model_dump())


@pytest.fixture
def egress(http_server: LocalServer) -> Egress:
    return Egress([EgressRule(pattern="127.0.0.1", port=http_server.port)])


@pytest.fixture
async def executor(egress: Egress) -> AsyncIterator[HttpToolExecutor]:
    ex = HttpToolExecutor(secrets=secrets, egress=egress, max_response_bytes=1000)
    yield ex
    await ex.aclose()


async def call(executor: HttpToolExecutor, tool: StoredTool, arguments: dict[str, Any]) -> str:
    registry = load_registry(executor, [tool])
    request = ToolCallRequest(id="c1", name=tool.name, arguments=json.dumps(arguments))
    return await run_tool(registry, request, CTX)


def echoed(result: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(result)
    return data


# -- requests ------------------------------------------------------------------------


async def test_get_with_path_templating_encoding_and_query(
    executor: HttpToolExecutor, http_server: LocalServer
) -> None:
    tool = make_tool(http_server.url("/echo/cities/{city}/{id}?fixed=1"), schema=SCHEMA)
    city = "São Paulo/../x?y#z&"
    result = echoed(
        await call(executor, tool, {"city": city, "id": 42, "units": "metric", "tags": ["a", "b"]})
    )
    assert result["method"] == "GET"
    assert result["path"] == (
        f"/echo/cities/{quote(city, safe='')}/42?fixed=1&units=metric&tags=a&tags=b"
    )
    assert "%2F..%2F" in result["path"]  # the slash cannot climb out of its segment


@pytest.mark.parametrize("bad", [".", ".."])
async def test_dot_segments_in_placeholders_are_refused(
    executor: HttpToolExecutor, http_server: LocalServer, bad: str
) -> None:
    tool = make_tool(http_server.url("/echo/{city}/{id}"), schema=SCHEMA)
    with pytest.raises(BadToolArgumentsError, match="must not be empty"):
        await call(executor, tool, {"city": bad, "id": 1})


async def test_arguments_are_validated_before_anything_runs(
    executor: HttpToolExecutor, egress: Egress, http_server: LocalServer
) -> None:
    egress.rules = []  # were a request attempted, it would be a policy denial instead
    tool = make_tool(http_server.url("/echo/{city}/{id}"), schema=SCHEMA)
    with pytest.raises(BadToolArgumentsError) as info:
        await call(executor, tool, {"city": "Paris", "id": "not a number", "extra": 1})
    assert not info.value.retryable
    assert "field 'id' must be an integer" in info.value.message
    assert "unexpected field 'extra'" in info.value.message


async def test_post_sends_remaining_arguments_as_json(
    executor: HttpToolExecutor, http_server: LocalServer
) -> None:
    tool = make_tool(http_server.url("/echo/{city}"), method="POST", schema=SCHEMA)
    result = echoed(await call(executor, tool, {"city": "Oslo", "id": 7, "units": "si"}))
    assert result["method"] == "POST" and result["path"] == "/echo/Oslo"
    assert json.loads(result["body"]) == {"id": 7, "units": "si"}
    assert result["headers"]["content-type"] == "application/json"


async def test_form_placement(executor: HttpToolExecutor, http_server: LocalServer) -> None:
    tool = make_tool(
        http_server.url("/echo/form"), method="PUT", schema=SCHEMA, arguments_in="form"
    )
    result = echoed(await call(executor, tool, {"city": "a b&c", "id": 1}))
    assert result["body"] == "city=a+b%26c&id=1"
    assert result["headers"]["content-type"] == "application/x-www-form-urlencoded"


# -- secrets -------------------------------------------------------------------------


async def test_secret_header_is_sent_but_never_shown(
    executor: HttpToolExecutor, http_server: LocalServer
) -> None:
    tool = make_tool(http_server.url("/echo/me"))
    text = await call(executor, tool, {})
    assert SECRET not in text
    assert echoed(text)["headers"]["x-key"] == "[redacted]"  # it was sent, then scrubbed


async def test_secret_never_appears_in_error_messages(
    executor: HttpToolExecutor, http_server: LocalServer
) -> None:
    tool = make_tool(http_server.url("/status/404"))
    with pytest.raises(ToolExecutionError) as info:
        await call(executor, tool, {})
    assert not info.value.retryable
    assert "HTTP 404 from GET" in info.value.message and "[redacted]" in info.value.message
    assert SECRET not in info.value.message and SECRET not in str(info.value)


async def test_a_missing_secret_is_a_clear_non_retryable_error(
    executor: HttpToolExecutor, http_server: LocalServer
) -> None:
    tool = make_tool(http_server.url("/echo/"), headers={"X-Key": {"secret": "GONE"}})
    with pytest.raises(ToolExecutionError, match="secret 'GONE'") as info:
        await call(executor, tool, {})
    assert not info.value.retryable


def test_redact_replaces_longest_first() -> None:
    assert redact("a abcdef abcd", ["abcd", "abcdef", "a"]) == "a [redacted] [redacted]"


# -- status codes --------------------------------------------------------------------


async def test_503_and_429_are_retryable(
    executor: HttpToolExecutor, http_server: LocalServer
) -> None:
    with pytest.raises(RetryableToolError) as info:
        await call(executor, make_tool(http_server.url("/status/503")), {})
    assert info.value.retryable and info.value.error_type is ErrorType.DEPENDENCY_UNAVAILABLE
    with pytest.raises(RetryableToolError) as info:
        await call(executor, make_tool(http_server.url("/status/429")), {})
    assert info.value.error_type is ErrorType.RATE_LIMITED and info.value.retry_after_s == 7


async def test_500_is_retryable_only_when_repeating_is_safe(
    executor: HttpToolExecutor, http_server: LocalServer
) -> None:
    with pytest.raises(RetryableToolError):
        await call(executor, make_tool(http_server.url("/status/500")), {})
    unsafe = make_tool(http_server.url("/status/500"), method="POST", side_effects=True)
    with pytest.raises(ToolExecutionError) as info:
        await call(executor, unsafe, {})
    assert not info.value.retryable


# -- egress and redirects ------------------------------------------------------------


async def test_egress_denial_before_connecting(
    executor: HttpToolExecutor, egress: Egress, http_server: LocalServer
) -> None:
    egress.rules = [EgressRule(pattern="api.example.com")]
    with pytest.raises(ToolError) as info:
        await call(executor, make_tool(http_server.url("/echo/")), {})
    assert info.value.error_type is ErrorType.POLICY_DENIED and not info.value.retryable
    assert "not in this tenant's allowlist" in info.value.message


async def test_redirect_to_a_host_not_allowed_is_denied(
    executor: HttpToolExecutor, http_server: LocalServer
) -> None:
    target = f"http://localhost:{http_server.port}/echo/"
    tool = make_tool(http_server.url(f"/redirect?to={quote(target, safe='')}"))
    with pytest.raises(ToolError) as info:
        await call(executor, tool, {})
    assert info.value.error_type is ErrorType.POLICY_DENIED
    assert "localhost" in info.value.message


async def test_allowed_redirects_are_followed_and_303_turns_post_into_get(
    executor: HttpToolExecutor, http_server: LocalServer
) -> None:
    tool = make_tool(
        http_server.url(f"/redirect?code=303&to={quote('/echo/after', safe='')}"),
        method="POST",
        schema=SCHEMA,
    )
    result = echoed(await call(executor, tool, {"city": "x", "id": 1}))
    assert result["method"] == "GET" and result["path"] == "/echo/after"
    assert result["body"] == "" and result["headers"]["x-key"] == "[redacted]"  # same origin
    keep = make_tool(
        http_server.url(f"/redirect?code=307&to={quote('/echo/kept', safe='')}"),
        method="POST",
        schema=SCHEMA,
    )
    result = echoed(await call(executor, keep, {"city": "x", "id": 2}))
    assert result["method"] == "POST" and json.loads(result["body"]) == {"city": "x", "id": 2}


async def test_secret_headers_do_not_follow_a_redirect_to_another_origin(
    executor: HttpToolExecutor, egress: Egress, http_server: LocalServer
) -> None:
    egress.rules.append(EgressRule(pattern="localhost", port=http_server.port))
    target = f"http://localhost:{http_server.port}/echo/elsewhere"
    tool = make_tool(
        http_server.url(f"/redirect?to={quote(target, safe='')}"),
        headers={"X-Key": {"secret": "WEATHER_KEY"}, "Accept": {"value": "application/json"}},
    )
    result = echoed(await call(executor, tool, {}))
    assert "x-key" not in result["headers"]
    assert result["headers"]["accept"] == "application/json"


async def test_redirect_loops_stop(executor: HttpToolExecutor, http_server: LocalServer) -> None:
    with pytest.raises(ToolExecutionError, match="too many redirects"):
        await call(executor, make_tool(http_server.url("/loop")), {})


# -- limits --------------------------------------------------------------------------


async def test_response_size_is_capped(
    executor: HttpToolExecutor, http_server: LocalServer
) -> None:
    text = await call(executor, make_tool(http_server.url("/big?n=50000")), {})
    assert text.startswith("a" * 1000) and "a" * 1001 not in text
    assert text.endswith("[response truncated at 1000 bytes]")


async def test_timeouts(executor: HttpToolExecutor, http_server: LocalServer) -> None:
    slow = http_server.url("/slow?s=1.5")
    with pytest.raises(RetryableToolError) as info:
        await call(executor, make_tool(slow, timeout_s=0.3), {})
    assert info.value.error_type is ErrorType.TIMEOUT and "timed out after 0.3s" in str(info.value)
    unsafe = make_tool(slow, timeout_s=0.3, method="POST", side_effects=True)
    with pytest.raises(ToolExecutionError, match="not retried automatically"):
        await call(executor, unsafe, {})


async def test_connection_refused_is_retryable(executor: HttpToolExecutor, egress: Egress) -> None:
    port = free_port()
    egress.rules = [EgressRule(pattern="127.0.0.1", port=port)]
    unsafe = make_tool(f"http://127.0.0.1:{port}/", method="POST", side_effects=True)
    with pytest.raises(RetryableToolError, match="could not connect"):
        await call(executor, unsafe, {})


async def test_no_cookies_are_kept_between_calls(
    executor: HttpToolExecutor, http_server: LocalServer
) -> None:
    await call(executor, make_tool(http_server.url("/cookie")), {})
    result = echoed(await call(executor, make_tool(http_server.url("/echo/")), {}))
    assert "cookie" not in result["headers"]


# -- http_fetch ----------------------------------------------------------------------


@pytest.fixture
async def fetch_registry(egress: Egress) -> AsyncIterator[Any]:
    from activities.tools.framework import StaticToolRegistry

    yield StaticToolRegistry([http_fetch_tool(egress, max_bytes=5000)])


async def fetch(registry: Any, url: str, **extra: Any) -> str:
    arguments = json.dumps({"url": url, **extra})
    return await run_tool(
        registry, ToolCallRequest(id="f", name="http_fetch", arguments=arguments), CTX
    )


async def test_http_fetch_converts_html_to_text(
    fetch_registry: Any, http_server: LocalServer
) -> None:
    text = await fetch(fetch_registry, http_server.url("/html"))
    assert text.startswith(
        f"URL: {http_server.url('/html')}\nStatus: 200\nContent-Type: text/html\n"
    )
    assert text.endswith(
        "The Title\n\n# Heading\nFirst & bold paragraph.\n- one\n- two\nkeep\n    spacing"
    )
    assert "alert" not in text and "color:red" not in text


async def test_http_fetch_text_binary_and_charset(
    fetch_registry: Any, http_server: LocalServer
) -> None:
    assert "binary content: 256 bytes" in await fetch(fetch_registry, http_server.url("/binary"))
    assert (await fetch(fetch_registry, http_server.url("/latin1"))).endswith("café")
    cut = await fetch(fetch_registry, http_server.url("/big?n=3000"), max_chars=100)
    assert "a" * 100 in cut and "[truncated: 2900 more characters]" in cut
    capped = await fetch(fetch_registry, http_server.url("/big?n=9000"))
    assert "larger than the download limit" in capped


async def test_http_fetch_respects_egress_and_status(
    fetch_registry: Any, egress: Egress, http_server: LocalServer
) -> None:
    with pytest.raises(ToolExecutionError, match="HTTP 404"):
        await fetch(fetch_registry, http_server.url("/missing"))
    egress.rules = []
    with pytest.raises(ToolError) as info:
        await fetch(fetch_registry, http_server.url("/html"))
    assert info.value.error_type is ErrorType.POLICY_DENIED
    with pytest.raises(ToolError, match="user info"):
        await fetch(fetch_registry, f"http://127.0.0.1@evil.example:{http_server.port}/")
    with pytest.raises(BadToolArgumentsError, match="URL is invalid"):
        await fetch(fetch_registry, "http://[not-an-ip]/x")
    with pytest.raises(ToolError, match="only http and https"):
        await fetch(fetch_registry, "file:///etc/passwd")


def test_html_to_text_handles_broken_markup() -> None:
    assert html_to_text("<p>unclosed <b>tags<div>and &lt;entities&gt;") == (
        "unclosed tags\nand <entities>"
    )


# -- resolvers backed by Postgres ----------------------------------------------------


async def test_store_resolvers_read_secrets_and_egress_per_tenant(
    pool: Pool, http_server: LocalServer
) -> None:
    cipher = SecretCipher(os.urandom(32))
    async with pool.connection() as conn:
        for tenant in ("acme", "other"):
            await tenants.ensure_tenant(conn, tenant, tenant)
        await tool_secrets.put_secret(conn, cipher, "acme", "WEATHER_KEY", SECRET)
        await tool_egress.replace_egress_rules(
            conn, "acme", [EgressRule(pattern="127.0.0.1", port=http_server.port)]
        )
    resolvers = StoreResolvers(pool, cipher, egress_ttl_s=0)
    executor = HttpToolExecutor(secrets=resolvers.secret, egress=resolvers.egress)
    try:
        tool = make_tool(http_server.url("/echo/db"))
        result = echoed(await call(executor, tool, {}))
        assert result["headers"]["x-key"] == "[redacted]"
        other = ToolContext(tenant_id="other", run_id="r", step=1, now=CTX.now)
        with pytest.raises(ToolError) as info:  # no egress rules, no secret for "other"
            await executor.run(tool, {}, other)
        assert "secret 'WEATHER_KEY'" in info.value.message
    finally:
        await executor.aclose()
