-- The foundation as a DBA sees it in psql: install, catalog, the three seed functions,
-- the management API, the tenant context, and the SQLSTATE of every bad input.
\set SHOW_CONTEXT never
CREATE EXTENSION tenancy;
SELECT extname, extversion, nspname AS schema, extrelocatable
  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE extname = 'tenancy';

-- Every public function is documented, pins its search_path, and none is SECURITY DEFINER.
SELECT p.oid::regprocedure AS function, obj_description(p.oid, 'pg_proc') IS NOT NULL AS has_comment,
       coalesce(array_to_string(p.proconfig, ','), '') LIKE 'search_path=%' AS pinned_search_path,
       p.prosecdef AS security_definer, p.provolatile AS volatility
  FROM pg_proc p WHERE p.pronamespace = 'tenancy'::regnamespace AND p.proname !~ '^_'
 ORDER BY p.oid::regprocedure::text;
SELECT count(*) AS internal_functions_without_pinned_search_path
  FROM pg_proc p WHERE p.pronamespace = 'tenancy'::regnamespace AND p.prokind <> 'p'
   AND NOT coalesce(array_to_string(p.proconfig, ','), '') LIKE 'search_path=%';
-- The procedures that COMMIT can have no SET clause (and are not SECURITY DEFINER): they
-- schema-qualify every name instead.
SELECT p.oid::regprocedure AS procedure, p.proconfig IS NULL AS no_set_clause, NOT p.prosecdef AS invoker
  FROM pg_proc p WHERE p.pronamespace = 'tenancy'::regnamespace AND p.prokind = 'p' ORDER BY 1;

SELECT name, rank, can_read, can_write, can_delete, can_manage_members, can_manage_organization
  FROM tenancy.roles ORDER BY rank DESC;

\ir helpers/try.psql

-- Organizations: seed 000's fixed id, idempotent creation.
SELECT tenancy.create_organization('VIBOTAJ GmbH', 'vibotaj', '00000000-0000-0000-0000-000000000001',
                                   '{"timezone": "Europe/Berlin"}', 'a0000000-0000-0000-0000-00000000000a');
SELECT tenancy.create_organization('VIBOTAJ GmbH', 'vibotaj', '00000000-0000-0000-0000-000000000001') AS same_again;
SELECT tenancy.create_organization('Beta Logistics', 'beta', '00000000-0000-0000-0000-000000000002');
SELECT tenancy.create_organization('Gamma', 'gamma', '00000000-0000-0000-0000-000000000003');
SELECT tenancy.add_member('00000000-0000-0000-0000-000000000002', 'b0000000-0000-0000-0000-00000000000b', 'viewer');
SELECT tenancy.add_member('00000000-0000-0000-0000-000000000002', 'b0000000-0000-0000-0000-00000000000b', 'viewer') AS added_again;
SELECT tenancy.add_member('00000000-0000-0000-0000-000000000001', 'b0000000-0000-0000-0000-00000000000b', 'member');
SELECT tenancy.add_member('00000000-0000-0000-0000-000000000003', 'c0000000-0000-0000-0000-00000000000c', 'admin', true);
SELECT organization_id, user_id, role, is_default, is_active FROM tenancy.memberships ORDER BY 1, 2;

-- get_user_organization_id: the default organization, else the earliest active one, else NULL.
SELECT tenancy.get_user_organization_id('a0000000-0000-0000-0000-00000000000a') AS a_default,
       tenancy.get_user_organization_id('b0000000-0000-0000-0000-00000000000b') AS b_earliest,
       tenancy.get_user_organization_id('c0000000-0000-0000-0000-00000000000c') AS c_default,
       tenancy.get_user_organization_id('d0000000-0000-0000-0000-00000000000d') AS stranger;
SELECT tenancy.add_member('00000000-0000-0000-0000-000000000001', 'b0000000-0000-0000-0000-00000000000b', 'member', true) AS make_default;
SELECT tenancy.get_user_organization_id('b0000000-0000-0000-0000-00000000000b') AS b_after_default;

-- validate_client_access: true only for an active member of an active organization.
SELECT tenancy.validate_client_access('b0000000-0000-0000-0000-00000000000b', '00000000-0000-0000-0000-000000000002') AS member,
       tenancy.validate_client_access('a0000000-0000-0000-0000-00000000000a', '00000000-0000-0000-0000-000000000002') AS not_member,
       tenancy.validate_client_access(NULL, '00000000-0000-0000-0000-000000000002') AS null_user,
       tenancy.validate_client_access('b0000000-0000-0000-0000-00000000000b', NULL) AS null_org;
SELECT tenancy.deactivate_organization('00000000-0000-0000-0000-000000000003');
SELECT tenancy.validate_client_access('c0000000-0000-0000-0000-00000000000c', '00000000-0000-0000-0000-000000000003') AS inactive_org,
       tenancy.get_user_organization_id('c0000000-0000-0000-0000-00000000000c') AS no_active_org;

-- Roles and invitations.
SELECT tenancy.change_role('00000000-0000-0000-0000-000000000002', 'b0000000-0000-0000-0000-00000000000b', 'manager');
SELECT tenancy.rename_organization('00000000-0000-0000-0000-000000000002', 'Beta Logistics GmbH');
SELECT name, slug FROM tenancy.organizations ORDER BY id;
SELECT length(tenancy.create_invitation('00000000-0000-0000-0000-000000000001', 'New.Hire@Example.com', 'viewer')) AS token_length;
SELECT email, role, accepted_at IS NULL AS open, length(token_sha256) AS hash_bytes FROM tenancy.invitations;

-- The tenant context. Each statement outside BEGIN is its own transaction.
SELECT tenancy.current_user_id() AS no_user, tenancy.current_organization_id() AS no_org;
BEGIN;
SET LOCAL tenancy.user_id = 'b0000000-0000-0000-0000-00000000000b';
SELECT tenancy.current_user_id(), tenancy.current_organization_id() AS default_org;
SELECT tenancy.set_organization('00000000-0000-0000-0000-000000000002');
SELECT tenancy.current_organization_id() AS chosen_org, tenancy.current_organization_slug();
COMMIT;
SELECT tenancy.current_organization_id() AS after_commit;
-- A session-level SET survives COMMIT but is not taken as a later transaction's context.
SET tenancy.user_id = 'b0000000-0000-0000-0000-00000000000b';
SELECT tenancy.current_user_id() AS leftover_user_ignored;
RESET tenancy.user_id;
-- The JWT of PostgREST / Supabase.
BEGIN;
SELECT set_config('request.jwt.claims', '{"sub": "a0000000-0000-0000-0000-00000000000a", "role": "authenticated"}', true) IS NOT NULL AS jwt_set;
SELECT tenancy.current_user_id() AS jwt_user, tenancy.current_organization_id() AS jwt_default_org;
COMMIT;

-- Integrity of registered tenant tables: NULL and orphaned tenant values.
CREATE TABLE public.shipments (id bigint PRIMARY KEY, reference text NOT NULL, organization_id uuid);
INSERT INTO public.shipments VALUES
    (1, 'S-1', '00000000-0000-0000-0000-000000000001'), (2, 'S-2', '00000000-0000-0000-0000-000000000002'),
    (3, 'S-3', NULL), (4, 'S-4', '99999999-9999-9999-9999-999999999999');
CREATE TABLE public."Odd ""Name""; x" (id int, tenant_id varchar(255));
INSERT INTO public."Odd ""Name""; x" VALUES (1, 'vibotaj'), (2, 'beta'), (3, 'nobody');
SELECT tenancy.register_table('public.shipments');
SELECT tenancy.register_table('public."Odd ""Name""; x"', 'tenant_id');
SELECT tenancy.register_table('public.shipments') AS registered_again;
SELECT relid, tenant_column, column_type, state FROM tenancy.tenant_tables ORDER BY relid::text;
SELECT * FROM tenancy.validate_client_data_integrity();
UPDATE public.shipments SET organization_id = '00000000-0000-0000-0000-000000000001' WHERE id IN (3, 4);
SELECT * FROM tenancy.validate_client_data_integrity('public.shipments');

-- Bad input: a specific SQLSTATE each, and nothing half-written.
SELECT count(*) AS organizations_before FROM tenancy.organizations;
SELECT pg_temp.try($$ SELECT tenancy.create_organization(NULL, 'x') $$) AS null_name;
SELECT pg_temp.try($$ SELECT tenancy.create_organization('X', NULL) $$) AS null_slug;
SELECT pg_temp.try($$ SELECT tenancy.create_organization('Other', 'vibotaj') $$) AS duplicate_slug;
SELECT pg_temp.try($$ SELECT tenancy.create_organization('Other', 'other', '00000000-0000-0000-0000-000000000001') $$) AS duplicate_id;
SELECT pg_temp.try($$ SELECT tenancy.create_organization('Bad', 'Bad Slug!') $$) AS invalid_slug;
SELECT pg_temp.try($$ SELECT tenancy.create_organization('Bad', 'bad', NULL, '[1]') $$) AS settings_not_object;
SELECT count(*) AS organizations_after FROM tenancy.organizations;
SELECT pg_temp.try($$ SELECT tenancy.add_member(NULL, 'b0000000-0000-0000-0000-00000000000b') $$) AS null_org;
SELECT pg_temp.try($$ SELECT tenancy.add_member('00000000-0000-0000-0000-000000000001', NULL) $$) AS null_user;
SELECT pg_temp.try($$ SELECT tenancy.add_member('00000000-0000-0000-0000-0000000000ff', 'b0000000-0000-0000-0000-00000000000b') $$) AS unknown_org;
SELECT pg_temp.try($$ SELECT tenancy.add_member('00000000-0000-0000-0000-000000000001', 'b0000000-0000-0000-0000-00000000000b', 'superhero') $$) AS unknown_role;
SELECT pg_temp.try($$ SELECT tenancy.add_member('00000000-0000-0000-0000-000000000003', 'b0000000-0000-0000-0000-00000000000b') $$) AS inactive_org;
SELECT pg_temp.try($$ SELECT tenancy.add_member('00000000-0000-0000-0000-000000000001', 'b0000000-0000-0000-0000-00000000000b', 'owner') $$) AS already_member_other_role;
SELECT pg_temp.try($$ SELECT tenancy.remove_member('00000000-0000-0000-0000-000000000001', 'd0000000-0000-0000-0000-00000000000d') $$) AS unknown_user;
SELECT pg_temp.try($$ SELECT tenancy.change_role('00000000-0000-0000-0000-000000000001', 'd0000000-0000-0000-0000-00000000000d', 'viewer') $$) AS unknown_user_role_change;
SELECT pg_temp.try($$ SELECT tenancy.remove_member('00000000-0000-0000-0000-000000000001', 'a0000000-0000-0000-0000-00000000000a') $$) AS last_owner;
SELECT pg_temp.try($$ SELECT tenancy.change_role('00000000-0000-0000-0000-000000000001', 'a0000000-0000-0000-0000-00000000000a', 'viewer') $$) AS demote_last_owner;
SELECT pg_temp.try($$ SELECT tenancy.create_invitation('00000000-0000-0000-0000-000000000001', 'not-an-email') $$) AS bad_email;
SELECT pg_temp.try($$ SELECT tenancy.create_invitation('00000000-0000-0000-0000-000000000001', 'x@example.com', 'member', '-1 day') $$) AS bad_expiry;
SELECT pg_temp.try($$ SELECT tenancy.accept_invitation('no-such-token') $$) AS accept_without_user;
SELECT pg_temp.try($$ SELECT tenancy.set_organization(NULL) $$) AS set_null_org;
SELECT pg_temp.try($$ SELECT tenancy.set_organization('00000000-0000-0000-0000-0000000000ff') $$) AS set_unknown_org;
SELECT pg_temp.try($$ SELECT tenancy.set_organization('00000000-0000-0000-0000-000000000003') $$) AS set_inactive_org;
SELECT pg_temp.try($$ SELECT tenancy.register_table('public.shipments', 'nope') $$) AS missing_column;
SELECT pg_temp.try($$ SELECT tenancy.register_table('public.shipments', 'id') $$) AS unsupported_type;
CREATE VIEW public.shipments_view AS SELECT * FROM public.shipments;
SELECT pg_temp.try($$ SELECT tenancy.register_table('public.shipments_view') $$) AS a_view;
SELECT pg_temp.try($$ SELECT * FROM tenancy.validate_client_data_integrity('public.shipments_view') $$) AS not_registered;
SELECT pg_temp.try($$ SELECT tenancy._privileged('drop_everything', '{}') $$) AS unknown_operation;

-- Invitations as the invited user: once, before expiry.
SELECT tenancy.create_invitation('00000000-0000-0000-0000-000000000001', 'e@example.com', 'viewer') AS token \gset
SELECT tenancy.create_invitation('00000000-0000-0000-0000-000000000001', 'late@example.com', 'viewer', '1 microsecond') AS late_token \gset
SELECT pg_sleep(0.01);
BEGIN;
SET LOCAL tenancy.user_id = 'e0000000-0000-0000-0000-00000000000e';
SELECT tenancy.accept_invitation(:'token') AS joined;
SELECT tenancy.current_organization_id() AS now_in;
COMMIT;
BEGIN;
SET LOCAL tenancy.user_id = 'e0000000-0000-0000-0000-00000000000e';
-- (invitation ids and times vary from run to run: masked)
SELECT regexp_replace(pg_temp.try(format('SELECT tenancy.accept_invitation(%L)', :'token')), '[0-9a-f-]{36} (.*) at .*$', '<id> \1 at <time>') AS reused;
SELECT regexp_replace(pg_temp.try(format('SELECT tenancy.accept_invitation(%L)', :'late_token')), '[0-9a-f-]{36} (.*) at .*$', '<id> \1 at <time>') AS expired;
SELECT pg_temp.try($$ SELECT tenancy.accept_invitation(NULL) $$) AS null_token;
SELECT pg_temp.try('SET LOCAL tenancy.user_id = ''not-a-uuid''; SELECT tenancy.current_user_id()') AS garbage_user_id;
COMMIT;
SELECT role FROM tenancy.memberships WHERE user_id = 'e0000000-0000-0000-0000-00000000000e';

SELECT operation, table_name, status FROM tenancy.migration_log ORDER BY id;
