-- The tenant's spend per UTC day, kept by triggers on the three cost ledgers, so the spend
-- caps (core/limits.py `spend`, read before every model call) sum at most 31 rows instead
-- of a month of ledger rows. Deleting ledger rows (a deleted swarm's queen calls) does not
-- lower it: money spent stays spent.
CREATE TABLE tenant_spend_days (
    tenant_id  text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    day        date NOT NULL,                  -- UTC
    cost_usd   numeric(18, 8) NOT NULL DEFAULT 0,
    calls      bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day)
);

CREATE FUNCTION colony_count_spend() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tenant_spend_days AS d (tenant_id, day, cost_usd, calls)
    VALUES (NEW.tenant_id, (NEW.created_at AT TIME ZONE 'UTC')::date,
            coalesce(NEW.cost_usd, 0), 1)
    ON CONFLICT (tenant_id, day) DO UPDATE
        SET cost_usd = d.cost_usd + EXCLUDED.cost_usd, calls = d.calls + 1;
    RETURN NULL;
END $$;

CREATE TRIGGER llm_calls_spend AFTER INSERT ON llm_calls
    FOR EACH ROW EXECUTE FUNCTION colony_count_spend();
CREATE TRIGGER swarm_llm_calls_spend AFTER INSERT ON swarm_llm_calls
    FOR EACH ROW EXECUTE FUNCTION colony_count_spend();
CREATE TRIGGER evolution_llm_calls_spend AFTER INSERT ON evolution_llm_calls
    FOR EACH ROW EXECUTE FUNCTION colony_count_spend();

INSERT INTO tenant_spend_days (tenant_id, day, cost_usd, calls)
SELECT l.tenant_id, (l.created_at AT TIME ZONE 'UTC')::date, sum(coalesce(l.cost_usd, 0)), count(*)
FROM (
    SELECT tenant_id, cost_usd, created_at FROM llm_calls
    UNION ALL SELECT tenant_id, cost_usd, created_at FROM swarm_llm_calls
    UNION ALL SELECT tenant_id, cost_usd, created_at FROM evolution_llm_calls
) l
JOIN tenants t ON t.id = l.tenant_id
GROUP BY 1, 2;
