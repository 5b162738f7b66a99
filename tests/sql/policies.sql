-- The policy generators as a DBA uses them in psql: isolation_sql for review, enable_isolation,
-- idempotency, hand-written policies kept, options replaced, partitions, hostile identifiers,
-- disable_isolation restoring the previous state, enable_isolation_all, and every bad input.
\set SHOW_CONTEXT never
\pset format unaligned
CREATE EXTENSION tenancy;
SELECT tenancy.create_organization('Org A', 'org-a', '00000000-0000-0000-0000-00000000000a');
\ir helpers/try.psql
-- Every policy, RLS flag and tenant-column default of a table, to compare states.
CREATE FUNCTION pg_temp.shape(t regclass) RETURNS TABLE (what text) LANGUAGE sql AS $$
    SELECT format('rls=%s force=%s', c.relrowsecurity, c.relforcerowsecurity) FROM pg_class c WHERE c.oid = t
    UNION ALL
    SELECT format('policy %s %s %s to %s using (%s) check (%s)', p.polname,
                  CASE WHEN p.polpermissive THEN 'permissive' ELSE 'restrictive' END, p.polcmd,
                  p.polroles::regrole[], pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid))
      FROM pg_policy p WHERE p.polrelid = t
    UNION ALL
    SELECT format('default %s = %s', a.attname, pg_get_expr(d.adbin, d.adrelid))
      FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum WHERE d.adrelid = t
    ORDER BY 1
$$;

-- 1. Review first: isolation_sql shows the DDL and runs nothing.
CREATE TABLE shipments (id bigserial PRIMARY KEY, organization_id uuid NOT NULL, reference text);
SELECT tenancy.isolation_sql('shipments');
SELECT * FROM pg_temp.shape('shipments');

-- 2. enable_isolation runs exactly that DDL; a second call changes nothing.
SELECT tenancy.isolation_sql('shipments') AS planned \gset
SELECT tenancy.enable_isolation('shipments') = :'planned' AS ran_what_isolation_sql_showed;
SELECT tenancy.isolation_sql('shipments');
CREATE TEMP TABLE shape_once AS SELECT * FROM pg_temp.shape('shipments');
SELECT tenancy.enable_isolation('shipments');
SELECT count(*) AS differences FROM ((TABLE shape_once EXCEPT SELECT * FROM pg_temp.shape('shipments'))
                                     UNION ALL (SELECT * FROM pg_temp.shape('shipments') EXCEPT TABLE shape_once)) d;
SELECT relid, tenant_column, column_type, mode, state FROM tenancy.tenant_tables;

-- A policy someone altered by hand is put back by the next call.
ALTER POLICY tenancy_select_access ON shipments USING (true);
SELECT tenancy.enable_isolation('shipments');
SELECT count(*) AS differences FROM ((TABLE shape_once EXCEPT SELECT * FROM pg_temp.shape('shipments'))
                                     UNION ALL (SELECT * FROM pg_temp.shape('shipments') EXCEPT TABLE shape_once)) d;

-- 3. Changing an option replaces what enable_isolation created (the default mode is context);
--    a call without mode keeps the mode the table has.
SELECT tenancy.enable_isolation('shipments', mode => 'membership');
SELECT * FROM pg_temp.shape('shipments');
SELECT tenancy.enable_isolation('shipments');
SELECT relid, mode FROM tenancy.tenant_tables WHERE relid = 'shipments'::regclass;

-- 4. disable_isolation puts the table back as it was.
SELECT tenancy.disable_isolation('shipments');
SELECT * FROM pg_temp.shape('shipments');
SELECT tenancy.disable_isolation('shipments');
SELECT count(*) AS still_registered FROM tenancy.tenant_tables;

-- 5. Hand-written policies stay: they decide within the organization, the boundary bounds them.
CREATE ROLE authenticated;
CREATE TABLE documents (id bigint PRIMARY KEY, organization_id uuid NOT NULL DEFAULT '00000000-0000-0000-0000-00000000000a',
                        owner_id uuid, body text);
ALTER TABLE documents ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_documents ON documents FOR SELECT TO authenticated USING (owner_id = (SELECT tenancy.current_user_id()));
CREATE TEMP TABLE shape_before AS SELECT * FROM pg_temp.shape('documents');
SELECT tenancy.enable_isolation('documents', roles => '{authenticated}');
SELECT * FROM pg_temp.shape('documents');
SELECT tenancy.disable_isolation('documents');
SELECT count(*) AS differences FROM ((TABLE shape_before EXCEPT SELECT * FROM pg_temp.shape('documents'))
                                     UNION ALL (SELECT * FROM pg_temp.shape('documents') EXCEPT TABLE shape_before)) d;

-- 6. Text tenant columns hold slugs (seed 004: tenant_id VARCHAR(255) = 'caps-automotive').
CREATE TABLE inventory (id int PRIMARY KEY, tenant_id varchar(255) NOT NULL, sku text);
SELECT tenancy.enable_isolation('inventory', 'tenant_id');
SELECT relid, tenant_column, column_type, mode, state FROM tenancy.tenant_tables WHERE relid = 'inventory'::regclass;
-- A nullable tenant column is isolated too, with a warning: its NULL rows are visible to nobody.
CREATE TABLE notes (id int PRIMARY KEY, organization_id uuid);
SELECT line FROM regexp_split_to_table(tenancy.isolation_sql('notes'), E'\n') line WHERE line LIKE '-- WARNING%';
CREATE TABLE legacy (id int PRIMARY KEY, org char(20) NOT NULL);
SELECT tenancy.isolation_sql('legacy', 'org', 'context');

-- 7. Partitioned tables: the policies go on the parent and on every partition.
CREATE TABLE events (id bigint, organization_id uuid NOT NULL, at date NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
SELECT tenancy.enable_isolation('events', mode => 'context');
SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, count(p.polname) AS policies
  FROM pg_class c LEFT JOIN pg_policy p ON p.polrelid = c.oid
 WHERE c.relname LIKE 'events%' AND c.relkind IN ('r', 'p') GROUP BY 1, 2, 3 ORDER BY 1;
SELECT tenancy.disable_isolation('events');
SELECT count(*) AS policies_left FROM pg_policy WHERE polrelid::regclass::text LIKE 'events%';

-- 8. Hostile identifiers are quoted everywhere, never executed.
CREATE SCHEMA "My Schema";
CREATE TABLE "My Schema"."Tenant ""Data""; DROP TABLE shipments; --" (id int PRIMARY KEY, "Org ""Id""" uuid NOT NULL);
CREATE ROLE "Role; DROP TABLE shipments";
SELECT tenancy.enable_isolation('"My Schema"."Tenant ""Data""; DROP TABLE shipments; --"', 'Org "Id"',
                                roles => ARRAY['Role; DROP TABLE shipments']::name[]);
SELECT * FROM pg_temp.shape('"My Schema"."Tenant ""Data""; DROP TABLE shipments; --"');
SELECT tenancy.disable_isolation('"My Schema"."Tenant ""Data""; DROP TABLE shipments; --"');
SELECT to_regclass('shipments') IS NOT NULL AS shipments_still_there;

-- 9. A whole schema at once: what was done, what was skipped, and why.
CREATE SCHEMA app;
CREATE TABLE app.orders (id int PRIMARY KEY, organization_id uuid NOT NULL);
CREATE TABLE app.order_lines (id int PRIMARY KEY, organization_id uuid NOT NULL);
CREATE TABLE app.countries (code text PRIMARY KEY);
CREATE VIEW app.order_view AS SELECT * FROM app.orders;
CREATE TABLE app.audit (id int, organization_id uuid NOT NULL, at date NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE app.audit_2026 PARTITION OF app.audit FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
SELECT * FROM tenancy.enable_isolation_all('app');
SELECT * FROM tenancy.enable_isolation_all('app');
-- All or nothing: a conflict on one table leaves every table as it was.
CREATE TABLE app.zeta (id int PRIMARY KEY, organization_id uuid NOT NULL);
CREATE POLICY tenancy_select_access ON app.zeta USING (true);
SELECT pg_temp.try($$SELECT * FROM tenancy.enable_isolation_all('app', mode => 'membership')$$);
SELECT relid, mode FROM tenancy.tenant_tables WHERE relid::text LIKE 'app.%' ORDER BY 1;

-- 10. The log records every change with the DDL it ran.
SELECT operation, table_name, status, details->>'statements' AS statements
  FROM tenancy.migration_log WHERE operation LIKE '%isolation%' ORDER BY id;

-- 11. Bad input: a clear SQLSTATE, and nothing half-done.
CREATE VIEW shipment_view AS SELECT * FROM shipments;
CREATE MATERIALIZED VIEW shipment_mv AS SELECT * FROM shipments;
CREATE FOREIGN DATA WRAPPER dummy;
CREATE SERVER nowhere FOREIGN DATA WRAPPER dummy;
CREATE FOREIGN TABLE remote_shipments (id bigint, organization_id uuid) SERVER nowhere;
CREATE TABLE counters (id int PRIMARY KEY, organization_id integer);
CREATE ROLE stranger;
GRANT SELECT ON shipments TO stranger;
SELECT q, pg_temp.try(q) FROM (VALUES
    ($$SELECT tenancy.enable_isolation(NULL)$$),
    ($$SELECT tenancy.enable_isolation('shipments', NULL)$$),
    ($$SELECT tenancy.enable_isolation('shipment_view')$$),
    ($$SELECT tenancy.enable_isolation('shipment_mv')$$),
    ($$SELECT tenancy.enable_isolation('remote_shipments')$$),
    ($$SELECT tenancy.enable_isolation('shipments_id_seq')$$),
    ($$SELECT tenancy.enable_isolation('tenancy.memberships', 'user_id')$$),
    ($$SELECT tenancy.enable_isolation('no_such_table')$$),
    ($$SELECT tenancy.enable_isolation('shipments', 'tenant')$$),
    ($$SELECT tenancy.enable_isolation('counters')$$),
    ($$SELECT tenancy.enable_isolation('shipments', mode => 'everything')$$),
    ($$SELECT tenancy.enable_isolation('shipments', roles => '{}')$$),
    ($$SELECT tenancy.enable_isolation('shipments', roles => '{nobody_by_that_name}')$$),
    ($$SELECT tenancy.enable_isolation('shipments', roles => ARRAY[NULL]::name[])$$),
    ($$SELECT tenancy.enable_isolation('app.zeta')$$),
    ($$SELECT tenancy.enable_isolation_all('no_such_schema')$$),
    ($$SELECT tenancy.policy_organization_ids('everything')$$),
    ($$SET ROLE stranger; SELECT tenancy.enable_isolation('shipments')$$),
    ($$SET ROLE stranger; SELECT tenancy.disable_isolation('inventory')$$)
) AS t(q);
RESET ROLE;
SELECT count(*) AS policies_on_shipments FROM pg_policy WHERE polrelid = 'shipments'::regclass;
SELECT tenancy.policy_organization_ids('read') AS no_context_no_organizations,
       tenancy.policy_organization_id('read') AS no_context_no_organization;
