-- The hand-written equivalent of the backfill's first CALL, each step in its own transaction as
-- a runbook runs them (psql variables tbl, org): the column, a default for rows written
-- meanwhile, one UPDATE of every row, NOT NULL, the foreign key.
\set ON_ERROR_STOP 1
ALTER TABLE public.:tbl ADD COLUMN organization_id uuid;
ALTER TABLE public.:tbl ALTER COLUMN organization_id SET DEFAULT :'org';
UPDATE public.:tbl SET organization_id = :'org' WHERE organization_id IS NULL;
ALTER TABLE public.:tbl ALTER COLUMN organization_id SET NOT NULL;
ALTER TABLE public.:tbl ADD FOREIGN KEY (organization_id) REFERENCES tenancy.organizations (id);
