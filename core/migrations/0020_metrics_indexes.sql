-- The gauges the API's /metrics reads from Postgres at every scrape (core/metrics.py
-- `state_families`) look only at what is not finished yet: partial indexes keep those
-- reads proportional to live work instead of scanning every run ever made.
CREATE INDEX runs_live_idx ON runs (tenant_id, status)
    WHERE status IN ('queued', 'running', 'waiting');
CREATE INDEX swarms_live_idx ON swarms (id) WHERE finished_at IS NULL;
CREATE INDEX evolutions_live_idx ON evolutions (tenant_id, status) WHERE finished_at IS NULL;
