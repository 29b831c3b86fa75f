"""Tool policy: name patterns, effective policy resolution, egress rules, untrusted output.

Pure logic, no I/O: the tools lane (`activities/runs/tool_calls.py`) loads what it needs from
Postgres and asks this module what to do.

Tool name patterns are exact names (`calculator`, `mcp:github/create_issue`) or contain
`*`, which matches any run of characters, `/` and `:` included (`mcp:github/*`,
`mcp:*`, `*`). Matching is case-sensitive.

How the effective policy of one call is resolved (`resolve_policy`), first rule that
applies wins:

1. Hard denials nobody can override: the tool is disabled; the run is an evaluation
   run and the tool has side effects; the name matches none of the agent's `tools`
   entries (each entry may be a pattern).
2. Deny wins over allow: any agent `tool_policies` entry that matches the name and says
   `deny` denies the call, however specific an allowing entry is.
3. Among the agent's other matching entries the most specific one decides (an exact
   name beats any pattern; among patterns, more literal characters win, so
   `mcp:github/create_*` beats `mcp:github/*` beats `*`; a tie goes to the stricter
   mode). An exact-name entry overrides the tool's default in either direction; a
   pattern entry only tightens it (`"*": allow` does not remove the approval a tool
   asks for by default, `"*": requires_approval` adds one).
4. Otherwise the tool's default policy (`ToolPolicyDefaults.mode`) decides; built-in
   tools default to `allow`.

Strictness is `deny` > `requires_approval` > `allow`. Rate limit and concurrency always
come from the tool's defaults: they protect the service behind the tool, so an agent
cannot raise them. The approval timeout comes from whichever entry decided the mode.

Egress rules (`EgressRule`, `egress_denial`) allow-list the hosts HTTP tools and
`http_fetch` may reach: `api.example.com` (that host only), `*.example.com` (its
subdomains, not `example.com` itself) or an IP literal, each with an optional port
(default: the scheme's port, 80 or 443). Hosts are compared in their IDNA (punycode)
form. URLs with user info (`http://allowed.com@evil.com`), backslashes, non-canonical
numeric hosts (`http://2130706433`, `http://127.1`) or schemes other than http(s) are
refused outright. A redirect is a new URL: the caller checks every hop again.
"""

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Final

import httpx
import idna
from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.payloads import RunMode
from core.specs import Spec
from core.tools.payloads import PolicyMode, ToolPolicy

_STRICTNESS: Final[dict[str, int]] = {"allow": 0, "requires_approval": 1, "deny": 2}
_PATTERN: Final = re.compile(r"^[A-Za-z0-9_.:/*-]{1,200}$")
DEFAULT_APPROVAL_TIMEOUT_S: Final = 3600.0


# -- tool name patterns --------------------------------------------------------------


def validate_pattern(pattern: str) -> str:
    """Return `pattern` if it is a valid tool name pattern.

    Raises:
        ValueError: it is empty, too long, or holds characters tool names never have.
    """
    if not _PATTERN.fullmatch(pattern):
        raise ValueError(
            f"tool pattern {pattern!r} may only hold letters, digits, '_', '.', ':', '/', "
            "'-' and the wildcard '*' (1 to 200 characters)"
        )
    return pattern


@lru_cache(maxsize=4096)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def matches(pattern: str, name: str) -> bool:
    """Whether tool `name` matches `pattern` (`*` matches anything, `/` and `:` included)."""
    if "*" not in pattern:
        return pattern == name
    return _compiled(pattern).fullmatch(name) is not None


def matches_any(patterns: Iterable[str], name: str) -> bool:
    """Whether `name` matches at least one of `patterns`."""
    return any(matches(p, name) for p in patterns)


def specificity(pattern: str) -> tuple[int, int]:
    """Sort key: exact names first, then patterns with more literal characters."""
    return (0 if "*" in pattern else 1, len(pattern.replace("*", "")))


# -- effective policy ----------------------------------------------------------------


class ToolPolicyDefaults(Spec):
    """A tool's own policy: what happens unless an agent says otherwise, and its limits."""

    mode: PolicyMode = "allow"
    approval_timeout_s: float = Field(default=DEFAULT_APPROVAL_TIMEOUT_S, gt=0, le=7 * 24 * 3600)
    rate_limit_per_minute: float | None = Field(default=None, gt=0, le=1_000_000)
    max_concurrency: int | None = Field(default=None, ge=1, le=10_000)


class EffectivePolicy(BaseModel):
    """What happens when this agent calls this tool, and why."""

    model_config = ConfigDict(frozen=True)

    tool: str
    mode: PolicyMode
    approval_timeout_s: float = DEFAULT_APPROVAL_TIMEOUT_S
    rate_limit_per_minute: float | None = None
    max_concurrency: int | None = None
    source: str  # what decided: "agent policy 'mcp:github/*'", "tool default", ...

    @property
    def denied(self) -> bool:
        """True when the call must not run."""
        return self.mode == "deny"

    def explanation(self) -> str:
        """The text the model reads when the call is denied (or held for approval)."""
        if self.mode == "deny":
            return (
                f"Tool call denied by policy: {self.source}. The tool '{self.tool}' was not "
                "run; do not retry it. Continue without it or choose another tool."
            )
        if self.mode == "requires_approval":
            return f"Tool '{self.tool}' needs a human's approval ({self.source})."
        return f"Tool '{self.tool}' is allowed ({self.source})."

    def as_tool_policy(self) -> ToolPolicy:
        """The workflow-facing `ToolPolicy` (mode and approval timeout)."""
        timeout = min(self.approval_timeout_s, 7 * 24 * 3600)
        return ToolPolicy(mode=self.mode, approval_timeout_s=timeout)


def resolve_policy(
    tool: str,
    *,
    agent_tools: Sequence[str],
    agent_policies: Mapping[str, ToolPolicy],
    defaults: ToolPolicyDefaults | None = None,
    side_effects: bool = False,
    enabled: bool = True,
    run_mode: RunMode = "normal",
) -> EffectivePolicy:
    """The effective policy of one call of `tool` (see the module docstring for the rules).

    Args:
        tool: the tool's full name, e.g. `mcp:github/create_issue`.
        agent_tools: the agent spec's `tools` (names or patterns).
        agent_policies: the agent spec's `tool_policies` (keys are names or patterns).
        defaults: the tool's stored default policy (None: built-in, allow, no limits).
        side_effects: whether the tool changes something outside the run.
        enabled: whether the tool is enabled.
        run_mode: `evaluation` denies tools with side effects.
    """
    defaults = defaults or ToolPolicyDefaults()

    def decide(mode: PolicyMode, source: str, timeout: float) -> EffectivePolicy:
        return EffectivePolicy(
            tool=tool,
            mode=mode,
            approval_timeout_s=timeout,
            rate_limit_per_minute=defaults.rate_limit_per_minute,
            max_concurrency=defaults.max_concurrency,
            source=source,
        )

    if not enabled:
        return decide("deny", f"tool '{tool}' is disabled", defaults.approval_timeout_s)
    if run_mode == "evaluation" and side_effects:
        return decide(
            "deny",
            "tools with side effects do not run in evaluation runs",
            defaults.approval_timeout_s,
        )
    if not matches_any(agent_tools, tool):
        return decide(
            "deny", f"tool '{tool}' is not among this agent's tools", defaults.approval_timeout_s
        )
    matching = [(p, policy) for p, policy in agent_policies.items() if matches(p, tool)]
    for pattern, policy in sorted(matching, key=lambda m: specificity(m[0]), reverse=True):
        if policy.mode == "deny":
            return decide("deny", f"agent policy {pattern!r} denies it", policy.approval_timeout_s)
    if matching:
        pattern, policy = max(matching, key=lambda m: (*specificity(m[0]), _STRICTNESS[m[1].mode]))
        exact = "*" not in pattern
        if exact or _STRICTNESS[policy.mode] >= _STRICTNESS[defaults.mode]:
            return decide(policy.mode, f"agent policy {pattern!r}", policy.approval_timeout_s)
    return decide(defaults.mode, "tool default", defaults.approval_timeout_s)


# -- egress --------------------------------------------------------------------------

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")


def _ascii_host(host: str) -> str:
    """A host name in lower-case IDNA (punycode) form, without a trailing dot.

    Raises:
        ValueError: not a valid host name.
    """
    host = host.strip().rstrip(".").lower()
    if not host:
        raise ValueError("empty host")
    if not host.isascii():
        try:
            host = idna.encode(host, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise ValueError(f"invalid internationalised host name: {exc}") from None
    labels = host.split(".")
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"invalid host name {host!r}")
    return host


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host literal stands for (IPv4-mapped IPv6 as IPv4), else None."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class EgressRule(Spec):
    """One allow-listed destination: a host, `*.domain` or IP literal, and an optional port."""

    pattern: str = Field(min_length=1, max_length=260)
    port: int | None = Field(default=None, ge=1, le=65535, description="default: 80/443")

    @field_validator("pattern")
    @classmethod
    def _normalise(cls, value: str) -> str:
        address = _ip(value)
        if address is not None:
            return str(address)
        wildcard = value.startswith("*.")
        body = value[2:] if wildcard else value
        if "*" in body:
            raise ValueError("'*' is only allowed as the first label: '*.example.com'")
        try:
            host = _ascii_host(body)
        except ValueError as exc:
            raise ValueError(f"egress pattern {value!r}: {exc}") from None
        if _NUMERIC_LABEL.fullmatch(host.rsplit(".", 1)[-1]):
            raise ValueError(f"egress pattern {value!r} looks like a malformed IP address")
        return f"*.{host}" if wildcard else host

    def allows(self, host: str, port: int, scheme: str = "https") -> bool:
        """Whether this rule admits a normalised `host` and port (see `egress_denial`)."""
        if port != (self.port if self.port is not None else _DEFAULT_PORTS.get(scheme)):
            return False
        if self.pattern.startswith("*."):
            return _ip(host) is None and host.endswith(self.pattern[1:])
        return host == self.pattern


def egress_denial(url: str | httpx.URL, rules: Iterable[EgressRule]) -> str | None:
    """Why `url` may not be fetched under `rules`, or None when it may.

    Check the same `httpx.URL` object that is then requested, so the checked host and the
    connected host cannot differ; check every redirect target again.
    """
    text = str(url)
    if "\\" in text or any(ord(c) < 33 or ord(c) == 127 for c in text):
        return "the URL contains backslashes, spaces or control characters"
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(text)
        port = parsed.port
    except (httpx.InvalidURL, ValueError) as exc:
        return f"the URL is invalid ({exc})"
    scheme = parsed.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        return f"only http and https URLs are allowed, not {scheme or 'a relative URL'!r}"
    if parsed.userinfo:
        return "URLs with user info ('user@host') are not allowed"
    raw = parsed.raw_host.decode("ascii", "replace")
    if not raw:
        return "the URL has no host"
    effective_port = port if port is not None else _DEFAULT_PORTS[scheme]
    if not 0 < effective_port < 65536:
        return f"invalid port {effective_port}"
    address = _ip(raw)
    if address is not None:
        host = str(address)
    else:
        try:
            host = _ascii_host(raw)
        except ValueError:
            return f"the host {raw!r} is not a valid host name"
        if _NUMERIC_LABEL.fullmatch(host.rsplit(".", 1)[-1]):
            return f"the host {raw!r} is a non-canonical IP address"
    if any(rule.allows(host, effective_port, scheme) for rule in rules):
        return None
    shown = f"[{host}]" if ":" in host else host
    return (
        f"egress to {shown}:{effective_port} is not in this tenant's allowlist "
        "(an admin can add it with PUT /v1/egress)"
    )


def host_allowed(url: str | httpx.URL, rules: Iterable[EgressRule]) -> bool:
    """Whether `url` may be fetched under `rules` (see `egress_denial` for the reason)."""
    return egress_denial(url, rules) is None
