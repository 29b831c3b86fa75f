-- The safety log: one row per guardrail trigger (agents' input, output and tool-output
-- guardrails, core/runs/guardrails.py). The excerpt is masked (topics, lexicon phrases,
-- personal data) and short; the blocked text itself is never stored here.
CREATE TABLE safety_log (
    id             bigserial PRIMARY KEY,
    tenant_id      text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    agent_name     text NOT NULL,
    agent_version  integer NOT NULL,
    run_id         text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    key            text NOT NULL,                -- one row per trigger, however often retried
    guardrail      text NOT NULL,                -- topic:NAME, pii, moderation, output_size
    stage          text NOT NULL CHECK (stage IN ('input', 'output', 'tool_output')),
    action         text NOT NULL CHECK (action IN ('block', 'mask', 'flag')),
    detail         text NOT NULL DEFAULT '',     -- what matched, in words (never the text)
    excerpt        text NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (run_id, key)
);
CREATE INDEX safety_log_tenant_idx ON safety_log (tenant_id, created_at DESC, id DESC);
CREATE INDEX safety_log_agent_idx ON safety_log (tenant_id, agent_name, created_at DESC);
