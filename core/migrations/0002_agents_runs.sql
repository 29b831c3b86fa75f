-- Agents: a name plus immutable, numbered versions.
CREATE TABLE agents (
    tenant_id       text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name            text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$'),
    latest_version  integer NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE agent_versions (
    tenant_id   text NOT NULL,
    agent_name  text NOT NULL,
    version     integer NOT NULL CHECK (version > 0),
    spec        jsonb NOT NULL,
    spec_hash   text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, agent_name, version),
    FOREIGN KEY (tenant_id, agent_name) REFERENCES agents (tenant_id, name) ON DELETE CASCADE
);

-- Runs: one agent's work on one objective (or one conversation).
CREATE TABLE runs (
    id                 text PRIMARY KEY,
    tenant_id          text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    agent_name         text NOT NULL,
    agent_version      integer NOT NULL,
    workflow_id        text NOT NULL UNIQUE,
    mode               text NOT NULL DEFAULT 'normal' CHECK (mode IN ('normal', 'evaluation')),
    conversation       boolean NOT NULL DEFAULT false,
    status             text NOT NULL DEFAULT 'queued'
                       CHECK (status IN ('queued', 'running', 'waiting', 'succeeded', 'failed', 'cancelled')),
    outcome            text CHECK (outcome IN ('succeeded', 'failed', 'cancelled', 'limit_reached')),
    reason             text,
    objective          text NOT NULL,
    result             text,
    idempotency_key    text,
    steps              integer NOT NULL DEFAULT 0,
    prompt_tokens      bigint NOT NULL DEFAULT 0,
    completion_tokens  bigint NOT NULL DEFAULT 0,
    cost_usd           numeric(14, 6) NOT NULL DEFAULT 0,
    cost_complete      boolean NOT NULL DEFAULT true,   -- false once a call had an unknown price
    last_event_seq     bigint NOT NULL DEFAULT 0,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    finished_at        timestamptz,
    UNIQUE (tenant_id, idempotency_key),
    FOREIGN KEY (tenant_id, agent_name, agent_version)
        REFERENCES agent_versions (tenant_id, agent_name, version)
);
CREATE INDEX runs_tenant_created_idx ON runs (tenant_id, created_at DESC);

-- The conversation, one row per message; seq is assigned by the workflow, so writes by
-- retried activities are idempotent (ON CONFLICT DO NOTHING).
CREATE TABLE run_messages (
    tenant_id     text NOT NULL,
    run_id        text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq           integer NOT NULL,
    role          text NOT NULL CHECK (role IN ('user', 'assistant', 'tool')),
    content       text,
    tool_calls    jsonb NOT NULL DEFAULT '[]'::jsonb,
    tool_call_id  text,
    name          text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, seq)
);

-- User messages accepted by the API, waiting for the workflow to adopt them (claim check:
-- the workflow receives only the inbox id).
CREATE TABLE run_inbox (
    id          bigserial PRIMARY KEY,
    tenant_id   text NOT NULL,
    run_id      text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    content     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX run_inbox_run_idx ON run_inbox (run_id);

-- Append-only event log with per-run sequence numbers (Server-Sent Events ids). `key`
-- makes appends from retried activities idempotent.
CREATE TABLE run_events (
    tenant_id   text NOT NULL,
    run_id      text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq         bigint NOT NULL,
    key         text NOT NULL,
    type        text NOT NULL,
    data        jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, seq),
    UNIQUE (run_id, key)
);

-- Cost ledger: one row per successful model call.
CREATE TABLE llm_calls (
    tenant_id          text NOT NULL,
    run_id             text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step               integer NOT NULL,
    model              text NOT NULL,
    provider           text NOT NULL,
    prompt_tokens      integer NOT NULL,
    completion_tokens  integer NOT NULL,
    cost_usd           numeric(14, 8),          -- NULL: price unknown (never a made-up zero)
    latency_ms         double precision NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, step)
);
CREATE INDEX llm_calls_tenant_created_idx ON llm_calls (tenant_id, created_at);
