-- The tables and roles of the policy-overhead benchmark. Run by postgres (the catalog owner) after
-- setup.sql. Every variant gets an identical copy of t_a (same rows, same physical order, same
-- indexes); the queries run as bench_app, which owns none of them.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
SET maintenance_work_mem = '512MB';

CREATE ROLE bench_app LOGIN;

-- (a) no RLS: the application filters by hand.
-- (b) tenancy, context mode.          (c) tenancy, membership mode.
-- (d1) a per-row membership function (basejump's has_role_on_account).
-- (d2) an unwrapped auth.uid()-style call in an IN (sub-select) over a memberships table.
-- (e) the fastest hand-written secure form of Supabase's RLS performance guide: the user's
--     organizations collected once per statement into an array, auth.uid() wrapped in a SELECT.
CREATE TABLE public.t_ctx (LIKE public.t_a);
CREATE TABLE public.t_mem (LIKE public.t_a);
CREATE TABLE public.t_fn  (LIKE public.t_a);
CREATE TABLE public.t_uid (LIKE public.t_a);
CREATE TABLE public.t_e   (LIKE public.t_a);
INSERT INTO public.t_ctx SELECT * FROM public.t_a;
INSERT INTO public.t_mem SELECT * FROM public.t_a;
INSERT INTO public.t_fn  SELECT * FROM public.t_a;
INSERT INTO public.t_uid SELECT * FROM public.t_a;
INSERT INTO public.t_e   SELECT * FROM public.t_a;
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['t_a', 't_ctx', 't_mem', 't_fn', 't_uid', 't_e'] LOOP
        EXECUTE format('ALTER TABLE public.%I ADD PRIMARY KEY (id)', t);
        EXECUTE format('CREATE INDEX ON public.%I (organization_id, created_at)', t);
        EXECUTE format('ALTER TABLE public.%I ADD FOREIGN KEY (organization_id) REFERENCES tenancy.organizations (id)', t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON public.%I TO bench_app', t);
    END LOOP;
END $$;

SELECT tenancy.enable_isolation('public.t_ctx', mode => 'context') IS NOT NULL AS ctx_isolated;
SELECT tenancy.enable_isolation('public.t_mem', mode => 'membership') IS NOT NULL AS mem_isolated;

-- The hand-written alternatives, as the guides write them: a memberships table of their own,
-- the user id read from a setting, and the checks called per row.
CREATE TABLE public.members (
    organization_id uuid NOT NULL,
    user_id         uuid NOT NULL,
    role            text NOT NULL,
    PRIMARY KEY (organization_id, user_id)
);
CREATE INDEX ON public.members (user_id);
INSERT INTO public.members SELECT organization_id, user_id, role FROM tenancy.memberships WHERE is_active;
GRANT SELECT ON public.members TO bench_app;

-- auth.uid() as Supabase defines it: the user id from a setting, in a SQL function.
CREATE FUNCTION public.uid() RETURNS uuid LANGUAGE sql STABLE
  AS $$ SELECT nullif(current_setting('app.user_id', true), '')::uuid $$;

-- basejump's has_role_on_account(account_id): SECURITY DEFINER with a pinned search_path, which
-- also keeps the planner from inlining it, so it runs once per row.
CREATE FUNCTION public.has_role_on_account(org uuid) RETURNS boolean LANGUAGE sql STABLE
  SECURITY DEFINER SET search_path = pg_catalog, public
  AS $$ SELECT EXISTS (SELECT 1 FROM public.members m
                        WHERE m.user_id = current_setting('app.user_id')::uuid
                          AND m.organization_id = org) $$;

ALTER TABLE public.t_fn ENABLE ROW LEVEL SECURITY;
CREATE POLICY t_fn_members ON public.t_fn FOR ALL TO PUBLIC
  USING (public.has_role_on_account(organization_id));

ALTER TABLE public.t_uid ENABLE ROW LEVEL SECURITY;
CREATE POLICY t_uid_members ON public.t_uid FOR ALL TO PUBLIC
  USING (organization_id IN (SELECT m.organization_id FROM public.members m WHERE m.user_id = public.uid()));

ALTER TABLE public.t_e ENABLE ROW LEVEL SECURITY;
CREATE POLICY t_e_members ON public.t_e FOR ALL TO PUBLIC
  USING (organization_id = ANY (ARRAY(SELECT m.organization_id FROM public.members m WHERE m.user_id = (SELECT public.uid()))));

VACUUM ANALYZE public.t_a, public.t_ctx, public.t_mem, public.t_fn, public.t_uid, public.t_e, public.members,
               tenancy.organizations, tenancy.memberships;

-- Into shared_buffers (sized for them by scripts/bench.sh): the five copies and their indexes.
CREATE EXTENSION IF NOT EXISTS pg_prewarm;
SELECT sum(pg_prewarm(c.oid)) AS blocks_prewarmed
  FROM pg_class c
 WHERE c.oid IN (SELECT t::regclass FROM unnest(ARRAY['public.t_a', 'public.t_ctx', 'public.t_mem', 'public.t_fn', 'public.t_uid', 'public.t_e']) t)
    OR c.oid IN (SELECT i.indexrelid FROM pg_index i
                  WHERE i.indrelid IN (SELECT t::regclass FROM unnest(ARRAY['public.t_a', 'public.t_ctx', 'public.t_mem', 'public.t_fn', 'public.t_uid', 'public.t_e']) t));
