-- Seed 000 (TraceHub, Sprint 8): the single-tenant database of VIBOTAJ becomes multi-tenant.
-- The runbook's four Alembic migrations, its data migration, its constraints and indexes, and
-- its validation checklist, done with tenancy, online. Run it with psql (it uses \gexec):
--
--   psql -v ON_ERROR_STOP=1 -f examples/seed_000_tracehub.sql     (in an empty database)
--
-- connected as a superuser (scripts/test.sh runs it). Who runs what:
--   * the superuser, at the top only: creates the LOGIN role tracehub_owner (NOSUPERUSER,
--     NOBYPASSRLS) and makes it the owner of the database (cluster-wide roles and ALTER DATABASE
--     OWNER need it); then SET SESSION AUTHORIZATION tracehub_owner;
--   * the database owner tracehub_owner, everything else: CREATE EXTENSION tenancy (a trusted
--     install, as on managed Postgres), the single-tenant schema and its data, the conversion, the
--     checklist (its queries over isolated tables in a transaction that called
--     tenancy.operate('runbook 000 validation'): operator mode, no superuser, no BYPASSRLS), and
--     the three rollback levels;
--   * a concurrent writer (a second connection of tracehub_owner, examples/writer_start.psql) keeps
--     inserting and updating documents and audit_logs during the whole backfill;
--   * the superuser again for one statement only: DROP SCHEMA tenancy after DROP EXTENSION (the
--     empty schema belongs to the bootstrap superuser, docs/security.md; the owner cannot drop it).
-- Part 1 builds the single-tenant schema with data (what exists before the sprint); part 2 is
-- the conversion; part 3 is seed 000's validation checklist, each item an assertion; part 4 the
-- rollback levels (skipped with -v keep_converted=1).
\set ON_ERROR_STOP 1
\pset pager off
SET client_min_messages = warning;

-- As the superuser: the database owner, an ordinary login role (roles are cluster-wide, so only
-- created when absent).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tracehub_owner') THEN
        CREATE ROLE tracehub_owner LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEROLE NOCREATEDB;
    END IF;
END $$;
SELECT format('ALTER DATABASE %I OWNER TO tracehub_owner', current_database()) \gexec
-- From here on, the database owner (the superuser comes back only for DROP SCHEMA tenancy).
SET SESSION AUTHORIZATION tracehub_owner;
DO $$
BEGIN   -- what the rest runs as: the owner of the database, neither superuser nor BYPASSRLS
    IF (SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user)
       OR (SELECT datdba::regrole::text FROM pg_database WHERE datname = current_database()) <> current_user THEN
        RAISE EXCEPTION 'not running as the database owner %, an ordinary role', current_user;
    END IF;
END $$;

------------------------------------------------------------------------------------------------
-- Part 1. TraceHub before Sprint 8: nine tables, no notion of organization.
------------------------------------------------------------------------------------------------
CREATE TABLE users (
    id uuid PRIMARY KEY, email text NOT NULL UNIQUE, full_name text, role text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE parties (id serial PRIMARY KEY, name text NOT NULL, kind text NOT NULL);
CREATE TABLE products (id serial PRIMARY KEY, hs_code text NOT NULL, name text NOT NULL);
CREATE TABLE origins (id serial PRIMARY KEY, product_id int NOT NULL REFERENCES products, country char(2) NOT NULL,
                      geolocation text);
CREATE TABLE shipments (
    id serial PRIMARY KEY, reference text NOT NULL UNIQUE, buyer_id int REFERENCES parties,
    supplier_id int REFERENCES parties, product_id int REFERENCES products, status text NOT NULL DEFAULT 'draft',
    created_by uuid REFERENCES users, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE documents (
    id serial PRIMARY KEY, shipment_id int NOT NULL REFERENCES shipments ON DELETE CASCADE,
    document_type text NOT NULL, file_name text NOT NULL, uploaded_by uuid REFERENCES users);
CREATE TABLE container_events (
    id bigserial PRIMARY KEY, shipment_id int NOT NULL REFERENCES shipments ON DELETE CASCADE,
    container_number text NOT NULL, event text NOT NULL, at timestamptz NOT NULL);
CREATE TABLE notifications (
    id bigserial PRIMARY KEY, user_id uuid NOT NULL REFERENCES users ON DELETE CASCADE, message text NOT NULL,
    read_at timestamptz);
CREATE TABLE audit_logs (
    id bigserial PRIMARY KEY, user_id uuid REFERENCES users, action text NOT NULL, entity text,
    at timestamptz NOT NULL DEFAULT now());

INSERT INTO users (id, email, full_name, role)
SELECT ('11111111-0000-0000-0000-' || lpad(g::text, 12, '0'))::uuid, 'user' || g || '@vibotaj.com', 'User ' || g,
       (ARRAY['admin', 'compliance', 'logistics_agent', 'buyer', 'supplier', 'viewer'])[1 + g % 6]
  FROM generate_series(1, 60) g;
INSERT INTO parties (name, kind) SELECT 'Party ' || g, CASE WHEN g % 2 = 0 THEN 'buyer' ELSE 'supplier' END FROM generate_series(1, 100) g;
INSERT INTO products (hs_code, name) SELECT '1801' || lpad(g::text, 4, '0'), 'Product ' || g FROM generate_series(1, 200) g;
INSERT INTO origins (product_id, country, geolocation) SELECT 1 + g % 200, 'CI', 'POINT(' || g || ' 5)' FROM generate_series(1, 400) g;
INSERT INTO shipments (reference, buyer_id, supplier_id, product_id, status, created_by)
SELECT 'VIB-2025-' || lpad(g::text, 5, '0'), 2 + 2 * (g % 50), 1 + 2 * (g % 50), 1 + g % 200,
       (ARRAY['draft', 'in_transit', 'delivered'])[1 + g % 3], ('11111111-0000-0000-0000-' || lpad((1 + g % 60)::text, 12, '0'))::uuid
  FROM generate_series(1, 20000) g;
INSERT INTO documents (shipment_id, document_type, file_name, uploaded_by)
SELECT 1 + g % 20000, (ARRAY['bill_of_lading', 'invoice', 'eudr_statement'])[1 + g % 3], 'doc-' || g || '.pdf',
       ('11111111-0000-0000-0000-' || lpad((1 + g % 60)::text, 12, '0'))::uuid
  FROM generate_series(1, 50000) g;
INSERT INTO container_events (shipment_id, container_number, event, at)
SELECT 1 + g % 20000, 'MSCU' || lpad((g % 9999999)::text, 7, '0'), 'gate_in', timestamptz '2025-06-01' + g * interval '1 minute'
  FROM generate_series(1, 100000) g;
INSERT INTO notifications (user_id, message) SELECT ('11111111-0000-0000-0000-' || lpad((1 + g % 60)::text, 12, '0'))::uuid, 'Shipment update ' || g
  FROM generate_series(1, 10000) g;
INSERT INTO audit_logs (user_id, action, entity) SELECT ('11111111-0000-0000-0000-' || lpad((1 + g % 60)::text, 12, '0'))::uuid, 'update', 'shipment'
  FROM generate_series(1, 50000) g;
ANALYZE users, parties, products, origins, shipments, documents, container_events, notifications, audit_logs;  -- the owner's tables (a bare ANALYZE skips the shared catalogs with a warning each)

-- What must survive the conversion unchanged: every row of every table, as it is now (its
-- columns of today, in order), hashed; compared again at the end.
CREATE FUNCTION pg_temp.fingerprint(t regclass, cols text[], OUT n bigint, OUT sum bigint) LANGUAGE plpgsql AS $f$
BEGIN
    EXECUTE format('SELECT count(*), sum(hashtext(row(%s)::text)) FROM %s',
                   (SELECT string_agg(quote_ident(c), ', ') FROM unnest(cols) c), t) INTO n, sum;
END $f$;
CREATE TEMP TABLE checksums AS
SELECT t, cols, (pg_temp.fingerprint(t::regclass, cols)).*
  FROM unnest('{users,parties,products,origins,shipments,documents,container_events,notifications,audit_logs}'::text[]) t
 CROSS JOIN LATERAL (SELECT array_agg(attname::text ORDER BY attnum) FROM pg_attribute
                      WHERE attrelid = t::regclass AND attnum > 0 AND NOT attisdropped) c(cols);

-- Their catalog shape too (columns, constraints with names and definitions, indexes, triggers,
-- policies, RLS flags), for the rollback levels of part 4.
\ir rollback_check.psql

------------------------------------------------------------------------------------------------
-- Part 2. The conversion (migrations 003-006 of the runbook).
------------------------------------------------------------------------------------------------
-- Migration 003: organizations, memberships and invitations are tenancy's catalog.
CREATE EXTENSION tenancy;

-- Migration 005: the VIBOTAJ organization with its fixed id.
SELECT tenancy.create_organization('VIBOTAJ GmbH', 'vibotaj', id => '00000000-0000-0000-0000-000000000001',
         settings => '{"type": "internal", "country": "DE", "subscription_tier": "enterprise",
                       "default_currency": "EUR", "timezone": "Europe/Berlin", "language": "en"}');

-- A login email stays unique across organizations: accept that unique key as it is (the
-- backfill rewrites every other unique key to include organization_id, and lint() agrees).
INSERT INTO tenancy.lint_ignores (code, object, reason)
VALUES ('TEN010', 'public.users index users_email_key', 'users log in by email: an email is one user in every organization');

-- The application keeps writing during the backfill: a concurrent writer (a second connection of
-- the owner) inserts documents (their organization derived from their shipment) and audit_logs
-- (VIBOTAJ's), each marked as the writer's, and updates the one it wrote before, one COMMIT each,
-- until the backfill is over (writer_stop.psql). The checklist finds every one of them, with its
-- organization, then deletes them (by their marker) before comparing the rows with part 1's.
CREATE SCHEMA seed_writer;
CREATE TABLE seed_writer.control (stop boolean NOT NULL DEFAULT false, written int NOT NULL DEFAULT 0, finished_at timestamptz);
INSERT INTO seed_writer.control DEFAULT VALUES;
CREATE PROCEDURE seed_writer.run() LANGUAGE plpgsql AS $w$
DECLARE
    v_i int := 0;
    v_doc int;
    v_log bigint;
BEGIN
    WHILE NOT (SELECT stop FROM seed_writer.control) LOOP
        v_i := v_i + 1;
        UPDATE public.documents SET document_type = 'writer-updated' WHERE id = v_doc;
        UPDATE public.audit_logs SET entity = 'writer-updated' WHERE id = v_log;
        INSERT INTO public.documents (shipment_id, document_type, file_name)
        VALUES (1 + v_i * 37 % 20000, 'writer', 'seed-writer-' || v_i) RETURNING id INTO v_doc;
        INSERT INTO public.audit_logs (action, entity) VALUES ('seed-writer-' || v_i, 'writer') RETURNING id INTO v_log;
        UPDATE seed_writer.control SET written = v_i;
        COMMIT;
        PERFORM pg_sleep(0.02);
    END LOOP;
    UPDATE seed_writer.control SET finished_at = clock_timestamp();
END $w$;
\ir writer_start.psql

-- Migrations 004 + 005 + 006, online: every table gets organization_id; documents take theirs
-- from their shipment, everything else belongs to VIBOTAJ. Parents are converted first.
CALL tenancy.backfill_all(
    '{users,parties,products,origins,shipments,documents,container_events,notifications,audit_logs}',
    organization_id => '00000000-0000-0000-0000-000000000001',
    derive => '{"documents": {"parent": "shipments"}}',
    batch_size => 20000);
SELECT table_name, phase, rows_done FROM tenancy.backfill_progress ORDER BY table_name;

-- The composite indexes, built CONCURRENTLY (no write blocked), then the last step: unique
-- keys and foreign keys rewritten to carry organization_id.
SELECT statement FROM tenancy.pending_statements() \gexec
CALL tenancy.backfill_all(
    '{users,parties,products,origins,shipments,documents,container_events,notifications,audit_logs}',
    organization_id => '00000000-0000-0000-0000-000000000001',
    derive => '{"documents": {"parent": "shipments"}}');
SELECT table_name, phase, skipped FROM tenancy.backfill_progress ORDER BY table_name;
-- The backfill is over: the writer stops (its rows are checked in part 3).
\ir writer_stop.psql

-- Migration 005: every user becomes a member of VIBOTAJ, with the runbook's role mapping.
SELECT * FROM tenancy.adopt_users('users',
    '{"admin":"owner","compliance":"admin","logistics_agent":"manager","buyer":"member","supplier":"member","viewer":"viewer"}',
    organization_id => '00000000-0000-0000-0000-000000000001');

-- Beyond the runbook: isolation by RLS, so the database itself keeps tenants apart.
SELECT table_name, action FROM tenancy.enable_isolation_all('public') ORDER BY 1;

------------------------------------------------------------------------------------------------
-- Part 3. Seed 000's validation checklist, each item an assertion, run by the database owner.
------------------------------------------------------------------------------------------------
-- Row-level security is forced: without operator mode the owner sees no row of an isolated table,
-- so the answers below come from the explicit operator path, not from a privilege.
DO $$
DECLARE v_n bigint;
BEGIN
    SELECT count(*) INTO v_n FROM shipments;
    IF v_n <> 0 THEN RAISE EXCEPTION 'checklist: the owner sees % shipments without operator mode', v_n; END IF;
    SELECT count(*) INTO v_n FROM users;
    IF v_n <> 0 THEN RAISE EXCEPTION 'checklist: the owner sees % users without operator mode', v_n; END IF;
END $$;

-- The validation queries: a tenancy administrator acting as itself, in operator mode (one
-- transaction, logged with its reason).
BEGIN;
SELECT tenancy.operate('runbook 000 validation');
DO $$
DECLARE
    v_tables text[] := '{users,parties,products,origins,shipments,documents,container_events,notifications,audit_logs}';
    v_n bigint;
    v_bad text;
BEGIN
    -- All tables have organization_id, NOT NULL.
    SELECT string_agg(t, ', ') INTO v_bad FROM unnest(v_tables) t
     WHERE NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = t::regclass AND a.attname = 'organization_id' AND a.attnotnull);
    IF v_bad IS NOT NULL THEN RAISE EXCEPTION 'checklist: no NOT NULL organization_id on %', v_bad; END IF;
    -- No NULL organization_id values, no orphaned records (validate_client_data_integrity).
    SELECT string_agg(table_name, ', ') INTO v_bad FROM tenancy.validate_client_data_integrity()
     WHERE NOT ok OR NOT saw_every_row OR null_rows > 0 OR orphan_rows > 0;
    IF v_bad IS NOT NULL THEN RAISE EXCEPTION 'checklist: integrity fails on %', v_bad; END IF;
    SELECT count(*) INTO v_n FROM tenancy.validate_client_data_integrity();
    IF v_n <> 9 THEN RAISE EXCEPTION 'checklist: % tenant tables registered, not 9', v_n; END IF;
    -- VIBOTAJ organization exists.
    IF NOT EXISTS (SELECT 1 FROM tenancy.organizations WHERE id = '00000000-0000-0000-0000-000000000001' AND slug = 'vibotaj' AND is_active) THEN
        RAISE EXCEPTION 'checklist: VIBOTAJ is missing';
    END IF;
    -- All users migrated to VIBOTAJ, with their mapped roles.
    SELECT count(*) INTO v_n FROM users u
     WHERE u.organization_id <> '00000000-0000-0000-0000-000000000001'
        OR NOT EXISTS (SELECT 1 FROM tenancy.memberships m WHERE m.user_id = u.id AND m.organization_id = u.organization_id
                          AND m.role = CASE u.role WHEN 'admin' THEN 'owner' WHEN 'compliance' THEN 'admin'
                                                   WHEN 'logistics_agent' THEN 'manager' WHEN 'viewer' THEN 'viewer' ELSE 'member' END);
    IF v_n > 0 THEN RAISE EXCEPTION 'checklist: % users not migrated to VIBOTAJ with their role', v_n; END IF;
    -- All shipments migrated to VIBOTAJ; each document in its shipment's organization.
    SELECT count(*) INTO v_n FROM shipments WHERE organization_id <> '00000000-0000-0000-0000-000000000001';
    IF v_n > 0 THEN RAISE EXCEPTION 'checklist: % shipments not in VIBOTAJ', v_n; END IF;
    SELECT count(*) INTO v_n FROM documents d JOIN shipments s ON s.id = d.shipment_id WHERE d.organization_id <> s.organization_id;
    IF v_n > 0 THEN RAISE EXCEPTION 'checklist: % documents in another organization than their shipment', v_n; END IF;
    -- Foreign key constraints in place (organization_id -> organizations.id), validated: 9.
    SELECT count(*) INTO v_n FROM pg_constraint c
     WHERE c.contype = 'f' AND c.confrelid = 'tenancy.organizations'::regclass AND c.convalidated
       AND c.conrelid::regclass::text = ANY (v_tables);
    IF v_n <> 9 THEN RAISE EXCEPTION 'checklist: % validated foreign keys to organizations, not 9', v_n; END IF;
    -- The unique constraint (organization_id, reference) on shipments.
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = 'shipments'::regclass AND contype = 'u'
                      AND pg_get_constraintdef(oid) = 'UNIQUE (organization_id, reference)') THEN
        RAISE EXCEPTION 'checklist: shipments has no UNIQUE (organization_id, reference)';
    END IF;
    -- Composite indexes created (the runbook counts 16): every index leading with organization_id, valid.
    SELECT count(*) INTO v_n FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
     WHERE i.indrelid::regclass::text = ANY (v_tables) AND a.attname = 'organization_id' AND i.indisvalid AND i.indnatts > 1;
    IF v_n < 16 THEN RAISE EXCEPTION 'checklist: % composite indexes, fewer than 16', v_n; END IF;
    RAISE WARNING 'checklist: % composite indexes lead with organization_id', v_n;
    IF EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid::regclass::text = ANY (v_tables) AND NOT i.indisvalid) THEN
        RAISE EXCEPTION 'checklist: an invalid index is left';
    END IF;
    -- Every row the concurrent writer wrote during the backfill is there, updated as it was
    -- (all but its last), in a valid organization: documents in their shipment's (checked above
    -- for every document), audit_logs in VIBOTAJ.
    SELECT written INTO v_n FROM seed_writer.control;
    IF v_n < 3 THEN RAISE EXCEPTION 'checklist: the concurrent writer wrote only % rows', v_n; END IF;
    IF (SELECT count(*) FROM documents d JOIN tenancy.organizations o ON o.id = d.organization_id
         WHERE d.file_name LIKE 'seed-writer-%' AND d.file_name = 'seed-writer-' || substr(d.file_name, 13)::int
           AND d.document_type = CASE WHEN substr(d.file_name, 13)::int = v_n THEN 'writer' ELSE 'writer-updated' END) <> v_n
       OR (SELECT count(*) FROM documents WHERE file_name LIKE 'seed-writer-%') <> v_n THEN
        RAISE EXCEPTION 'checklist: the writer wrote % documents, found %', v_n, (SELECT count(*) FROM documents WHERE file_name LIKE 'seed-writer-%');
    END IF;
    IF (SELECT count(*) FROM audit_logs WHERE action LIKE 'seed-writer-%' AND organization_id = '00000000-0000-0000-0000-000000000001'
           AND entity = CASE WHEN action = 'seed-writer-' || v_n THEN 'writer' ELSE 'writer-updated' END) <> v_n
       OR (SELECT count(*) FROM audit_logs WHERE action LIKE 'seed-writer-%') <> v_n THEN
        RAISE EXCEPTION 'checklist: the writer wrote % audit_logs, found %', v_n, (SELECT count(*) FROM audit_logs WHERE action LIKE 'seed-writer-%');
    END IF;
    RAISE WARNING 'checklist: the % documents and % audit_logs of the concurrent writer are there, in their organization', v_n, v_n;
    -- The writer's rows go (by their marker), so that what is left is part 1's rows exactly.
    DELETE FROM documents WHERE file_name LIKE 'seed-writer-%';
    DELETE FROM audit_logs WHERE action LIKE 'seed-writer-%';
    -- Every row kept, unchanged apart from the new column.
    SELECT string_agg(c.t, ', ') INTO v_bad FROM checksums c
     WHERE NOT EXISTS (SELECT 1 FROM pg_temp.fingerprint(c.t::regclass, c.cols) f WHERE f.n = c.n AND f.sum = c.sum);
    IF v_bad IS NOT NULL THEN RAISE EXCEPTION 'checklist: rows lost or changed in %', v_bad; END IF;
    -- Isolation: every tenant table lints clean.
    SELECT string_agg(code || ' ' || object, '; ') INTO v_bad FROM tenancy.lint() WHERE split_part(object, ' ', 1) = ANY (
        SELECT 'public.' || t FROM unnest(v_tables) t);
    IF v_bad IS NOT NULL THEN RAISE EXCEPTION 'checklist: lint findings: %', v_bad; END IF;
    RAISE WARNING 'checklist: every item passed';
END $$;
COMMIT;
DROP SCHEMA seed_writer CASCADE;

-- psql -v keep_converted=1 stops here, with the converted, isolated database (the lifecycle
-- client test starts from it).
\if :{?keep_converted}
\echo 'seed 000: stopped before the rollback levels (keep_converted)'
\quit
\endif

------------------------------------------------------------------------------------------------
-- Part 4. The runbook's rollback strategy, its three levels, each from the converted, isolated
-- database above: one call (tenancy.rollback_all), children before parents, all or nothing. Levels
-- 1 and 2 run in a transaction that is rolled back, so that each starts from the same state.
------------------------------------------------------------------------------------------------
-- Level 2 (alembic downgrade 004: keep the columns, remove the data migration and constraints):
-- organization_id stays, nullable, without constraints, indexes or policies; its values (the data
-- migration, 005) are cleared with the VIBOTAJ organization and its memberships.
BEGIN;
SELECT table_name, action, detail FROM tenancy.rollback_all('public') ORDER BY 1;
UPDATE users SET organization_id = NULL; UPDATE parties SET organization_id = NULL;
UPDATE products SET organization_id = NULL; UPDATE origins SET organization_id = NULL;
UPDATE shipments SET organization_id = NULL; UPDATE documents SET organization_id = NULL;
UPDATE container_events SET organization_id = NULL; UPDATE notifications SET organization_id = NULL;
UPDATE audit_logs SET organization_id = NULL;
DELETE FROM tenancy.memberships WHERE organization_id = '00000000-0000-0000-0000-000000000001';
DELETE FROM tenancy.organizations WHERE id = '00000000-0000-0000-0000-000000000001';
SELECT pg_temp.assert_original('level 2 (downgrade 004)',
         ARRAY(SELECT 'now: ' || t || ' column organization_id uuid default ' FROM checksums));
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM tenancy.tenant_tables) THEN RAISE EXCEPTION 'rollback level 2: tables still registered'; END IF;
END $$;
ROLLBACK;

-- Level 1 (alembic downgrade 002): back to before migration 003, tenancy's tables included.
BEGIN;
SELECT table_name, action, detail FROM tenancy.rollback_all('public', drop_column => true) ORDER BY 1;
DROP EXTENSION tenancy;
-- The empty schema belongs to the bootstrap superuser (CREATE EXTENSION made it, migration 003 had
-- none): only a superuser can drop it (docs/security.md), so this one statement runs as one.
RESET SESSION AUTHORIZATION;
DROP SCHEMA tenancy;  -- empty now (RESTRICT)
SET SESSION AUTHORIZATION tracehub_owner;
SELECT pg_temp.assert_original('level 1 (downgrade 002)');
ROLLBACK;

-- Level 3 (full restore from the pre-migration backup): what a restore gives, without one. The
-- same call, committed this time: the database is the one part 1 built, shape and rows.
SELECT table_name, action, detail FROM tenancy.rollback_all('public', drop_column => true) ORDER BY 1;
DROP EXTENSION tenancy;
RESET SESSION AUTHORIZATION;   -- the superuser's empty schema, as in level 1
DROP SCHEMA tenancy;
SET SESSION AUTHORIZATION tracehub_owner;
SELECT pg_temp.assert_original('level 3 (restore)');
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'tenancy') THEN RAISE EXCEPTION 'rollback level 3: schema tenancy is left'; END IF;
    RAISE WARNING 'rollback: every level passed';
END $$;
