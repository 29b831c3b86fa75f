-- Agents called as tools run as child runs; a child knows its parent run and the call.
ALTER TABLE runs ADD COLUMN parent_run_id text REFERENCES runs (id) ON DELETE SET NULL;
ALTER TABLE runs ADD COLUMN parent_call_id text;
CREATE INDEX runs_parent_idx ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL;
