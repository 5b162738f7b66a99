-- docs/api.md: a database owner (doc_owner, not a superuser) installed tenancy; a shipments table.
SET ROLE doc_owner;
CREATE EXTENSION tenancy;
CREATE TABLE public.shipments (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                               organization_id uuid NOT NULL REFERENCES tenancy.organizations,
                               reference text NOT NULL);
CREATE INDEX ON public.shipments (organization_id, id);
