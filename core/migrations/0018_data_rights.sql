-- Data rights (issue 15): DELETE /v1/runs/{id} and DELETE /v1/end-users/{name} delete runs
-- with everything derived from them (core/data_rights.py).

-- The cost ledger outlives the runs it paid for: a deleted run's llm_calls rows stay, with
-- run_id NULL, so tenant spend (caps, usage) still counts them. They hold no content, only
-- model, tokens, cost and time. run_id leaves the primary key for a unique index (NULLs
-- are distinct in it); `ON CONFLICT (run_id, step, purpose)` still finds it.
ALTER TABLE llm_calls DROP CONSTRAINT llm_calls_pkey;
ALTER TABLE llm_calls ALTER COLUMN run_id DROP NOT NULL;
CREATE UNIQUE INDEX llm_calls_run_step_idx ON llm_calls (run_id, step, purpose);
ALTER TABLE llm_calls DROP CONSTRAINT llm_calls_run_id_fkey;
ALTER TABLE llm_calls ADD CONSTRAINT llm_calls_run_id_fkey
    FOREIGN KEY (run_id) REFERENCES runs (id) ON DELETE SET NULL;

-- An end user's runs, found without scanning the tenant's.
CREATE INDEX runs_end_user_idx ON runs (tenant_id, end_user) WHERE end_user IS NOT NULL;
-- Shadow runs of a live run (deleted with it).
CREATE INDEX shadow_pairs_live_run_idx ON shadow_pairs (live_run_id);
