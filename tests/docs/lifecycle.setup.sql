-- docs/lifecycle.md: two organizations with rows in two isolated tenant tables (shipments and
-- their documents, ON DELETE CASCADE); tenancy installed by the database owner (not a superuser).
SET ROLE doc_owner;
CREATE EXTENSION tenancy;
SELECT tenancy.create_organization('VIBOTAJ GmbH', 'vibotaj', id => '00000000-0000-0000-0000-000000000001',
                                   owner_user_id => '11111111-1111-1111-1111-111111111111');
SELECT tenancy.create_organization('Acme Trading', 'acme', id => '00000000-0000-0000-0000-0000000000a2',
                                   owner_user_id => '22222222-2222-2222-2222-222222222222');
CREATE TABLE public.shipments (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                               organization_id uuid NOT NULL REFERENCES tenancy.organizations,
                               reference text NOT NULL,
                               UNIQUE (organization_id, id), UNIQUE (organization_id, reference));
CREATE TABLE public.documents (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                               organization_id uuid NOT NULL REFERENCES tenancy.organizations,
                               shipment_id bigint NOT NULL, kind text NOT NULL,
                               UNIQUE (organization_id, id),
                               FOREIGN KEY (organization_id, shipment_id)
                                   REFERENCES public.shipments (organization_id, id) ON DELETE CASCADE);
CREATE INDEX ON public.documents (organization_id, shipment_id);
INSERT INTO public.shipments (organization_id, reference)
SELECT CASE WHEN g % 4 = 0 THEN '00000000-0000-0000-0000-0000000000a2'::uuid ELSE '00000000-0000-0000-0000-000000000001' END,
       'S-' || g FROM generate_series(1, 2000) g;
INSERT INTO public.documents (organization_id, shipment_id, kind)
SELECT s.organization_id, s.id, k FROM public.shipments s, unnest('{invoice,bill_of_lading}'::text[]) k;
SELECT tenancy.register_table('public.shipments');
SELECT tenancy.register_table('public.documents');
SELECT tenancy.enable_isolation('public.shipments');
SELECT tenancy.enable_isolation('public.documents');
ANALYZE;
