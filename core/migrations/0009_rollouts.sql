-- Evolution in production: canaries that take a share of an agent's new runs, the live
-- evidence that decides them, and automatic rollbacks of a live version that degrades.

-- An agent's rollout policy (PUT /v1/agents/{name}/rollout): canary and shadow shares,
-- the sticky key, online scoring and the sequential tests' parameters.
CREATE TABLE rollout_policies (
    tenant_id   text NOT NULL,
    agent_name  text NOT NULL,
    settings    jsonb NOT NULL,                 -- core.evolution.live.RolloutSettings
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, agent_name),
    FOREIGN KEY (tenant_id, agent_name) REFERENCES agents (tenant_id, name) ON DELETE CASCADE
);

-- Rollouts: a canary (`canary` takes `share` of new runs beside `stable` until the test
-- decides) or a degradation (`canary` is the live version that dropped, `stable` the
-- version it was rolled back to). At most one active canary per agent.
CREATE TABLE rollouts (
    id              text PRIMARY KEY,
    tenant_id       text NOT NULL,
    agent_name      text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('canary', 'degradation')),
    stable_version  integer NOT NULL,
    canary_version  integer NOT NULL,
    share           double precision NOT NULL DEFAULT 0 CHECK (share BETWEEN 0 AND 1),
    sticky_key      text NOT NULL DEFAULT 'end_user'
                    CHECK (sticky_key IN ('end_user', 'idempotency_key', 'run')),
    evolution_id    text,            -- the cycle that proposed the canary
    diagnostic_evolution_id text,    -- the cycle a degradation started
    settings        jsonb NOT NULL,  -- RolloutSettings when it started
    status          text NOT NULL DEFAULT 'active'
                    CHECK (status IN ('active', 'promoted', 'rolled_back', 'cancelled')),
    reason          text,
    evidence        jsonb NOT NULL DEFAULT '{}'::jsonb,  -- the test's statistics at the decision
    started_at      timestamptz NOT NULL DEFAULT now(),
    decided_at      timestamptz,
    FOREIGN KEY (tenant_id, agent_name) REFERENCES agents (tenant_id, name) ON DELETE CASCADE
);
CREATE UNIQUE INDEX rollouts_active_canary_idx ON rollouts (tenant_id, agent_name)
    WHERE status = 'active' AND kind = 'canary';
CREATE UNIQUE INDEX rollouts_evolution_idx ON rollouts (evolution_id);
CREATE INDEX rollouts_agent_idx ON rollouts (tenant_id, agent_name, started_at DESC);

-- Live evidence: one row per observed live (or shadow) run, written once. `success` is
-- the run's verdict (outcome, rating, judged score, cost and latency within bounds).
CREATE TABLE live_observations (
    run_id        text PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    tenant_id     text NOT NULL,
    agent_name    text NOT NULL,
    version       integer NOT NULL,
    rollout_id    text,
    source        text NOT NULL DEFAULT 'live' CHECK (source IN ('live', 'shadow')),
    success       boolean NOT NULL,
    judged_score  double precision,   -- NULL: not sampled for the judge
    detail        text NOT NULL DEFAULT '',
    cost_usd      numeric(14, 6) NOT NULL DEFAULT 0,
    latency_s     double precision,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX live_observations_version_idx
    ON live_observations (tenant_id, agent_name, version, created_at);

-- A live run re-run on the canary in evaluation mode (the user never sees it).
CREATE TABLE shadow_pairs (
    tenant_id      text NOT NULL,
    rollout_id     text NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    live_run_id    text NOT NULL,
    shadow_run_id  text NOT NULL,
    live_success   boolean,
    shadow_success boolean,
    PRIMARY KEY (rollout_id, live_run_id)
);

-- The end user a run was for (sticky canary assignment), and the rollout that picked it.
ALTER TABLE runs ADD COLUMN end_user text, ADD COLUMN rollout_id text;

-- An automatic rollback is a cause of its own in the lineage.
ALTER TABLE agent_versions DROP CONSTRAINT agent_versions_cause_check;
ALTER TABLE agent_versions ADD CONSTRAINT agent_versions_cause_check
    CHECK (cause IN ('manual', 'rollback', 'auto_rollback', 'evolution'));
