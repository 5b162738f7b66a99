-- The integrity benchmark's table: t_fn (done with in part 1) as a table right after a runbook's
-- backfill, before its constraints: nullable, no foreign key, no RLS, a few rows without a
-- tenant and a few whose tenant does not exist. Registered with tenancy.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
ALTER TABLE public.t_fn RENAME TO t_integrity;
DROP POLICY t_fn_members ON public.t_integrity;
ALTER TABLE public.t_integrity DISABLE ROW LEVEL SECURITY;
ALTER TABLE public.t_integrity DROP CONSTRAINT t_fn_organization_id_fkey;
ALTER TABLE public.t_integrity ALTER COLUMN organization_id DROP NOT NULL;
UPDATE public.t_integrity SET organization_id = NULL WHERE id % 100003 = 1;
UPDATE public.t_integrity SET organization_id = 'cccccccc-0000-4000-8000-000000000000' WHERE id % 100003 = 2;
VACUUM ANALYZE public.t_integrity;
SELECT tenancy.register_table('public.t_integrity') IS NOT NULL AS registered;
