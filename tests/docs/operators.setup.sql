-- docs/operators.md: runbook 001's shape after the conversion: users with a client_id, isolated,
-- rows in two organizations; a login role for the authentication service.
DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'app_login') THEN CREATE ROLE app_login; END IF; END $$;
GRANT app_login TO doc_owner;
SET ROLE doc_owner;
CREATE EXTENSION tenancy;
SELECT tenancy.create_organization('Default Organization', 'default', id => '00000000-0000-0000-0000-000000000001');
SELECT tenancy.create_organization('Acme Retail', 'acme', id => '00000000-0000-0000-0000-000000000002');
CREATE TABLE public.users (id uuid PRIMARY KEY, client_id uuid NOT NULL REFERENCES tenancy.organizations,
                           email text NOT NULL, password_hash text NOT NULL, full_name text);
CREATE UNIQUE INDEX ON public.users (client_id, id);
INSERT INTO public.users VALUES
  ('11111111-1111-1111-1111-111111111111', '00000000-0000-0000-0000-000000000001', 'alice@example.com', 'hash-a', 'Alice'),
  ('22222222-2222-2222-2222-222222222222', '00000000-0000-0000-0000-000000000001', 'bob@example.com', 'hash-b', 'Bob'),
  ('33333333-3333-3333-3333-333333333333', '00000000-0000-0000-0000-000000000002', 'carol@example.com', 'hash-c', 'Carol');
SELECT tenancy.enable_isolation('public.users', 'client_id');
