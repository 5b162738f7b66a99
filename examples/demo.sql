-- tenancy demo: a single-tenant shipment-tracking app (after seed 000, TraceHub) becomes
-- multi-tenant. Run by scripts/demo.sh as the database owner, who is NOT a superuser.
\set ON_ERROR_STOP 1
\pset footer off
\echo '== 1. The single-tenant app: shipments, documents and products of one company'
CREATE TABLE public.shipments (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, reference text NOT NULL UNIQUE, status text NOT NULL);
CREATE TABLE public.documents (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, shipment_id bigint NOT NULL REFERENCES public.shipments, kind text NOT NULL);
CREATE TABLE public.products  (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, sku text NOT NULL UNIQUE, name text NOT NULL);
INSERT INTO public.shipments (reference, status) SELECT 'VBT-' || g, (ARRAY['booked','in_transit','delivered'])[1 + g % 3] FROM generate_series(1, 300) g;
INSERT INTO public.documents (shipment_id, kind) SELECT 1 + g % 300, (ARRAY['bill_of_lading','invoice','eudr_certificate'])[1 + g % 3] FROM generate_series(1, 900) g;
INSERT INTO public.products (sku, name) SELECT 'SKU-' || g, 'Product ' || g FROM generate_series(1, 50) g;
SELECT (SELECT count(*) FROM public.shipments) AS shipments, (SELECT count(*) FROM public.documents) AS documents,
       (SELECT count(*) FROM public.products) AS products;

\echo '== 2. CREATE EXTENSION tenancy (done by the database owner); the organizations'
SELECT tenancy.create_organization('VIBOTAJ GmbH', 'vibotaj', '00000000-0000-0000-0000-000000000001',
                                   '{"timezone": "Europe/Berlin", "currency": "EUR"}',
                                   owner_user_id => '11111111-1111-1111-1111-111111111111') AS vibotaj;
SELECT tenancy.create_organization('Acme Imports', 'acme', '00000000-0000-0000-0000-000000000002',
                                   owner_user_id => '22222222-2222-2222-2222-222222222222') AS acme;
SELECT tenancy.add_member('00000000-0000-0000-0000-000000000001', '33333333-3333-3333-3333-333333333333', 'viewer') AS viewer_added;
SELECT tenancy.create_invitation('00000000-0000-0000-0000-000000000001', 'new.buyer@vibotaj.com', 'member') IS NOT NULL AS invitation_created;
SELECT o.slug, m.user_id, m.role, m.is_default FROM tenancy.memberships m JOIN tenancy.organizations o ON o.id = m.organization_id ORDER BY 1, 3;

\echo '== 3. The online backfill: every shipment to the default organization, each document to its'
\echo '      shipment''s, in batches with a COMMIT each; indexes built CONCURRENTLY (pending_statements);'
\echo '      unique keys and foreign keys rewritten to include organization_id'
CALL tenancy.backfill_all('{public.shipments,public.documents}', organization_id => '00000000-0000-0000-0000-000000000001',
                          derive => '{"public.documents": {"parent": "public.shipments"}}', batch_size => 100);
SELECT statement FROM tenancy.pending_statements() \gexec
CALL tenancy.backfill_all('{public.shipments,public.documents}', organization_id => '00000000-0000-0000-0000-000000000001',
                          derive => '{"public.documents": {"parent": "public.shipments"}}');
SELECT table_name, phase, rows_done, fill_percent FROM tenancy.backfill_progress ORDER BY 1;
\d public.documents
-- products were converted by hand, and forgotten halfway: a column, registered, never filled.
ALTER TABLE public.products ADD COLUMN organization_id uuid;
SELECT tenancy.register_table('public.products') AS column_type;

\echo '== 4. tenancy.validate_client_data_integrity(): products were forgotten (NULL tenant, no NOT NULL, no FK,'
\echo '      no index); no table has RLS yet (section 7)'
SELECT * FROM tenancy.validate_client_data_integrity();
CALL tenancy.backfill('public.products', organization_id => '00000000-0000-0000-0000-000000000001', build_indexes => true);
\echo '   ...fixed with the backfill:'
SELECT table_name, total_rows, null_rows, orphan_rows, cross_tenant_rows, not_null, fk_validated, tenant_index
  FROM tenancy.validate_client_data_integrity();

\echo '== 5. The seed functions, as called from psql'
SELECT tenancy.get_user_organization_id('11111111-1111-1111-1111-111111111111') AS owner_org,
       tenancy.validate_client_access('33333333-3333-3333-3333-333333333333', '00000000-0000-0000-0000-000000000001') AS viewer_may_access_vibotaj,
       tenancy.validate_client_access('22222222-2222-2222-2222-222222222222', '00000000-0000-0000-0000-000000000001') AS acme_may_access_vibotaj;

\echo '== 6. The tenant context of a request, as the application role (not the owner, who administers tenants)'
BEGIN;
SET LOCAL ROLE tracehub_app;
SET LOCAL tenancy.user_id = '22222222-2222-2222-2222-222222222222';
SELECT tenancy.current_user_id() AS acting_user, tenancy.current_organization_slug() AS acting_for;
\echo '   Acme''s user forges the organization setting to VIBOTAJ: the context becomes NULL (matches nothing)'
SELECT set_config('tenancy.organization_id', '00000000-0000-0000-0000-000000000001', true) IS NOT NULL AS forged;
SELECT tenancy.current_organization_id() AS context_after_forgery;
\echo '   ...and set_organization refuses it (the ERROR below is the point: SQLSTATE 42501, insufficient_privilege):'
SAVEPOINT s;
\set ON_ERROR_STOP 0
SELECT tenancy.set_organization('00000000-0000-0000-0000-000000000001');
\set ON_ERROR_STOP 1
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT tenancy.current_user_id() IS NULL AS no_context_after_commit;

\echo '== 7. Row-level security in one call: every table of the schema that has organization_id'
SELECT * FROM tenancy.enable_isolation_all('public');
GRANT SELECT, INSERT, UPDATE, DELETE ON public.shipments, public.documents, public.products TO tracehub_app;
SELECT policyname, permissive, cmd FROM pg_policies WHERE tablename = 'shipments' ORDER BY cmd, permissive;
\echo '   VIBOTAJ''s owner sees VIBOTAJ''s 300 shipments; the context is read once per statement (InitPlan), the index still used'
BEGIN;
SET LOCAL ROLE tracehub_app;
SET LOCAL tenancy.user_id = '11111111-1111-1111-1111-111111111111';
SELECT count(*) AS shipments_visible FROM public.shipments;
EXPLAIN (COSTS OFF) SELECT * FROM public.shipments WHERE id = 42;
COMMIT;
\echo '   Acme''s owner sees none of them; a new row lands in Acme by default'
BEGIN;
SET LOCAL ROLE tracehub_app;
SET LOCAL tenancy.user_id = '22222222-2222-2222-2222-222222222222';
SELECT count(*) AS shipments_visible FROM public.shipments;
INSERT INTO public.shipments (reference, status) VALUES ('ACME-1', 'booked');
SELECT s.reference, o.slug AS organization FROM public.shipments s JOIN tenancy.organizations o ON o.id = s.organization_id;
\echo '   ...and cannot write into VIBOTAJ (the ERROR below is the point: 42501, new row violates row-level security):'
SAVEPOINT s;
\set ON_ERROR_STOP 0
INSERT INTO public.shipments (reference, status, organization_id) VALUES ('ACME-2', 'booked', '00000000-0000-0000-0000-000000000001');
\set ON_ERROR_STOP 1
ROLLBACK TO SAVEPOINT s;
COMMIT;
\echo '   A viewer of VIBOTAJ reads, but its updates touch nothing; no context at all reads nothing'
BEGIN;
SET LOCAL ROLE tracehub_app;
SET LOCAL tenancy.user_id = '33333333-3333-3333-3333-333333333333';
SELECT count(*) AS shipments_visible FROM public.shipments;
UPDATE public.shipments SET status = 'cancelled';
COMMIT;
BEGIN;
SET LOCAL ROLE tracehub_app;
SELECT count(*) AS shipments_visible_without_context FROM public.shipments;
COMMIT;

\echo '== 8. tenancy.lint(): is the database safely multi-tenant yet? What is left, and the SQL that fixes each'
SELECT level, code, object, fix FROM tenancy.lint();

\echo '== 9. What tenancy logged'
SELECT operation, coalesce(table_name, '') AS table_name, status FROM tenancy.migration_log ORDER BY id;
