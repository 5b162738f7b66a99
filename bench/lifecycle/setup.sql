-- The lifecycle benchmark's tables (scripts/bench.sh, part 5): shipments and their documents
-- (ON DELETE CASCADE), converted and isolated, with :n_orgs background organizations of
-- :per_org shipments (and two documents each).
CREATE TABLE lc_shipments (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                           organization_id uuid NOT NULL REFERENCES tenancy.organizations,
                           reference text NOT NULL, status text NOT NULL, payload text,
                           created_at timestamptz NOT NULL DEFAULT now(),
                           UNIQUE (organization_id, id), UNIQUE (organization_id, reference));
CREATE TABLE lc_documents (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                           organization_id uuid NOT NULL REFERENCES tenancy.organizations,
                           shipment_id bigint NOT NULL, kind text NOT NULL, body text,
                           UNIQUE (organization_id, id),
                           FOREIGN KEY (organization_id, shipment_id) REFERENCES lc_shipments (organization_id, id) ON DELETE CASCADE);
CREATE INDEX ON lc_documents (organization_id, shipment_id);
SELECT tenancy.register_table('lc_shipments');
SELECT tenancy.register_table('lc_documents');
SELECT tenancy.enable_isolation('lc_shipments');
SELECT tenancy.enable_isolation('lc_documents');
-- One organization's rows: bench/lifecycle/fill.sql with :org and :per_org.
CREATE FUNCTION lc_fill(org uuid, per_org integer) RETURNS void LANGUAGE sql AS $$
    INSERT INTO lc_shipments (organization_id, reference, status, payload)
    SELECT org, 'S-' || g, (ARRAY['draft', 'in_transit', 'delivered'])[1 + g % 3], md5(g::text) || md5(org::text)
      FROM generate_series(1, per_org) g;
    INSERT INTO lc_documents (organization_id, shipment_id, kind, body)
    SELECT s.organization_id, s.id, k, md5(s.id::text || k) FROM lc_shipments s, unnest('{invoice,bill_of_lading}'::text[]) k
     WHERE s.organization_id = org;
$$;
SELECT tenancy.create_organization('LC background ' || g, 'lc-bg-' || g, id => ('cccccccc-0000-4000-8000-' || lpad(g::text, 12, '0'))::uuid)
  FROM generate_series(1, :n_orgs) g;
SELECT lc_fill(('cccccccc-0000-4000-8000-' || lpad(g::text, 12, '0'))::uuid, :per_org) FROM generate_series(1, :n_orgs) g;
VACUUM ANALYZE lc_shipments, lc_documents;
