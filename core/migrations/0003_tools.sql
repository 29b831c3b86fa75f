-- Registered tools: a name plus immutable, numbered versions per tenant. Built-in tools
-- are code, not rows. `config` is kind-specific and never holds a secret, only secret
-- names (http: url_template, method, headers; mcp: server + remote tool; agent: agent).
CREATE TABLE tools (
    tenant_id      text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name           text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,199}$'),
    version        integer NOT NULL CHECK (version > 0),
    kind           text NOT NULL CHECK (kind IN ('http', 'mcp', 'code', 'agent')),
    description    text NOT NULL,
    input_schema   jsonb NOT NULL,
    output_schema  jsonb,
    config         jsonb NOT NULL DEFAULT '{}'::jsonb,
    timeout_s      double precision NOT NULL CHECK (timeout_s > 0),
    side_effects   boolean NOT NULL DEFAULT false,
    policy         jsonb NOT NULL DEFAULT '{}'::jsonb,  -- mode, approval timeout, rate limit, concurrency
    spec_hash      text NOT NULL,
    enabled        boolean NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name, version)
);

-- Live call statistics per tool name (all versions), one UPDATE per call. Latencies are
-- a sliding window of the most recent calls (oldest first), from which p50/p95 are read.
CREATE TABLE tool_stats (
    tenant_id         text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    tool_name         text NOT NULL,
    calls             bigint NOT NULL DEFAULT 0,
    successes         bigint NOT NULL DEFAULT 0,
    failures          bigint NOT NULL DEFAULT 0,
    total_latency_ms  double precision NOT NULL DEFAULT 0,
    recent_latency_ms real[] NOT NULL DEFAULT '{}',
    last_called_at    timestamptz,
    PRIMARY KEY (tenant_id, tool_name)
);

-- Named secrets for tool headers and MCP servers: AES-256-GCM ciphertext bound to
-- (tenant, name); `key_id` names the key that encrypted it. Never returned by the API.
CREATE TABLE secrets (
    tenant_id   text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (name ~ '^[A-Za-z_][A-Za-z0-9_.-]{0,127}$'),
    ciphertext  bytea NOT NULL,
    key_id      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

-- The tenant's egress allowlist for HTTP tools and http_fetch: a host, `*.domain` or IP
-- literal (normalised: lower case, punycode), and a port (NULL: the scheme's default).
CREATE TABLE egress_rules (
    id          bigserial PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    pattern     text NOT NULL,
    port        integer CHECK (port BETWEEN 1 AND 65535),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX egress_rules_unique_idx ON egress_rules (tenant_id, pattern, coalesce(port, 0));

-- MCP servers a tenant connects its agents to; `config` holds secret names, never values.
CREATE TABLE mcp_servers (
    tenant_id   text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$'),
    transport   text NOT NULL,                  -- stdio, http, sse (core/tools.McpTransport)
    config      jsonb NOT NULL DEFAULT '{}'::jsonb,
    status      text NOT NULL DEFAULT 'pending',  -- pending, ready, error, disabled
    last_error  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);
