-- docs/citus.md: one isolated tenant table with tenant-scoped keys.
SET ROLE doc_owner;
CREATE EXTENSION tenancy;
CREATE TABLE public.shipments (organization_id uuid NOT NULL REFERENCES tenancy.organizations, id bigint NOT NULL,
                               reference text NOT NULL, PRIMARY KEY (organization_id, id));
SELECT tenancy.enable_isolation('public.shipments');
