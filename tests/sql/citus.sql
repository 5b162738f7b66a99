-- Scale-out on Citus (issue 8), on a single node without Citus: the statement plan distribute()
-- would run, the subquery-free policy form, distribute() refusing without Citus (changing
-- nothing), and the signed tenant context: valid in its transaction, NULL when forged,
-- truncated, replayed in another transaction, or used by another user or role.
\set SHOW_CONTEXT never
CREATE EXTENSION tenancy;
\ir helpers/try.psql
SELECT count(*) AS citus_installed FROM pg_extension WHERE extname = 'citus';

-- The key, in the data directory (readable only by the server's OS user, i.e. superusers).
DO $$ BEGIN
  EXECUTE format('COPY (SELECT %L) TO %L', repeat('5a', 32), current_setting('data_directory') || '/tenancy_context.key');
END $$;

SELECT tenancy.create_organization('Acme', 'acme', '00000000-0000-0000-0000-00000000000a', '{}', 'a0000000-0000-0000-0000-00000000000a') IS NOT NULL AS acme;
SELECT tenancy.create_organization('Beta', 'beta', '00000000-0000-0000-0000-00000000000b', '{}', 'b0000000-0000-0000-0000-00000000000b') IS NOT NULL AS beta;
SELECT tenancy.add_member('00000000-0000-0000-0000-00000000000a', 'c0000000-0000-0000-0000-00000000000c', 'viewer');

-- A sample schema: keys and foreign keys carry the tenant column, as Citus requires.
CREATE TABLE shipments (organization_id uuid NOT NULL REFERENCES tenancy.organizations (id), id int NOT NULL,
                        ref text, PRIMARY KEY (organization_id, id));
CREATE TABLE documents (organization_id uuid NOT NULL REFERENCES tenancy.organizations (id), id int NOT NULL,
                        shipment_id int, PRIMARY KEY (organization_id, id),
                        FOREIGN KEY (organization_id, shipment_id) REFERENCES shipments (organization_id, id));
CREATE TABLE parts (org_slug text NOT NULL REFERENCES tenancy.organizations (slug), sku text NOT NULL,
                    PRIMARY KEY (org_slug, sku));
SELECT tenancy.enable_isolation('documents') IS NOT NULL AS documents_isolated;
SELECT tenancy.enable_isolation('shipments', mode => 'context') IS NOT NULL AS shipments_isolated;
SELECT tenancy.enable_isolation('parts', 'org_slug') IS NOT NULL AS parts_isolated;

-- What tenancy.distribute_all() would run, in order: the catalog's policies without subqueries,
-- the catalog as reference tables, then each tenant table (parents first): its policies in the
-- distributed form, then create_distributed_table, co-located by tenant column type.
SELECT * FROM tenancy.distribution_plan();
SELECT * FROM tenancy.distribution_plan('shipments', shard_count => 64);

-- No generated policy holds a subquery: no SELECT in any USING / WITH CHECK expression.
SELECT count(*) AS policy_statements,
       count(*) FILTER (WHERE substring(s FROM '(USING|WITH CHECK) .*$') ~* '\mselect\M') AS with_subquery
  FROM tenancy.distribution_plan() s WHERE s ~ '^(CREATE|ALTER) POLICY';

-- Tables Citus cannot distribute by their tenant column, and why (nothing runs).
CREATE TABLE notes (organization_id uuid NOT NULL, id int PRIMARY KEY, shipment_id int, code text UNIQUE);
SELECT tenancy.register_table('notes');
SELECT pg_temp.try($$SELECT tenancy.distribution_plan('notes')$$);
CREATE TABLE lookup (id int PRIMARY KEY);
ALTER TABLE notes DROP CONSTRAINT notes_pkey, DROP CONSTRAINT notes_code_key, ADD PRIMARY KEY (organization_id, id),
  ADD FOREIGN KEY (shipment_id, organization_id) REFERENCES shipments (id, organization_id);
CREATE TABLE audit (id int PRIMARY KEY, org uuid, note_id int, FOREIGN KEY (org, note_id) REFERENCES notes (organization_id, id));
ALTER TABLE notes ADD COLUMN lookup_id int REFERENCES lookup (id);
CREATE UNIQUE INDEX notes_lookup_idx ON notes (lookup_id);
SELECT pg_temp.try($$SELECT tenancy.distribution_plan()$$);
-- (The foreign key to shipments pairs the tenant columns, in another column order: accepted.)
DROP TABLE audit; DROP INDEX notes_lookup_idx; ALTER TABLE notes DROP COLUMN lookup_id;
-- Fixed: notes comes after its parent, co-located with it.
SELECT s FROM tenancy.distribution_plan() s WHERE s LIKE '%create_distributed_table%';
-- One table at a time: its tenant-table parents first.
SELECT pg_temp.try($$SELECT tenancy.distribution_plan('notes')$$);
SELECT pg_temp.try($$SELECT tenancy.distribution_plan('lookup')$$);
SELECT pg_temp.try($$SELECT tenancy.distribution_plan(shard_count => 0)$$);

-- Without Citus, distribute() and distribute_all() refuse, and nothing changes.
CREATE TEMP TABLE before AS
  SELECT (SELECT md5(string_agg(polrelid::regclass || polname || pg_get_expr(polqual, polrelid), ',' ORDER BY 1))
            FROM pg_policy) AS policies,
         (SELECT count(*) FROM tenancy.migration_log) AS log_rows,
         (SELECT md5(string_agg(relid || coalesce(details::text, ''), ',' ORDER BY 1)) FROM tenancy.tenant_tables) AS registry;
SELECT pg_temp.try($$SELECT tenancy.distribute('shipments')$$);
SELECT pg_temp.try($$SELECT tenancy.distribute_all()$$);
SELECT pg_temp.try($$SELECT tenancy.distribute(NULL)$$);
SELECT b.policies = (SELECT md5(string_agg(polrelid::regclass || polname || pg_get_expr(polqual, polrelid), ',' ORDER BY 1)) FROM pg_policy) AS policies_unchanged,
       b.log_rows = (SELECT count(*) FROM tenancy.migration_log) AS log_unchanged,
       b.registry = (SELECT md5(string_agg(relid || coalesce(details::text, ''), ',' ORDER BY 1)) FROM tenancy.tenant_tables) AS registry_unchanged
  FROM before b;
-- On a single node the policies keep their usual form.
SELECT polname, pg_get_expr(polqual, polrelid) AS using_expr FROM pg_policy
 WHERE polrelid = 'shipments'::regclass AND polname = 'tenancy_select_boundary';

-- The signed context: set_organization writes it for the transaction.
CREATE ROLE golden_citus_other;
BEGIN;
SET LOCAL tenancy.user_id = 'a0000000-0000-0000-0000-00000000000a';
SELECT tenancy.set_organization('00000000-0000-0000-0000-00000000000a');
SELECT current_setting('tenancy.context') ~ '^v1:00000000-0000-0000-0000-00000000000a:acme:rwd:[0-9a-f]{64}$' AS token_shape;
SELECT tenancy.signed_organization_id(current_setting('tenancy.context'), 'read') AS valid_read,
       tenancy.signed_organization_id(current_setting('tenancy.context'), 'delete') AS valid_delete,
       tenancy.signed_organization_slug(current_setting('tenancy.context'), 'write') AS valid_slug;
-- The policies' own expression.
SELECT tenancy.signed_organization_id(NULLIF(current_setting('tenancy.context', true), ''), 'read') AS policy_expression;
SELECT tenancy.signed_organization_id(left(current_setting('tenancy.context'), -1), 'read') AS truncated,
       tenancy.signed_organization_id(left(current_setting('tenancy.context'), 40), 'read') AS truncated_more,
       tenancy.signed_organization_id(replace(current_setting('tenancy.context'), '0000000a:acme', '0000000b:beta'), 'read') AS forged_organization,
       tenancy.signed_organization_id(regexp_replace(current_setting('tenancy.context'), '[0-9a-f]{64}$', repeat('0', 64)), 'read') AS forged_mac,
       tenancy.signed_organization_id('v1:00000000-0000-0000-0000-00000000000b:beta:rwd:' || encode(sha256('x'), 'hex'), 'read') AS made_up;
SELECT pg_temp.try($$SELECT tenancy.signed_organization_id(current_setting('tenancy.context'), 'admin')$$) AS unknown_privilege;
-- Kept at session level, to replay it later.
SELECT set_config('golden.saved_context', current_setting('tenancy.context'), false) IS NOT NULL AS saved;
SET LOCAL tenancy.user_id = 'b0000000-0000-0000-0000-00000000000b';
SELECT tenancy.signed_organization_id(current_setting('golden.saved_context'), 'read') AS other_user;
SET LOCAL tenancy.user_id = 'a0000000-0000-0000-0000-00000000000a';
SET LOCAL ROLE golden_citus_other;
SELECT tenancy.signed_organization_id(current_setting('golden.saved_context'), 'read') AS other_role;
RESET ROLE;
SELECT tenancy.signed_organization_id(current_setting('golden.saved_context'), 'read') AS same_user_and_role_again;
COMMIT;

-- Replayed in another transaction of the same session, even through a session-level SET: NULL.
BEGIN;
SET LOCAL tenancy.user_id = 'a0000000-0000-0000-0000-00000000000a';
SELECT tenancy.signed_organization_id(current_setting('golden.saved_context'), 'read') AS replayed;
SET tenancy.context TO DEFAULT;
SELECT set_config('tenancy.context', current_setting('golden.saved_context'), false) IS NOT NULL AS session_level_set;
SELECT tenancy.signed_organization_id(NULLIF(current_setting('tenancy.context', true), ''), 'read') AS replayed_by_policy;
COMMIT;
RESET tenancy.context;
-- After the transaction, the setting reads as '' (hence NULLIF in the policies): NULL.
SELECT current_setting('tenancy.context', true) AS after_commit,
       tenancy.signed_organization_id(NULLIF(current_setting('tenancy.context', true), ''), 'read') AS no_context;

-- A viewer's context carries only the right to read (as a role that is not a tenancy
-- administrator: an administrator may act with every right in any active organization).
CREATE ROLE golden_citus_app;
BEGIN;
SET LOCAL ROLE golden_citus_app;
SET LOCAL tenancy.user_id = 'c0000000-0000-0000-0000-00000000000c';
SELECT tenancy.set_organization('00000000-0000-0000-0000-00000000000a');
SELECT split_part(current_setting('tenancy.context'), ':', 4) AS viewer_rights,
       tenancy.signed_organization_id(current_setting('tenancy.context'), 'read') AS viewer_read,
       tenancy.signed_organization_id(current_setting('tenancy.context'), 'write') AS viewer_write,
       tenancy.signed_organization_id(current_setting('tenancy.context'), 'delete') AS viewer_delete;
COMMIT;
-- Without the key, set_organization writes no context, and nothing verifies: no rows (fails closed).
-- (The key is read once per session: a new session sees the file gone.)
DO $$ BEGIN
  EXECUTE format('COPY (SELECT %L) TO %L', 'not a key', current_setting('data_directory') || '/tenancy_context.key');
END $$;
\c
BEGIN;
SET LOCAL tenancy.user_id = 'a0000000-0000-0000-0000-00000000000a';
SELECT tenancy.set_organization('00000000-0000-0000-0000-00000000000a');
SELECT current_setting('tenancy.context', true) AS context_without_key,
       tenancy.signed_organization_id(current_setting('golden.saved_context', true), 'read') AS verified_without_key;
COMMIT;
DROP ROLE golden_citus_app;
DROP ROLE golden_citus_other;
