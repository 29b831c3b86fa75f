-- Recipes: a swarm plan that solved a class of objectives, saved under a name and run again
-- (as the tool `recipe:<name>`, or `POST /v1/swarms {"recipe": ...}`) without the queen
-- planning. `plan` is the subtasks DAG as the queen made it, with the source objective
-- replaced by `{objective}` wherever it appeared; a new objective fills it in.
CREATE TABLE recipes (
    tenant_id        text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name             text NOT NULL,
    description      text NOT NULL DEFAULT '',
    mode             text NOT NULL CHECK (mode IN ('sequential', 'parallel', 'hierarchical')),
    plan             jsonb NOT NULL,                 -- [core.swarms.plan.SubtaskSpec]
    settings         jsonb NOT NULL,                 -- core.swarms.plan.SwarmSettings
    queen_agent      text NOT NULL,
    objective        text NOT NULL,                  -- the source swarm's, for reference
    source_swarm_id  text REFERENCES swarms (id) ON DELETE SET NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

-- A swarm started from a recipe: which one, and the run whose tool call started it.
ALTER TABLE swarms ADD COLUMN recipe text;
ALTER TABLE swarms ADD COLUMN parent_run_id text REFERENCES runs (id) ON DELETE SET NULL;
CREATE INDEX swarms_parent_run_idx ON swarms (parent_run_id) WHERE parent_run_id IS NOT NULL;
