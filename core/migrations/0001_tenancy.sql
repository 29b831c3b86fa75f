-- Tenancy from the first migration on: every later table carries tenant_id.
CREATE TABLE tenants (
    id          text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- API keys are stored as SHA-256 hashes; the plaintext is shown once, at creation.
CREATE TABLE api_keys (
    id            text PRIMARY KEY,
    tenant_id     text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name          text NOT NULL,
    prefix        text NOT NULL,
    key_hash      bytea NOT NULL UNIQUE,
    role          text NOT NULL DEFAULT 'member' CHECK (role IN ('admin', 'member')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id);

-- Rows written by the stack check (`colony demo` before agent runs exist): one per lane
-- step, keyed by workflow id + step so a retried activity writes once.
CREATE TABLE stack_checks (
    tenant_id    text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    workflow_id  text NOT NULL,
    step         text NOT NULL,
    detail       jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, workflow_id, step)
);
