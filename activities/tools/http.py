"""HTTP tools: registered HTTP tools and the built-in `http_fetch`.

Both go through `fetch`, which enforces the tenant's egress allowlist before connecting
and again on every redirect hop (redirects are followed by hand, at most
`MAX_REDIRECTS`), caps the response body while streaming it, and bounds the whole
exchange with one timeout. Secret header values are resolved at call time, dropped when
a redirect leaves the origin, and scrubbed from anything the model or a log could see
(results and error messages); the HTTP client keeps no cookies and ignores
`.netrc` and proxy variables, so nothing leaks between calls or tenants.

Failures are `ToolError`s with messages for the model:

    ToolError
    ├── BadToolArgumentsError   a URL placeholder got an unusable value
    ├── ToolExecutionError      4xx, a missing secret, an unreadable response (not retryable)
    ├── ToolError(PolicyDenied) the URL or a redirect target is not allow-listed
    └── RetryableToolError      429 and 503 always; 408, 500, 502, 504, timeouts and broken
                                connections when a repeat is safe (GET/HEAD/PUT/DELETE, or a
                                tool without side effects); a refused connection always
"""

import asyncio
import email.utils
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any, Final
from urllib.parse import quote

import httpx

from activities.tools.framework import (
    BadToolArgumentsError,
    StaticToolRegistry,
    ToolContext,
    ToolDefinition,
    ToolError,
    ToolExecutionError,
)
from activities.tools.limits import RetryableToolError
from core.db import Pool
from core.errors import ColonyError, ErrorType, NotFound
from core.tools import egress as tool_egress
from core.tools import secrets as tool_secrets
from core.tools.builtins import HTTP_FETCH_TOOL
from core.tools.policy import EgressRule, egress_denial
from core.tools.secrets import SecretCipher
from core.tools.spec import HttpToolConfig
from core.tools.store import StoredTool

MAX_REDIRECTS: Final = 5
DEFAULT_MAX_RESPONSE_BYTES: Final = 1_000_000
DEFAULT_FETCH_TIMEOUT_S: Final = 20.0
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_IDEMPOTENT: Final = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_EXCERPT_CHARS: Final = 300
_REDACTED: Final = "[redacted]"

SecretResolver = Callable[[str, str], Awaitable[str]]
"""(tenant_id, secret name) -> value; raises `NotFound` for an unknown name."""
EgressResolver = Callable[[str], Awaitable[Sequence[EgressRule]]]
"""tenant_id -> the tenant's egress allowlist."""


# -- resolvers from Postgres ---------------------------------------------------------


class StoreResolvers:
    """Secrets and egress rules read from Postgres.

    Secrets are read on every call (a rotated secret takes effect at once); egress rules
    are cached per tenant for `egress_ttl_s` seconds.
    """

    def __init__(
        self,
        pool: Pool,
        cipher: SecretCipher | Callable[[], SecretCipher],
        *,
        egress_ttl_s: float = 5.0,
    ) -> None:
        self._pool = pool
        # A factory defers reading (or creating) the key file to the first secret read.
        self._cipher_source = cipher
        self._cipher: SecretCipher | None = cipher if isinstance(cipher, SecretCipher) else None
        self._ttl = egress_ttl_s
        self._egress: dict[str, tuple[float, list[EgressRule]]] = {}

    async def secret(self, tenant_id: str, name: str) -> str:
        """The value of a tenant's secret."""
        if self._cipher is None:
            source = self._cipher_source
            assert callable(source)
            self._cipher = source()
        async with self._pool.connection() as conn:
            return await tool_secrets.get_secret_value(conn, self._cipher, tenant_id, name)

    async def egress(self, tenant_id: str) -> list[EgressRule]:
        """The tenant's egress allowlist (cached briefly)."""
        cached = self._egress.get(tenant_id)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        async with self._pool.connection() as conn:
            rules = await tool_egress.get_egress_rules(conn, tenant_id)
        self._egress[tenant_id] = (now, rules)
        return rules


# -- the client and one exchange -----------------------------------------------------


def new_client() -> httpx.AsyncClient:
    """An HTTP client for tools.

    It keeps no cookies, ignores `.netrc` and proxy variables and follows no redirects
    (`fetch` follows them itself, checking each hop).
    """
    no_cookies = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    return httpx.AsyncClient(
        cookies=no_cookies,
        trust_env=False,
        follow_redirects=False,
        headers={"User-Agent": "colony-tools/1"},
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
    )


@dataclass(frozen=True)
class HttpResult:
    """What came back: the final URL, status, content type and (capped) body."""

    url: httpx.URL
    status: int
    content_type: str
    charset: str | None
    body: bytes
    truncated: bool
    retry_after_s: float | None = None

    def text(self) -> str:
        """The body decoded with its declared charset (UTF-8 by default), lossily."""
        try:
            return self.body.decode(self.charset or "utf-8", errors="replace")
        except LookupError:
            return self.body.decode("utf-8", errors="replace")


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of each secret value replaced by `[redacted]`."""
    for value in sorted(set(secrets), key=len, reverse=True):
        if len(value) >= 4:
            text = text.replace(value, _REDACTED)
    return text


def _origin(url: httpx.URL) -> tuple[str, bytes, int | None]:
    return (url.scheme, url.raw_host, url.port)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _shown(url: httpx.URL) -> str:
    """A URL for messages: without query string or user info (they may carry secrets)."""
    return str(url.copy_with(query=None, fragment=None, userinfo=b""))


async def fetch(
    client: httpx.AsyncClient,
    method: str,
    url: str | httpx.URL,
    *,
    rules: Sequence[EgressRule],
    headers: Mapping[str, str] | None = None,
    secret_headers: Iterable[str] = (),
    params: Sequence[tuple[str, str]] | None = None,
    json_body: Any = None,
    form: Mapping[str, str] | None = None,
    max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    timeout_s: float = DEFAULT_FETCH_TIMEOUT_S,
    retry_safe: bool = True,
    tool: str = "http",
) -> HttpResult:
    """One HTTP exchange under the egress allowlist, following redirects by hand.

    `secret_headers` names the headers holding secrets: they are not sent past a
    redirect to another origin. `retry_safe` says whether repeating the request is
    harmless (decides whether timeouts and broken connections are retryable).

    Raises:
        ToolError: `PolicyDenied` when the URL or a redirect target is not allowed.
        BadToolArgumentsError: the URL does not parse.
        RetryableToolError: timeouts, connection failures (see the module docstring).
        ToolExecutionError: too many redirects, or another transport failure.
    """
    try:
        current = httpx.URL(url) if isinstance(url, str) else url
        if params:
            current = current.copy_merge_params(list(params))
    except httpx.InvalidURL as exc:
        raise BadToolArgumentsError(f"Tool '{tool}': the URL is invalid ({exc}).") from None
    send_headers = dict(headers or {})
    secret_names = {h.lower() for h in secret_headers}
    content: bytes | None = None
    if json_body is not None:
        content = json.dumps(json_body, ensure_ascii=False).encode()
        send_headers.setdefault("Content-Type", "application/json")
    elif form is not None:
        content = str(httpx.QueryParams(dict(form))).encode()
        send_headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
    method = method.upper()
    try:
        async with asyncio.timeout(timeout_s):
            for _hop in range(MAX_REDIRECTS + 1):
                denial = egress_denial(current, rules)
                if denial is not None:
                    raise ToolError(
                        f"Request to {_shown(current)} blocked: {denial}.",
                        error_type=ErrorType.POLICY_DENIED,
                    )
                request = client.build_request(
                    method, current, headers=send_headers, content=content, timeout=timeout_s
                )
                response = await client.send(request, stream=True, follow_redirects=False)
                try:
                    location = response.headers.get("location")
                    if response.status_code in _REDIRECTS and location:
                        target = current.join(location)
                        if response.status_code == 303 or (
                            response.status_code in (301, 302) and method == "POST"
                        ):
                            method, content = ("GET" if method != "HEAD" else "HEAD"), None
                            send_headers = {
                                k: v for k, v in send_headers.items() if k.lower() != "content-type"
                            }
                        if _origin(target) != _origin(current):
                            send_headers = {
                                k: v
                                for k, v in send_headers.items()
                                if k.lower() not in secret_names
                            }
                        current = target
                        continue
                    body, truncated = await _read_capped(response, max_bytes)
                    return HttpResult(
                        url=current,
                        status=response.status_code,
                        content_type=response.headers.get("content-type", "").split(";")[0].strip(),
                        charset=response.charset_encoding,
                        body=body,
                        truncated=truncated,
                        retry_after_s=_retry_after(response.headers.get("retry-after")),
                    )
                finally:
                    await response.aclose()
            raise ToolExecutionError(
                f"Tool '{tool}': too many redirects (more than {MAX_REDIRECTS}) starting at "
                f"{_shown(httpx.URL(url) if isinstance(url, str) else url)}."
            )
    except TimeoutError:
        message = f"Tool '{tool}': {method} {_shown(current)} timed out after {timeout_s:g}s."
        if retry_safe:
            raise RetryableToolError(message, error_type=ErrorType.TIMEOUT) from None
        raise ToolExecutionError(
            message + " It has side effects, so it is not retried automatically."
        ) from None
    except httpx.ConnectError as exc:
        # Nothing was sent: repeating is always safe.
        raise RetryableToolError(
            f"Tool '{tool}': could not connect to {_shown(current)} ({type(exc).__name__}).",
            error_type=ErrorType.DEPENDENCY_UNAVAILABLE,
        ) from None
    except httpx.TimeoutException:
        message = f"Tool '{tool}': {method} {_shown(current)} timed out after {timeout_s:g}s."
        if retry_safe:
            raise RetryableToolError(message, error_type=ErrorType.TIMEOUT) from None
        raise ToolExecutionError(message) from None
    except httpx.TransportError as exc:
        message = f"Tool '{tool}': {method} {_shown(current)} failed ({type(exc).__name__})."
        if retry_safe:
            raise RetryableToolError(message) from None
        raise ToolExecutionError(message) from None
    except httpx.InvalidURL:
        raise ToolExecutionError(
            f"Tool '{tool}': {_shown(current)} redirected to an invalid URL."
        ) from None


async def _read_capped(response: httpx.Response, max_bytes: int) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        room = max_bytes - size
        if len(chunk) > room:
            chunks.append(chunk[:room])
            return b"".join(chunks), True
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks), False


def raise_for_status(
    result: HttpResult, *, method: str, retry_safe: bool, tool: str, secrets: Iterable[str] = ()
) -> None:
    """Turn a non-2xx response into the right `ToolError` (see the module docstring)."""
    if 200 <= result.status < 300:
        return
    excerpt = redact(" ".join(result.text().split())[:_EXCERPT_CHARS], secrets)
    message = f"Tool '{tool}': HTTP {result.status} from {method} {_shown(result.url)}" + (
        f": {excerpt}" if excerpt else "."
    )
    if result.status == 429:
        raise RetryableToolError(
            message, error_type=ErrorType.RATE_LIMITED, retry_after_s=result.retry_after_s
        )
    if result.status == 503 or (result.status in (408, 500, 502, 504) and retry_safe):
        raise RetryableToolError(
            message,
            error_type=ErrorType.DEPENDENCY_UNAVAILABLE,
            retry_after_s=result.retry_after_s,
        )
    raise ToolExecutionError(message)


# -- registered HTTP tools -----------------------------------------------------------


def render_url(config: HttpToolConfig, arguments: Mapping[str, Any], tool: str) -> str:
    """The URL template with each `{placeholder}` replaced by its percent-encoded argument.

    Raises:
        BadToolArgumentsError: a placeholder's argument is missing, not a scalar, empty,
            or `.`/`..` (which would change the path).
    """

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        raw = arguments.get(name)
        if raw is None or isinstance(raw, dict | list):
            raise BadToolArgumentsError(
                f"Argument '{name}' of tool '{tool}' must be a string or number (it goes in the URL)."
            )
        text = ("true" if raw else "false") if isinstance(raw, bool) else str(raw)
        if text in ("", ".", ".."):
            raise BadToolArgumentsError(
                f"Argument '{name}' of tool '{tool}' must not be empty, '.' or '..'."
            )
        return quote(text, safe="")

    return re.sub(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", value, config.url_template)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _query_pairs(arguments: Mapping[str, Any]) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for name, value in arguments.items():
        if value is None:
            continue
        items = value if isinstance(value, list) else [value]
        pairs += [(name, _scalar(item)) for item in items]
    return pairs


class HttpToolExecutor:
    """Runs registered HTTP tools: template, secrets, egress, limits, status mapping."""

    def __init__(
        self,
        *,
        secrets: SecretResolver,
        egress: EgressResolver,
        client: httpx.AsyncClient | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self._secrets = secrets
        self._egress = egress
        self._client = client
        self._max_bytes = max_response_bytes

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = new_client()
        return self._client

    async def aclose(self) -> None:
        """Close the HTTP client."""
        if self._client is not None:
            await self._client.aclose()

    def definition(self, tool: StoredTool) -> ToolDefinition:
        """The tool as a `ToolDefinition` for `run_tool` (arguments validated there)."""

        async def handler(arguments: dict[str, Any], ctx: ToolContext) -> str:
            return await self.run(tool, arguments, ctx)

        return ToolDefinition(
            name=tool.name,
            description=tool.description,
            parameters=tool.input_schema,
            side_effects=tool.side_effects,
            handler=handler,
        )

    async def run(self, tool: StoredTool, arguments: Mapping[str, Any], ctx: ToolContext) -> str:
        """Call the tool with already validated arguments; returns the text for the model.

        Raises:
            ToolError: see the module docstring.
        """
        config = tool.http()
        url = render_url(config, arguments, tool.name)
        rest = {k: v for k, v in arguments.items() if k not in set(config.placeholders)}
        placement = config.arguments_in
        if placement == "auto":
            placement = "query" if config.method in ("GET", "DELETE") else "json"
        headers: dict[str, str] = {}
        secret_values: list[str] = []
        for name, header in config.headers.items():
            if header.secret is None:
                headers[name] = header.value or ""
                continue
            try:
                value = await self._secrets(ctx.tenant_id, header.secret)
            except NotFound:
                raise ToolExecutionError(
                    f"Tool '{tool.name}' is misconfigured: secret '{header.secret}' (header "
                    f"{name}) does not exist. An admin must set it with PUT /v1/secrets/"
                    f"{header.secret}."
                ) from None
            except ColonyError as exc:
                raise ToolExecutionError(
                    f"Tool '{tool.name}' is misconfigured: {exc.message}"
                ) from None
            headers[name] = value
            secret_values.append(value)
        rules = await self._egress(ctx.tenant_id)
        retry_safe = config.method in _IDEMPOTENT or not tool.side_effects
        try:
            result = await fetch(
                self._http(),
                config.method,
                url,
                rules=rules,
                headers=headers,
                secret_headers=[n for n, h in config.headers.items() if h.secret is not None],
                params=_query_pairs(rest) if placement == "query" else None,
                json_body=rest if placement == "json" else None,
                form={k: _scalar(v) for k, v in rest.items() if v is not None}
                if placement == "form"
                else None,
                max_bytes=self._max_bytes,
                timeout_s=tool.timeout_s,
                retry_safe=retry_safe,
                tool=tool.name,
            )
        except ToolError as exc:
            exc.message = redact(exc.message, secret_values)
            exc.args = (exc.message,)
            raise
        raise_for_status(
            result,
            method=config.method,
            retry_safe=retry_safe,
            tool=tool.name,
            secrets=secret_values,
        )
        text = redact(result.text(), secret_values)
        if not text:
            return f"HTTP {result.status} (empty body)"
        if result.truncated:
            text += f"\n[response truncated at {self._max_bytes} bytes]"
        return text


def load_registry(
    executor: HttpToolExecutor,
    stored: Iterable[StoredTool],
    builtins: Iterable[ToolDefinition] = (),
) -> StaticToolRegistry:
    """A registry of built-in tools plus the stored HTTP tools (other kinds are skipped)."""
    definitions = list(builtins)
    taken = {d.name for d in definitions}
    definitions += [
        executor.definition(tool)
        for tool in stored
        if tool.kind == "http" and tool.name not in taken
    ]
    return StaticToolRegistry(definitions)


# -- http_fetch ----------------------------------------------------------------------


_TEXT_TYPES = re.compile(
    r"^(text/.*|application/(json|xml|xhtml\+xml|javascript|x-javascript|ld\+json|rss\+xml|"
    r"atom\+xml|x-ndjson|yaml|x-yaml|csv)|.*\+(json|xml))$"
)


def http_fetch_tool(
    egress: EgressResolver,
    *,
    client: httpx.AsyncClient | None = None,
    max_bytes: int = 2_000_000,
    timeout_s: float = DEFAULT_FETCH_TIMEOUT_S,
) -> ToolDefinition:
    """The built-in `http_fetch` tool, bound to an egress resolver (and optionally a client)."""
    own: list[httpx.AsyncClient] = []

    async def handler(arguments: dict[str, Any], ctx: ToolContext) -> str:
        http = client
        if http is None:
            if not own:
                own.append(new_client())
            http = own[0]
        url = str(arguments["url"]).strip()
        rules = await egress(ctx.tenant_id)
        result = await fetch(
            http, "GET", url, rules=rules, max_bytes=max_bytes, timeout_s=timeout_s,
            tool="http_fetch",
        )  # fmt: skip
        raise_for_status(result, method="GET", retry_safe=True, tool="http_fetch")
        return format_page(result, int(arguments.get("max_chars", 20_000)))

    return ToolDefinition.serving(HTTP_FETCH_TOOL, handler)


def format_page(result: HttpResult, max_chars: int) -> str:
    """Status, content type and readable text of a fetched page, cut to `max_chars`."""
    kind = result.content_type.lower()
    head = f"URL: {result.url}\nStatus: {result.status}\nContent-Type: {kind or 'unknown'}\n\n"
    if kind in ("text/html", "application/xhtml+xml") or (
        not kind and result.body.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html"))
    ):
        text = html_to_text(result.text())
    elif not kind or _TEXT_TYPES.match(kind):
        text = result.text()
    else:
        return head + f"[binary content: {len(result.body)} bytes not shown]"
    note = ""
    if len(text) > max_chars:
        note = f"\n[truncated: {len(text) - max_chars} more characters]"
        text = text[:max_chars]
    elif result.truncated:
        note = "\n[truncated: the page is larger than the download limit]"
    return head + text + note


_SKIPPED_TAGS: Final = frozenset(
    {"script", "style", "noscript", "template", "svg", "head", "iframe", "object", "canvas"}
)
_BLOCK_TAGS: Final = frozenset(
    {
        "p", "div", "br", "hr", "section", "article", "header", "footer", "main", "nav",
        "aside", "ul", "ol", "table", "tr", "blockquote", "pre", "form", "figure",
        "figcaption", "dl", "dt", "dd", "h1", "h2", "h3", "h4", "h5", "h6", "li", "title",
    }
)  # fmt: skip


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False
        self._pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in _SKIPPED_TAGS:
            self._skip += 1
        if tag == "pre":
            self._pre += 1
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self.parts.append("#" * int(tag[1]) + " ")
        elif tag == "li":
            self.parts.append("- ")
        elif tag in ("td", "th"):
            self.parts.append(" | ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in _SKIPPED_TAGS:
            self._skip = max(0, self._skip - 1)
        if tag == "pre":
            self._pre = max(0, self._pre - 1)
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self._skip:
            # Newlines inside <pre> survive the line clean-up below as NULs.
            self.parts.append(data.replace("\n", "\0") if self._pre else re.sub(r"\s+", " ", data))


def html_to_text(html: str) -> str:
    """Readable text of an HTML page: title first, no scripts or styles, blocks on lines."""
    parser = _TextExtractor()
    try:
        parser.feed(html.replace("\0", ""))
        parser.close()
    except Exception:  # html.parser is lenient, but never let a page crash the tool
        return re.sub(r"<[^>]+>", " ", html)
    lines = [line.strip() for line in "".join(parser.parts).splitlines()]
    text = "\n".join(line for line in lines if line).replace("\0", "\n")
    title = " ".join(parser.title.split())
    return f"{title}\n\n{text}" if title else text
