-- Idempotency keys name one request: the SHA-256 of the request that first used a key,
-- so reusing the key with a different body is refused (409 idempotency_conflict).
-- Rows from before have none and accept any body, as before.
ALTER TABLE runs ADD COLUMN request_hash bytea;
ALTER TABLE swarms ADD COLUMN request_hash bytea;
