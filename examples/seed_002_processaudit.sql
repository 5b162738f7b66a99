-- Seed 002 (ProcessAudit AI, "Phase 2: Database Schema Migration for Organization Support"): a
-- single-tenant Supabase project becomes multi-tenant. The runbook's three migrations
-- (organizations + organization_memberships, organization RLS policies, existing data and users
-- moved to a default organization) and its validation, health and debug queries, done with
-- tenancy, online. Run it with psql (it uses \gexec):
--
--   psql -v ON_ERROR_STOP=1 -f examples/seed_002_processaudit.sql     (in an empty database)
--
-- connected as a superuser (scripts/test.sh runs it). Who runs what:
--   * the superuser, at the top only: Supabase's cluster roles (anon, authenticated, service_role
--     BYPASSRLS) and the project's database owner, the LOGIN role processaudit_owner (NOSUPERUSER,
--     NOBYPASSRLS, as Supabase's postgres role is not a superuser), member of anon and
--     authenticated, made owner of the database; then SET SESSION AUTHORIZATION processaudit_owner;
--   * the database owner processaudit_owner, everything else: the auth schema and the tables with
--     data, CREATE EXTENSION tenancy (a trusted install), the conversion, the runbook's checks
--     (over isolated tables in a transaction that called tenancy.operate('runbook 002
--     validation'): operator mode, no superuser, no BYPASSRLS), the API requests (SET LOCAL ROLE
--     authenticated / anon), the rollback;
--   * a concurrent writer (a second connection of processaudit_owner, examples/writer_start.psql)
--     keeps inserting and updating audit_reports and automation_jobs during the whole backfill;
--   * the superuser again, twice, only where it cannot be avoided: the Workers' check, which runs
--     as Supabase's service_role (BYPASSRLS: only a superuser may SET ROLE to it without making the
--     owner a member of a role that bypasses RLS), and DROP SCHEMA tenancy after DROP EXTENSION
--     (the empty schema belongs to the bootstrap superuser, docs/security.md).
-- Part 1 builds what a Supabase project has before the
-- migration (the roles, auth.users and auth.uid(), three tables under per-user RLS) with data;
-- part 2 is the conversion; part 3 is the runbook's checks, each an assertion, and isolation
-- proven the way PostgREST runs requests (SET LOCAL ROLE authenticated + request.jwt.claims).
\set ON_ERROR_STOP 1
\pset pager off
SET client_min_messages = warning;

------------------------------------------------------------------------------------------------
-- Part 1. ProcessAudit AI before the migration: Supabase, one user owns each row.
------------------------------------------------------------------------------------------------
-- Supabase's API roles (cluster-wide: created only when absent). The service role, used by the
-- Workers with SUPABASE_SERVICE_KEY, bypasses row-level security.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
        CREATE ROLE anon NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        CREATE ROLE authenticated NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
    END IF;
    IF NOT (SELECT rolbypassrls FROM pg_roles WHERE rolname = 'service_role') THEN
        ALTER ROLE service_role BYPASSRLS;   -- as Supabase defines it
    END IF;
    -- The project's database owner: an ordinary login role.
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'processaudit_owner') THEN
        CREATE ROLE processaudit_owner LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEROLE NOCREATEDB;
    END IF;
END $$;
GRANT anon, authenticated TO processaudit_owner;   -- to run requests as PostgREST does (SET LOCAL ROLE)
SELECT format('ALTER DATABASE %I OWNER TO processaudit_owner', current_database()) \gexec
-- From here on, the database owner (the superuser comes back only where said).
SET SESSION AUTHORIZATION processaudit_owner;
DO $$
BEGIN   -- what the rest runs as: the owner of the database, neither superuser nor BYPASSRLS
    IF (SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user)
       OR (SELECT datdba::regrole::text FROM pg_database WHERE datname = current_database()) <> current_user THEN
        RAISE EXCEPTION 'not running as the database owner %, an ordinary role', current_user;
    END IF;
END $$;

-- Supabase's auth schema, as far as this database uses it: the users GoTrue writes, and
-- auth.uid() / auth.jwt() reading the claims PostgREST puts in request.jwt.claims.
CREATE SCHEMA auth;
CREATE TABLE auth.users (
    instance_id uuid, id uuid PRIMARY KEY, aud varchar(255), role varchar(255), email varchar(255),
    encrypted_password varchar(255), email_confirmed_at timestamptz, last_sign_in_at timestamptz,
    raw_app_meta_data jsonb, raw_user_meta_data jsonb, is_super_admin boolean, phone text UNIQUE,
    is_sso_user boolean NOT NULL DEFAULT false, is_anonymous boolean NOT NULL DEFAULT false,
    created_at timestamptz, updated_at timestamptz, deleted_at timestamptz);
CREATE UNIQUE INDEX users_email_partial_key ON auth.users (email) WHERE is_sso_user = false;
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('request.jwt.claim.sub', true), ''),
                    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'))::uuid
$$;
CREATE FUNCTION auth.jwt() RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('request.jwt.claim', true), ''),
                    nullif(current_setting('request.jwt.claims', true), ''))::jsonb
$$;
GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
GRANT ALL ON auth.users TO service_role;
-- Supabase's grants on public: everything to the API roles, row-level security decides.
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;

CREATE TABLE public.audit_reports (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL REFERENCES auth.users ON DELETE CASCADE,
    title text NOT NULL, process_name text, process_description text, industry text,
    status text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'analyzing', 'completed', 'failed')),
    automation_score integer CHECK (automation_score BETWEEN 0 AND 100),
    findings jsonb NOT NULL DEFAULT '[]', recommendations jsonb NOT NULL DEFAULT '[]',
    created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX audit_reports_user_id_created_at_idx ON public.audit_reports (user_id, created_at DESC);
CREATE TABLE public.automation_jobs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    report_id uuid NOT NULL REFERENCES public.audit_reports ON DELETE CASCADE,
    user_id uuid NOT NULL REFERENCES auth.users ON DELETE CASCADE,
    platform text NOT NULL CHECK (platform IN ('n8n', 'zapier', 'make')),
    status text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'processing', 'completed', 'failed')),
    progress integer NOT NULL DEFAULT 0, error_message text,
    created_at timestamptz NOT NULL DEFAULT now(), completed_at timestamptz);
CREATE INDEX automation_jobs_user_id_idx ON public.automation_jobs (user_id);
CREATE TABLE public.generated_automations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_id uuid NOT NULL REFERENCES public.automation_jobs ON DELETE CASCADE,
    name text NOT NULL, platform text NOT NULL, workflow_json jsonb NOT NULL, version integer NOT NULL DEFAULT 1,
    is_deployed boolean NOT NULL DEFAULT false, created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (job_id, version));

-- The single-tenant policies: each user sees and writes only their own rows (auth.uid(), as the
-- Supabase guides write it).
ALTER TABLE public.audit_reports ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.automation_jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.generated_automations ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Users can view own reports" ON public.audit_reports FOR SELECT USING (auth.uid() = user_id);
CREATE POLICY "Users can create own reports" ON public.audit_reports FOR INSERT WITH CHECK (auth.uid() = user_id);
CREATE POLICY "Users can update own reports" ON public.audit_reports FOR UPDATE USING (auth.uid() = user_id);
CREATE POLICY "Users can delete own reports" ON public.audit_reports FOR DELETE USING (auth.uid() = user_id);
CREATE POLICY "Users can view own jobs" ON public.automation_jobs FOR SELECT USING (auth.uid() = user_id);
CREATE POLICY "Users can create own jobs" ON public.automation_jobs FOR INSERT WITH CHECK (auth.uid() = user_id);
CREATE POLICY "Users can view own automations" ON public.generated_automations FOR SELECT
    USING (EXISTS (SELECT 1 FROM public.automation_jobs j WHERE j.id = job_id AND j.user_id = auth.uid()));

INSERT INTO auth.users (instance_id, id, aud, role, email, encrypted_password, email_confirmed_at, last_sign_in_at,
                        raw_app_meta_data, raw_user_meta_data, is_super_admin, created_at, updated_at)
SELECT '00000000-0000-0000-0000-000000000000', md5('auth-user' || g)::uuid, 'authenticated', 'authenticated',
       'user' || g || '@processaudit.example', '$2a$10$' || md5('pw' || g), timestamptz '2025-01-01' + g * interval '1 hour',
       timestamptz '2025-08-01' + g * interval '1 minute', '{"provider": "email", "providers": ["email"]}',
       jsonb_build_object('full_name', 'User ' || g), false,
       timestamptz '2025-01-01' + g * interval '1 hour', timestamptz '2025-01-01' + g * interval '1 hour'
  FROM generate_series(1, 3000) g;
-- Report r belongs to user 1 + r % 3000; job j to report 1 + j % 30000 (and that report's user);
-- automation a to job 1 + a % 45000, as version 1 or 2.
INSERT INTO public.audit_reports (id, user_id, title, process_name, industry, status, automation_score, findings, created_at, updated_at)
SELECT md5('report' || r)::uuid, md5('auth-user' || (1 + r % 3000))::uuid, 'Audit ' || r, 'Process ' || (r % 400),
       (ARRAY['finance', 'logistics', 'healthcare', 'retail'])[1 + r % 4],
       (ARRAY['draft', 'analyzing', 'completed', 'completed', 'failed'])[1 + r % 5], r % 101,
       jsonb_build_array(jsonb_build_object('step', r % 7, 'issue', 'manual hand-off')),
       timestamptz '2025-02-01' + r * interval '10 minutes', timestamptz '2025-02-01' + r * interval '10 minutes'
  FROM generate_series(1, 30000) r;
INSERT INTO public.automation_jobs (id, report_id, user_id, platform, status, progress, created_at, completed_at)
SELECT md5('job' || j)::uuid, md5('report' || (1 + j % 30000))::uuid, md5('auth-user' || (1 + (1 + j % 30000) % 3000))::uuid,
       (ARRAY['n8n', 'zapier', 'make'])[1 + j % 3], (ARRAY['queued', 'processing', 'completed', 'completed', 'failed'])[1 + j % 5],
       (j * 7) % 101, timestamptz '2025-02-01' + j * interval '7 minutes', timestamptz '2025-02-01' + j * interval '7 minutes' + interval '90 seconds'
  FROM generate_series(1, 45000) j;
INSERT INTO public.generated_automations (job_id, name, platform, workflow_json, version, is_deployed)
SELECT md5('job' || (1 + a % 45000))::uuid, 'Workflow ' || a, (ARRAY['n8n', 'zapier', 'make'])[1 + (1 + a % 45000) % 3],
       jsonb_build_object('nodes', jsonb_build_array(jsonb_build_object('type', 'trigger', 'id', a))), 1 + a / 45000, a % 4 = 0
  FROM generate_series(1, 60000) a;
ANALYZE auth.users, public.audit_reports, public.automation_jobs, public.generated_automations;

-- The runbook's data assessment, and what must survive unchanged: every row of every table, as
-- it is now (its columns of today, in order), hashed; compared again at the end.
SELECT (SELECT count(*) FROM auth.users) AS total_users, (SELECT count(*) FROM public.audit_reports) AS total_reports,
       (SELECT count(*) FROM public.automation_jobs) AS total_jobs, (SELECT count(*) FROM public.generated_automations) AS total_automations;
CREATE FUNCTION pg_temp.fingerprint(t regclass, cols text[], OUT n bigint, OUT sum bigint) LANGUAGE plpgsql AS $f$
BEGIN
    EXECUTE format('SELECT count(*), sum(hashtext(row(%s)::text)) FROM %s',
                   (SELECT string_agg(quote_ident(c), ', ') FROM unnest(cols) c), t) INTO n, sum;
END $f$;
CREATE TEMP TABLE checksums AS
SELECT t, cols, (pg_temp.fingerprint(t::regclass, cols)).*
  FROM unnest('{auth.users,public.audit_reports,public.automation_jobs,public.generated_automations}'::text[]) t
 CROSS JOIN LATERAL (SELECT array_agg(attname::text ORDER BY attnum) FROM pg_attribute
                      WHERE attrelid = t::regclass AND attnum > 0 AND NOT attisdropped) c(cols);
-- One user's history, to find again through the API afterwards ("existing users can access all
-- their historical data"): user 2, as counts per table (session settings, read by the checks).
SELECT set_config('seed.user_a', md5('auth-user2')::text, false),
       set_config('seed.user_a_reports', (SELECT count(*) FROM public.audit_reports WHERE user_id = md5('auth-user2')::uuid)::text, false),
       set_config('seed.user_a_jobs', (SELECT count(*) FROM public.automation_jobs WHERE user_id = md5('auth-user2')::uuid)::text, false),
       set_config('seed.user_a_automations', (SELECT count(*) FROM public.generated_automations a JOIN public.automation_jobs j ON j.id = a.job_id
                                                WHERE j.user_id = md5('auth-user2')::uuid)::text, false) \gset
SELECT set_config('seed.reports', (SELECT n FROM checksums WHERE t = 'public.audit_reports')::text, false),
       set_config('seed.jobs', (SELECT n FROM checksums WHERE t = 'public.automation_jobs')::text, false),
       set_config('seed.automations', (SELECT n FROM checksums WHERE t = 'public.generated_automations')::text, false) \gset

-- Their catalog shape too (columns, constraints with names and definitions, indexes, triggers,
-- policies with their expressions, RLS flags), for the rollback of part 4.
\ir rollback_check.psql

------------------------------------------------------------------------------------------------
-- Part 2. The conversion (migrations 20250904000001-3).
------------------------------------------------------------------------------------------------
-- 000001: organizations and organization_memberships are tenancy's catalog (tenancy.organizations,
-- tenancy.memberships: role, is_active for the runbook's status = 'active', the user's default).
CREATE EXTENSION tenancy;

-- The default organization (the runbook names none: "Default Organization", slug default), owned
-- by the project's first user, so that someone may manage it from the application.
SELECT tenancy.create_organization('Default Organization', 'default',
         settings => '{"plan": "legacy", "created_by_migration": "20250904000003"}',
         owner_user_id => (SELECT id FROM auth.users ORDER BY created_at, id LIMIT 1)) AS default_org \gset

-- 000003, first half: "all existing users added to default organization" (auth.users stays
-- Supabase's: no column is added there; the membership is the link).
SELECT * FROM tenancy.adopt_users('auth.users', '{"authenticated": "member"}', organization_id => :'default_org');

-- 000001 + 000003: organization_id on the three tables, filled online in batches (one COMMIT
-- each; the runbook's migration holds its locks for the whole run). Where the runbook assigns
-- everything to the default organization, tenancy follows the data flow it draws instead
-- (user -> organization -> audit_reports -> automation_jobs -> generated_automations): a report
-- takes its author's organization (the user's default membership), a job its report's, an
-- automation its job's. Today that is the default organization for every row (checked below), and
-- the rewritten foreign keys keep each child in its parent's organization from now on. A row
-- whose author has no membership is reported, not silently put somewhere. Then NOT NULL and a
-- validated foreign key to the organizations (the runbook's 'Personal' context, a NULL
-- organization_id, does not exist: a personal workspace is an organization of one).
-- The application keeps writing meanwhile: a concurrent writer (a second connection of the owner)
-- inserts a report (its organization from its author) and a job for it (from its report), each
-- marked as the writer's, and updates the ones it wrote before, one COMMIT each, until the
-- backfill is over (writer_stop.psql). The checklist finds every one of them in its author's
-- organization, then deletes them (by their marker) before comparing the rows with part 1's.
CREATE SCHEMA seed_writer;
CREATE TABLE seed_writer.control (stop boolean NOT NULL DEFAULT false, written int NOT NULL DEFAULT 0, finished_at timestamptz);
INSERT INTO seed_writer.control DEFAULT VALUES;
CREATE PROCEDURE seed_writer.run() LANGUAGE plpgsql AS $w$
DECLARE
    v_i int := 0;
    v_report uuid;
    v_job uuid;
    v_user uuid;
BEGIN
    WHILE NOT (SELECT stop FROM seed_writer.control) LOOP
        v_i := v_i + 1;
        UPDATE public.audit_reports SET status = 'completed' WHERE id = v_report;
        UPDATE public.automation_jobs SET status = 'completed', progress = 100 WHERE id = v_job;
        v_user := md5('auth-user' || (1 + v_i * 7 % 3000))::uuid;
        INSERT INTO public.audit_reports (user_id, title) VALUES (v_user, 'seed-writer-' || v_i) RETURNING id INTO v_report;
        INSERT INTO public.automation_jobs (report_id, user_id, platform, error_message) VALUES (v_report, v_user, 'n8n', 'seed-writer-' || v_i)
        RETURNING id INTO v_job;
        UPDATE seed_writer.control SET written = v_i;
        COMMIT;
        PERFORM pg_sleep(0.02);
    END LOOP;
    UPDATE seed_writer.control SET finished_at = clock_timestamp();
END $w$;
\ir writer_start.psql
CALL tenancy.backfill_all('{audit_reports,automation_jobs,generated_automations}',
    derive => '{"audit_reports": {"user_column": "user_id"},
                "automation_jobs": {"parent": "audit_reports"},
                "generated_automations": {"parent": "automation_jobs"}}',
    batch_size => 20000);
SELECT table_name, phase, rows_done FROM tenancy.backfill_progress ORDER BY table_name;

-- "Performance: optimized indexes for multi-tenant queries": (organization_id, key) for every
-- primary, unique and foreign key, built CONCURRENTLY; then unique and foreign keys rewritten to
-- carry organization_id.
SELECT statement FROM tenancy.pending_statements() \gexec
CALL tenancy.backfill_all('{audit_reports,automation_jobs,generated_automations}',
    derive => '{"audit_reports": {"user_column": "user_id"},
                "automation_jobs": {"parent": "audit_reports"},
                "generated_automations": {"parent": "automation_jobs"}}');
SELECT table_name, phase, skipped FROM tenancy.backfill_progress ORDER BY table_name;
-- The backfill is over: the writer stops (its rows are checked in part 3).
\ir writer_stop.psql

-- 000002: organization RLS policies replace the per-user ones, in one transaction (no moment
-- without a policy). tenancy's are membership policies for Supabase's API role: a user reads
-- the rows of every organization they are an active member of (or only the one a JWT
-- organization_id claim names), writes where their role allows it; each policy reads the
-- context once per statement. anon loses its Supabase default grants on the tenant tables (lint
-- TEN015): before, its empty policy result was the only thing between it and the data.
BEGIN;
SELECT format('DROP POLICY %I ON %I.%I', policyname, schemaname, tablename)
  FROM pg_policies
 WHERE schemaname = 'public' AND tablename IN ('audit_reports', 'automation_jobs', 'generated_automations')
   AND policyname NOT LIKE 'tenancy\_%' \gexec
REVOKE ALL ON public.audit_reports, public.automation_jobs, public.generated_automations FROM anon;
-- Supabase's default GRANT ALL also gives authenticated TRUNCATE (every tenant's rows), TRIGGER
-- (its code on every tenant's writes) and REFERENCES, which RLS does not stop (lint TEN016).
REVOKE TRUNCATE, TRIGGER, REFERENCES ON public.audit_reports, public.automation_jobs, public.generated_automations
  FROM authenticated;
SELECT table_name, action FROM tenancy.enable_isolation_all('public', roles => '{authenticated}') ORDER BY 1;
COMMIT;

-- The runbook's queries and Workers name public.organizations and public.organization_memberships
-- (status = 'active') and read public.organization_stats; tenancy keeps its catalog in its own
-- schema, so these are views over it, security_invoker (a user sees their own memberships and
-- organizations and the counts of rows they may read; the service role sees all). Plain SQL:
-- tenancy has no such views.
CREATE VIEW public.organizations WITH (security_invoker = true) AS
SELECT id, name, slug, settings, is_active, created_at, updated_at FROM tenancy.organizations;
CREATE VIEW public.organization_memberships WITH (security_invoker = true) AS
SELECT organization_id, user_id, role, CASE WHEN is_active THEN 'active' ELSE 'inactive' END AS status,
       is_default, created_at
  FROM tenancy.memberships;
CREATE VIEW public.organization_stats WITH (security_invoker = true) AS
SELECT o.id AS organization_id, o.name, o.slug, o.is_active,
       (SELECT count(*) FROM tenancy.memberships m WHERE m.organization_id = o.id AND m.is_active) AS active_members,
       (SELECT count(*) FROM public.audit_reports r WHERE r.organization_id = o.id) AS reports,
       (SELECT count(*) FROM public.automation_jobs j WHERE j.organization_id = o.id) AS jobs,
       (SELECT count(*) FROM public.generated_automations a WHERE a.organization_id = o.id) AS automations,
       o.created_at
  FROM tenancy.organizations o;
REVOKE ALL ON public.organizations, public.organization_memberships, public.organization_stats FROM anon;
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON public.organizations, public.organization_memberships, public.organization_stats
  FROM authenticated, service_role;

-- Troubleshooting: "Run ANALYZE on modified tables".
ANALYZE public.audit_reports, public.automation_jobs, public.generated_automations;

------------------------------------------------------------------------------------------------
-- Part 3. The runbook's validation, health and debug queries, each an assertion, run by the
-- database owner.
------------------------------------------------------------------------------------------------
SELECT set_config('seed.org_default', (SELECT id FROM tenancy.organizations WHERE slug = 'default')::text, false) \gset
-- Row-level security is forced: without operator mode the owner sees no row of an isolated table,
-- so the answers below come from the explicit operator path, not from a privilege.
DO $$
DECLARE v_n bigint;
BEGIN
    SELECT count(*) INTO v_n FROM public.audit_reports;
    IF v_n <> 0 THEN RAISE EXCEPTION 'checklist: the owner sees % reports without operator mode', v_n; END IF;
    SELECT reports INTO v_n FROM public.organization_stats;
    IF v_n <> 0 THEN RAISE EXCEPTION 'checklist: the owner counts % reports in organization_stats without operator mode', v_n; END IF;
END $$;

-- The validation queries: a tenancy administrator acting as itself, in operator mode (one
-- transaction, logged with its reason).
BEGIN;
SELECT tenancy.operate('runbook 002 validation');
DO $$
DECLARE
    v_tables text[] := '{audit_reports,automation_jobs,generated_automations}';
    v_org    uuid := current_setting('seed.org_default')::uuid;
    v_n      bigint;
    v_m      bigint;
    v_bad    text;
    v_plan   jsonb;
BEGIN
    -- Every row the concurrent writer wrote during the backfill is there, updated as it was (all
    -- but its last): each report in its author's organization (the default one), each job in its
    -- report's; then they go (by their marker), so that what is left is part 1's rows exactly.
    SELECT written INTO v_n FROM seed_writer.control;
    IF v_n < 3 THEN RAISE EXCEPTION 'checklist: the concurrent writer wrote only % rows', v_n; END IF;
    IF (SELECT count(*) FROM public.audit_reports WHERE title LIKE 'seed-writer-%' AND organization_id = v_org
           AND organization_id = tenancy.get_user_organization_id(user_id)
           AND status = CASE WHEN title = 'seed-writer-' || v_n THEN 'draft' ELSE 'completed' END) <> v_n
       OR (SELECT count(*) FROM public.audit_reports WHERE title LIKE 'seed-writer-%') <> v_n THEN
        RAISE EXCEPTION 'checklist: the writer wrote % reports, found %', v_n, (SELECT count(*) FROM public.audit_reports WHERE title LIKE 'seed-writer-%');
    END IF;
    IF (SELECT count(*) FROM public.automation_jobs j JOIN public.audit_reports r ON r.id = j.report_id
         WHERE j.error_message LIKE 'seed-writer-%' AND r.title = j.error_message AND j.organization_id = r.organization_id
           AND (j.status, j.progress) = (CASE WHEN j.error_message = 'seed-writer-' || v_n THEN 'queued' ELSE 'completed' END,
                                         CASE WHEN j.error_message = 'seed-writer-' || v_n THEN 0 ELSE 100 END)) <> v_n
       OR (SELECT count(*) FROM public.automation_jobs WHERE error_message LIKE 'seed-writer-%') <> v_n THEN
        RAISE EXCEPTION 'checklist: the writer wrote % jobs, found %', v_n, (SELECT count(*) FROM public.automation_jobs WHERE error_message LIKE 'seed-writer-%');
    END IF;
    RAISE WARNING 'checklist: the % reports and % jobs of the concurrent writer are there, in their organization', v_n, v_n;
    DELETE FROM public.audit_reports WHERE title LIKE 'seed-writer-%';   -- their jobs cascade

    -- Data assessment, again: as many users, reports, jobs and automations as before.
    SELECT string_agg(c.t || ' ' || x.n || ' <> ' || c.n, ', ') INTO v_bad
      FROM checksums c CROSS JOIN LATERAL pg_temp.fingerprint(c.t::regclass, c.cols) x WHERE x.n <> c.n;
    IF v_bad IS NOT NULL THEN RAISE EXCEPTION 'checklist: row counts changed: %', v_bad; END IF;

    -- Post-migration validation: "Verify organizations exist" (the default one, the only one).
    SELECT COUNT(*) INTO v_n FROM public.organizations;
    IF v_n <> 1 THEN RAISE EXCEPTION 'checklist: % organizations, not 1', v_n; END IF;
    IF NOT EXISTS (SELECT 1 FROM public.organizations WHERE id = v_org AND name = 'Default Organization' AND is_active) THEN
        RAISE EXCEPTION 'checklist: the default organization is missing or inactive';
    END IF;
    -- "Verify memberships created" + health check "active_memberships": one per user, all active,
    -- the first user the owner.
    SELECT COUNT(*), COUNT(*) FILTER (WHERE status = 'active' AND organization_id = v_org) INTO v_n, v_m FROM public.organization_memberships;
    IF v_n <> 3000 OR v_m <> 3000 THEN RAISE EXCEPTION 'checklist: % memberships, % active in the default organization; 3000 users', v_n, v_m; END IF;
    IF (SELECT role FROM tenancy.memberships WHERE user_id = (SELECT id FROM auth.users ORDER BY created_at, id LIMIT 1)) <> 'owner'
       OR (SELECT count(*) FROM tenancy.memberships WHERE role = 'owner') <> 1 THEN
        RAISE EXCEPTION 'checklist: the first user is not the only owner';
    END IF;
    -- Debug: "Find users without organization membership": none.
    SELECT count(*) INTO v_n FROM auth.users u
      LEFT JOIN public.organization_memberships om ON u.id = om.user_id WHERE om.user_id IS NULL;
    IF v_n > 0 THEN RAISE EXCEPTION 'checklist: % users without organization membership', v_n; END IF;

    -- "Check data migration": every report in the default organization, none 'Personal'.
    SELECT string_agg(context || '=' || reports, ', '), count(*) INTO v_bad, v_n FROM (
        SELECT COALESCE(o.name, 'Personal') AS context, COUNT(*) AS reports
          FROM public.audit_reports ar LEFT JOIN public.organizations o ON ar.organization_id = o.id
         GROUP BY o.name) s;
    IF v_n <> 1 OR v_bad <> 'Default Organization=30000' THEN RAISE EXCEPTION 'checklist: reports by context: %', v_bad; END IF;
    -- Debug: "Verify data distribution": reports and jobs per organization. Not as the runbook
    -- writes it: its two LEFT JOINs on organization_id multiply every report of an organization
    -- with every job of it (here 30,000 x 45,000 = 1.35 billion rows before COUNT(DISTINCT)), which
    -- runs for hours once all the data is in one organization. The same counts, per organization:
    SELECT string_agg(organization || '=' || reports || '/' || jobs, ', ') INTO v_bad FROM (
        SELECT COALESCE(o.name, 'Unassigned') AS organization,
               (SELECT COUNT(*) FROM public.audit_reports ar WHERE ar.organization_id = o.id) AS reports,
               (SELECT COUNT(*) FROM public.automation_jobs aj WHERE aj.organization_id = o.id) AS jobs
          FROM public.organizations o) s;
    IF v_bad <> 'Default Organization=30000/45000' THEN RAISE EXCEPTION 'checklist: data distribution: %', v_bad; END IF;
    -- The data flow: a report in its author's organization, a job in its report's, an automation
    -- in its job's; all three the default organization.
    SELECT count(*) INTO v_n FROM public.audit_reports WHERE organization_id IS DISTINCT FROM tenancy.get_user_organization_id(user_id);
    IF v_n > 0 THEN RAISE EXCEPTION 'checklist: % reports not in their author''s organization', v_n; END IF;
    SELECT count(*) INTO v_n FROM public.automation_jobs j JOIN public.audit_reports r ON r.id = j.report_id WHERE j.organization_id <> r.organization_id;
    IF v_n > 0 THEN RAISE EXCEPTION 'checklist: % jobs not in their report''s organization', v_n; END IF;
    SELECT count(*) INTO v_n FROM public.generated_automations a JOIN public.automation_jobs j ON j.id = a.job_id WHERE a.organization_id <> j.organization_id;
    IF v_n > 0 THEN RAISE EXCEPTION 'checklist: % automations not in their job''s organization', v_n; END IF;
    FOREACH v_bad IN ARRAY v_tables LOOP
        EXECUTE format('SELECT count(*) FROM public.%I WHERE organization_id IS DISTINCT FROM $1', v_bad) INTO v_n USING v_org;
        IF v_n > 0 THEN RAISE EXCEPTION 'checklist: % rows of % outside the default organization', v_n, v_bad; END IF;
    END LOOP;

    -- Integrity (tenancy's report): no NULL, orphaned or cross-organization row; NOT NULL, validated
    -- foreign key, index, RLS enabled and forced, a policy for every command.
    SELECT count(*), string_agg(table_name, ', ') FILTER (WHERE NOT ok OR NOT saw_every_row OR null_rows > 0 OR orphan_rows > 0 OR cross_tenant_rows > 0)
      INTO v_n, v_bad FROM tenancy.validate_client_data_integrity();
    IF v_bad IS NOT NULL THEN RAISE EXCEPTION 'checklist: integrity fails on %', v_bad; END IF;
    IF v_n <> 3 THEN RAISE EXCEPTION 'checklist: % tenant tables registered, not 3', v_n; END IF;
    SELECT count(*) INTO v_n FROM pg_constraint c
     WHERE c.contype = 'f' AND c.confrelid = 'tenancy.organizations'::regclass AND c.convalidated
       AND c.conrelid::regclass::text = ANY (v_tables);
    IF v_n <> 3 THEN RAISE EXCEPTION 'checklist: % validated foreign keys to organizations, not 3', v_n; END IF;
    SELECT string_agg(x.def, ', ') INTO v_bad FROM (VALUES
        ('automation_jobs', 'FOREIGN KEY (organization_id, report_id) REFERENCES audit_reports(organization_id, id) ON DELETE CASCADE'),
        ('generated_automations', 'FOREIGN KEY (organization_id, job_id) REFERENCES automation_jobs(organization_id, id) ON DELETE CASCADE'),
        ('audit_reports', 'FOREIGN KEY (user_id) REFERENCES auth.users(id) ON DELETE CASCADE'),
        ('automation_jobs', 'FOREIGN KEY (user_id) REFERENCES auth.users(id) ON DELETE CASCADE'),
        ('generated_automations', 'UNIQUE (organization_id, job_id, version)')) x(tbl, def)
     WHERE NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conrelid = ('public.' || x.tbl)::regclass AND c.convalidated
                          AND pg_get_constraintdef(c.oid) = x.def);
    IF v_bad IS NOT NULL THEN RAISE EXCEPTION 'checklist: constraints missing: %', v_bad; END IF;
    SELECT count(*) INTO v_n FROM pg_constraint c
     WHERE c.contype = 'f' AND c.conrelid::regclass::text = ANY (v_tables) AND c.confrelid::regclass::text = ANY (v_tables);
    IF v_n <> 2 THEN RAISE EXCEPTION 'checklist: % foreign keys between the tables, not 2', v_n; END IF;

    -- "RLS policies applied with organization context" / "Check RLS policy coverage": on each
    -- table tenancy's boundary and access policy for each command, for the authenticated role,
    -- forced; the per-user policies gone.
    SELECT string_agg(x.t || ' ' || c.command, ', ') INTO v_bad
      FROM unnest(v_tables) x(t) CROSS JOIN unnest('{SELECT,INSERT,UPDATE,DELETE}'::text[]) c(command)
     WHERE (SELECT count(*) FROM pg_policies p WHERE p.schemaname = 'public' AND p.tablename = x.t AND p.cmd = c.command
               AND p.roles = '{authenticated}'
               AND p.policyname IN ('tenancy_' || lower(c.command) || '_boundary', 'tenancy_' || lower(c.command) || '_access')) <> 2;
    IF v_bad IS NOT NULL THEN RAISE EXCEPTION 'checklist: policies missing for %', v_bad; END IF;
    SELECT string_agg(tablename || ' ' || policyname, ', ') INTO v_bad FROM pg_policies
     WHERE schemaname = 'public' AND policyname NOT LIKE 'tenancy\_%';
    IF v_bad IS NOT NULL THEN RAISE EXCEPTION 'checklist: policies left over: %', v_bad; END IF;
    SELECT string_agg(relname, ', ') INTO v_bad FROM pg_class
     WHERE oid = ANY (SELECT ('public.' || t)::regclass FROM unnest(v_tables) t) AND NOT (relrowsecurity AND relforcerowsecurity);
    IF v_bad IS NOT NULL THEN RAISE EXCEPTION 'checklist: RLS not enabled and forced on %', v_bad; END IF;

    -- Performance monitoring: indexes named %organization% on each table (the runbook's query
    -- selects tablename and indexname, which pg_stat_user_indexes does not have: relname and
    -- indexrelname are its columns), all valid.
    SELECT string_agg(t, ', ') INTO v_bad FROM unnest(v_tables) t
     WHERE NOT EXISTS (SELECT 1 FROM pg_stat_user_indexes s WHERE s.schemaname = 'public' AND s.relname = t
                          AND s.indexrelname LIKE '%organization%');
    IF v_bad IS NOT NULL THEN RAISE EXCEPTION 'checklist: no organization index on %', v_bad; END IF;
    SELECT count(*) INTO v_n FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
     WHERE i.indrelid::regclass::text = ANY (v_tables) AND a.attname = 'organization_id' AND i.indisvalid AND i.indnatts > 1;
    IF v_n < 7 THEN RAISE EXCEPTION 'checklist: % composite indexes, fewer than 7', v_n; END IF;
    RAISE WARNING 'checklist: % composite indexes lead with organization_id', v_n;
    IF EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid::regclass::text = ANY (v_tables) AND NOT i.indisvalid) THEN
        RAISE EXCEPTION 'checklist: an invalid index is left';
    END IF;
    -- Weekly performance check: "SELECT * FROM audit_reports WHERE organization_id = 'some-uuid'"
    -- is an index scan. The owner runs it under row-level security (forced), so the policies'
    -- conditions join the index condition: the looked-up id must be one of the index's conditions.
    v_bad := gen_random_uuid()::text;
    EXECUTE format('EXPLAIN (FORMAT JSON) SELECT * FROM public.audit_reports WHERE organization_id = %L', v_bad) INTO v_plan;
    IF v_plan::text NOT LIKE '%"Index Cond": "%(organization_id = ''' || v_bad || '''::uuid)%' OR v_plan::text LIKE '%Seq Scan%' THEN
        RAISE EXCEPTION 'checklist: a lookup by organization_id is not an index scan: %', v_plan;
    END IF;

    -- "Check migration status" (migration_progress is tenancy.backfill_progress) and the log.
    SELECT string_agg(table_name || ' ' || phase, ', ') INTO v_bad FROM tenancy.backfill_progress WHERE phase <> 'converted';
    IF v_bad IS NOT NULL THEN RAISE EXCEPTION 'checklist: backfill not finished: %', v_bad; END IF;
    SELECT count(*) INTO v_n FROM tenancy.migration_log WHERE status = 'failed';
    IF v_n > 0 THEN RAISE EXCEPTION 'checklist: % failed operations in the migration log', v_n; END IF;
    -- "Monitor organization growth": organization_stats.
    SELECT string_agg(name || ' ' || active_members || '/' || reports || '/' || jobs || '/' || automations, ', ') INTO v_bad
      FROM public.organization_stats;
    IF v_bad <> 'Default Organization 3000/30000/45000/60000' THEN RAISE EXCEPTION 'checklist: organization_stats: %', v_bad; END IF;

    -- "No data loss or corruption": every row kept, unchanged apart from the new column.
    SELECT string_agg(c.t, ', ') INTO v_bad FROM checksums c
     WHERE NOT EXISTS (SELECT 1 FROM pg_temp.fingerprint(c.t::regclass, c.cols) f WHERE f.n = c.n AND f.sum = c.sum);
    IF v_bad IS NOT NULL THEN RAISE EXCEPTION 'checklist: rows lost or changed in %', v_bad; END IF;
END $$;
COMMIT;
DROP SCHEMA seed_writer CASCADE;

-- "RLS policies properly isolate organization data", proven through the API the way PostgREST
-- runs each request: a transaction, SET LOCAL ROLE authenticated, the JWT's claims in
-- request.jwt.claims. First a second organization: user B signs up (GoTrue writes auth.users),
-- the application (a tenancy administrator) creates Acme Consulting with B as its owner, and
-- user C of the default organization joins Acme as well.
INSERT INTO auth.users (instance_id, id, aud, role, email, raw_app_meta_data, created_at, updated_at)
VALUES ('00000000-0000-0000-0000-000000000000', 'bbbbbbbb-0000-0000-0000-000000000001', 'authenticated', 'authenticated',
        'owner@acme.example', '{"provider": "email", "providers": ["email"]}', now(), now());
SELECT set_config('seed.org_acme', tenancy.create_organization('Acme Consulting', 'acme',
           owner_user_id => 'bbbbbbbb-0000-0000-0000-000000000001')::text, false) \gset
SELECT tenancy.add_member(current_setting('seed.org_acme')::uuid, md5('auth-user3')::uuid, 'member') AS c_joined_acme;

-- B's first request: a report, its job and the generated automation, none naming an organization.
BEGIN;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', '{"sub": "bbbbbbbb-0000-0000-0000-000000000001", "role": "authenticated", "aud": "authenticated"}', true);
INSERT INTO public.audit_reports (id, user_id, title, status) VALUES ('bbbbbbbb-0000-0000-0000-0000000000a1', auth.uid(), 'Acme onboarding audit', 'completed');
INSERT INTO public.automation_jobs (id, report_id, user_id, platform, status)
VALUES ('bbbbbbbb-0000-0000-0000-0000000000a2', 'bbbbbbbb-0000-0000-0000-0000000000a1', auth.uid(), 'n8n', 'completed');
INSERT INTO public.generated_automations (id, job_id, name, platform, workflow_json)
VALUES ('bbbbbbbb-0000-0000-0000-0000000000a3', 'bbbbbbbb-0000-0000-0000-0000000000a2', 'Acme onboarding', 'n8n', '{"nodes": []}');
DO $$
DECLARE v_n bigint;
BEGIN
    SELECT count(*) INTO v_n FROM public.audit_reports WHERE organization_id = current_setting('seed.org_acme')::uuid;
    IF v_n <> 1 THEN RAISE EXCEPTION 'checklist: B''s report did not land in Acme'; END IF;
    SELECT count(*) INTO v_n FROM public.generated_automations WHERE organization_id = current_setting('seed.org_acme')::uuid;
    IF v_n <> 1 THEN RAISE EXCEPTION 'checklist: B''s automation did not land in Acme'; END IF;
END $$;
COMMIT;

-- A request of user A (default organization); rolled back (PostgREST's Prefer: tx=rollback).
BEGIN;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', json_build_object('sub', current_setting('seed.user_a'), 'role', 'authenticated')::text, true);
DO $$
DECLARE
    v_a    uuid := current_setting('seed.user_a')::uuid;
    v_def  uuid := current_setting('seed.org_default')::uuid;
    v_acme uuid := current_setting('seed.org_acme')::uuid;
    v_n    bigint;
    v_id   uuid;
BEGIN
    -- "Check auth.uid() availability in context": tenancy reads the same claims.
    IF auth.uid() IS DISTINCT FROM v_a OR tenancy.current_user_id() IS DISTINCT FROM v_a
       OR tenancy.current_organization_id() IS DISTINCT FROM v_def THEN
        RAISE EXCEPTION 'checklist: context of A: uid %, tenancy user %, organization %', auth.uid(), tenancy.current_user_id(), tenancy.current_organization_id();
    END IF;
    -- "Existing users can access all their historical data", and now their organization's.
    SELECT count(*) INTO v_n FROM public.audit_reports WHERE user_id = v_a;
    IF v_n <> current_setting('seed.user_a_reports')::bigint OR v_n = 0 THEN RAISE EXCEPTION 'checklist: A sees % of own reports', v_n; END IF;
    SELECT count(*) INTO v_n FROM public.automation_jobs WHERE user_id = v_a;
    IF v_n <> current_setting('seed.user_a_jobs')::bigint OR v_n = 0 THEN RAISE EXCEPTION 'checklist: A sees % of own jobs', v_n; END IF;
    SELECT count(*) INTO v_n FROM public.generated_automations a JOIN public.automation_jobs j ON j.id = a.job_id WHERE j.user_id = v_a;
    IF v_n <> current_setting('seed.user_a_automations')::bigint OR v_n = 0 THEN RAISE EXCEPTION 'checklist: A sees % of own automations', v_n; END IF;
    SELECT count(*) INTO v_n FROM public.audit_reports;
    IF v_n <> current_setting('seed.reports')::bigint THEN RAISE EXCEPTION 'checklist: A sees % reports, not the organization''s %', v_n, current_setting('seed.reports'); END IF;
    SELECT count(*) INTO v_n FROM public.automation_jobs;
    IF v_n <> current_setting('seed.jobs')::bigint THEN RAISE EXCEPTION 'checklist: A sees % jobs', v_n; END IF;
    SELECT count(*) INTO v_n FROM public.generated_automations;
    IF v_n <> current_setting('seed.automations')::bigint THEN RAISE EXCEPTION 'checklist: A sees % automations', v_n; END IF;
    -- Nothing of Acme, by any path.
    SELECT count(*) INTO v_n FROM public.audit_reports WHERE organization_id = v_acme OR id = 'bbbbbbbb-0000-0000-0000-0000000000a1';
    IF v_n <> 0 THEN RAISE EXCEPTION 'checklist: A sees Acme''s report'; END IF;
    SELECT count(*) INTO v_n FROM public.organization_stats;
    IF v_n <> 1 THEN RAISE EXCEPTION 'checklist: A sees % organizations in organization_stats', v_n; END IF;
    -- Writes as the frontend does them (no organization_id): the default organization.
    INSERT INTO public.audit_reports (user_id, title) VALUES (v_a, 'New audit') RETURNING id INTO v_id;
    INSERT INTO public.automation_jobs (report_id, user_id, platform) VALUES (v_id, v_a, 'make');
    SELECT count(*) INTO v_n FROM public.automation_jobs WHERE report_id = v_id AND organization_id = v_def;
    IF v_n <> 1 THEN RAISE EXCEPTION 'checklist: A''s new job is not in the default organization'; END IF;
    -- No write into Acme: insert, attach to Acme's report, update, move, delete.
    BEGIN
        INSERT INTO public.audit_reports (user_id, title, organization_id) VALUES (v_a, 'planted', v_acme);
        RAISE EXCEPTION 'checklist: A inserted a report into Acme';
    EXCEPTION WHEN insufficient_privilege THEN NULL;
    END;
    BEGIN
        INSERT INTO public.generated_automations (job_id, name, platform, workflow_json, version, organization_id)
        VALUES ('bbbbbbbb-0000-0000-0000-0000000000a2', 'planted', 'n8n', '{}', 2, v_acme);
        RAISE EXCEPTION 'checklist: A inserted an automation into Acme';
    EXCEPTION WHEN insufficient_privilege THEN NULL;
    END;
    BEGIN
        INSERT INTO public.automation_jobs (report_id, user_id, platform) VALUES ('bbbbbbbb-0000-0000-0000-0000000000a1', v_a, 'n8n');
        RAISE EXCEPTION 'checklist: A attached a job to Acme''s report';
    EXCEPTION WHEN foreign_key_violation THEN NULL;
    END;
    UPDATE public.audit_reports SET title = 'taken' WHERE organization_id = v_acme OR id = 'bbbbbbbb-0000-0000-0000-0000000000a1';
    GET DIAGNOSTICS v_n = ROW_COUNT;
    IF v_n <> 0 THEN RAISE EXCEPTION 'checklist: A updated % of Acme''s reports', v_n; END IF;
    DELETE FROM public.generated_automations WHERE organization_id = v_acme;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    IF v_n <> 0 THEN RAISE EXCEPTION 'checklist: A deleted % of Acme''s automations', v_n; END IF;
    BEGIN
        UPDATE public.audit_reports SET organization_id = v_acme WHERE id = v_id;
        RAISE EXCEPTION 'checklist: A moved a report into Acme';
    EXCEPTION WHEN insufficient_privilege THEN NULL;
    END;
END $$;
ROLLBACK;

-- A request of B (Acme's owner); a forged organization claim; C, a member of both; no claims;
-- anon. Each its own transaction, rolled back.
BEGIN;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', '{"sub": "bbbbbbbb-0000-0000-0000-000000000001", "role": "authenticated"}', true);
DO $$
DECLARE
    v_def  uuid := current_setting('seed.org_default')::uuid;
    v_n    bigint;
BEGIN
    SELECT count(*) INTO v_n FROM public.audit_reports;
    IF v_n <> 1 THEN RAISE EXCEPTION 'checklist: B sees % reports, not Acme''s 1', v_n; END IF;
    SELECT count(*) INTO v_n FROM public.automation_jobs;
    IF v_n <> 1 THEN RAISE EXCEPTION 'checklist: B sees % jobs, not Acme''s 1', v_n; END IF;
    SELECT count(*) INTO v_n FROM public.generated_automations;
    IF v_n <> 1 THEN RAISE EXCEPTION 'checklist: B sees % automations, not Acme''s 1', v_n; END IF;
    BEGIN
        INSERT INTO public.audit_reports (user_id, title, organization_id) VALUES (auth.uid(), 'planted', v_def);
        RAISE EXCEPTION 'checklist: B inserted a report into the default organization';
    EXCEPTION WHEN insufficient_privilege THEN NULL;
    END;
    UPDATE public.audit_reports SET title = 'taken' WHERE organization_id = v_def;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    IF v_n <> 0 THEN RAISE EXCEPTION 'checklist: B updated % reports of the default organization', v_n; END IF;
    DELETE FROM public.automation_jobs WHERE organization_id = v_def;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    IF v_n <> 0 THEN RAISE EXCEPTION 'checklist: B deleted % jobs of the default organization', v_n; END IF;
END $$;
ROLLBACK;

BEGIN;   -- B forges a claim naming the default organization: no organization, no rows
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', json_build_object('sub', 'bbbbbbbb-0000-0000-0000-000000000001', 'role', 'authenticated',
                                                          'organization_id', current_setting('seed.org_default'))::text, true);
DO $$
DECLARE v_n bigint;
BEGIN
    SELECT count(*) INTO v_n FROM public.audit_reports WHERE organization_id = current_setting('seed.org_default')::uuid;
    IF v_n <> 0 OR tenancy.current_organization_id() IS NOT NULL THEN
        RAISE EXCEPTION 'checklist: a forged organization claim gave B % reports of the default organization', v_n;
    END IF;
END $$;
ROLLBACK;

BEGIN;   -- C, a member of both: its default organization without an organization claim (context mode,
         -- the default since 0.3.0; membership mode would show both), only Acme with one
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', json_build_object('sub', md5('auth-user3'), 'role', 'authenticated')::text, true);
DO $$
DECLARE v_n bigint; v_org uuid;
BEGIN
    SELECT count(*) INTO v_n FROM public.audit_reports;
    IF v_n <> current_setting('seed.reports')::bigint THEN RAISE EXCEPTION 'checklist: C sees % reports, not its default organization''s', v_n; END IF;
    INSERT INTO public.audit_reports (user_id, title) VALUES (auth.uid(), 'C default') RETURNING organization_id INTO v_org;
    IF v_org IS DISTINCT FROM current_setting('seed.org_default')::uuid THEN RAISE EXCEPTION 'checklist: C''s report went to %, not its default organization', v_org; END IF;
    -- C acts for Acme, as a JWT with organization_id would say (set_organization here).
    PERFORM tenancy.set_organization(current_setting('seed.org_acme')::uuid);
    SELECT count(*) INTO v_n FROM public.audit_reports;
    IF v_n <> 1 THEN RAISE EXCEPTION 'checklist: C acting for Acme sees % reports', v_n; END IF;
    INSERT INTO public.audit_reports (user_id, title) VALUES (auth.uid(), 'C acme') RETURNING organization_id INTO v_org;
    IF v_org IS DISTINCT FROM current_setting('seed.org_acme')::uuid THEN RAISE EXCEPTION 'checklist: C acting for Acme wrote into %', v_org; END IF;
END $$;
ROLLBACK;

BEGIN;   -- C with the organization in the JWT
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', json_build_object('sub', md5('auth-user3'), 'role', 'authenticated',
                                                          'organization_id', current_setting('seed.org_acme'))::text, true);
DO $$
DECLARE v_n bigint;
BEGIN
    SELECT count(*) INTO v_n FROM public.automation_jobs;
    IF v_n <> 1 OR tenancy.current_organization_id() IS DISTINCT FROM current_setting('seed.org_acme')::uuid THEN
        RAISE EXCEPTION 'checklist: C with an Acme claim sees % jobs', v_n;
    END IF;
END $$;
ROLLBACK;

BEGIN;   -- authenticated without claims: nothing
SET LOCAL ROLE authenticated;
DO $$
DECLARE v_n bigint;
BEGIN
    SELECT count(*) INTO v_n FROM public.audit_reports;
    IF v_n <> 0 THEN RAISE EXCEPTION 'checklist: a request without claims sees % reports', v_n; END IF;
END $$;
ROLLBACK;

BEGIN;   -- anon: no access at all
SET LOCAL ROLE anon;
DO $$
DECLARE v_t text;
BEGIN
    FOREACH v_t IN ARRAY '{audit_reports,automation_jobs,generated_automations,organization_stats}'::text[] LOOP
        BEGIN
            EXECUTE format('SELECT count(*) FROM public.%I', v_t);
            RAISE EXCEPTION 'checklist: anon may read %', v_t;
        EXCEPTION WHEN insufficient_privilege THEN NULL;
        END;
    END LOOP;
END $$;
ROLLBACK;

-- "Workers can access organization context": the Workers use the service role key: every row,
-- and tenancy's organization functions answer for any user. service_role is Supabase's BYPASSRLS
-- role: the owner (NOBYPASSRLS) could only SET ROLE to it as a member, which would give it
-- BYPASSRLS in effect; so this check alone runs from the session's superuser (the transaction
-- ends with the owner as the session's role again).
BEGIN;
RESET SESSION AUTHORIZATION;
SET LOCAL ROLE service_role;
SELECT set_config('request.jwt.claims', '{"role": "service_role"}', true);
DO $$
DECLARE v_n bigint;
BEGIN
    SELECT count(*) INTO v_n FROM public.audit_reports;
    IF v_n <> current_setting('seed.reports')::bigint + 1 THEN RAISE EXCEPTION 'checklist: the service role sees % reports', v_n; END IF;
    IF tenancy.get_user_organization_id(current_setting('seed.user_a')::uuid) IS DISTINCT FROM current_setting('seed.org_default')::uuid
       OR tenancy.get_user_organization_id('bbbbbbbb-0000-0000-0000-000000000001') IS DISTINCT FROM current_setting('seed.org_acme')::uuid
       OR NOT tenancy.validate_client_access('bbbbbbbb-0000-0000-0000-000000000001', current_setting('seed.org_acme')::uuid)
       OR tenancy.validate_client_access(current_setting('seed.user_a')::uuid, current_setting('seed.org_acme')::uuid)
       OR NOT tenancy.validate_client_access(md5('auth-user3')::uuid, current_setting('seed.org_acme')::uuid) THEN
        RAISE EXCEPTION 'checklist: organization functions wrong for the Workers';
    END IF;
    SELECT count(*) INTO v_n FROM public.organization_stats;
    IF v_n <> 2 THEN RAISE EXCEPTION 'checklist: the service role sees % organizations in organization_stats', v_n; END IF;
END $$;
ROLLBACK;

-- The owner's last checks read the isolated tables: operator mode again.
BEGIN;
SELECT tenancy.operate('runbook 002 validation, two organizations');
DO $$
DECLARE
    v_bad text;
BEGIN
    -- With two organizations: still no row pointing across them, and the stats agree.
    SELECT string_agg(table_name, ', ') INTO v_bad FROM tenancy.validate_client_data_integrity()
     WHERE NOT ok OR NOT saw_every_row OR cross_tenant_rows > 0;
    IF v_bad IS NOT NULL THEN RAISE EXCEPTION 'checklist: integrity fails with two organizations on %', v_bad; END IF;
    SELECT string_agg(slug || ' ' || active_members || '/' || reports || '/' || jobs || '/' || automations, ', ' ORDER BY slug) INTO v_bad
      FROM public.organization_stats;
    IF v_bad <> 'acme 2/1/1/1, default 3000/30000/45000/60000' THEN RAISE EXCEPTION 'checklist: organization_stats: %', v_bad; END IF;
    -- Nothing of Acme changed by the other requests.
    IF (SELECT title FROM public.audit_reports WHERE id = 'bbbbbbbb-0000-0000-0000-0000000000a1') <> 'Acme onboarding audit' THEN
        RAISE EXCEPTION 'checklist: Acme''s report was changed';
    END IF;
    -- Isolation: the tenant tables and the views over them lint clean.
    SELECT string_agg(code || ' ' || object, '; ') INTO v_bad FROM tenancy.lint() WHERE split_part(object, ' ', 1) = ANY (
        '{public.audit_reports,public.automation_jobs,public.generated_automations,public.organizations,public.organization_memberships,public.organization_stats}');
    IF v_bad IS NOT NULL THEN RAISE EXCEPTION 'checklist: lint findings: %', v_bad; END IF;
    RAISE WARNING 'checklist: every item passed';
END $$;
COMMIT;

------------------------------------------------------------------------------------------------
-- Part 4. The runbook's emergency rollback (rollback-multi-tenant-organizations.sql: "this will
-- delete all organization data"), on the converted, isolated database, in one transaction: what
-- part 2 did by hand (the views, the dropped per-user policies, the revoked grants) is undone by
-- hand; everything tenancy did in one call (tenancy.rollback_all: isolation removed, foreign and
-- unique keys back under their names, organization_id dropped, children before parents).
------------------------------------------------------------------------------------------------
BEGIN;
-- The second organization part 3 created (its owner, with their report, job and automation,
-- which cascade): the comparison below is with the database as it was before the migration.
DELETE FROM auth.users WHERE id = 'bbbbbbbb-0000-0000-0000-000000000001';
DROP VIEW public.organization_stats, public.organization_memberships, public.organizations;
SELECT table_name, action, detail FROM tenancy.rollback_all('public', drop_column => true) ORDER BY 1;
-- Row-level security was on before the migration: rollback leaves it on (and no longer forced),
-- with the single-tenant policies of before.
CREATE POLICY "Users can view own reports" ON public.audit_reports FOR SELECT USING (auth.uid() = user_id);
CREATE POLICY "Users can create own reports" ON public.audit_reports FOR INSERT WITH CHECK (auth.uid() = user_id);
CREATE POLICY "Users can update own reports" ON public.audit_reports FOR UPDATE USING (auth.uid() = user_id);
CREATE POLICY "Users can delete own reports" ON public.audit_reports FOR DELETE USING (auth.uid() = user_id);
CREATE POLICY "Users can view own jobs" ON public.automation_jobs FOR SELECT USING (auth.uid() = user_id);
CREATE POLICY "Users can create own jobs" ON public.automation_jobs FOR INSERT WITH CHECK (auth.uid() = user_id);
CREATE POLICY "Users can view own automations" ON public.generated_automations FOR SELECT
    USING (EXISTS (SELECT 1 FROM public.automation_jobs j WHERE j.id = job_id AND j.user_id = auth.uid()));
GRANT ALL ON public.audit_reports, public.automation_jobs, public.generated_automations TO anon, authenticated;
DROP EXTENSION tenancy;   -- organizations and organization_memberships, with every membership
-- The empty schema belongs to the bootstrap superuser (docs/security.md): only a superuser can
-- drop it, so this one statement runs as one.
RESET SESSION AUTHORIZATION;
DROP SCHEMA tenancy;      -- empty now (RESTRICT)
SET SESSION AUTHORIZATION processaudit_owner;
COMMIT;
SELECT pg_temp.assert_original('rollback-multi-tenant-organizations');
DO $$
BEGIN
    -- The grants of before, as Supabase's defaults gave them.
    IF NOT has_table_privilege('anon', 'public.audit_reports', 'SELECT')
       OR NOT has_table_privilege('authenticated', 'public.generated_automations', 'TRUNCATE') THEN
        RAISE EXCEPTION 'rollback: the grants of before are not back';
    END IF;
    RAISE WARNING 'rollback: every level passed';
END $$;
