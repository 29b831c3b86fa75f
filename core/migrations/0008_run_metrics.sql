-- Per-agent reads of runs (metrics per version, evolution evidence) find an agent's runs
-- without scanning all of the tenant's.
CREATE INDEX runs_agent_version_idx ON runs (tenant_id, agent_name, agent_version, created_at);
