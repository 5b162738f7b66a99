-- docs/isolation.md: roles the examples use, tenancy installed by the database owner, organizations,
DROP DATABASE IF EXISTS ids_demo;
-- members, and the tables the policy generators are shown on.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'app') THEN CREATE ROLE app; END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN CREATE ROLE authenticated; END IF;
END $$;
GRANT app, authenticated TO doc_owner;
SET ROLE doc_owner;
CREATE EXTENSION tenancy;
SELECT tenancy.create_organization('VIBOTAJ GmbH', 'vibotaj', id => '00000000-0000-0000-0000-000000000001',
                                   owner_user_id => '11111111-1111-1111-1111-111111111111');
SELECT tenancy.create_organization('Acme Imports', 'acme', id => '00000000-0000-0000-0000-000000000002',
                                   owner_user_id => '22222222-2222-2222-2222-222222222222');
SELECT tenancy.add_member('00000000-0000-0000-0000-000000000002', '11111111-1111-1111-1111-111111111111', 'viewer');
CREATE TABLE public.shipments (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                               organization_id uuid NOT NULL REFERENCES tenancy.organizations, reference text NOT NULL);
CREATE INDEX ON public.shipments (organization_id, id);
CREATE TABLE public.parts (id bigint PRIMARY KEY, tenant_id text NOT NULL, name text);
CREATE TABLE public.orders (id bigint PRIMARY KEY, organization_id uuid NOT NULL, total numeric);
CREATE TABLE public.profiles (id uuid PRIMARY KEY, organization_id uuid NOT NULL, name text);
INSERT INTO public.shipments (organization_id, reference)
  SELECT (ARRAY['00000000-0000-0000-0000-000000000001', '00000000-0000-0000-0000-000000000002'])[1 + g % 2]::uuid, 'S-' || g
  FROM generate_series(1, 100) g;
GRANT SELECT, INSERT, UPDATE, DELETE ON public.shipments, public.orders TO app;
