-- Smoke test of an installed tenancy package (scripts/package-test.sh runs it in a fresh database
-- owned by the non-superuser "smoke_owner", connected as that owner): the trusted install, an
-- organization per tenant, isolation of a table, and what the application role sees.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS tenancy;
SELECT extversion AS installed FROM pg_extension WHERE extname = 'tenancy' \gset
CREATE TABLE notes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    organization_id uuid NOT NULL, body text NOT NULL);
GRANT SELECT, INSERT ON notes TO smoke_app;
SELECT tenancy.create_organization('Acme', 'acme', '00000000-0000-0000-0000-00000000000a');
SELECT tenancy.create_organization('Beta', 'beta', '00000000-0000-0000-0000-00000000000b');
SELECT tenancy.add_member('00000000-0000-0000-0000-00000000000a', '00000000-0000-0000-0000-0000000000a1', 'member');
INSERT INTO notes (organization_id, body) VALUES
  ('00000000-0000-0000-0000-00000000000a', 'acme 1'), ('00000000-0000-0000-0000-00000000000a', 'acme 2'),
  ('00000000-0000-0000-0000-00000000000b', 'beta 1');
SELECT tenancy.enable_isolation('notes') IS NOT NULL AS isolated;
BEGIN;
SET LOCAL ROLE smoke_app;
SET LOCAL tenancy.user_id = '00000000-0000-0000-0000-0000000000a1';
SELECT pg_catalog.string_agg(body, ',' ORDER BY body) AS seen FROM notes \gset
INSERT INTO notes (body) VALUES ('acme 3');   -- the tenant column defaults to the context
COMMIT;
BEGIN;
SET LOCAL ROLE smoke_app;
SET LOCAL tenancy.user_id = '00000000-0000-0000-0000-0000000000a1';
SELECT pg_catalog.count(*) AS after_insert FROM notes \gset
COMMIT;
SELECT :'seen' = 'acme 1,acme 2' AND :after_insert = 3 AS ok, :'installed' AS installed \gset
\if :ok
\echo smoke: ok (tenancy :installed, the member saw :seen, then its own insert)
\else
\echo smoke: FAILED (the member saw :seen, then :after_insert rows)
\endif
