-- docs/operations.md: an empty database owned by doc_owner; the page installs tenancy itself.
SET ROLE doc_owner;
CREATE TABLE public.shipments (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, organization_id uuid NOT NULL,
                               reference text NOT NULL);
