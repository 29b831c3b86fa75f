-- Agents that grow (issue 14): code tools an evolution cycle writes, and sub-agents it
-- creates.

-- A tool an evolution cycle wrote is a `draft` attached to the candidate version that
-- adds it (`agent_name`, `agent_version`, `evolution_id`): only that version's runs see
-- it; the catalog, the tool list and tool search ignore it. Promoting the candidate
-- makes it `active`.
ALTER TABLE tools
    ADD COLUMN status         text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'draft')),
    ADD COLUMN evolution_id   text,
    ADD COLUMN agent_name     text,
    ADD COLUMN agent_version  integer;
CREATE INDEX tools_drafts_idx ON tools (tenant_id, agent_name, agent_version)
    WHERE status = 'draft';

-- A sub-agent an evolution cycle created belongs to the agent that calls it (its name).
ALTER TABLE agents ADD COLUMN owner text;

-- Code tools a cycle's proposer wrote, waiting for their tests in the sandbox (the tools
-- lane), and what came of them: `registered` as a draft tool with candidate `version`,
-- or `rejected` with the reason. `results` holds each test's outcome.
CREATE TABLE evolution_growth (
    tenant_id       text NOT NULL,
    evolution_id    text NOT NULL REFERENCES evolutions (id) ON DELETE CASCADE,
    slot            integer NOT NULL,   -- the draft's place among the cycle's candidates
    parent_version  integer NOT NULL,
    tool            jsonb NOT NULL,     -- core.evolution.growth.GeneratedTool
    rationale       text NOT NULL DEFAULT '',
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'registered', 'rejected')),
    version         integer,
    results         jsonb NOT NULL DEFAULT '[]'::jsonb,
    reason          text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (evolution_id, slot)
);
