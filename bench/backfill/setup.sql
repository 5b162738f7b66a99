-- The backfill benchmark's tables: the tenant table as it was before multi-tenancy (t_a without
-- organization_id), in identical copies made with copy.sql. Run by postgres.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
CREATE TABLE public.bf_src AS SELECT id, created_at, status, amount_cents, note FROM public.t_a;
