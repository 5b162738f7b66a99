-- The backfill benchmark's tables: the tenant table as it was before multi-tenancy (t_a without
-- organization_id), in identical copies made with copy.sql. Run by postgres.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
CREATE TABLE public.bf_src AS SELECT id, created_at, status, amount_cents, note FROM public.t_a;
-- The derived case: a child table whose rows take their organization from a parent row through
-- a foreign key (documents -> shipments). One parent per ten rows, of organization
-- bench_org(1 + id % n_orgs), converted already (a NOT NULL tenant column); each row of bf_dsrc
-- points at a parent chosen by a hash of its id (parents scattered over the child table).
CREATE TABLE public.bf_parent (id bigint PRIMARY KEY, organization_id uuid NOT NULL REFERENCES tenancy.organizations);
INSERT INTO public.bf_parent SELECT g, public.bench_org(1 + (g % :n_orgs)::int)
  FROM generate_series(1, greatest(1, (SELECT count(*) FROM public.bf_src) / 10)) g;
CREATE TABLE public.bf_dsrc AS
SELECT s.*, 1 + abs(hashint8(s.id)) % (SELECT count(*) FROM public.bf_parent) AS parent_id FROM public.bf_src s;
VACUUM ANALYZE public.bf_parent;
