-- Long-term memory: one row per memory (the vector lives in Qdrant under the same id).
CREATE TABLE memories (
    id               uuid PRIMARY KEY,                 -- uuid5(tenant, key): a retried write is a no-op
    tenant_id        text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key              text NOT NULL,
    agent_name       text NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('episode', 'reflexion', 'skill', 'fact')),
    scope            text NOT NULL DEFAULT 'private' CHECK (scope IN ('private', 'shared')),
    content          text NOT NULL,
    metadata         jsonb NOT NULL DEFAULT '{}',
    source_run_id    text REFERENCES runs (id) ON DELETE SET NULL,
    reward           real,
    uses             integer NOT NULL DEFAULT 0,
    successes        integer NOT NULL DEFAULT 0,
    retired          boolean NOT NULL DEFAULT false,
    embedding_model  text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, key)
);
CREATE INDEX memories_tenant_agent_kind_idx ON memories (tenant_id, agent_name, kind);
CREATE INDEX memories_tenant_run_idx ON memories (tenant_id, source_run_id);
CREATE INDEX memories_tenant_created_idx ON memories (tenant_id, created_at);
CREATE INDEX memories_tenant_model_idx ON memories (tenant_id, embedding_model);  -- re-embedding

-- Skill usage, one row per (memory, run): a retried `record_skill_use` counts once.
CREATE TABLE memory_uses (
    tenant_id   text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    memory_id   uuid NOT NULL REFERENCES memories (id) ON DELETE CASCADE,
    run_id      text NOT NULL,
    succeeded   boolean NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (memory_id, run_id)
);

-- Feedback on runs: a rating (1-5) and a comment; it rates the run's episode and rewards
-- its reflexion.
CREATE TABLE run_feedback (
    tenant_id   text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    run_id      text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    rating      smallint NOT NULL CHECK (rating BETWEEN 1 AND 5),
    comment     text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id)
);

-- Per-tenant memory retention (NULL: keep forever), applied by MemoryMaintenanceWorkflow.
ALTER TABLE tenants ADD COLUMN memory_retention_days integer CHECK (memory_retention_days > 0);

-- What a run recalled, put in its system prompt by call_llm (NULL: nothing).
ALTER TABLE runs ADD COLUMN memory_context text;

-- The conversation window: when a run's messages outgrow the model's budget, the older
-- ones (1..upto_seq) are summarized once by a model call; prompts then carry the summary
-- and the messages after it. The full transcript stays in run_messages.
CREATE TABLE run_summaries (
    tenant_id   text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    run_id      text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    upto_seq    integer NOT NULL,
    content     text NOT NULL,
    model       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, upto_seq)
);

-- The cost ledger also records the calls a run makes besides its steps (summarizing the
-- conversation window, reflecting on the run): `purpose` tells them apart.
ALTER TABLE llm_calls ADD COLUMN purpose text NOT NULL DEFAULT 'step'
    CHECK (purpose IN ('step', 'summary', 'reflexion'));
ALTER TABLE llm_calls DROP CONSTRAINT llm_calls_pkey;
ALTER TABLE llm_calls ADD PRIMARY KEY (run_id, step, purpose);
