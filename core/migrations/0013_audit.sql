-- The audit log: one row per authenticated mutating API call (who, tenant, route,
-- resource, time, outcome). Admins read their tenant's at GET /v1/audit.
CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key_id      text NOT NULL,
    method      text NOT NULL,
    route       text NOT NULL,                    -- the route's template, /v1/agents/{name}
    path        text NOT NULL,                    -- the path as called
    resource    jsonb NOT NULL DEFAULT '{}'::jsonb,  -- the path parameters
    status      integer NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_tenant_idx ON audit_log (tenant_id, created_at DESC, id DESC);
