-- Request rate limits (core/limits.py): one GCRA bucket per API key and per tenant.
-- `tat` is the bucket's theoretical arrival time; a request is admitted by one atomic
-- INSERT ... ON CONFLICT DO UPDATE ... RETURNING, so every API replica shares the bucket.
CREATE TABLE rate_buckets (
    key        text PRIMARY KEY,               -- 'key:<api key id>' or 'tenant:<tenant id>'
    tenant_id  text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    tat        timestamptz NOT NULL,
    emission_s   double precision NOT NULL,     -- 1 / requests per second
    tolerance_s  double precision NOT NULL      -- (burst - 1) * emission_s
);
CREATE INDEX rate_buckets_tenant_idx ON rate_buckets (tenant_id);

-- A tenant's own limits, set by its admins (PUT /v1/tenant/limits). NULL: the default
-- from settings (COLONY_RATE_LIMIT_*, COLONY_MAX_ACTIVE_*, COLONY_SPEND_CAP_*).
CREATE TABLE tenant_limits (
    tenant_id            text PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    requests_per_second  double precision CHECK (requests_per_second > 0),
    burst                integer CHECK (burst >= 1),
    key_requests_per_second double precision CHECK (key_requests_per_second > 0),
    key_burst            integer CHECK (key_burst >= 1),
    max_active_runs      integer CHECK (max_active_runs >= 0),
    max_active_swarms    integer CHECK (max_active_swarms >= 0),
    daily_usd            numeric(14, 6) CHECK (daily_usd >= 0),
    monthly_usd          numeric(14, 6) CHECK (monthly_usd >= 0),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- Evolution's own model calls (judge, feedback categories, diagnoses, proposals): ledgered
-- here so the tenant's spend (llm_calls + swarm_llm_calls + these) covers every call.
CREATE TABLE evolution_llm_calls (
    id                 bigserial PRIMARY KEY,
    tenant_id          text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    agent_name         text NOT NULL,
    evolution_id       text,                   -- NULL: a rollout's live-run judge
    model              text NOT NULL,
    prompt_tokens      integer NOT NULL,
    completion_tokens  integer NOT NULL,
    cost_usd           numeric(14, 8),         -- NULL: price unknown
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX evolution_llm_calls_tenant_created_idx ON evolution_llm_calls (tenant_id, created_at);

-- Spend and concurrency checks read these on every model call and every POST.
CREATE INDEX swarm_llm_calls_tenant_created_idx ON swarm_llm_calls (tenant_id, created_at);
CREATE INDEX runs_tenant_active_idx ON runs (tenant_id)
    WHERE status IN ('queued', 'running', 'waiting');
CREATE INDEX swarms_tenant_active_idx ON swarms (tenant_id)
    WHERE status IN ('queued', 'running');
