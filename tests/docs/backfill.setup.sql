-- docs/backfill.md: seed 000's shape, single-tenant, with data; tenancy installed by the owner.
SET ROLE doc_owner;
CREATE EXTENSION tenancy;
SELECT tenancy.create_organization('VIBOTAJ GmbH', 'vibotaj', id => '00000000-0000-0000-0000-000000000001',
                                   owner_user_id => '11111111-1111-1111-1111-111111111111');
CREATE TABLE public.users (id uuid PRIMARY KEY, email text NOT NULL UNIQUE, role text NOT NULL);
CREATE TABLE public.shipments (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, reference text NOT NULL UNIQUE);
CREATE TABLE public.documents (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                               shipment_id bigint NOT NULL REFERENCES public.shipments, kind text NOT NULL);
CREATE TABLE public.container_events (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                                      shipment_id bigint REFERENCES public.shipments, event text NOT NULL);
CREATE TABLE public.notes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, author_id uuid NOT NULL, body text);
CREATE TABLE public.clients (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL);
INSERT INTO public.users VALUES
  ('11111111-1111-1111-1111-111111111111', 'owner@vibotaj.com', 'admin'),
  ('33333333-3333-3333-3333-333333333333', 'agent@vibotaj.com', 'logistics_agent'),
  ('44444444-4444-4444-4444-444444444444', 'buyer@vibotaj.com', 'buyer');
INSERT INTO public.shipments (reference) SELECT 'VBT-' || g FROM generate_series(1, 2000) g;
INSERT INTO public.documents (shipment_id, kind) SELECT 1 + g % 2000, 'invoice' FROM generate_series(1, 4000) g;
INSERT INTO public.container_events (shipment_id, event) SELECT 1 + g % 2000, 'gate_in' FROM generate_series(1, 3000) g;
INSERT INTO public.notes (author_id, body) SELECT '11111111-1111-1111-1111-111111111111', 'note ' || g FROM generate_series(1, 100) g;
INSERT INTO public.clients (name) SELECT 'client ' || g FROM generate_series(1, 10) g;
INSERT INTO public.container_events (shipment_id, event) SELECT NULL, 'orphan scan' FROM generate_series(1, 100) g;
