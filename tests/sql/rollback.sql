-- Issue 15: rolling back an isolated, converted schema whose tables belong to a role that is not
-- a superuser (FORCE ROW LEVEL SECURITY applies to it). One call per table in any order, or one
-- per schema; every state (half-way, converted, isolated); afterwards the catalog shape and every
-- row equal the original. Also: a derived table falls back on backfill_all's organization_id;
-- enable_isolation refuses a half-done table; a replaced unique key keeps its name; TEN010
-- spares application-filled text ids; rollback undoes a TEN010 fix applied by hand.
\set SHOW_CONTEXT never
\pset format unaligned
CREATE EXTENSION tenancy;
\ir helpers/try.psql
-- Columns, constraints (name and definition), indexes, triggers, policies and RLS flags.
CREATE FUNCTION pg_temp.shape(t regclass) RETURNS SETOF text LANGUAGE sql AS $$
    SELECT * FROM (
        SELECT format('column %s %s%s default %s', a.attname, format_type(a.atttypid, a.atttypmod),
                      CASE WHEN a.attnotnull THEN ' not null' ELSE '' END, pg_get_expr(d.adbin, d.adrelid))
          FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE a.attrelid = t AND a.attnum > 0 AND NOT a.attisdropped
        UNION ALL SELECT format('constraint %s %s valid=%s', conname, pg_get_constraintdef(oid), convalidated)
          FROM pg_constraint WHERE conrelid = t AND contype <> 'n'  -- (PostgreSQL 18's NOT NULL constraints: the column says it)
        UNION ALL SELECT format('index %s', pg_get_indexdef(indexrelid)) FROM pg_index WHERE indrelid = t
        UNION ALL SELECT format('trigger %s', tgname) FROM pg_trigger WHERE tgrelid = t AND NOT tgisinternal
        UNION ALL SELECT format('policy %s', polname) FROM pg_policy WHERE polrelid = t
        UNION ALL SELECT format('rls=%s force=%s', relrowsecurity, relforcerowsecurity) FROM pg_class WHERE oid = t) s
    ORDER BY 1
$$;
-- Every row of a table, over the columns it had at first: count and hash.
CREATE FUNCTION pg_temp.fingerprint(t regclass, cols text[]) RETURNS text LANGUAGE plpgsql AS $$
DECLARE v text;
BEGIN
    EXECUTE format('SELECT count(*) || '' rows '' || coalesce(md5(string_agg(r, ''|'' ORDER BY r)), '''') FROM (SELECT row(%s)::text AS r FROM %s) s',
                   (SELECT string_agg(quote_ident(c), ', ') FROM unnest(cols) c), t) INTO v;
    RETURN v;
END $$;
SELECT tenancy.create_organization('VIBOTAJ GmbH', 'vibotaj', '00000000-0000-0000-0000-000000000001');

DO $$ BEGIN CREATE ROLE rollback_app_owner; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
GRANT CREATE ON SCHEMA public TO rollback_app_owner;
SET ROLE rollback_app_owner;
CREATE TABLE users (id uuid PRIMARY KEY, email text NOT NULL UNIQUE, name text);
CREATE TABLE jobs (id serial PRIMARY KEY, user_id uuid REFERENCES users ON DELETE SET NULL, code text NOT NULL,
                   parent_id int REFERENCES jobs);
CREATE UNIQUE INDEX jobs_user_code ON jobs (user_id, code);
CREATE TABLE notifications (id bigserial PRIMARY KEY, user_id uuid NOT NULL REFERENCES users ON DELETE CASCADE, message text);
INSERT INTO users SELECT ('11111111-0000-0000-0000-' || lpad(g::text, 12, '0'))::uuid, 'u' || g || '@example.com', 'User ' || g
  FROM generate_series(1, 50) g;
INSERT INTO jobs (user_id, code) SELECT ('11111111-0000-0000-0000-' || lpad((1 + g % 50)::text, 12, '0'))::uuid, 'J' || g
  FROM generate_series(1, 2000) g;
INSERT INTO jobs (user_id, code, parent_id) SELECT NULL, 'orphan' || g, g FROM generate_series(1, 300) g;
INSERT INTO notifications (user_id, message) SELECT ('11111111-0000-0000-0000-' || lpad((1 + g % 50)::text, 12, '0'))::uuid, 'n' || g
  FROM generate_series(1, 1000) g;
RESET ROLE;
CREATE TEMP TABLE before AS
    SELECT t::text AS tbl, s FROM unnest('{users,jobs,notifications}'::regclass[]) t, pg_temp.shape(t) s;
CREATE TEMP TABLE rows_before AS
    SELECT t, cols, pg_temp.fingerprint(t::regclass, cols) AS fp
      FROM unnest('{users,jobs,notifications}'::text[]) t
     CROSS JOIN LATERAL (SELECT array_agg(attname::text ORDER BY attnum) FROM pg_attribute
                          WHERE attrelid = t::regclass AND attnum > 0 AND NOT attisdropped) c(cols);
-- What differs from the original in tables ts: shape or rows (no row means equal).
CREATE FUNCTION pg_temp.differences(ts text[] DEFAULT '{users,jobs,notifications}') RETURNS SETOF text LANGUAGE sql AS $$
    (SELECT 'now: ' || tbl || ' ' || s FROM (SELECT t::text AS tbl, s FROM unnest(ts::regclass[]) t, pg_temp.shape(t) s
                                           EXCEPT SELECT * FROM before WHERE tbl = ANY (ts)) x)
    UNION ALL
    (SELECT 'was: ' || tbl || ' ' || s FROM (SELECT * FROM before WHERE tbl = ANY (ts) EXCEPT
                                           SELECT t::text, s FROM unnest(ts::regclass[]) t, pg_temp.shape(t) s) x)
    UNION ALL
    SELECT 'rows: ' || t FROM rows_before WHERE t = ANY (ts) AND pg_temp.fingerprint(t::regclass, cols) <> fp
    ORDER BY 1
$$;

-- 1. Half-way: jobs derived from users without a fallback stops at the 300 jobs of no user.
CALL tenancy.backfill('users', '00000000-0000-0000-0000-000000000001', build_indexes => true);
CALL tenancy.backfill('jobs', parent => 'users', build_indexes => true);
SELECT table_name, phase, rows_done FROM tenancy.backfill_progress ORDER BY 1;
-- Isolating it now would hide those 300 jobs from everyone: refused, unless asked for.
SELECT pg_temp.try($$SELECT tenancy.enable_isolation('jobs')$$) AS half_done_refused;
SELECT pg_temp.try($$SELECT * FROM tenancy.enable_isolation_all('public')$$) AS half_done_refused_in_schema;
SELECT count(*) AS isolated_after_refusals FROM pg_class WHERE relrowsecurity AND relnamespace = 'public'::regnamespace;
BEGIN;
SELECT table_name, action, detail FROM tenancy.enable_isolation_all('public', allow_incomplete => true) ORDER BY 1;
ROLLBACK;
-- A table with NULLs in its tenant column and no backfill is refused too.
CREATE TABLE hand_made (id int PRIMARY KEY, organization_id uuid);
INSERT INTO hand_made VALUES (1, '00000000-0000-0000-0000-000000000001'), (2, NULL);
SELECT pg_temp.try($$SELECT tenancy.enable_isolation('hand_made')$$) AS null_tenant_refused;
DROP TABLE hand_made;
-- The half-way table rolls back in one call, to its original shape with every row.
SELECT tenancy.rollback('jobs', drop_column => true) IS NOT NULL AS rolled_back;
SELECT * FROM pg_temp.differences('{jobs}');

-- 2. backfill_all: a derived table falls back on organization_id for the rows its parent gives
-- none (the 300 jobs of no user), as the README says.
CALL tenancy.backfill_all('{users,jobs,notifications}', organization_id => '00000000-0000-0000-0000-000000000001',
                          derive => '{"jobs": {"parent": "users"}, "notifications": {"parent": "users"}}', build_indexes => true);
SELECT table_name, phase, rows_done FROM tenancy.backfill_progress ORDER BY 1;
SELECT count(*) FILTER (WHERE organization_id IS NULL) AS jobs_without_organization, count(*) AS jobs FROM jobs;

-- 3. Replaced unique keys keep their names (ORMs see no drift): users_email_key, jobs_user_code.
SELECT s FROM pg_temp.shape('users') s WHERE s ~ 'email';
SELECT s FROM pg_temp.shape('jobs') s WHERE s ~ 'code';
SELECT pg_temp.try($$INSERT INTO users VALUES ('11111111-0000-0000-0000-0000000009ff', 'u1@example.com', 'dup', '00000000-0000-0000-0000-000000000001')$$) AS duplicate_refused;

-- 4. Isolated. Rolling back the parent first is refused by name, before anything changes.
SELECT table_name, action FROM tenancy.enable_isolation_all('public') ORDER BY 1;
SELECT pg_temp.try($$SELECT tenancy.rollback('users', drop_column => true)$$) AS parent_first;
-- A child rolls back alone while its parent stays isolated (FORCE ROW LEVEL SECURITY on the
-- owner): its original foreign key is checked against every parent row.
SELECT tenancy.rollback('jobs', drop_column => true) IS NOT NULL AS rolled_back;
SELECT * FROM pg_temp.differences('{jobs}');
SELECT s FROM pg_temp.shape('users') s WHERE s ~ '^(rls|policy)';
-- cascade => true: the parent and what still depends on it (notifications), children first.
SELECT tenancy.rollback('users', drop_column => true, cascade => true);
SELECT * FROM pg_temp.differences();
SELECT count(*) AS still_recorded FROM tenancy.tenant_tables;

-- 5. The whole schema in one call: converted and isolated again, then rollback_all.
CALL tenancy.backfill_all('{users,jobs,notifications}', organization_id => '00000000-0000-0000-0000-000000000001',
                          derive => '{"jobs": {"parent": "users"}, "notifications": {"parent": "users"}}', build_indexes => true);
SELECT table_name, action FROM tenancy.enable_isolation_all('public') ORDER BY 1;
-- Keeping the columns first (seed 000's level 2: the tables keep organization_id, nullable).
SELECT * FROM tenancy.rollback_all('public');
SELECT * FROM pg_temp.differences();
SELECT count(*) AS rollback_all_again_does_nothing FROM tenancy.rollback_all('public');
ALTER TABLE users DROP COLUMN organization_id;
ALTER TABLE jobs DROP COLUMN organization_id;
ALTER TABLE notifications DROP COLUMN organization_id;
CALL tenancy.backfill_all('{users,jobs,notifications}', organization_id => '00000000-0000-0000-0000-000000000001',
                          derive => '{"jobs": {"parent": "users"}, "notifications": {"parent": "users"}}', build_indexes => true);
-- A table isolated without a backfill (its tenant column was there): rollback_all removes
-- exactly what enable_isolation created.
SET ROLE rollback_app_owner;
CREATE TABLE settings (organization_id uuid NOT NULL, k text, v text);
RESET ROLE;
SELECT table_name, action FROM tenancy.enable_isolation_all('public') ORDER BY 1;
SELECT * FROM tenancy.rollback_all('public', drop_column => true);
SELECT s FROM pg_temp.shape('settings') s WHERE s ~ '^(rls|policy)';
DROP TABLE settings;
SELECT * FROM pg_temp.differences();
SELECT count(*) AS still_recorded FROM tenancy.tenant_tables;
SELECT pg_temp.try($$SELECT * FROM tenancy.rollback_all('nowhere')$$) AS no_such_schema;

-- 6. TEN010: a text primary key the application fills with ids (cuid) is a surrogate key; a text
-- key with another name (a currency code) is a natural key, and is still reported.
SET ROLE rollback_app_owner;
CREATE TABLE carts (id text PRIMARY KEY, note text);
CREATE TABLE currencies (code text PRIMARY KEY, name text, iso_number int);
CREATE UNIQUE INDEX currencies_iso_number ON currencies (iso_number);
INSERT INTO carts VALUES ('ckx1a2b3c0000qzrmn831i7rn', 'a'), ('ckx1a2b3c0001qzrmn831i7ro', 'b');
INSERT INTO currencies VALUES ('EUR', 'Euro', 978), ('USD', 'Dollar', 840);
RESET ROLE;
-- currencies_iso_number is accepted as it is: the backfill leaves it, lint no longer reports it.
INSERT INTO tenancy.lint_ignores (code, object, reason) VALUES ('TEN010', 'public.currencies index currencies_iso_number', 'kept for the test');
CREATE TEMP TABLE cur_before AS SELECT s FROM pg_temp.shape('currencies') s;
CALL tenancy.backfill_all('{carts,currencies}', organization_id => '00000000-0000-0000-0000-000000000001', build_indexes => true);
SELECT code, object, fix FROM tenancy.lint() WHERE code = 'TEN010' ORDER BY object;
-- The DBA applies the fixes lint printed (after all); rollback puts the keys back as they were,
-- under their names.
DELETE FROM tenancy.lint_ignores;
SELECT code, object, fix FROM tenancy.lint() WHERE code = 'TEN010' ORDER BY object;
DO $$ BEGIN EXECUTE (SELECT string_agg(fix, ' ') FROM tenancy.lint() WHERE code = 'TEN010' AND object ~ '^public.currencies '); END $$;
SELECT s FROM pg_temp.shape('currencies') s WHERE s ~ 'pkey|iso';
SELECT tenancy.rollback('currencies', drop_column => true) IS NOT NULL AS rolled_back;
(SELECT 'now: ' || s FROM pg_temp.shape('currencies') s EXCEPT SELECT 'now: ' || s FROM cur_before)
UNION ALL (SELECT 'was: ' || s FROM cur_before EXCEPT SELECT 'was: ' || s FROM pg_temp.shape('currencies') s);
