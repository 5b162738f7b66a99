-- docs/lint.md: a tenant table with the usual mistakes (no RLS, a global unique key, no index,
-- no foreign key to the organizations) and a SECURITY DEFINER function without a search_path.
SET ROLE doc_owner;
CREATE EXTENSION tenancy;
CREATE TABLE public.invoices (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                              organization_id uuid, number text NOT NULL UNIQUE, total numeric);
SELECT tenancy.register_table('public.invoices');
CREATE FUNCTION public.f(uuid) RETURNS integer LANGUAGE sql SECURITY DEFINER AS 'SELECT 1';
