-- API keys get scopes and an optional expiry (issue 15).
-- admin implies write, read and eval; write implies read; eval (evolution-only
-- automation) implies read. `role` stays, kept in step by the code, for older readers:
-- 'admin' when the key has the admin scope, 'member' otherwise.
ALTER TABLE api_keys
    ADD COLUMN scopes text[] NOT NULL DEFAULT '{write}'
        CHECK (cardinality(scopes) > 0 AND scopes <@ ARRAY['admin', 'write', 'read', 'eval']),
    ADD COLUMN expires_at timestamptz;
UPDATE api_keys SET scopes = CASE role WHEN 'admin' THEN '{admin}'::text[] ELSE '{write}'::text[] END;
