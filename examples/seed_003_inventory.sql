-- Seed 003 (inventory app, "Multi-Tenant Isolation & Balance Table"): a single-tenant inventory
-- database (users, items, locations, a stock ledger, cycle counts) becomes multi-tenant with an
-- org_id column on every table, every Prisma unique key rewritten to include org_id, and a
-- per-organization balance table kept by a trigger. The runbook's migration.sql, its rollback,
-- its verification queries and its "test tenant isolation" step, done with tenancy, online.
-- Run it with psql (it uses \gexec):
--
--   psql -v ON_ERROR_STOP=1 -f examples/seed_003_inventory.sql     (in an empty database)
--
-- connected as a superuser (scripts/test.sh runs it). Who runs what:
--   * the superuser, at the top only: the cluster roles (the application's inventory_app, and the
--     LOGIN role inventory_owner, NOSUPERUSER NOBYPASSRLS, member of inventory_app) and ALTER
--     DATABASE ... OWNER TO inventory_owner; then SET SESSION AUTHORIZATION inventory_owner;
--   * the database owner inventory_owner, everything else: the single-tenant schema and data,
--     CREATE EXTENSION tenancy (a trusted install), the conversion, the verification queries (over
--     isolated tables in a transaction that called tenancy.operate('runbook 003 validation'):
--     operator mode, no superuser, no BYPASSRLS), the application's requests (SET LOCAL ROLE
--     inventory_app) and the runbook's rollback (part 4);
--   * a concurrent writer (a second connection of inventory_owner, examples/writer_start.psql)
--     keeps inserting and updating feature_flags (a unique key being rewritten) and audit_logs
--     during the whole backfill;
--   * the superuser again for one statement only: DROP SCHEMA tenancy after DROP EXTENSION (the
--     empty schema belongs to the bootstrap superuser, docs/security.md; the owner cannot drop it).
-- Part 1 builds the single-tenant schema with data (what exists before the migration); part 2 is
-- the conversion (runbook steps 3 and 4); part 3 is the runbook's verification queries and
-- post-migration checks, each an assertion; part 4 is the runbook's rollback procedure.
--
-- The application is a Prisma app: its users have cuid ids (text, "clh3x5k2p0000qzrmn831i7rn"),
-- which tenancy takes as they are (tenancy.set_user_id_type('text')): its users are adopted as
-- members, the application's ordinary database role sets the acting user from the cuid, and the
-- tables are isolated in membership mode (not the default since 0.3.0: its pages list the rows of
-- every organization of the user).
\set ON_ERROR_STOP 1
\pset pager off
SET client_min_messages = warning;

-- As the superuser: the application's database role (an ordinary role, not a superuser, not a
-- tenancy administrator: RLS applies to it, and it sees the catalog only as the acting user) and
-- the database owner, an ordinary login role (roles are cluster-wide: created only when absent).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'inventory_app') THEN
        CREATE ROLE inventory_app NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'inventory_owner') THEN
        CREATE ROLE inventory_owner LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEROLE NOCREATEDB;
    END IF;
END $$;
GRANT inventory_app TO inventory_owner;   -- to run the application's requests (SET LOCAL ROLE inventory_app)
SELECT format('ALTER DATABASE %I OWNER TO inventory_owner', current_database()) \gexec
-- From here on, the database owner (the superuser comes back only for DROP SCHEMA tenancy).
SET SESSION AUTHORIZATION inventory_owner;
DO $$
BEGIN   -- what the rest runs as: the owner of the database, neither superuser nor BYPASSRLS
    IF (SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user)
       OR (SELECT datdba::regrole::text FROM pg_database WHERE datname = current_database()) <> current_user THEN
        RAISE EXCEPTION 'not running as the database owner %, an ordinary role', current_user;
    END IF;
END $$;

-- Prisma's cuid for user number g (25 characters: "c", then base-36 letters and digits).
CREATE FUNCTION pg_temp.cuid(g int) RETURNS text LANGUAGE sql IMMUTABLE AS $f$
    SELECT 'cl' || lpad(g::text, 9, '0') || substr(md5('seed003-' || g), 1, 14)
$f$;

------------------------------------------------------------------------------------------------
-- Part 1. The inventory database before the migration: eight tables, no notion of organization.
-- Prisma names unique indexes "<table>_<field>_key" with the field's camelCase name, quoted.
------------------------------------------------------------------------------------------------
CREATE TABLE users (
    id text PRIMARY KEY DEFAULT 'cl' || substr(md5(random()::text || clock_timestamp()::text), 1, 23), email text NOT NULL, name text, role text NOT NULL,
    password_hash text, created_at timestamptz NOT NULL DEFAULT now());
CREATE UNIQUE INDEX "users_email_key" ON users (email);
CREATE TABLE items (
    id serial PRIMARY KEY, item_number text NOT NULL, description text NOT NULL, uom text NOT NULL DEFAULT 'EA',
    unit_cost numeric(12, 4), is_active boolean NOT NULL DEFAULT true, created_at timestamptz NOT NULL DEFAULT now());
CREATE UNIQUE INDEX "items_itemNumber_key" ON items (item_number);
CREATE TABLE locations (
    id serial PRIMARY KEY, site text NOT NULL, name text NOT NULL, zone text, is_active boolean NOT NULL DEFAULT true);
CREATE UNIQUE INDEX "locations_site_name_key" ON locations (site, name);
CREATE TABLE inventory_ledger (
    id bigserial PRIMARY KEY, item_id int NOT NULL REFERENCES items, location_id int NOT NULL REFERENCES locations,
    lot_id int,  -- lot numbers come from the ERP: no lots table here
    quantity numeric(14, 3) NOT NULL, txn_type text NOT NULL, reference text,
    created_by text REFERENCES users ON DELETE SET NULL, created_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX inventory_ledger_item_id_location_id_idx ON inventory_ledger (item_id, location_id);
CREATE TABLE count_sheets (
    id serial PRIMARY KEY, count_number text NOT NULL, location_id int REFERENCES locations, status text NOT NULL DEFAULT 'open',
    created_by text REFERENCES users, counted_at timestamptz);
CREATE UNIQUE INDEX "count_sheets_countNumber_key" ON count_sheets (count_number);
CREATE TABLE count_lines (
    id bigserial PRIMARY KEY, count_sheet_id int NOT NULL REFERENCES count_sheets ON DELETE CASCADE,
    item_id int NOT NULL REFERENCES items, location_id int REFERENCES locations, lot_id int,
    expected_qty numeric(14, 3), counted_qty numeric(14, 3), counted_by text REFERENCES users);
CREATE TABLE audit_logs (
    id bigserial PRIMARY KEY, user_id text REFERENCES users ON DELETE SET NULL, action text NOT NULL, entity text NOT NULL,
    entity_id text, details jsonb, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE feature_flags (
    id serial PRIMARY KEY, key text NOT NULL, enabled boolean NOT NULL DEFAULT false, description text);
CREATE UNIQUE INDEX "feature_flags_key_key" ON feature_flags (key);

INSERT INTO users (id, email, name, role, password_hash)
SELECT pg_temp.cuid(g), 'user' || g || '@northwind-supply.com', 'User ' || g,
       (ARRAY['admin', 'manager', 'counter', 'clerk', 'auditor'])[1 + (g - 1) % 5], md5('pw' || g)
  FROM generate_series(1, 300) g;
INSERT INTO items (item_number, description, uom, unit_cost)
SELECT 'ITM-' || lpad(g::text, 6, '0'), 'Item ' || g, (ARRAY['EA', 'BX', 'CS', 'LB'])[1 + g % 4], round((g % 997) * 1.37, 4)
  FROM generate_series(1, 5000) g;
INSERT INTO locations (site, name, zone)
SELECT 'SITE-' || lpad((1 + g % 8)::text, 2, '0'), 'Bin ' || (g / 8), (ARRAY['A', 'B', 'C'])[1 + g % 3]
  FROM generate_series(0, 399) g;
INSERT INTO inventory_ledger (item_id, location_id, lot_id, quantity, txn_type, reference, created_by, created_at)
SELECT 1 + g % 5000, 1 + (g * 7) % 400, CASE WHEN g % 3 = 0 THEN NULL ELSE 1000 + g % 50 END,
       CASE WHEN g % 4 = 0 THEN -(g % 20) ELSE 1 + g % 50 END, (ARRAY['receipt', 'issue', 'adjust', 'transfer'])[1 + g % 4],
       'PO-' || (g / 10), pg_temp.cuid(1 + g % 300),
       timestamptz '2025-01-01' + g * interval '30 seconds'
  FROM generate_series(1, 120000) g;
INSERT INTO count_sheets (count_number, location_id, status, created_by, counted_at)
SELECT 'CS-2025-' || lpad(g::text, 5, '0'), 1 + g % 400, (ARRAY['open', 'counted', 'posted'])[1 + g % 3],
       pg_temp.cuid(1 + g % 300), timestamptz '2025-01-01' + g * interval '1 hour'
  FROM generate_series(1, 2000) g;
INSERT INTO count_lines (count_sheet_id, item_id, location_id, lot_id, expected_qty, counted_qty, counted_by)
SELECT 1 + g % 2000, 1 + (g * 13) % 5000, 1 + g % 400, NULL, g % 100, g % 100 + (g % 7) - 3,
       pg_temp.cuid(1 + g % 300)
  FROM generate_series(1, 60000) g;
INSERT INTO audit_logs (user_id, action, entity, entity_id, details)
SELECT pg_temp.cuid(1 + g % 300), (ARRAY['create', 'update', 'post'])[1 + g % 3],
       'count_sheet', (1 + g % 2000)::text, jsonb_build_object('n', g)
  FROM generate_series(1, 40000) g;
INSERT INTO feature_flags (key, enabled, description)
SELECT k, k LIKE '%count%', 'flag ' || k
  FROM unnest('{cycle_counts,blind_counts,lot_tracking,negative_stock,balance_table,multi_site,count_approvals,barcode_scan}'::text[]) k;
ANALYZE users, items, locations, inventory_ledger, count_sheets, count_lines, audit_logs, feature_flags;

-- What must survive the conversion unchanged: every row of every table, as it is now (its
-- columns of today, in order), hashed; compared again at the end.
CREATE FUNCTION pg_temp.fingerprint(t regclass, cols text[], OUT n bigint, OUT sum bigint) LANGUAGE plpgsql AS $f$
BEGIN
    EXECUTE format('SELECT count(*), sum(hashtext(row(%s)::text)) FROM %s',
                   (SELECT string_agg(quote_ident(c), ', ') FROM unnest(cols) c), t) INTO n, sum;
END $f$;
CREATE TEMP TABLE checksums AS
SELECT t, cols, (pg_temp.fingerprint(t::regclass, cols)).*
  FROM unnest('{users,items,locations,inventory_ledger,count_sheets,count_lines,audit_logs,feature_flags}'::text[]) t
 CROSS JOIN LATERAL (SELECT array_agg(attname::text ORDER BY attnum) FROM pg_attribute
                      WHERE attrelid = t::regclass AND attnum > 0 AND NOT attisdropped) c(cols);

-- Their catalog shape too (columns, constraints with names and definitions, indexes, triggers,
-- policies, RLS flags), for the rollback of part 4.
\ir rollback_check.psql

------------------------------------------------------------------------------------------------
-- Part 2. The conversion: runbook step 3 (migration.sql: organizations, org_id, backfill,
-- NOT NULL, foreign keys, unique keys rewritten) and step 4 (the balance table).
------------------------------------------------------------------------------------------------
-- The organizations table is tenancy's catalog (tenancy.organizations, with memberships).
CREATE EXTENSION tenancy;
-- The application's user ids are Prisma cuids: tenancy's user ids are text in this database
-- (chosen before any member exists; memberships.user_id and the invitations' users become text).
SELECT tenancy.set_user_id_type('text');

-- The "Default Organization" every existing row belongs to, with a fixed id: the application's
-- DEFAULT_ORG_ID (runbook, post-migration task 1).
SELECT tenancy.create_organization('Default Organization', 'default', id => '00000000-0000-0000-0000-0000000000d1',
         settings => '{"source": "single-tenant migration"}');

-- org_id on every table, filled with the default organization. The runbook's migration.sql does
-- ADD COLUMN, one UPDATE per table and SET NOT NULL in a maintenance window; tenancy fills in
-- batches (one COMMIT each) while the application keeps writing, proves NOT NULL with a
-- validated CHECK, and adds the foreign key NOT VALID + VALIDATE. Every Prisma unique index is
-- rewritten to lead with org_id and keeps its name ("items_itemNumber_key" on (org_id,
-- item_number)), so Prisma sees no drift in the names it created (the runbook's own names,
-- "items_orgId_itemNumber_key", would be a rename; tenancy.rollback() restores exactly what it
-- replaced, under the same name).
-- The application keeps writing meanwhile: a concurrent writer (a second connection of the owner)
-- inserts feature flags (a unique key the backfill rewrites) and audit_logs, each marked as the
-- writer's, and updates the ones it wrote before, one COMMIT each, until the backfill is over
-- (writer_stop.psql). The checklist finds every one of them in the default organization, then
-- deletes them (by their marker) before comparing the rows with part 1's.
CREATE SCHEMA seed_writer;
CREATE TABLE seed_writer.control (stop boolean NOT NULL DEFAULT false, written int NOT NULL DEFAULT 0, finished_at timestamptz);
INSERT INTO seed_writer.control DEFAULT VALUES;
CREATE PROCEDURE seed_writer.run() LANGUAGE plpgsql AS $w$
DECLARE
    v_i int := 0;
    v_flag int;
    v_log bigint;
BEGIN
    WHILE NOT (SELECT stop FROM seed_writer.control) LOOP
        v_i := v_i + 1;
        UPDATE public.feature_flags SET enabled = true WHERE id = v_flag;
        UPDATE public.audit_logs SET details = '{"updated": true}' WHERE id = v_log;
        INSERT INTO public.feature_flags (key, description) VALUES ('seed-writer-' || v_i, 'seed-writer') RETURNING id INTO v_flag;
        INSERT INTO public.audit_logs (user_id, action, entity, entity_id)
        VALUES ('cl' || lpad((1 + v_i % 300)::text, 9, '0') || substr(md5('seed003-' || (1 + v_i % 300)), 1, 14), 'seed-writer', 'feature_flag', 'seed-writer-' || v_i)
        RETURNING id INTO v_log;
        UPDATE seed_writer.control SET written = v_i;
        COMMIT;
        PERFORM pg_sleep(0.02);
    END LOOP;
    UPDATE seed_writer.control SET finished_at = clock_timestamp();
END $w$;
\ir writer_start.psql
CALL tenancy.backfill_all(
    '{users,items,locations,inventory_ledger,count_sheets,count_lines,audit_logs,feature_flags}',
    organization_id => '00000000-0000-0000-0000-0000000000d1',
    tenant_column => 'org_id', column_type => 'uuid',
    batch_size => 20000);
SELECT table_name, phase, rows_done FROM tenancy.backfill_progress ORDER BY table_name;

-- The composite indexes, built CONCURRENTLY (no write blocked), then the last step: unique
-- keys and foreign keys rewritten to carry org_id.
SELECT statement FROM tenancy.pending_statements() \gexec
CALL tenancy.backfill_all(
    '{users,items,locations,inventory_ledger,count_sheets,count_lines,audit_logs,feature_flags}',
    organization_id => '00000000-0000-0000-0000-0000000000d1',
    tenant_column => 'org_id', column_type => 'uuid');
SELECT table_name, phase, skipped FROM tenancy.backfill_progress ORDER BY table_name;
-- The backfill is over: the writer stops (its rows are checked in part 3).
\ir writer_stop.psql

-- Beyond the runbook (it keeps org_id on users, nothing else): every user becomes a member of the
-- default organization, by its cuid, so that the database can check who may see what ("Test
-- authentication", "Verify tenant isolation"). The application's roles mapped to tenancy's.
SELECT * FROM tenancy.adopt_users('users',
    '{"admin": "owner", "manager": "manager", "counter": "member", "clerk": "member", "auditor": "viewer"}',
    organization_id => '00000000-0000-0000-0000-0000000000d1');

-- Step 4: the balance table, one row per (org, item, location, lot), kept by a trigger on the
-- ledger. Not tenancy's job (it is the application's schema): plain SQL, created multi-tenant
-- from the start, its foreign keys carrying org_id (the backfill made (org_id, id) unique on
-- items and locations for this). A ledger row without lot has lot_id NULL: NULLS NOT DISTINCT
-- makes those one balance.
CREATE TABLE inventory_balances (
    id bigserial PRIMARY KEY,
    org_id uuid NOT NULL REFERENCES tenancy.organizations (id),
    item_id int NOT NULL, location_id int NOT NULL, lot_id int,
    quantity numeric(14, 3) NOT NULL DEFAULT 0, updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT inventory_balances_org_id_item_id_location_id_lot_id_key UNIQUE NULLS NOT DISTINCT (org_id, item_id, location_id, lot_id),
    CONSTRAINT inventory_balances_item_fkey FOREIGN KEY (org_id, item_id) REFERENCES items (org_id, id),
    CONSTRAINT inventory_balances_location_fkey FOREIGN KEY (org_id, location_id) REFERENCES locations (org_id, id));
CREATE INDEX inventory_balances_org_id_location_id_idx ON inventory_balances (org_id, location_id);
CREATE FUNCTION update_inventory_balance() RETURNS trigger LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    INSERT INTO inventory_balances AS b (org_id, item_id, location_id, lot_id, quantity)
    VALUES (NEW.org_id, NEW.item_id, NEW.location_id, NEW.lot_id, NEW.quantity)
    ON CONFLICT (org_id, item_id, location_id, lot_id) DO UPDATE SET quantity = b.quantity + excluded.quantity, updated_at = now();
    RETURN NULL;
END $$;
-- The runbook applies the trigger, then backfills the balances with a separate script: a ledger
-- row written in between is counted twice. Here both happen in one transaction that holds off
-- ledger writers (SHARE) for the few hundred milliseconds it takes.
BEGIN;
LOCK TABLE inventory_ledger IN SHARE MODE;
CREATE TRIGGER inventory_ledger_balance_trigger AFTER INSERT ON inventory_ledger
    FOR EACH ROW EXECUTE FUNCTION update_inventory_balance();
INSERT INTO inventory_balances (org_id, item_id, location_id, lot_id, quantity)
SELECT org_id, item_id, location_id, lot_id, sum(quantity) FROM inventory_ledger GROUP BY org_id, item_id, location_id, lot_id;
COMMIT;
ANALYZE inventory_balances;

-- Beyond the runbook, which leaves isolation to "tenant middleware" and "scoped Prisma queries":
-- RLS on every table with org_id, so the database itself keeps organizations apart.
SELECT table_name, action FROM tenancy.enable_isolation_all('public', tenant_column => 'org_id', mode => 'membership') ORDER BY 1;

-- The application's database role (created at the top, by the superuser).
GRANT USAGE ON SCHEMA public TO inventory_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO inventory_app;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO inventory_app;

------------------------------------------------------------------------------------------------
-- Part 3. The runbook's verification queries (step 2.3, step 3.4, step 4.4, troubleshooting)
-- and its post-migration "Test Tenant Isolation", each an assertion, run by the database owner.
------------------------------------------------------------------------------------------------
-- Row-level security is forced: without operator mode the owner sees no row of an isolated table,
-- so the answers below come from the explicit operator path, not from a privilege.
DO $$
DECLARE v_n bigint;
BEGIN
    SELECT count(*) INTO v_n FROM items;
    IF v_n <> 0 THEN RAISE EXCEPTION 'checklist: the owner sees % items without operator mode', v_n; END IF;
    SELECT count(*) INTO v_n FROM inventory_ledger;
    IF v_n <> 0 THEN RAISE EXCEPTION 'checklist: the owner sees % ledger rows without operator mode', v_n; END IF;
END $$;

-- The verification queries: a tenancy administrator acting as itself, in operator mode (one
-- transaction, logged with its reason).
BEGIN;
SELECT tenancy.operate('runbook 003 validation');
DO $$
DECLARE
    v_tables text[] := '{users,items,locations,inventory_ledger,count_sheets,count_lines,audit_logs,feature_flags,inventory_balances}';
    -- The five unique keys the runbook rewrites: index before, key columns after.
    v_uniques jsonb := '[{"t": "users",         "old": "users_email_key",              "cols": ["org_id", "email"]},
                         {"t": "items",         "old": "items_itemNumber_key",         "cols": ["org_id", "item_number"]},
                         {"t": "locations",     "old": "locations_site_name_key",      "cols": ["org_id", "site", "name"]},
                         {"t": "count_sheets",  "old": "count_sheets_countNumber_key", "cols": ["org_id", "count_number"]},
                         {"t": "feature_flags", "old": "feature_flags_key_key",        "cols": ["org_id", "key"]}]';
    v_u jsonb;
    v_t text;
    v_n bigint;
    v_m bigint;
    v_bad text;
BEGIN
    -- Every row the concurrent writer wrote during the backfill is there, updated as it was (all
    -- but its last), in the default organization; then they go (by their marker), so that what is
    -- left is part 1's rows exactly.
    SELECT written INTO v_n FROM seed_writer.control;
    IF v_n < 3 THEN RAISE EXCEPTION 'checklist: the concurrent writer wrote only % rows', v_n; END IF;
    IF (SELECT count(*) FROM feature_flags WHERE description = 'seed-writer' AND org_id = '00000000-0000-0000-0000-0000000000d1'
           AND enabled = (key <> 'seed-writer-' || v_n)) <> v_n
       OR (SELECT count(*) FROM feature_flags WHERE description = 'seed-writer') <> v_n THEN
        RAISE EXCEPTION 'checklist: the writer wrote % feature flags, found %', v_n, (SELECT count(*) FROM feature_flags WHERE description = 'seed-writer');
    END IF;
    IF (SELECT count(*) FROM audit_logs WHERE action = 'seed-writer' AND org_id = '00000000-0000-0000-0000-0000000000d1'
           AND details IS NOT DISTINCT FROM CASE WHEN entity_id = 'seed-writer-' || v_n THEN NULL ELSE '{"updated": true}'::jsonb END) <> v_n
       OR (SELECT count(*) FROM audit_logs WHERE action = 'seed-writer') <> v_n THEN
        RAISE EXCEPTION 'checklist: the writer wrote % audit_logs, found %', v_n, (SELECT count(*) FROM audit_logs WHERE action = 'seed-writer');
    END IF;
    RAISE WARNING 'checklist: the % feature flags and % audit_logs of the concurrent writer are there, in the default organization', v_n, v_n;
    DELETE FROM feature_flags WHERE description = 'seed-writer';
    DELETE FROM audit_logs WHERE action = 'seed-writer';

    -- SELECT COUNT(*) FROM organizations; the default organization exists.
    IF NOT EXISTS (SELECT 1 FROM tenancy.organizations WHERE id = '00000000-0000-0000-0000-0000000000d1'
                      AND name = 'Default Organization' AND is_active) THEN
        RAISE EXCEPTION 'checklist: the Default Organization is missing';
    END IF;
    -- org_id added to users (information_schema, as the runbook asks).
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'users' AND column_name = 'org_id') THEN
        RAISE EXCEPTION 'checklist: users has no org_id';
    END IF;
    -- Every org_id column in public is NOT NULL ("All should show 'NO' for is_nullable"), on all nine tables.
    SELECT string_agg(table_name::text, ', ') INTO v_bad FROM information_schema.columns
     WHERE table_schema = 'public' AND column_name = 'org_id' AND is_nullable <> 'NO';
    IF v_bad IS NOT NULL THEN RAISE EXCEPTION 'checklist: org_id is nullable on %', v_bad; END IF;
    SELECT string_agg(t, ', ') INTO v_bad FROM unnest(v_tables) t
     WHERE NOT EXISTS (SELECT 1 FROM information_schema.columns c WHERE c.table_schema = 'public' AND c.table_name = t
                          AND c.column_name = 'org_id' AND c.data_type = 'uuid');
    IF v_bad IS NOT NULL THEN RAISE EXCEPTION 'checklist: no uuid org_id on %', v_bad; END IF;
    -- Every record has org_id (total = with_org_id), on every table, not only the four the runbook
    -- lists; and every org_id names an organization (troubleshooting: orphaned records).
    FOREACH v_t IN ARRAY v_tables LOOP
        EXECUTE format('SELECT count(*), count(org_id) FILTER (WHERE org_id IN (SELECT id FROM tenancy.organizations)) FROM %I', v_t)
           INTO v_n, v_m;
        IF v_n = 0 OR v_n <> v_m THEN
            RAISE EXCEPTION 'checklist: %: % rows, % with a valid org_id', v_t, v_n, v_m;
        END IF;
    END LOOP;
    -- Foreign keys org_id -> organizations, validated, on all nine tables.
    SELECT count(DISTINCT c.conrelid) INTO v_n FROM pg_constraint c
     WHERE c.contype = 'f' AND c.confrelid = 'tenancy.organizations'::regclass AND c.convalidated
       AND c.conrelid::regclass::text = ANY (v_tables);
    IF v_n <> 9 THEN RAISE EXCEPTION 'checklist: % tables with a validated foreign key to organizations, not 9', v_n; END IF;
    -- The unique keys: each rewritten to (org_id, ...), valid, under the old name (no ORM drift);
    -- no unique index left without org_id on these tables (primary keys aside).
    FOR v_u IN SELECT * FROM jsonb_array_elements(v_uniques) LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_index i
                        WHERE i.indrelid = (v_u->>'t')::regclass AND i.indisunique AND i.indisvalid AND i.indpred IS NULL
                          AND i.indnkeyatts = jsonb_array_length(v_u->'cols')
                          AND ARRAY(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(att, n)
                                      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.att ORDER BY k.n)
                              = ARRAY(SELECT jsonb_array_elements_text(v_u->'cols'))) THEN
            RAISE EXCEPTION 'checklist: no unique index on %(%)', v_u->>'t', v_u->'cols';
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                        WHERE c.relname = v_u->>'old' AND c.relnamespace = 'public'::regnamespace
                          AND i.indrelid = (v_u->>'t')::regclass AND a.attname = 'org_id') THEN
            RAISE EXCEPTION 'checklist: the unique index % does not keep its name leading with org_id', v_u->>'old';
        END IF;
    END LOOP;
    SELECT string_agg(i.indexrelid::regclass::text, ', ') INTO v_bad FROM pg_index i
     WHERE i.indrelid::regclass::text = ANY (v_tables) AND i.indisunique AND NOT i.indisprimary
       AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = i.indrelid AND a.attname = 'org_id' AND a.attnum = ANY (i.indkey::int2[]));
    IF v_bad IS NOT NULL THEN RAISE EXCEPTION 'checklist: unique indexes without org_id: %', v_bad; END IF;
    -- Step 4.4: the balance trigger exists and is enabled; one balance per ledger combination.
    -- (The runbook's comparison query counts ledger rows as "balance_records" - its CROSS JOIN
    -- never reads the balance count it computes; this is the comparison it means, and the
    -- quantities must agree too.)
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'inventory_ledger'::regclass
                      AND tgname = 'inventory_ledger_balance_trigger' AND tgenabled = 'O') THEN
        RAISE EXCEPTION 'checklist: inventory_ledger_balance_trigger is missing or disabled';
    END IF;
    SELECT count(DISTINCT (org_id, item_id, location_id, lot_id)) INTO v_n FROM inventory_ledger;
    SELECT count(*) INTO v_m FROM inventory_balances;
    IF v_n <> v_m OR v_n = 0 THEN RAISE EXCEPTION 'checklist: % ledger combinations, % balance records', v_n, v_m; END IF;
    SELECT count(*) INTO v_n FROM (
        SELECT org_id, item_id, location_id, lot_id, sum(quantity) FROM inventory_ledger GROUP BY 1, 2, 3, 4
        EXCEPT SELECT org_id, item_id, location_id, lot_id, quantity FROM inventory_balances) d;
    IF v_n > 0 THEN RAISE EXCEPTION 'checklist: % balances disagree with the ledger', v_n; END IF;
    -- Every user a member of the default organization, by its cuid as it is.
    SELECT count(*) INTO v_n FROM users u
     WHERE NOT tenancy.validate_client_access(u.id, '00000000-0000-0000-0000-0000000000d1');
    IF v_n > 0 THEN RAISE EXCEPTION 'checklist: % users cannot access the default organization', v_n; END IF;
    SELECT count(*) INTO v_n FROM users u JOIN tenancy.memberships m ON m.user_id = u.id;
    IF v_n <> 300 THEN RAISE EXCEPTION 'checklist: % memberships name a user by its cuid, not 300', v_n; END IF;
    IF tenancy.user_id_type() <> 'text' OR has_table_privilege('inventory_app', 'tenancy.organizations', 'UPDATE') THEN
        RAISE EXCEPTION 'checklist: user ids are not text, or the application role is a tenancy administrator';
    END IF;
    IF EXISTS (SELECT 1 FROM tenancy.tenant_tables WHERE mode IS DISTINCT FROM 'membership') THEN
        RAISE EXCEPTION 'checklist: a table is not isolated in membership mode';
    END IF;
    -- Every row kept, unchanged apart from the new column.
    SELECT string_agg(c.t, ', ') INTO v_bad FROM checksums c
     WHERE NOT EXISTS (SELECT 1 FROM pg_temp.fingerprint(c.t::regclass, c.cols) f WHERE f.n = c.n AND f.sum = c.sum);
    IF v_bad IS NOT NULL THEN RAISE EXCEPTION 'checklist: rows lost or changed in %', v_bad; END IF;
    -- No NULL org_id, no orphan, no cross-organization reference, RLS on: the integrity report.
    SELECT string_agg(table_name, ', ') INTO v_bad FROM tenancy.validate_client_data_integrity() WHERE NOT ok OR NOT saw_every_row;
    IF v_bad IS NOT NULL THEN RAISE EXCEPTION 'checklist: integrity fails on %', v_bad; END IF;
    SELECT count(*) INTO v_n FROM tenancy.validate_client_data_integrity();
    IF v_n <> 9 THEN RAISE EXCEPTION 'checklist: % tenant tables registered, not 9', v_n; END IF;
    -- Composite indexes leading with org_id, all valid.
    SELECT count(*) INTO v_n FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
     WHERE i.indrelid::regclass::text = ANY (v_tables) AND a.attname = 'org_id' AND i.indisvalid AND i.indnatts > 1;
    IF v_n < 9 THEN RAISE EXCEPTION 'checklist: % composite indexes, fewer than 9', v_n; END IF;
    RAISE WARNING 'checklist: % composite indexes lead with org_id', v_n;
    IF EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid::regclass::text = ANY (v_tables) AND NOT i.indisvalid) THEN
        RAISE EXCEPTION 'checklist: an invalid index is left';
    END IF;
    -- Every tenant table lints clean.
    SELECT string_agg(code || ' ' || object, '; ') INTO v_bad FROM tenancy.lint() WHERE split_part(object, ' ', 1) = ANY (
        SELECT 'public.' || t FROM unnest(v_tables) t);
    IF v_bad IS NOT NULL THEN RAISE EXCEPTION 'checklist: lint findings: %', v_bad; END IF;
END $$;
COMMIT;
DROP SCHEMA seed_writer CASCADE;

-- Post-migration task 3, "Test Tenant Isolation: create test organizations, verify no
-- cross-org data access": a second organization, whose owner is not a user of the default one.
SELECT tenancy.create_organization('Acme Test Org', 'acme-test', id => '00000000-0000-0000-0000-0000000000a2');
SELECT tenancy.add_member('00000000-0000-0000-0000-0000000000a2', pg_temp.cuid(9001), 'owner');

-- As the default organization's admin (user 1, adopted as owner), through RLS: it sees all of
-- its organization's rows, and writes new values for every unique key the runbook rewrites.
DO $$
DECLARE
    v_item int;
    v_loc int;
    v_n bigint;
    v_user text := pg_temp.cuid(1);
BEGIN
    SET LOCAL ROLE inventory_app;
    -- The acting user, from the application's session: its cuid, as Prisma stores it.
    PERFORM set_config('tenancy.user_id', v_user, true);
    IF tenancy.current_user_id_text() IS DISTINCT FROM v_user THEN
        RAISE EXCEPTION 'checklist: the context does not name user 1 by its cuid';
    END IF;
    -- Without choosing an organization, membership mode already shows the user's organizations.
    SELECT count(*) INTO v_n FROM items;
    IF v_n <> 5000 THEN RAISE EXCEPTION 'checklist: user 1 sees % items in membership mode, not 5000', v_n; END IF;
    PERFORM tenancy.set_organization('00000000-0000-0000-0000-0000000000d1');
    SELECT count(*) INTO v_n FROM items;
    IF v_n <> 5000 THEN RAISE EXCEPTION 'checklist: the default organization''s admin sees % items, not 5000', v_n; END IF;
    INSERT INTO users (email, name, role) VALUES ('shared@example.com', 'Shared', 'clerk');
    INSERT INTO items (item_number, description) VALUES ('ITM-SHARED', 'Shared number') RETURNING id INTO v_item;
    INSERT INTO locations (site, name) VALUES ('SITE-01', 'Dock 1') RETURNING id INTO v_loc;
    INSERT INTO count_sheets (count_number, location_id) VALUES ('CS-SHARED', v_loc);
    INSERT INTO feature_flags (key, enabled) VALUES ('shared_flag', true);
    INSERT INTO inventory_ledger (item_id, location_id, quantity, txn_type) VALUES (v_item, v_loc, 5, 'receipt');
    IF (SELECT quantity FROM inventory_balances WHERE item_id = v_item AND location_id = v_loc AND lot_id IS NULL) IS DISTINCT FROM 5 THEN
        RAISE EXCEPTION 'checklist: the balance trigger did not record the default organization''s receipt';
    END IF;
    RESET ROLE;
END $$;

-- As the test organization's owner: the same values for every rewritten unique key (and the
-- email of an existing user of the default organization) are accepted; within the organization
-- they stay unique; the default organization's rows are neither visible nor writable.
DO $$
DECLARE
    v_item int;
    v_loc int;
    v_n bigint;
    v_ok boolean;
    v_user text := pg_temp.cuid(9001);
BEGIN
    SET LOCAL ROLE inventory_app;
    PERFORM set_config('tenancy.user_id', v_user, true);
    PERFORM tenancy.set_organization('00000000-0000-0000-0000-0000000000a2');
    -- No cross-org reads: nothing of the default organization in any table.
    FOR v_n IN SELECT n FROM (
            SELECT count(*) AS n FROM users UNION ALL SELECT count(*) FROM items UNION ALL SELECT count(*) FROM locations
            UNION ALL SELECT count(*) FROM inventory_ledger UNION ALL SELECT count(*) FROM count_sheets
            UNION ALL SELECT count(*) FROM count_lines UNION ALL SELECT count(*) FROM audit_logs
            UNION ALL SELECT count(*) FROM feature_flags UNION ALL SELECT count(*) FROM inventory_balances) c LOOP
        IF v_n <> 0 THEN RAISE EXCEPTION 'checklist: the test organization sees % rows of the default organization', v_n; END IF;
    END LOOP;
    -- The same unique values as the default organization: accepted (org_id from the context).
    INSERT INTO users (id, email, name, role) VALUES (v_user, 'shared@example.com', 'Acme owner', 'admin');
    INSERT INTO users (email, name, role) VALUES ('user1@northwind-supply.com', 'Same email as the default org''s user 1', 'clerk');
    INSERT INTO items (item_number, description) VALUES ('ITM-000001', 'Same number as the default organization''s');
    INSERT INTO items (item_number, description) VALUES ('ITM-SHARED', 'Same number') RETURNING id INTO v_item;
    INSERT INTO locations (site, name) VALUES ('SITE-01', 'Dock 1') RETURNING id INTO v_loc;
    INSERT INTO count_sheets (count_number, location_id) VALUES ('CS-SHARED', v_loc), ('CS-2025-00001', v_loc);
    INSERT INTO feature_flags (key, enabled) VALUES ('shared_flag', false), ('cycle_counts', false);
    INSERT INTO inventory_ledger (item_id, location_id, quantity, txn_type, created_by)
    VALUES (v_item, v_loc, 7, 'receipt', v_user);
    SELECT count(*) INTO v_n FROM inventory_balances;
    IF v_n <> 1 THEN RAISE EXCEPTION 'checklist: the test organization has % balances, not 1', v_n; END IF;
    -- Within the organization the keys are still unique.
    v_ok := false;
    BEGIN
        INSERT INTO items (item_number, description) VALUES ('ITM-SHARED', 'Twice in one organization');
    EXCEPTION WHEN unique_violation THEN v_ok := true;
    END;
    IF NOT v_ok THEN RAISE EXCEPTION 'checklist: a duplicate item_number within one organization was accepted'; END IF;
    v_ok := false;
    BEGIN
        INSERT INTO users (email, name, role) VALUES ('shared@example.com', 'Twice', 'clerk');
    EXCEPTION WHEN unique_violation THEN v_ok := true;
    END;
    IF NOT v_ok THEN RAISE EXCEPTION 'checklist: a duplicate email within one organization was accepted'; END IF;
    -- No cross-org writes: a row for the default organization is refused, its rows untouched.
    v_ok := false;
    BEGIN
        INSERT INTO items (org_id, item_number, description) VALUES ('00000000-0000-0000-0000-0000000000d1', 'ITM-SNEAK', 'x');
    EXCEPTION WHEN insufficient_privilege THEN v_ok := true;
    END;
    IF NOT v_ok THEN RAISE EXCEPTION 'checklist: the test organization wrote a row of the default organization'; END IF;
    UPDATE items SET description = 'hijacked' WHERE item_number = 'ITM-000002';
    GET DIAGNOSTICS v_n = ROW_COUNT;
    IF v_n <> 0 THEN RAISE EXCEPTION 'checklist: the test organization updated % rows of the default organization', v_n; END IF;
    -- A child row cannot point at another organization's parent (the rewritten foreign keys).
    v_ok := false;
    BEGIN
        INSERT INTO inventory_ledger (item_id, location_id, quantity, txn_type) VALUES (1, v_loc, 1, 'receipt');
    EXCEPTION WHEN foreign_key_violation THEN v_ok := true;
    END;
    IF NOT v_ok THEN RAISE EXCEPTION 'checklist: a ledger row of the test organization points at the default organization''s item 1'; END IF;
    RESET ROLE;
END $$;

-- Text user ids are compared exactly: another spelling of user 1's cuid (upper case, a space
-- around it) is somebody else, who belongs to no organization; a cuid with spaces around it is
-- no user id at all (22P02).
DO $$
DECLARE
    v_user text := pg_temp.cuid(1);
    v_n bigint;
    v_ok boolean;
BEGIN
    SET LOCAL ROLE inventory_app;
    PERFORM set_config('tenancy.user_id', upper(v_user), true);
    SELECT count(*) INTO v_n FROM items;
    IF v_n <> 0 THEN RAISE EXCEPTION 'checklist: the upper-case spelling of user 1''s cuid sees % items', v_n; END IF;
    PERFORM set_config('tenancy.user_id', v_user || ' ', true);
    v_ok := false;
    BEGIN
        SELECT count(*) INTO v_n FROM items;
    EXCEPTION WHEN invalid_text_representation THEN v_ok := true;
    END;
    IF NOT v_ok THEN RAISE EXCEPTION 'checklist: user 1''s cuid with a trailing space was accepted (% items)', v_n; END IF;
    RESET ROLE;
END $$;

-- Back as the DBA (the owner, in operator mode): both organizations hold the same values; the
-- default organization's rows are as they were; the report is still clean.
BEGIN;
SELECT tenancy.operate('runbook 003 validation, two organizations');
DO $$
DECLARE
    v_n bigint;
    v_bad text;
BEGIN
    SELECT count(*) INTO v_n FROM (
        SELECT org_id FROM items WHERE item_number = 'ITM-SHARED'
        UNION ALL SELECT org_id FROM users WHERE email = 'shared@example.com'
        UNION ALL SELECT org_id FROM locations WHERE site = 'SITE-01' AND name = 'Dock 1'
        UNION ALL SELECT org_id FROM count_sheets WHERE count_number = 'CS-SHARED'
        UNION ALL SELECT org_id FROM feature_flags WHERE key = 'shared_flag') s
     WHERE org_id IN ('00000000-0000-0000-0000-0000000000d1', '00000000-0000-0000-0000-0000000000a2');
    IF v_n <> 10 THEN RAISE EXCEPTION 'checklist: % rows share the five unique values, not 10 (5 per organization)', v_n; END IF;
    IF (SELECT count(DISTINCT org_id) FROM items WHERE item_number IN ('ITM-000001', 'ITM-SHARED')) <> 2
       OR (SELECT count(DISTINCT org_id) FROM users WHERE email = 'user1@northwind-supply.com') <> 2
       OR (SELECT count(DISTINCT org_id) FROM count_sheets WHERE count_number = 'CS-2025-00001') <> 2
       OR (SELECT count(DISTINCT org_id) FROM feature_flags WHERE key = 'cycle_counts') <> 2 THEN
        RAISE EXCEPTION 'checklist: an existing value was not reused by the test organization';
    END IF;
    IF EXISTS (SELECT 1 FROM items WHERE item_number IN ('ITM-SNEAK') OR description = 'hijacked') THEN
        RAISE EXCEPTION 'checklist: a cross-organization write got through';
    END IF;
    SELECT string_agg(table_name, ', ') INTO v_bad FROM tenancy.validate_client_data_integrity() WHERE NOT ok OR NOT saw_every_row;
    IF v_bad IS NOT NULL THEN RAISE EXCEPTION 'checklist: integrity fails on % after the isolation test', v_bad; END IF;
    RAISE WARNING 'checklist: every item passed';
END $$;
COMMIT;

------------------------------------------------------------------------------------------------
-- Part 4. The runbook's rollback procedure, on the converted, isolated database, as the owner.
-- "Rollback Balance Table" (trigger, function, table) first: the balance table's foreign keys
-- need the (org_id, id) keys the organization rollback removes. Then what part 3's isolation
-- test added (the test organization's rows and the default organization's "shared" rows),
-- deleted in operator mode, so that the comparison is with the database part 1 built. Then
-- "Rollback Organization Migration" in one call (tenancy.rollback_all: isolation removed, foreign
-- keys and the five unique indexes back under their names, org_id dropped, children before
-- parents) and the organizations table with the extension.
------------------------------------------------------------------------------------------------
BEGIN;
-- Rollback Balance Table: 1. the trigger, 2. the function, 3. the table (Prisma's migration).
DROP TRIGGER inventory_ledger_balance_trigger ON inventory_ledger;
DROP FUNCTION update_inventory_balance();
DROP TABLE inventory_balances;
SELECT tenancy.operate('runbook 003 rollback: remove the isolation test''s rows');
DELETE FROM inventory_ledger WHERE org_id = '00000000-0000-0000-0000-0000000000a2'
    OR item_id IN (SELECT id FROM items WHERE item_number = 'ITM-SHARED');
DELETE FROM count_sheets WHERE org_id = '00000000-0000-0000-0000-0000000000a2' OR count_number = 'CS-SHARED';
DELETE FROM items WHERE org_id = '00000000-0000-0000-0000-0000000000a2' OR item_number = 'ITM-SHARED';
DELETE FROM locations WHERE org_id = '00000000-0000-0000-0000-0000000000a2' OR (site, name) = ('SITE-01', 'Dock 1');
DELETE FROM feature_flags WHERE org_id = '00000000-0000-0000-0000-0000000000a2' OR key = 'shared_flag';
DELETE FROM users WHERE org_id = '00000000-0000-0000-0000-0000000000a2' OR email = 'shared@example.com';
COMMIT;

BEGIN;
-- Rollback Organization Migration: steps 1-4 (foreign keys, unique indexes back as they were,
-- org_id dropped), and tenancy's policies and triggers.
SELECT table_name, action, detail FROM tenancy.rollback_all('public', drop_column => true) ORDER BY 1;
-- Step 5, the organizations table: tenancy's catalog goes with the extension.
DROP EXTENSION tenancy;
-- The empty schema belongs to the bootstrap superuser (docs/security.md): only a superuser can
-- drop it, so this one statement runs as one.
RESET SESSION AUTHORIZATION;
DROP SCHEMA tenancy;      -- empty now (RESTRICT)
SET SESSION AUTHORIZATION inventory_owner;
COMMIT;
SELECT pg_temp.assert_original('runbook rollback procedure');
DO $$ BEGIN RAISE WARNING 'rollback: every level passed'; END $$;
