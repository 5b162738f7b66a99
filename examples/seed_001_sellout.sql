-- Seed 001 (sell-out data platform, "Phase 1: Multi-Tenant Security Migration"): the single-tenant
-- database becomes multi-tenant. The runbook's phase_1_multitenant_schema.sql (organizations and
-- user_organizations, a client_id column on seven tables, the "Default Organization" for all
-- existing data, composite indexes, the three utility functions) and its validation queries, done
-- with tenancy, online. Run it with psql (it uses \gexec):
--
--   psql -v ON_ERROR_STOP=1 -f examples/seed_001_sellout.sql     (in an empty database)
--
-- connected as a superuser (scripts/test.sh runs it). Who runs what:
--   * the superuser, at the top only: the cluster roles (service_role, Supabase's BYPASSRLS role;
--     sellout_app; the LOGIN role sellout_owner, NOSUPERUSER NOBYPASSRLS, member of sellout_app),
--     and ALTER DATABASE ... OWNER TO sellout_owner; then SET SESSION AUTHORIZATION sellout_owner;
--   * the database owner sellout_owner, everything else: CREATE EXTENSION tenancy (a trusted
--     install), the single-tenant schema and data, the conversion, the runbook's validation
--     queries (over isolated tables in a transaction that called
--     tenancy.operate('runbook 001 validation'): operator mode, no superuser, no BYPASSRLS), the
--     requests of sellout_app (SET LOCAL ROLE), the rollback;
--   * a concurrent writer (a second connection of sellout_owner, examples/writer_start.psql) keeps
--     inserting and updating uploads and processing_logs during the whole backfill;
--   * the superuser again, twice, only where it cannot be avoided: the "backward compatibility"
--     check of the back end's service_role (a BYPASSRLS role: only a superuser may SET ROLE to it
--     without making the owner a member of a role that bypasses RLS), and DROP SCHEMA tenancy
--     after DROP EXTENSION (the empty schema belongs to the bootstrap superuser, docs/security.md).
-- Part 1 builds the single-tenant schema with data (what exists before phase 1); part 2 is the
-- conversion; part 3 is the runbook's validation queries, each an assertion.
\set ON_ERROR_STOP 1
\pset pager off
SET client_min_messages = warning;

------------------------------------------------------------------------------------------------
-- Part 1. Before phase 1: seven tables, no notion of client.
------------------------------------------------------------------------------------------------
-- The application's back end connects with Supabase's service role (the runbook's troubleshooting
-- section): it bypasses row-level security. Roles are cluster-wide, so only created when absent.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
    END IF;
    IF NOT (SELECT rolbypassrls FROM pg_roles WHERE rolname = 'service_role') THEN
        ALTER ROLE service_role BYPASSRLS;   -- as Supabase defines it
    END IF;
    -- The role the application uses for end-user requests in later phases (RLS applies to it).
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sellout_app') THEN
        CREATE ROLE sellout_app NOLOGIN;
    END IF;
    -- The database owner: an ordinary login role, as on managed Postgres.
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sellout_owner') THEN
        CREATE ROLE sellout_owner LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEROLE NOCREATEDB;
    END IF;
END $$;
GRANT sellout_app TO sellout_owner;   -- to run the application's requests (SET LOCAL ROLE sellout_app)
SELECT format('ALTER DATABASE %I OWNER TO sellout_owner', current_database()) \gexec
-- From here on, the database owner (the superuser comes back only where said).
SET SESSION AUTHORIZATION sellout_owner;
DO $$
BEGIN   -- what the rest runs as: the owner of the database, neither superuser nor BYPASSRLS
    IF (SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user)
       OR (SELECT datdba::regrole::text FROM pg_database WHERE datname = current_database()) <> current_user THEN
        RAISE EXCEPTION 'not running as the database owner %, an ordinary role', current_user;
    END IF;
END $$;

CREATE TABLE users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(), email text NOT NULL UNIQUE, full_name text,
    role text NOT NULL DEFAULT 'user' CHECK (role IN ('admin', 'user')), is_active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE products (
    id serial PRIMARY KEY, ean varchar(13) NOT NULL UNIQUE, name text NOT NULL, brand text, category text,
    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE uploads (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(), user_id uuid NOT NULL REFERENCES users,
    filename text NOT NULL, file_size bigint, status text NOT NULL DEFAULT 'pending'
    CHECK (status IN ('pending', 'processing', 'processed', 'failed')), rows_count integer,
    created_at timestamptz NOT NULL DEFAULT now(), processed_at timestamptz);
-- Sell-out lines are keyed by EAN, as the resellers' reports are: a foreign key to a unique key
-- that is not the primary key.
CREATE TABLE sellout_entries2 (
    id bigserial PRIMARY KEY, upload_id uuid NOT NULL REFERENCES uploads ON DELETE CASCADE, line_no integer NOT NULL,
    ean varchar(13) REFERENCES products (ean), reseller text NOT NULL, country char(2) NOT NULL,
    year smallint NOT NULL CHECK (year BETWEEN 2000 AND 2100), month smallint NOT NULL CHECK (month BETWEEN 1 AND 12),
    quantity integer NOT NULL, sales_eur numeric(14, 2), currency char(3) NOT NULL DEFAULT 'EUR',
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (upload_id, line_no));
CREATE TABLE processing_logs (
    id bigserial PRIMARY KEY, upload_id uuid REFERENCES uploads ON DELETE CASCADE, step text NOT NULL,
    level text NOT NULL DEFAULT 'info', message text, duration_ms integer, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE transform_logs (
    id bigserial PRIMARY KEY, upload_id uuid REFERENCES uploads ON DELETE CASCADE, transformation text NOT NULL,
    column_name text, rows_affected integer, details jsonb, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE email_logs (
    id bigserial PRIMARY KEY, user_id uuid REFERENCES users ON DELETE SET NULL,
    upload_id uuid REFERENCES uploads ON DELETE SET NULL, recipient text NOT NULL, subject text NOT NULL,
    status text NOT NULL, error text, sent_at timestamptz);
GRANT ALL ON ALL TABLES IN SCHEMA public TO service_role;
GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO service_role;

INSERT INTO users (id, email, full_name, role)
SELECT md5('user' || g)::uuid, 'analyst' || g || '@sellout.example', 'Analyst ' || g, CASE WHEN g % 10 = 1 THEN 'admin' ELSE 'user' END
  FROM generate_series(1, 50) g;
INSERT INTO products (ean, name, brand, category)
SELECT (4000000000000 + g)::text, 'Product ' || g, (ARRAY['Acme', 'Globex', 'Initech', 'Umbrella'])[1 + g % 4],
       (ARRAY['audio', 'tv', 'phone', 'appliance', 'camera'])[1 + g % 5]
  FROM generate_series(1, 5000) g;
INSERT INTO uploads (id, user_id, filename, file_size, status, rows_count, created_at, processed_at)
SELECT md5('upload' || g)::uuid, md5('user' || (1 + g % 50))::uuid, 'sellout_' || g || '.xlsx', 20000 + g * 7,
       CASE WHEN g % 50 = 0 THEN 'failed' ELSE 'processed' END, 60,
       timestamptz '2024-01-01' + g * interval '4 hours', timestamptz '2024-01-01' + g * interval '4 hours' + interval '3 minutes'
  FROM generate_series(1, 2000) g;
INSERT INTO sellout_entries2 (upload_id, line_no, ean, reseller, country, year, month, quantity, sales_eur)
SELECT md5('upload' || (1 + g / 60))::uuid, g % 60, (4000000000001 + g % 5000)::text,
       (ARRAY['MediaMarkt', 'Saturn', 'Fnac', 'Boulanger', 'Currys'])[1 + g % 5], (ARRAY['DE', 'FR', 'GB'])[1 + g % 3],
       2024 + (g / 60) % 2, 1 + (g / 60) % 12, 1 + g % 40, round((g % 997) * 3.17, 2)
  FROM generate_series(0, 119999) g;
INSERT INTO processing_logs (upload_id, step, level, message, duration_ms)
SELECT md5('upload' || (1 + g % 2000))::uuid, (ARRAY['download', 'parse', 'validate', 'transform', 'load'])[1 + g % 5],
       CASE WHEN g % 97 = 0 THEN 'error' ELSE 'info' END, 'step ' || g, g % 5000
  FROM generate_series(1, 20000) g;
INSERT INTO transform_logs (upload_id, transformation, column_name, rows_affected, details)
SELECT md5('upload' || (1 + g % 2000))::uuid, (ARRAY['normalize_ean', 'map_reseller', 'convert_currency'])[1 + g % 3],
       (ARRAY['ean', 'reseller', 'sales_eur'])[1 + g % 3], g % 60, jsonb_build_object('batch', g)
  FROM generate_series(1, 10000) g;
INSERT INTO email_logs (user_id, upload_id, recipient, subject, status, sent_at)
SELECT md5('user' || (1 + g % 50))::uuid, CASE WHEN g % 4 = 0 THEN NULL ELSE md5('upload' || (1 + g % 2000))::uuid END,
       'analyst' || (1 + g % 50) || '@sellout.example', 'Upload processed', CASE WHEN g % 33 = 0 THEN 'bounced' ELSE 'sent' END,
       timestamptz '2024-01-01' + g * interval '2 hours'
  FROM generate_series(1, 4000) g;
ANALYZE users, products, uploads, sellout_entries2, processing_logs, transform_logs, email_logs;

-- What must survive the conversion unchanged: every row of every table, as it is now (its
-- columns of today, in order), hashed; compared again at the end.
CREATE FUNCTION pg_temp.fingerprint(t regclass, cols text[], OUT n bigint, OUT sum bigint) LANGUAGE plpgsql AS $f$
BEGIN
    EXECUTE format('SELECT count(*), sum(hashtext(row(%s)::text)) FROM %s',
                   (SELECT string_agg(quote_ident(c), ', ') FROM unnest(cols) c), t) INTO n, sum;
END $f$;
CREATE TEMP TABLE checksums AS
SELECT t, cols, (pg_temp.fingerprint(t::regclass, cols)).*
  FROM unnest('{users,products,uploads,sellout_entries2,processing_logs,transform_logs,email_logs}'::text[]) t
 CROSS JOIN LATERAL (SELECT array_agg(attname::text ORDER BY attnum) FROM pg_attribute
                      WHERE attrelid = t::regclass AND attnum > 0 AND NOT attisdropped) c(cols);

-- Their catalog shape too (columns, constraints with names and definitions, indexes, triggers,
-- policies, RLS flags), for the rollback of part 4.
\ir rollback_check.psql

------------------------------------------------------------------------------------------------
-- Part 2. The conversion (phase_1_multitenant_schema.sql).
------------------------------------------------------------------------------------------------
-- "Creates new tables": organizations and user_organizations are tenancy's catalog
-- (tenancy.organizations: id, name, slug, settings, is_active, timestamps, as in the runbook;
-- tenancy.memberships: organization, user, role, is_active, plus which organization is a user's
-- default). The catalog calls the tenant organization_id; the data tables get the runbook's
-- client_id.
CREATE EXTENSION tenancy;

-- "Default Organization" for all existing data, slug 'default-org' (the runbook's validation query).
-- The runbook gives no fixed id: the id is generated, and everything below finds it by its slug.
SELECT tenancy.create_organization('Default Organization', 'default-org') AS default_org \gset

-- A login email stays unique across clients: accept that unique key as it is (the backfill
-- rewrites every other unique key to include client_id, and lint() agrees).
INSERT INTO tenancy.lint_ignores (code, object, reason)
VALUES ('TEN010', 'public.users index users_email_key', 'users log in by email: an email is one user in every client');

-- "Adds client_id columns" + "Existing Data Handling", online instead of in one transaction:
-- the runbook's all-or-nothing ALTER + UPDATE locks every table for the whole migration; tenancy
-- fills in batches (one COMMIT each, writers go on), then NOT NULL and a validated foreign key to
-- the organizations (the runbook adds client_id as a plain nullable uuid, and its integrity
-- function has to look for NULL and orphaned values afterwards). Parents first.
-- The application keeps writing meanwhile: a concurrent writer (a second connection of the owner)
-- inserts uploads and processing_logs, each marked as the writer's, and updates the one it wrote
-- before, one COMMIT each, until the backfill is over (writer_stop.psql). The checklist finds
-- every one of them in the Default Organization, then deletes them (by their marker) before
-- comparing the rows with part 1's.
CREATE SCHEMA seed_writer;
CREATE TABLE seed_writer.control (stop boolean NOT NULL DEFAULT false, written int NOT NULL DEFAULT 0, finished_at timestamptz);
INSERT INTO seed_writer.control DEFAULT VALUES;
CREATE PROCEDURE seed_writer.run() LANGUAGE plpgsql AS $w$
DECLARE
    v_i int := 0;
    v_upload uuid;
    v_log bigint;
BEGIN
    WHILE NOT (SELECT stop FROM seed_writer.control) LOOP
        v_i := v_i + 1;
        UPDATE public.uploads SET status = 'processed', rows_count = 1 WHERE id = v_upload;
        UPDATE public.processing_logs SET level = 'writer-updated' WHERE id = v_log;
        INSERT INTO public.uploads (user_id, filename) VALUES (md5('user' || (1 + v_i % 50))::uuid, 'seed-writer-' || v_i)
        RETURNING id INTO v_upload;
        INSERT INTO public.processing_logs (upload_id, step, level) VALUES (md5('upload' || (1 + v_i % 2000))::uuid, 'seed-writer-' || v_i, 'writer')
        RETURNING id INTO v_log;
        UPDATE seed_writer.control SET written = v_i;
        COMMIT;
        PERFORM pg_sleep(0.02);
    END LOOP;
    UPDATE seed_writer.control SET finished_at = clock_timestamp();
END $w$;
\ir writer_start.psql
CALL tenancy.backfill_all(
    '{users,products,uploads,sellout_entries2,processing_logs,transform_logs,email_logs}',
    organization_id => :'default_org', tenant_column => 'client_id', batch_size => 20000);
SELECT table_name, phase, rows_done FROM tenancy.backfill_progress ORDER BY table_name;

-- The tenant-scoped indexes, built CONCURRENTLY (no write blocked), then the last step: unique
-- keys and foreign keys rewritten to carry client_id (a sell-out line belongs to an upload of
-- its own client: (client_id, upload_id) REFERENCES uploads (client_id, id)).
SELECT statement FROM tenancy.pending_statements() \gexec
CALL tenancy.backfill_all(
    '{users,products,uploads,sellout_entries2,processing_logs,transform_logs,email_logs}',
    organization_id => :'default_org', tenant_column => 'client_id');
SELECT table_name, phase, skipped FROM tenancy.backfill_progress ORDER BY table_name;
-- The backfill is over: the writer stops (its rows are checked in part 3).
\ir writer_stop.psql

-- Gap in tenancy (reported): a foreign key to a unique key that is not the primary key
-- (sellout_entries2.ean -> products.ean) is left as it was. The backfill of products keeps
-- UNIQUE (ean) because a foreign key references it, and the backfill of sellout_entries2 keeps
-- that foreign key because products has no UNIQUE (client_id, ean): both end "converted" with it
-- in their skipped list, and a sell-out line could name another client's product. lint() reports
-- it (TEN010 + TEN011), but its two fixes applied as printed fail (TEN010's DROP CONSTRAINT comes
-- first and the foreign key depends on it). Done here by hand, online, in the order that works;
-- generated only while the lint finding is there, so a tenancy that does it itself skips this.
SELECT s.statement
  FROM tenancy.lint() l
 CROSS JOIN LATERAL unnest(ARRAY[
    'CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS products_client_id_ean_key ON public.products (client_id, ean)',
    'ALTER TABLE public.products ADD CONSTRAINT products_client_id_ean_key UNIQUE USING INDEX products_client_id_ean_key',
    'ALTER TABLE public.sellout_entries2 ADD CONSTRAINT sellout_entries2_ean_fkey_tenant FOREIGN KEY (client_id, ean) REFERENCES public.products (client_id, ean) NOT VALID',
    'ALTER TABLE public.sellout_entries2 VALIDATE CONSTRAINT sellout_entries2_ean_fkey_tenant',
    'ALTER TABLE public.sellout_entries2 DROP CONSTRAINT sellout_entries2_ean_fkey',
    'ALTER TABLE public.products DROP CONSTRAINT products_ean_key']) WITH ORDINALITY s(statement, n)
 WHERE l.code = 'TEN011' AND l.object = 'public.sellout_entries2 constraint sellout_entries2_ean_fkey'
 ORDER BY s.n \gexec

-- "Creates performance indexes": tenancy builds (client_id, key) for every primary, unique and
-- foreign key. The runbook's query-shaped indexes are plain SQL, built CONCURRENTLY too;
-- idx_products_client_ean is there already, and better: products' UNIQUE (ean) became
-- UNIQUE (client_id, ean) (products_client_id_ean_key), so two clients may list the same EAN.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_uploads_client_created_at ON uploads (client_id, created_at DESC);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_sellout_entries2_client_year_month ON sellout_entries2 (client_id, year, month);

-- user_organizations: every user becomes a member of the Default Organization (the runbook's
-- users.client_id link, as memberships), application admins as owners, everyone else as the
-- runbook's default role 'member'.
SELECT * FROM tenancy.adopt_users('users', '{"admin": "owner", "user": "member"}', organization_id => :'default_org');

-- Beyond phase 1 (the runbook's phase 2): isolation by RLS, so the database itself keeps clients
-- apart. The back end's service role bypasses it, so existing code keeps reading every row.
SELECT table_name, action FROM tenancy.enable_isolation_all('public', tenant_column => 'client_id') ORDER BY 1;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO sellout_app;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO sellout_app;
ANALYZE users, products, uploads, sellout_entries2, processing_logs, transform_logs, email_logs;

------------------------------------------------------------------------------------------------
-- Part 3. The runbook's validation queries and data validation, each an assertion, run by the
-- database owner.
------------------------------------------------------------------------------------------------
-- Row-level security is forced: without operator mode the owner sees no row of an isolated table,
-- so the answers below come from the explicit operator path, not from a privilege.
DO $$
DECLARE v_n bigint;
BEGIN
    SELECT count(*) INTO v_n FROM sellout_entries2;
    IF v_n <> 0 THEN RAISE EXCEPTION 'checklist: the owner sees % sell-out lines without operator mode', v_n; END IF;
    SELECT count(*) INTO v_n FROM uploads;
    IF v_n <> 0 THEN RAISE EXCEPTION 'checklist: the owner sees % uploads without operator mode', v_n; END IF;
END $$;

-- The validation queries: a tenancy administrator acting as itself, in operator mode (one
-- transaction, logged with its reason).
BEGIN;
SELECT tenancy.operate('runbook 001 validation');
DO $$
DECLARE
    v_tables text[] := '{users,products,uploads,sellout_entries2,processing_logs,transform_logs,email_logs}';
    v_org    uuid;
    v_n      bigint;
    v_bad    text;
BEGIN
    -- "Check client_id columns exist": exactly the seven tables of public, uuid, NOT NULL (the
    -- runbook's "all records have client_id values", made a constraint).
    SELECT string_agg(t, ', ') INTO v_bad FROM unnest(v_tables) t
     WHERE NOT EXISTS (SELECT 1 FROM information_schema.columns c
                        WHERE c.table_schema = 'public' AND c.table_name = t AND c.column_name = 'client_id'
                          AND c.data_type = 'uuid' AND c.is_nullable = 'NO');
    IF v_bad IS NOT NULL THEN RAISE EXCEPTION 'checklist: no NOT NULL uuid client_id on %', v_bad; END IF;
    SELECT string_agg(table_name::text, ', ') INTO v_bad FROM information_schema.columns
     WHERE column_name = 'client_id' AND table_schema = 'public' AND table_name::text <> ALL (v_tables);
    IF v_bad IS NOT NULL THEN RAISE EXCEPTION 'checklist: client_id on tables the runbook does not name: %', v_bad; END IF;

    -- "Verify default organization": slug default-org, named Default Organization, active.
    SELECT id INTO v_org FROM tenancy.organizations
     WHERE slug = 'default-org' AND name = 'Default Organization' AND is_active AND settings = '{}';
    IF v_org IS NULL THEN RAISE EXCEPTION 'checklist: no active Default Organization with slug default-org'; END IF;
    SELECT count(*) INTO v_n FROM tenancy.organizations;
    IF v_n <> 1 THEN RAISE EXCEPTION 'checklist: % organizations, not just the default one', v_n; END IF;

    -- Every row the concurrent writer wrote during the backfill is there, updated as it was (all
    -- but its last), in the Default Organization; then they go (by their marker), so that what is
    -- left is part 1's rows exactly.
    SELECT written INTO v_n FROM seed_writer.control;
    IF v_n < 3 THEN RAISE EXCEPTION 'checklist: the concurrent writer wrote only % rows', v_n; END IF;
    IF (SELECT count(*) FROM uploads WHERE filename LIKE 'seed-writer-%' AND client_id = v_org
           AND (status, rows_count) IS NOT DISTINCT FROM
               (CASE WHEN filename = 'seed-writer-' || v_n THEN 'pending' ELSE 'processed' END,
                CASE WHEN filename = 'seed-writer-' || v_n THEN NULL ELSE 1 END)) <> v_n
       OR (SELECT count(*) FROM uploads WHERE filename LIKE 'seed-writer-%') <> v_n THEN
        RAISE EXCEPTION 'checklist: the writer wrote % uploads, found %', v_n, (SELECT count(*) FROM uploads WHERE filename LIKE 'seed-writer-%');
    END IF;
    IF (SELECT count(*) FROM processing_logs WHERE step LIKE 'seed-writer-%' AND client_id = v_org
           AND level = CASE WHEN step = 'seed-writer-' || v_n THEN 'writer' ELSE 'writer-updated' END) <> v_n
       OR (SELECT count(*) FROM processing_logs WHERE step LIKE 'seed-writer-%') <> v_n THEN
        RAISE EXCEPTION 'checklist: the writer wrote % processing_logs, found %', v_n, (SELECT count(*) FROM processing_logs WHERE step LIKE 'seed-writer-%');
    END IF;
    RAISE WARNING 'checklist: the % uploads and % processing_logs of the concurrent writer are there, in the Default Organization', v_n, v_n;
    DELETE FROM processing_logs WHERE step LIKE 'seed-writer-%';
    DELETE FROM uploads WHERE filename LIKE 'seed-writer-%';

    -- "Check data integrity": validate_client_data_integrity() for the seven tables: no NULL
    -- client_id, no orphaned one, no row pointing at another client's row, NOT NULL, validated
    -- foreign key, index, RLS.
    SELECT count(*), string_agg(table_name, ', ') FILTER (WHERE NOT ok OR NOT saw_every_row OR null_rows > 0 OR orphan_rows > 0 OR cross_tenant_rows > 0
                                                           OR tenant_column <> 'client_id')
      INTO v_n, v_bad FROM tenancy.validate_client_data_integrity();
    IF v_bad IS NOT NULL THEN RAISE EXCEPTION 'checklist: integrity fails on %', v_bad; END IF;
    IF v_n <> 7 THEN RAISE EXCEPTION 'checklist: % tenant tables registered, not 7', v_n; END IF;
    SELECT string_agg(c.t, ', ') INTO v_bad FROM checksums c
     WHERE (SELECT i.total_rows FROM tenancy.validate_client_data_integrity(c.t::regclass) i) IS DISTINCT FROM c.n;
    IF v_bad IS NOT NULL THEN RAISE EXCEPTION 'checklist: integrity report counts other rows than exist in %', v_bad; END IF;

    -- "All existing records are assigned to this default organization".
    FOREACH v_bad IN ARRAY v_tables LOOP
        EXECUTE format('SELECT count(*) FROM %I WHERE client_id IS DISTINCT FROM $1', v_bad) INTO v_n USING v_org;
        IF v_n > 0 THEN RAISE EXCEPTION 'checklist: % rows of % not in the Default Organization', v_n, v_bad; END IF;
    END LOOP;

    -- "Verifies referential integrity": a validated foreign key client_id -> organizations on each
    -- table, and every foreign key between the seven tables carries client_id and is validated.
    SELECT count(*) INTO v_n FROM pg_constraint c
     WHERE c.contype = 'f' AND c.confrelid = 'tenancy.organizations'::regclass AND c.convalidated
       AND c.conrelid::regclass::text = ANY (v_tables)
       AND c.conkey = ARRAY[(SELECT attnum FROM pg_attribute WHERE attrelid = c.conrelid AND attname = 'client_id')];
    IF v_n <> 7 THEN RAISE EXCEPTION 'checklist: % validated foreign keys client_id -> organizations, not 7', v_n; END IF;
    SELECT string_agg(conname, ', ') INTO v_bad FROM pg_constraint c
     WHERE c.contype = 'f' AND c.conrelid::regclass::text = ANY (v_tables) AND c.confrelid::regclass::text = ANY (v_tables)
       AND (NOT c.convalidated OR pg_get_constraintdef(c.oid) NOT LIKE 'FOREIGN KEY (client_id, %) REFERENCES %(client_id, %)%');
    IF v_bad IS NOT NULL THEN RAISE EXCEPTION 'checklist: foreign keys without client_id or not validated: %', v_bad; END IF;
    SELECT count(*) INTO v_n FROM pg_constraint c
     WHERE c.contype = 'f' AND c.conrelid::regclass::text = ANY (v_tables) AND c.confrelid::regclass::text = ANY (v_tables);
    IF v_n <> 7 THEN RAISE EXCEPTION 'checklist: % foreign keys between the tables, not the 7 of the schema', v_n; END IF;

    -- "Creates performance indexes": the runbook's three, valid and with its columns.
    SELECT string_agg(x.name, ', ') INTO v_bad FROM (VALUES
        ('uploads', 'idx_uploads_client_created_at', 'CREATE INDEX idx_uploads_client_created_at ON public.uploads USING btree (client_id, created_at DESC)'),
        ('sellout_entries2', 'idx_sellout_entries2_client_year_month', 'CREATE INDEX idx_sellout_entries2_client_year_month ON public.sellout_entries2 USING btree (client_id, year, month)'),
        ('products', 'products_client_id_ean_key', 'CREATE UNIQUE INDEX products_client_id_ean_key ON public.products USING btree (client_id, ean)'))
        x(tbl, name, def)
     WHERE NOT EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                        WHERE i.indrelid = x.tbl::regclass AND c.relname = x.name AND i.indisvalid AND pg_get_indexdef(c.oid) = x.def);
    IF v_bad IS NOT NULL THEN RAISE EXCEPTION 'checklist: runbook index missing: %', v_bad; END IF;
    -- Troubleshooting's "check for missing indexes": a %client% index on each of the three tables.
    SELECT string_agg(t, ', ') INTO v_bad FROM unnest('{uploads,sellout_entries2,products}'::text[]) t
     WHERE NOT EXISTS (SELECT 1 FROM pg_indexes WHERE schemaname = 'public' AND tablename = t AND indexname LIKE '%client%');
    IF v_bad IS NOT NULL THEN RAISE EXCEPTION 'checklist: no client index on %', v_bad; END IF;
    -- And tenancy's: every primary, unique and foreign key has an index leading with client_id.
    SELECT count(*) INTO v_n FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
     WHERE i.indrelid::regclass::text = ANY (v_tables) AND a.attname = 'client_id' AND i.indisvalid AND i.indnatts > 1;
    IF v_n < 17 THEN RAISE EXCEPTION 'checklist: % composite indexes, fewer than 17', v_n; END IF;
    RAISE WARNING 'checklist: % composite indexes lead with client_id', v_n;
    IF EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid::regclass::text = ANY (v_tables) AND NOT i.indisvalid) THEN
        RAISE EXCEPTION 'checklist: an invalid index is left';
    END IF;
    -- The unique key of a sell-out line is per client now.
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = 'sellout_entries2'::regclass AND contype = 'u'
                      AND pg_get_constraintdef(oid) = 'UNIQUE (client_id, upload_id, line_no)') THEN
        RAISE EXCEPTION 'checklist: sellout_entries2 has no UNIQUE (client_id, upload_id, line_no)';
    END IF;

    -- user_organizations: every user a member of the Default Organization, admins as owners,
    -- the others with the runbook's default role 'member'; the users' own client_id agrees.
    SELECT count(*) INTO v_n FROM users u
     WHERE u.client_id <> v_org
        OR NOT EXISTS (SELECT 1 FROM tenancy.memberships m WHERE m.user_id = u.id AND m.organization_id = v_org AND m.is_active
                          AND m.role = CASE u.role WHEN 'admin' THEN 'owner' ELSE 'member' END);
    IF v_n > 0 THEN RAISE EXCEPTION 'checklist: % users not members of the Default Organization with their role', v_n; END IF;
    SELECT count(*) INTO v_n FROM tenancy.memberships;
    IF v_n <> (SELECT count(*) FROM users) THEN RAISE EXCEPTION 'checklist: % memberships for % users', v_n, (SELECT count(*) FROM users); END IF;

    -- The utility functions: get_user_organization_id(user) is the user's client,
    -- validate_client_access(user, client) true for its own client and false otherwise.
    SELECT count(*) INTO v_n FROM users u
     WHERE tenancy.get_user_organization_id(u.id) IS DISTINCT FROM u.client_id
        OR NOT tenancy.validate_client_access(u.id, u.client_id)
        OR tenancy.validate_client_access(u.id, gen_random_uuid());
    IF v_n > 0 THEN RAISE EXCEPTION 'checklist: utility functions wrong for % users', v_n; END IF;
    IF tenancy.get_user_organization_id(gen_random_uuid()) IS NOT NULL OR tenancy.validate_client_access(gen_random_uuid(), v_org) THEN
        RAISE EXCEPTION 'checklist: an unknown user has an organization or access';
    END IF;

    -- "Migration logs": every step logged, none failed (the runbook's migration_log is tenancy's).
    SELECT string_agg(t, ', ') INTO v_bad FROM unnest(v_tables) t
     WHERE NOT EXISTS (SELECT 1 FROM tenancy.migration_log l WHERE l.table_name = 'public.' || t AND l.operation = 'backfill'
                          AND l.status = 'succeeded' AND l.details::text LIKE '%converted%')
        OR NOT EXISTS (SELECT 1 FROM tenancy.migration_log l WHERE l.table_name = 'public.' || t AND l.operation = 'enable_isolation'
                          AND l.status = 'succeeded');
    IF v_bad IS NOT NULL THEN RAISE EXCEPTION 'checklist: conversion not logged as succeeded for %', v_bad; END IF;
    SELECT count(*) INTO v_n FROM tenancy.migration_log WHERE status = 'failed';
    IF v_n > 0 THEN RAISE EXCEPTION 'checklist: % failed operations in the migration log', v_n; END IF;
    SELECT string_agg(table_name || ' ' || phase, ', ') INTO v_bad FROM tenancy.backfill_progress WHERE phase <> 'converted';
    IF v_bad IS NOT NULL THEN RAISE EXCEPTION 'checklist: backfill not finished: %', v_bad; END IF;

    -- Every row kept, unchanged apart from the new column.
    SELECT string_agg(c.t, ', ') INTO v_bad FROM checksums c
     WHERE NOT EXISTS (SELECT 1 FROM pg_temp.fingerprint(c.t::regclass, c.cols) f WHERE f.n = c.n AND f.sum = c.sum);
    IF v_bad IS NOT NULL THEN RAISE EXCEPTION 'checklist: rows lost or changed in %', v_bad; END IF;
END $$;
COMMIT;
DROP SCHEMA seed_writer CASCADE;

-- "Backward compatibility" and the phases to come, in one transaction rolled back: the back end's
-- service role still reads every row; a request acting for a user (the application sets
-- tenancy.user_id per transaction) writes without naming client_id and gets the user's client;
-- a second client, added the way later phases will, sees only its own rows, may reuse an EAN,
-- and cannot point a sell-out line at the other client's product.
-- The number of sell-out lines is part 1's (the owner sees none outside operator mode).
BEGIN;
-- The service role is Supabase's BYPASSRLS role: the owner (NOBYPASSRLS) could only SET ROLE to
-- it as a member, which would give it BYPASSRLS in effect; so this check alone runs from the
-- session's superuser, SET LOCAL ROLE service_role, and the owner takes over again right after.
RESET SESSION AUTHORIZATION;
DO $$
DECLARE
    v_org   uuid := (SELECT id FROM tenancy.organizations WHERE slug = 'default-org');
    v_user  uuid := md5('user2')::uuid;                       -- a member of the Default Organization
    v_total bigint := (SELECT n FROM checksums WHERE t = 'sellout_entries2');
    v_n     bigint;
    v_id    uuid;
BEGIN
    SET LOCAL ROLE service_role;
    SELECT count(*) INTO v_n FROM sellout_entries2;
    IF v_n <> v_total THEN RAISE EXCEPTION 'checklist: the service role sees % of % sell-out lines', v_n, v_total; END IF;
    -- Where tenancy deliberately differs from "backward compatibility": old code that writes
    -- without client_id and without saying whom it acts for is refused (NOT NULL), not filed
    -- under the Default Organization; it names client_id, or sets tenancy.user_id per transaction.
    BEGIN
        INSERT INTO uploads (user_id, filename) VALUES (v_user, 'old-code.xlsx');
        RAISE EXCEPTION 'checklist: an upload without client and without context was accepted';
    EXCEPTION WHEN not_null_violation THEN NULL;
    END;
    INSERT INTO uploads (user_id, filename, client_id) VALUES (v_user, 'old-code.xlsx', v_org);
    PERFORM set_config('tenancy.user_id', v_user::text, true);
    INSERT INTO uploads (user_id, filename) VALUES (v_user, 'old-code-2.xlsx') RETURNING client_id INTO v_id;
    IF v_id IS DISTINCT FROM v_org THEN RAISE EXCEPTION 'checklist: the service role acting for a user wrote into %', v_id; END IF;
    RESET ROLE;
END $$;
SET SESSION AUTHORIZATION sellout_owner;
-- The rest as the database owner: the application's requests (SET LOCAL ROLE sellout_app, a
-- member), an administrator creating a second client.
DO $$
DECLARE
    v_org   uuid := (SELECT id FROM tenancy.organizations WHERE slug = 'default-org');
    v_acme  uuid;
    v_user  uuid := md5('user2')::uuid;                       -- a member of the Default Organization
    v_buyer uuid := 'aaaaaaaa-0000-0000-0000-000000000001';    -- Acme's first user
    v_total bigint := (SELECT n FROM checksums WHERE t = 'sellout_entries2');
    v_n     bigint;
    v_id    uuid;
BEGIN
    SET LOCAL tenancy.user_id = 'aaaaaaaa-0000-0000-0000-00000000ffff';   -- nobody

    -- A request of an end user: only RLS-bound sellout_app, with the user's context.
    SET LOCAL ROLE sellout_app;
    SELECT count(*) INTO v_n FROM sellout_entries2;
    IF v_n <> 0 THEN RAISE EXCEPTION 'checklist: a user without membership sees % sell-out lines', v_n; END IF;
    PERFORM set_config('tenancy.user_id', v_user::text, true);
    SELECT count(*) INTO v_n FROM sellout_entries2;
    IF v_n <> v_total THEN RAISE EXCEPTION 'checklist: a member sees % of % sell-out lines', v_n, v_total; END IF;
    INSERT INTO uploads (user_id, filename) VALUES (v_user, 'new.xlsx') RETURNING id INTO v_id;
    SELECT count(*) INTO v_n FROM uploads WHERE id = v_id AND client_id = v_org;
    IF v_n <> 1 THEN RAISE EXCEPTION 'checklist: an upload written without client_id did not get the user''s client'; END IF;
    RESET ROLE;

    -- A second client, Acme Retail, with its first user (an administrator creates it).
    v_acme := tenancy.create_organization('Acme Retail', 'acme-retail', owner_user_id => v_buyer);
    SET LOCAL ROLE sellout_app;
    PERFORM set_config('tenancy.user_id', v_buyer::text, true);
    INSERT INTO users (id, email, full_name, role) VALUES (v_buyer, 'buyer@acme.example', 'Acme Buyer', 'admin');
    INSERT INTO products (ean, name) VALUES ('4000000000001', 'Acme''s own product 1');   -- the default client's EAN too
    INSERT INTO uploads (user_id, filename) VALUES (v_buyer, 'acme.xlsx') RETURNING id INTO v_id;
    INSERT INTO sellout_entries2 (upload_id, line_no, ean, reseller, country, year, month, quantity)
    VALUES (v_id, 1, '4000000000001', 'Fnac', 'FR', 2025, 1, 3);
    SELECT count(*) INTO v_n FROM sellout_entries2;
    IF v_n <> 1 THEN RAISE EXCEPTION 'checklist: Acme sees % sell-out lines, not its 1', v_n; END IF;
    SELECT count(*) INTO v_n FROM products;
    IF v_n <> 1 THEN RAISE EXCEPTION 'checklist: Acme sees % products, not its 1', v_n; END IF;
    BEGIN   -- an EAN only the default client has
        INSERT INTO sellout_entries2 (upload_id, line_no, ean, reseller, country, year, month, quantity)
        VALUES (v_id, 2, '4000000000002', 'Fnac', 'FR', 2025, 1, 3);
        RAISE EXCEPTION 'checklist: Acme referenced the default client''s product';
    EXCEPTION WHEN foreign_key_violation THEN NULL;
    END;
    BEGIN   -- a row written into the other client
        INSERT INTO products (client_id, ean, name) VALUES (v_org, '4999999999999', 'planted');
        RAISE EXCEPTION 'checklist: Acme wrote a product into the default client';
    EXCEPTION WHEN insufficient_privilege THEN NULL;
    END;
    UPDATE products SET name = 'taken' WHERE client_id = v_org;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    IF v_n <> 0 THEN RAISE EXCEPTION 'checklist: Acme updated % products of the default client', v_n; END IF;

    -- Back to the member of the Default Organization: Acme's rows are invisible.
    PERFORM set_config('tenancy.user_id', v_user::text, true);
    SELECT count(*) INTO v_n FROM sellout_entries2;
    IF v_n <> v_total THEN RAISE EXCEPTION 'checklist: a member of the default client sees % of % sell-out lines', v_n, v_total; END IF;
    SELECT count(*) INTO v_n FROM products WHERE client_id = v_acme OR name LIKE 'Acme%';
    IF v_n <> 0 THEN RAISE EXCEPTION 'checklist: a member of the default client sees % of Acme''s products', v_n; END IF;
    RESET ROLE;
    SELECT count(*) INTO v_n FROM tenancy.validate_client_data_integrity() WHERE NOT ok;
    IF v_n > 0 THEN RAISE EXCEPTION 'checklist: integrity fails with two clients on % tables', v_n; END IF;
END $$;
ROLLBACK;

DO $$
DECLARE
    v_tables text[] := '{users,products,uploads,sellout_entries2,processing_logs,transform_logs,email_logs}';
    v_bad    text;
BEGIN
    -- Nothing of the test above is left behind.
    IF (SELECT count(*) FROM tenancy.organizations) <> 1 THEN RAISE EXCEPTION 'checklist: the test left an organization'; END IF;
    -- Isolation: every tenant table lints clean.
    SELECT string_agg(code || ' ' || object, '; ') INTO v_bad FROM tenancy.lint() WHERE split_part(object, ' ', 1) = ANY (
        SELECT 'public.' || t FROM unnest(v_tables) t);
    IF v_bad IS NOT NULL THEN RAISE EXCEPTION 'checklist: lint findings: %', v_bad; END IF;
    RAISE WARNING 'checklist: every item passed';
END $$;

------------------------------------------------------------------------------------------------
-- Part 4. The runbook's rollback (phase_1_rollback.sql: drop the utility functions, the new
-- indexes, the client_id columns and the organization tables), on the converted, isolated
-- database: what part 2 did by hand is undone by hand, in reverse; everything tenancy did, in one
-- call (tenancy.rollback_all: children before parents, all or nothing).
------------------------------------------------------------------------------------------------
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM sellout_app;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM sellout_app;
DROP INDEX idx_uploads_client_created_at, idx_sellout_entries2_client_year_month;
-- The foreign key by EAN and the unique key it needs, as they were (the hand-made tenant ones go).
ALTER TABLE products ADD CONSTRAINT products_ean_key UNIQUE (ean);
ALTER TABLE sellout_entries2 ADD CONSTRAINT sellout_entries2_ean_fkey FOREIGN KEY (ean) REFERENCES products (ean);
ALTER TABLE sellout_entries2 DROP CONSTRAINT sellout_entries2_ean_fkey_tenant;
ALTER TABLE products DROP CONSTRAINT products_client_id_ean_key;
SELECT table_name, action, detail FROM tenancy.rollback_all('public', drop_column => true) ORDER BY 1;
DROP EXTENSION tenancy;   -- organizations, memberships (user_organizations) and the utility functions
-- The empty schema belongs to the bootstrap superuser (docs/security.md): only a superuser can
-- drop it, so this one statement runs as one.
RESET SESSION AUTHORIZATION;
DROP SCHEMA tenancy;      -- empty now (RESTRICT)
SET SESSION AUTHORIZATION sellout_owner;
SELECT pg_temp.assert_original('phase_1_rollback');
DO $$ BEGIN RAISE WARNING 'rollback: every level passed'; END $$;
