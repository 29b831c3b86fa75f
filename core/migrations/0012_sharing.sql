-- How a tenant's agents share what they learn (core/tenants.py `SharingMode`):
--   shared    lessons and skills written with scope `shared` reach every agent of the
--             tenant (recall, evolution evidence, bootstrap drafts): the behaviour
--             before this column existed, so it is the default
--   isolated  an agent learns only from its own runs
-- Nothing crosses tenants in either mode.
ALTER TABLE tenants
    ADD COLUMN sharing text NOT NULL DEFAULT 'shared' CHECK (sharing IN ('isolated', 'shared'));
