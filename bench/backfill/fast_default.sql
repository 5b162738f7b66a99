-- For comparison only: when every existing row gets the same organization, Postgres (11+) can
-- add the column with a constant default and NOT NULL without writing any row (the value is
-- kept in the catalog), and the foreign key can be validated without blocking writers.
-- psql variables tbl, org.
\set ON_ERROR_STOP 1
ALTER TABLE public.:tbl ADD COLUMN organization_id uuid NOT NULL DEFAULT :'org';
ALTER TABLE public.:tbl ADD CONSTRAINT bench_fast_default_fk FOREIGN KEY (organization_id) REFERENCES tenancy.organizations (id) NOT VALID;
ALTER TABLE public.:tbl VALIDATE CONSTRAINT bench_fast_default_fk;
