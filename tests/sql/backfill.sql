-- tenancy.backfill as a DBA uses it in psql: every bad input refused with its SQLSTATE and
-- nothing changed; a fixed organization, a parent table, a user column, a slug column, a table
-- without a primary key and a partitioned table; rows a derivation leaves without an organization
-- reported, fixed and resumed; backfill_all in foreign-key order; pending_statements; adopt_users
-- with seed 000's role mapping; rollback to the exact pre-backfill shape.
\set SHOW_CONTEXT never
\pset format unaligned
CREATE EXTENSION tenancy;
\ir helpers/try.psql
-- Columns, constraints, indexes, triggers, policies and RLS flags of a table: to compare shapes.
CREATE FUNCTION pg_temp.shape(t regclass) RETURNS SETOF text LANGUAGE sql AS $$
    SELECT * FROM (
        SELECT format('column %s %s%s default %s', a.attname, format_type(a.atttypid, a.atttypmod),
                      CASE WHEN a.attnotnull THEN ' not null' ELSE '' END, pg_get_expr(d.adbin, d.adrelid))
          FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE a.attrelid = t AND a.attnum > 0 AND NOT a.attisdropped
        UNION ALL SELECT format('constraint %s %s valid=%s', conname, pg_get_constraintdef(oid), convalidated)
          FROM pg_constraint WHERE conrelid = t
        UNION ALL SELECT format('index %s', pg_get_indexdef(indexrelid)) FROM pg_index WHERE indrelid = t
        UNION ALL SELECT format('trigger %s', tgname) FROM pg_trigger WHERE tgrelid = t AND NOT tgisinternal
        UNION ALL SELECT format('policy %s', polname) FROM pg_policy WHERE polrelid = t
        UNION ALL SELECT format('rls=%s force=%s', relrowsecurity, relforcerowsecurity) FROM pg_class WHERE oid = t) s
    ORDER BY 1
$$;
SELECT tenancy.create_organization('VIBOTAJ GmbH', 'vibotaj', '00000000-0000-0000-0000-000000000001');
SELECT tenancy.create_organization('Acme', 'acme', '00000000-0000-0000-0000-000000000002');

-- The single-tenant schema: seed 000 in small.
CREATE TABLE shipments (id serial PRIMARY KEY, reference text NOT NULL UNIQUE, status text);
CREATE TABLE documents (id serial PRIMARY KEY, shipment_id int REFERENCES shipments ON DELETE SET NULL, name text);
CREATE TABLE container_events (shipment_id int NOT NULL REFERENCES shipments ON DELETE CASCADE, at timestamptz, what text);
CREATE TABLE notes (id serial PRIMARY KEY, author uuid, body text);
INSERT INTO shipments (reference, status) SELECT 'S-' || g, 'new' FROM generate_series(1, 500) g;
INSERT INTO documents (shipment_id, name) SELECT 1 + g % 500, 'doc ' || g FROM generate_series(1, 2000) g;
INSERT INTO documents (shipment_id, name) VALUES (NULL, 'a document of no shipment');
INSERT INTO container_events SELECT 1 + g % 500, timestamptz '2026-01-01' + g * interval '1 hour', 'gate in' FROM generate_series(1, 3000) g;
CREATE TEMP TABLE before AS
    SELECT t::text AS tbl, s FROM unnest('{shipments,documents,container_events}'::regclass[]) t, pg_temp.shape(t) s;

-- 1. Bad input: each refused with its SQLSTATE, and nothing is recorded or changed.
CREATE VIEW shipment_list AS SELECT * FROM shipments;
CREATE TABLE readings (id int, at date) PARTITION BY RANGE (at);
CREATE TABLE readings_2026 PARTITION OF readings FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE legacy (id int, organization_id integer);
SELECT pg_temp.try($$CALL tenancy.backfill('shipment_list', '00000000-0000-0000-0000-000000000001')$$) AS a_view;
SELECT pg_temp.try($$CALL tenancy.backfill('readings_2026', '00000000-0000-0000-0000-000000000001')$$) AS a_partition;
SELECT pg_temp.try($$CALL tenancy.backfill('legacy', '00000000-0000-0000-0000-000000000001')$$) AS wrong_column_type;
SELECT pg_temp.try($$CALL tenancy.backfill('shipments', '00000000-0000-0000-0000-0000000000ff')$$) AS no_such_organization;
SELECT pg_temp.try($$CALL tenancy.backfill('shipments')$$) AS no_source;
SELECT pg_temp.try($$CALL tenancy.backfill('notes', parent => 'shipments')$$) AS no_foreign_key;
SELECT pg_temp.try($$CALL tenancy.backfill('documents', parent => 'shipments')$$) AS parent_not_converted;
SELECT pg_temp.try($$CALL tenancy.backfill('shipments', '00000000-0000-0000-0000-000000000001', batch_size => 0)$$) AS bad_batch_size;
SELECT pg_temp.try($$CALL tenancy.backfill('shipments', '00000000-0000-0000-0000-000000000001', column_type => 'int')$$) AS bad_column_type;
SELECT pg_temp.try($$CALL tenancy.backfill('notes', user_column => 'id')$$) AS user_column_not_uuid;
SELECT pg_temp.try($$CALL tenancy.backfill_all('{shipments}', derive => '{"notes": {"parent": "shipments"}}')$$) AS derive_names_another_table;
DO $$ BEGIN CREATE ROLE backfill_stranger; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
GRANT USAGE ON SCHEMA public TO backfill_stranger;
SET ROLE backfill_stranger;
SELECT pg_temp.try($$CALL tenancy.backfill('shipments', '00000000-0000-0000-0000-000000000001')$$) AS not_the_owner;
RESET ROLE;
SELECT count(*) AS recorded FROM tenancy.tenant_tables;
SELECT count(*) AS changed FROM (SELECT t::text, s FROM unnest('{shipments,documents,container_events}'::regclass[]) t, pg_temp.shape(t) s
                                 EXCEPT SELECT * FROM before) x;

-- 2. Several tables in foreign-key order: shipments get the default organization, documents
-- and container events the organization of their shipment. Indexes are built here
-- (build_indexes) in this test; section 6 shows pending_statements. A CALL that COMMITs cannot
-- run inside pg_temp.try: errors show as psql prints them.
SELECT tenancy._fk_order('{container_events,documents,shipments}') AS fk_order;
CALL tenancy.backfill_all('{container_events,documents,shipments}',
        organization_id => NULL, derive => '{"documents": {"parent": "shipments"}, "container_events": {"parent": "shipments"}}',
        build_indexes => true);
-- shipments had no source: the error names it; nothing after it started.
SELECT table_name, phase FROM tenancy.backfill_progress ORDER BY 1;
-- A derived table falls back on organization_id (tests/sql/rollback.sql); without one, a row whose parent
-- gives no organization is reported. shipments first, then the others with no fallback.
CALL tenancy.backfill('shipments', '00000000-0000-0000-0000-000000000001', build_indexes => true);
CALL tenancy.backfill_all('{container_events,documents,shipments}',
        derive => '{"documents": {"parent": "shipments"}, "container_events": {"parent": "shipments"}}',
        build_indexes => true);
-- The document without a shipment got no organization: reported, and no NOT NULL over it.
SELECT table_name, phase, rows_done, fill_percent FROM tenancy.backfill_progress ORDER BY 1;

-- The integrity report sees a document moved to another organization than its shipment's.
UPDATE documents SET organization_id = '00000000-0000-0000-0000-000000000002' WHERE id = 1;
SELECT table_name, total_rows, null_rows, orphan_rows, cross_tenant_rows, not_null, fk_validated, tenant_index, ok
  FROM tenancy.validate_client_data_integrity() ORDER BY 1;
UPDATE documents SET organization_id = '00000000-0000-0000-0000-000000000001' WHERE id = 1;

-- 3. Fix the reported row and CALL again: it resumes where it stopped.
-- (Batch size, pause, lock timeout, retries and build_indexes are options of each CALL.)
UPDATE documents SET organization_id = '00000000-0000-0000-0000-000000000002' WHERE organization_id IS NULL;
CALL tenancy.backfill('documents', build_indexes => true);
SELECT table_name, phase, rows_done, fill_percent, lock_retries, running FROM tenancy.backfill_progress ORDER BY 1;
SELECT * FROM pg_temp.shape('shipments');
SELECT * FROM pg_temp.shape('documents');
SELECT * FROM pg_temp.shape('container_events');
SELECT (SELECT count(*) FROM documents d JOIN shipments s ON s.id = d.shipment_id WHERE d.organization_id <> s.organization_id) AS cross_tenant_documents,
       (SELECT count(*) FROM container_events WHERE organization_id IS NULL) AS events_without_organization;
-- A document can no longer point at another organization's shipment.
SELECT pg_temp.try($$INSERT INTO documents (shipment_id, name, organization_id) VALUES (1, 'x', '00000000-0000-0000-0000-000000000002')$$) AS cross_tenant_insert;
-- The application, still single-tenant, keeps inserting: the trigger and the default fill the column.
INSERT INTO shipments (reference) VALUES ('S-new');
INSERT INTO documents (shipment_id, name) VALUES ((SELECT id FROM shipments WHERE reference = 'S-new'), 'new doc');
SELECT s.organization_id AS new_shipment_org, d.organization_id AS new_document_org
  FROM shipments s JOIN documents d ON d.shipment_id = s.id WHERE s.reference = 'S-new';
-- A second CALL on a converted table changes nothing.
CALL tenancy.backfill('shipments');
SELECT pg_temp.try($$CALL tenancy.backfill('shipments', '00000000-0000-0000-0000-000000000002')$$) AS other_source;
SELECT details->'phase' AS logged_phase, details->'next' AS next FROM tenancy.migration_log
 WHERE operation = 'backfill' AND table_name = 'public.shipments' AND status = 'succeeded' ORDER BY id;

-- 4. Isolated, the converted schema lints clean.
DROP TABLE legacy;
SELECT action FROM tenancy.enable_isolation_all('public') WHERE table_name IN ('public.shipments', 'public.documents', 'public.container_events');
SELECT code, object FROM tenancy.lint() WHERE object ~ '^public\.(shipments|documents|container_events)' ORDER BY 1, 2;
SELECT * FROM tenancy.validate_client_data_integrity() ORDER BY 1;
-- Isolation retires the fill triggers: a write without a tenant now fails (here as the
-- superuser, whom RLS does not stop) instead of joining the migration's organization.
SELECT count(*) AS fill_triggers_left FROM pg_trigger WHERE tgname LIKE 'tenancy\_fill%';
SELECT pg_temp.try($$INSERT INTO shipments (reference) VALUES ('S-no-tenant')$$) AS insert_without_tenant;

-- 5. Rollback: the three tables return to their exact pre-backfill shape.
SELECT tenancy.rollback('container_events', drop_column => true) IS NOT NULL AS rolled_back;
SELECT tenancy.rollback('documents', drop_column => true) IS NOT NULL AS rolled_back;
SELECT tenancy.rollback('shipments', drop_column => true) IS NOT NULL AS rolled_back;
(SELECT t::text, s FROM unnest('{shipments,documents,container_events}'::regclass[]) t, pg_temp.shape(t) s EXCEPT SELECT * FROM before)
UNION ALL
(SELECT * FROM before EXCEPT SELECT t::text, s FROM unnest('{shipments,documents,container_events}'::regclass[]) t, pg_temp.shape(t) s);
SELECT count(*) AS still_recorded FROM tenancy.tenant_tables;
SELECT count(*) AS rows_kept FROM documents;
SELECT pg_temp.try($$SELECT tenancy.rollback('shipments')$$) AS nothing_to_roll_back;

-- 6. Without build_indexes the CALL stops at the indexes; pending_statements() has the
-- CREATE INDEX CONCURRENTLY statements (psql: \gexec), and the next CALL finishes.
CALL tenancy.backfill('shipments', '00000000-0000-0000-0000-000000000001');
SELECT phase FROM tenancy.backfill_progress;
-- A table dropped while it waited for its indexes: nothing of it is listed (\gexec would fail).
CREATE TABLE scratch (id int PRIMARY KEY, note text);
INSERT INTO scratch SELECT g, 'x' FROM generate_series(1, 10) g;
CALL tenancy.backfill('scratch', '00000000-0000-0000-0000-000000000001');
DROP TABLE scratch;
SELECT statement FROM tenancy.pending_statements();
SELECT statement FROM tenancy.pending_statements() \gexec
CALL tenancy.backfill('shipments');
SELECT phase FROM tenancy.backfill_progress;
-- Rollback keeping the column: only the assignment stays.
SELECT tenancy.rollback('shipments');
SELECT * FROM pg_temp.shape('shipments');
SELECT count(*) FILTER (WHERE organization_id IS NOT NULL) AS assigned FROM shipments;
ALTER TABLE shipments DROP COLUMN organization_id;

-- 7. A slug (text) column, a table without a primary key, a user column, a partitioned table.
CREATE TABLE clients (name text, email text UNIQUE);
INSERT INTO clients SELECT 'c' || g, 'c' || g || '@example.com' FROM generate_series(1, 300) g;
CALL tenancy.backfill('clients', '00000000-0000-0000-0000-000000000002', tenant_column => 'org_slug', column_type => 'text',
                      batch_size => 50, build_indexes => true);
SELECT * FROM pg_temp.shape('clients');
SELECT org_slug, count(*) FROM clients GROUP BY 1;
SELECT tenancy.create_organization('Solo', 'solo', '00000000-0000-0000-0000-000000000003', '{}', 'aaaaaaaa-0000-0000-0000-000000000001');
INSERT INTO notes (author, body) VALUES ('aaaaaaaa-0000-0000-0000-000000000001', 'mine'), (NULL, 'anonymous'),
                                        ('bbbbbbbb-0000-0000-0000-000000000002', 'a stranger');
CALL tenancy.backfill('notes', '00000000-0000-0000-0000-000000000001', user_column => 'author', build_indexes => true);
SELECT author, organization_id FROM notes ORDER BY body;
INSERT INTO readings SELECT g, date '2026-01-01' + g FROM generate_series(0, 300) g;
CALL tenancy.backfill('readings', '00000000-0000-0000-0000-000000000001');
SELECT statement FROM tenancy.pending_statements();
SELECT statement FROM tenancy.pending_statements() \gexec
CALL tenancy.backfill('readings');
SELECT * FROM pg_temp.shape('readings');
SELECT * FROM pg_temp.shape('readings_2026');
SELECT table_name, phase, skipped FROM tenancy.backfill_progress WHERE table_name IN ('clients', 'notes', 'readings') ORDER BY 1;
SELECT tenancy.rollback('readings', drop_column => true) IS NOT NULL AS rolled_back;
SELECT * FROM pg_temp.shape('readings_2026');

-- 8. Adopting the users of the application (seed 000's role mapping).
CREATE TABLE users (id uuid PRIMARY KEY, email text, role text);
INSERT INTO users VALUES ('11111111-0000-0000-0000-000000000001', 'admin@vibotaj.com', 'admin'),
                         ('11111111-0000-0000-0000-000000000002', 'c@vibotaj.com', 'compliance'),
                         ('11111111-0000-0000-0000-000000000003', 'l@vibotaj.com', 'logistics_agent'),
                         ('11111111-0000-0000-0000-000000000004', 'b@vibotaj.com', 'buyer'),
                         ('11111111-0000-0000-0000-000000000005', 's@vibotaj.com', 'supplier'),
                         ('11111111-0000-0000-0000-000000000006', 'v@vibotaj.com', 'viewer'),
                         ('11111111-0000-0000-0000-000000000007', 'x@vibotaj.com', 'intern');
SELECT pg_temp.try($$SELECT * FROM tenancy.adopt_users('users', '{"admin":"owner","compliance":"admin","logistics_agent":"manager","buyer":"member","supplier":"member","viewer":"viewer"}', '00000000-0000-0000-0000-000000000001')$$) AS unmapped_role;
SELECT pg_temp.try($$SELECT * FROM tenancy.adopt_users('users', '{"admin":"emperor"}', '00000000-0000-0000-0000-000000000001')$$) AS unknown_tenancy_role;
SELECT pg_temp.try($$SELECT * FROM tenancy.adopt_users('users', '{}', '00000000-0000-0000-0000-000000000001', id_column => 'email')$$) AS id_not_uuid;
SELECT count(*) AS memberships_after_refusals FROM tenancy.memberships WHERE organization_id = '00000000-0000-0000-0000-000000000001';
SELECT * FROM tenancy.adopt_users('users', '{"admin":"owner","compliance":"admin","logistics_agent":"manager","buyer":"member","supplier":"member","viewer":"viewer"}',
                                  '00000000-0000-0000-0000-000000000001', default_role => 'viewer');
SELECT * FROM tenancy.adopt_users('users', '{"admin":"owner","compliance":"admin","logistics_agent":"manager","buyer":"member","supplier":"member","viewer":"viewer"}',
                                  '00000000-0000-0000-0000-000000000001', default_role => 'viewer');
SELECT u.role AS app_role, m.role, m.is_default FROM users u JOIN tenancy.memberships m ON m.user_id = u.id ORDER BY u.id;
SELECT tenancy.get_user_organization_id('11111111-0000-0000-0000-000000000004') AS buyer_org;

-- 9. The metadata-only path (issue 17): one organization for every row of a new column is the
-- column's default with NOT NULL in one ALTER (no row written, no scan for NULLs), then
-- the foreign key; nothing is filled in batches and no CHECK is needed. The batched fill stays
-- for every other case: a derived organization (a fallback organization_id or not), a column that
-- exists (a user column, or one an earlier conversion added).
CREATE TEMP TABLE mark AS SELECT pg_current_xact_id()::text::bigint AS xid;
CREATE FUNCTION pg_temp.rows_written(t regclass) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE n bigint;
BEGIN
    EXECUTE format('SELECT count(*) FROM %s WHERE xmin::text::bigint > (SELECT xid FROM mark)', t) INTO n;
    RETURN n;
END $$;
CREATE TABLE fast_has_column (id int PRIMARY KEY, organization_id uuid);
INSERT INTO fast_has_column SELECT g FROM generate_series(1, 50) g;
CALL tenancy.backfill('shipments', '00000000-0000-0000-0000-000000000001', build_indexes => true);
CALL tenancy.backfill('documents', '00000000-0000-0000-0000-000000000001', parent => 'shipments', build_indexes => true);
CALL tenancy.backfill('fast_has_column', '00000000-0000-0000-0000-000000000001', build_indexes => true);
CALL tenancy.backfill('readings', '00000000-0000-0000-0000-000000000001', build_indexes => true);
-- Which path each table took (clients, a slug column, and notes were converted in section 7), the phases it
-- logged, the default and NOT NULL it ended with, and how many of its rows a transaction of this
-- section wrote (xmin).
SELECT t.relid::text AS table_name, coalesce(t.details->'backfill'->>'fast_default', 'false') AS fast_default,
       (SELECT string_agg(l.details->>'phase', ',' ORDER BY l.id) FROM tenancy.migration_log l
         WHERE l.operation = 'backfill' AND l.status = 'succeeded' AND l.finished_at IS NOT NULL
           AND l.table_name = 'public.' || t.relid::text AND l.finished_at >= (t.details->'backfill'->>'started_at')::timestamptz) AS phases,
       (SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
         WHERE d.adrelid = t.relid AND a.attname = t.tenant_column) AS "default",
       (SELECT a.attnotnull FROM pg_attribute a WHERE a.attrelid = t.relid AND a.attname = t.tenant_column) AS not_null,
       t.details->'backfill'->'fill'->>'rows_done' AS rows_done,
       CASE WHEN t.relid::text NOT IN ('clients', 'notes') THEN pg_temp.rows_written(t.relid) END AS rows_written
  FROM tenancy.tenant_tables t WHERE t.details ? 'backfill' AND t.relid::oid IN (SELECT oid FROM pg_class) ORDER BY 1;
SELECT count(*) FILTER (WHERE organization_id IS DISTINCT FROM '00000000-0000-0000-0000-000000000001') AS shipments_without_it FROM shipments;
-- A new row gets the organization from the default; the missing value stays with the rows that
-- existed when the default gives way to the tenant context, and after a rollback.
INSERT INTO shipments (reference) VALUES ('S-after-fast');
SELECT tenancy.enable_isolation('shipments') IS NOT NULL AS isolated;
SELECT pg_get_expr(d.adbin, d.adrelid) AS isolated_default FROM pg_attrdef d
 WHERE d.adrelid = 'shipments'::regclass AND d.adnum = (SELECT attnum FROM pg_attribute WHERE attrelid = 'shipments'::regclass AND attname = 'organization_id');
SELECT count(*) AS rows_of_the_organization FROM shipments WHERE organization_id = '00000000-0000-0000-0000-000000000001';
SELECT tenancy.rollback('documents', drop_column => true) IS NOT NULL AS rolled_back;
SELECT tenancy.rollback('shipments') IS NOT NULL AS rolled_back;
SELECT * FROM pg_temp.shape('shipments');
SELECT count(*) AS rows_of_the_organization FROM shipments WHERE organization_id = '00000000-0000-0000-0000-000000000001';
