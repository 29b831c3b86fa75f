-- Swarms: a queen plans a DAG of subtasks; each subtask runs as a child agent run.
CREATE TABLE swarms (
    id               text PRIMARY KEY,
    tenant_id        text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    workflow_id      text NOT NULL UNIQUE,
    objective        text NOT NULL,
    mode             text NOT NULL CHECK (mode IN ('sequential', 'parallel', 'hierarchical')),
    queen_agent      text NOT NULL,
    queen_version    integer NOT NULL,
    settings         jsonb NOT NULL,                 -- core.swarm.SwarmSettings
    user_plan        boolean NOT NULL DEFAULT false,  -- the plan came with the request
    status           text NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    phase            text,
    outcome          text CHECK (outcome IN ('succeeded', 'failed', 'cancelled', 'limit_reached')),
    reason           text,
    result           text,
    attribution      jsonb NOT NULL DEFAULT '[]'::jsonb,  -- subtask ids the answer cites
    plan_version     integer NOT NULL DEFAULT 0,
    queen_cost_usd   numeric(14, 8) NOT NULL DEFAULT 0,
    cost_complete    boolean NOT NULL DEFAULT true,
    idempotency_key  text,
    last_event_seq   bigint NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    UNIQUE (tenant_id, idempotency_key),
    FOREIGN KEY (tenant_id, queen_agent, queen_version)
        REFERENCES agent_versions (tenant_id, agent_name, version)
);
CREATE INDEX swarms_tenant_created_idx ON swarms (tenant_id, created_at DESC);

-- The plan: one row per subtask. A re-plan replaces the subtasks that had not succeeded
-- (`dropped` when the new plan has no subtask of that id) and bumps plan_version.
CREATE TABLE swarm_subtasks (
    tenant_id        text NOT NULL,
    swarm_id         text NOT NULL REFERENCES swarms (id) ON DELETE CASCADE,
    id               text NOT NULL,
    position         integer NOT NULL,
    plan_version     integer NOT NULL,
    description      text NOT NULL,
    role             text NOT NULL,
    depends_on       text[] NOT NULL DEFAULT '{}',
    expected_output  text NOT NULL DEFAULT '',
    complexity       text NOT NULL CHECK (complexity IN ('low', 'medium', 'high')),
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled', 'dropped')),
    attempts         integer NOT NULL DEFAULT 0,
    run_id           text,
    agent_name       text,
    agent_version    integer,
    model            text,
    budget_usd       numeric(14, 8),
    cost_usd         numeric(14, 8) NOT NULL DEFAULT 0,   -- every attempt's runs together
    cost_complete    boolean NOT NULL DEFAULT true,
    reason           text,
    started_at       timestamptz,
    finished_at      timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (swarm_id, id)
);

-- A subtask's attempt is an agent run that knows its swarm; the swarm may give it a model
-- chain (the subtask's tier) and a share of the swarm's budget instead of the agent's own.
ALTER TABLE runs ADD COLUMN swarm_id text REFERENCES swarms (id) ON DELETE CASCADE;
ALTER TABLE runs ADD COLUMN subtask_id text;
ALTER TABLE runs ADD COLUMN models jsonb;
ALTER TABLE runs ADD COLUMN max_cost_usd numeric(14, 8);
CREATE INDEX runs_swarm_idx ON runs (swarm_id) WHERE swarm_id IS NOT NULL;

-- Append-only event log of a swarm, numbered like run_events (SSE ids).
CREATE TABLE swarm_events (
    tenant_id   text NOT NULL,
    swarm_id    text NOT NULL REFERENCES swarms (id) ON DELETE CASCADE,
    seq         bigint NOT NULL,
    key         text NOT NULL,
    type        text NOT NULL,
    data        jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (swarm_id, seq),
    UNIQUE (swarm_id, key)
);

-- The blackboard: findings the swarm's agents post for each other and for the queen.
CREATE TABLE swarm_blackboard (
    id          bigserial PRIMARY KEY,
    tenant_id   text NOT NULL,
    swarm_id    text NOT NULL REFERENCES swarms (id) ON DELETE CASCADE,
    key         text NOT NULL,              -- run, step and content: a retried call posts once
    subtask_id  text,
    run_id      text,
    topic       text,
    content     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (swarm_id, key)
);
CREATE INDEX swarm_blackboard_swarm_idx ON swarm_blackboard (swarm_id, id);

-- The queen's model calls (plans, summaries, the synthesis): ledger and claim check in one.
-- A retried activity finds its answer here and does not call the model again.
CREATE TABLE swarm_llm_calls (
    tenant_id          text NOT NULL,
    swarm_id           text NOT NULL REFERENCES swarms (id) ON DELETE CASCADE,
    key                text NOT NULL,
    purpose            text NOT NULL CHECK (purpose IN ('plan', 'summary', 'synthesis')),
    model              text NOT NULL,
    provider           text NOT NULL,
    prompt_tokens      integer NOT NULL,
    completion_tokens  integer NOT NULL,
    cost_usd           numeric(14, 8),            -- NULL: price unknown
    latency_ms         double precision NOT NULL,
    answer             text NOT NULL,
    errors             jsonb NOT NULL DEFAULT '[]'::jsonb,   -- a plan's validation errors
    created_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (swarm_id, key)
);
