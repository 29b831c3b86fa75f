-- Evolution: eval cases, evolution cycles, their candidates and per-case results, and the
-- lineage of agent versions.

-- Lineage. A version is `released` (runs may use it; `agents.latest_version` is the live
-- one) or a `candidate` an evolution cycle proposed and evaluates; a candidate that wins
-- is released by the cycle. Numbers stay unique per agent across both.
ALTER TABLE agent_versions
    ADD COLUMN status          text NOT NULL DEFAULT 'released'
                               CHECK (status IN ('released', 'candidate')),
    ADD COLUMN parent_version  integer,
    ADD COLUMN cause           text NOT NULL DEFAULT 'manual'
                               CHECK (cause IN ('manual', 'rollback', 'evolution')),
    ADD COLUMN evolution_id    text,
    ADD COLUMN rationale       text;

-- Feedback items get a category (a model call sorts them; NULL until then).
ALTER TABLE run_feedback
    ADD COLUMN category  text CHECK (category IN (
        'complete_success', 'partial_success', 'failure', 'wrong_approach',
        'missing_capability', 'quality_issue', 'performance_issue', 'misunderstood_objective')),
    ADD COLUMN expected  text;

-- Eval cases: an objective with exact checks or a rubric. The split is fixed by the id
-- (stable hash), so a case never moves between train, validation and holdout.
CREATE TABLE eval_cases (
    id             text PRIMARY KEY,
    tenant_id      text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    agent_name     text NOT NULL,
    objective      text NOT NULL,
    checks         jsonb NOT NULL DEFAULT '[]'::jsonb,   -- core.evolution.checks.Check
    rubric         text,
    expected       text,                                 -- a reference answer, if known
    tags           text[] NOT NULL DEFAULT '{}',
    guard          boolean NOT NULL DEFAULT false,
    split          text NOT NULL CHECK (split IN ('train', 'validation', 'holdout')),
    source_run_id  text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (jsonb_array_length(checks) > 0 OR rubric IS NOT NULL),
    FOREIGN KEY (tenant_id, agent_name) REFERENCES agents (tenant_id, name) ON DELETE CASCADE
);
CREATE INDEX eval_cases_agent_idx ON eval_cases (tenant_id, agent_name, split);
CREATE UNIQUE INDEX eval_cases_source_run_idx ON eval_cases (tenant_id, source_run_id);

-- One evolution cycle of one agent.
CREATE TABLE evolutions (
    id                 text PRIMARY KEY,
    tenant_id          text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    agent_name         text NOT NULL,
    workflow_id        text NOT NULL UNIQUE,
    incumbent_version  integer NOT NULL,
    trigger            text NOT NULL DEFAULT 'manual',  -- manual, schedule, failures, feedback
    settings           jsonb NOT NULL,                  -- core.evolution.payloads.EvolutionSettings
    status             text NOT NULL DEFAULT 'queued'
                       CHECK (status IN ('queued', 'running', 'waiting', 'succeeded', 'failed', 'cancelled')),
    phase              text,
    decision           text CHECK (decision IN ('promote', 'keep')),
    promoted_version   integer,
    reasons            jsonb NOT NULL DEFAULT '[]'::jsonb,
    evidence           jsonb NOT NULL DEFAULT '{}'::jsonb,  -- summary of what was gathered
    diagnoses          jsonb NOT NULL DEFAULT '[]'::jsonb,
    gate               jsonb,                               -- the gate's statistics
    judge              jsonb,                               -- judge model and prompt hash
    cost_usd           numeric(14, 6) NOT NULL DEFAULT 0,
    last_event_seq     bigint NOT NULL DEFAULT 0,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    finished_at        timestamptz,
    FOREIGN KEY (tenant_id, agent_name) REFERENCES agents (tenant_id, name) ON DELETE CASCADE
);
CREATE INDEX evolutions_agent_idx ON evolutions (tenant_id, agent_name, created_at DESC);

-- The candidates of a cycle (each a `candidate` agent version) with their diffs.
CREATE TABLE evolution_candidates (
    tenant_id     text NOT NULL,
    evolution_id  text NOT NULL REFERENCES evolutions (id) ON DELETE CASCADE,
    version       integer NOT NULL,
    kind          text NOT NULL,   -- instruction_edit, rewrite, few_shot, tools, model
    rationale     text NOT NULL DEFAULT '',
    diff          text NOT NULL DEFAULT '',
    rejected      text,            -- why it was rejected before evaluation, if it was
    score         jsonb,           -- validation / holdout summaries against the incumbent
    cost_usd      numeric(14, 6) NOT NULL DEFAULT 0,
    PRIMARY KEY (evolution_id, version)
);

-- One case evaluated under one version in one cycle (the incumbent too).
CREATE TABLE evolution_results (
    tenant_id     text NOT NULL,
    evolution_id  text NOT NULL REFERENCES evolutions (id) ON DELETE CASCADE,
    version       integer NOT NULL,
    case_id       text NOT NULL,
    split         text NOT NULL,
    run_id        text,
    score         double precision,  -- NULL: no valid result (failed, timed out): a failure
    passed        boolean NOT NULL DEFAULT false,
    detail        text NOT NULL DEFAULT '',
    cost_usd      numeric(14, 6) NOT NULL DEFAULT 0,
    latency_s     double precision,
    PRIMARY KEY (evolution_id, version, case_id)
);

-- Pairwise judgments of rubric cases: the judge saw the incumbent's and a candidate's
-- answers, in an order fixed by a hash (so each is shown first about half the time).
CREATE TABLE evolution_pairs (
    tenant_id     text NOT NULL,
    evolution_id  text NOT NULL REFERENCES evolutions (id) ON DELETE CASCADE,
    version       integer NOT NULL,
    case_id       text NOT NULL,
    preferred     text NOT NULL CHECK (preferred IN ('candidate', 'incumbent', 'tie')),
    shown_first   text NOT NULL CHECK (shown_first IN ('candidate', 'incumbent')),
    reason        text NOT NULL DEFAULT '',
    cost_usd      numeric(14, 6) NOT NULL DEFAULT 0,
    PRIMARY KEY (evolution_id, version, case_id)
);

CREATE TABLE evolution_events (
    tenant_id     text NOT NULL,
    evolution_id  text NOT NULL REFERENCES evolutions (id) ON DELETE CASCADE,
    seq           bigint NOT NULL,
    key           text NOT NULL,
    type          text NOT NULL,
    data          jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (evolution_id, seq),
    UNIQUE (evolution_id, key)
);

-- An agent's evolution policy: the settings of its cycles, their schedule (a Temporal
-- Schedule per agent) and the triggers that start a cycle on their own. A trigger check
-- locks the row (SELECT ... FOR UPDATE), so concurrent checks start one cycle at most.
CREATE TABLE evolution_policies (
    tenant_id          text NOT NULL,
    agent_name         text NOT NULL,
    settings           jsonb NOT NULL DEFAULT '{}'::jsonb,  -- EvolutionSettings
    every              text,                               -- an interval ("24h") ...
    cron               text,                               -- ... or a cron expression
    paused             boolean NOT NULL DEFAULT false,
    triggers           jsonb NOT NULL DEFAULT '{}'::jsonb,  -- EvolutionTriggers
    last_triggered_at  timestamptz,                         -- when a trigger last started a cycle
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, agent_name),
    FOREIGN KEY (tenant_id, agent_name) REFERENCES agents (tenant_id, name) ON DELETE CASCADE
);

-- Which runs belong to an evolution cycle's evaluations (not shown among live runs' metrics).
ALTER TABLE runs ADD COLUMN evolution_id text;
