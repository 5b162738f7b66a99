-- README.md's tour: a single-tenant shipments table with rows; the application role "app";
-- tenancy installed by the database owner (not a superuser).
DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'app') THEN CREATE ROLE app; END IF; END $$;
GRANT app TO doc_owner;
SET ROLE doc_owner;
CREATE TABLE public.shipments (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, reference text NOT NULL, status text);
INSERT INTO public.shipments (reference, status) SELECT 'VBT-' || g, 'booked' FROM generate_series(1, 1000) g;
GRANT SELECT, INSERT, UPDATE, DELETE ON public.shipments TO app;
