-- tenancy.lint(): one deliberately broken table (or view, or function) per finding code; the
-- finding appears, the fix SQL it prints is applied as printed (psql \gexec), and it is gone.
\set SHOW_CONTEXT never
\pset format unaligned
CREATE EXTENSION tenancy;
SELECT tenancy.create_organization('Org A', 'org-a', '00000000-0000-0000-0000-00000000000a') IS NOT NULL AS created;
CREATE SCHEMA shop;

-- A table converted the way tenancy converts it lints clean.
CREATE TABLE shop.good (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                        organization_id uuid NOT NULL REFERENCES tenancy.organizations (id),
                        reference text NOT NULL, UNIQUE (organization_id, reference));
SELECT tenancy.enable_isolation('shop.good') IS NOT NULL AS isolated;
SELECT * FROM tenancy.lint();

-- The same shape, broken in one way each.
CREATE FUNCTION pg_temp.good_table(t text, extra text DEFAULT '') RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('CREATE TABLE shop.%I (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    organization_id uuid NOT NULL REFERENCES tenancy.organizations (id), body text%s)', t, extra);
    EXECUTE format('CREATE INDEX ON shop.%I (organization_id)', t);
END $$;
-- TEN001: registered, never isolated.
SELECT pg_temp.good_table('t001');
SELECT tenancy.register_table('shop.t001');
-- TEN002: not forced.
SELECT pg_temp.good_table('t002');
SELECT tenancy.enable_isolation('shop.t002') IS NOT NULL;
ALTER TABLE shop.t002 NO FORCE ROW LEVEL SECURITY;
-- TEN003: no permissive DELETE policy.
SELECT pg_temp.good_table('t003');
SELECT tenancy.enable_isolation('shop.t003') IS NOT NULL;
DROP POLICY tenancy_delete_access ON shop.t003;
-- TEN004: a hand-written policy that calls a user-written context helper per row.
CREATE FUNCTION shop.auth_uid() RETURNS uuid LANGUAGE sql STABLE AS $$ SELECT tenancy.current_user_id() $$;
SELECT pg_temp.good_table('t004', ', owner_id uuid');
CREATE POLICY own_rows ON shop.t004 FOR SELECT USING (owner_id = shop.auth_uid() AND body <> 'x');
SELECT tenancy.enable_isolation('shop.t004') IS NOT NULL;
-- TEN005: an always-true permissive policy (the boundary still holds, but it is a trap).
SELECT pg_temp.good_table('t005');
SELECT tenancy.enable_isolation('shop.t005') IS NOT NULL;
CREATE POLICY open_to_all ON shop.t005 FOR SELECT USING (true);
-- TEN006: two permissive policies, OR-ed, and no boundary.
SELECT pg_temp.good_table('t006', ', owner_id uuid');
SELECT tenancy.register_table('shop.t006');
ALTER TABLE shop.t006 ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY by_owner ON shop.t006 USING (owner_id = (SELECT tenancy.current_user_id()));
CREATE POLICY by_org ON shop.t006 USING (organization_id = (SELECT tenancy.current_organization_id()));
-- TEN007: nullable tenant column.
CREATE TABLE shop.t007 (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                        organization_id uuid REFERENCES tenancy.organizations (id));
CREATE INDEX ON shop.t007 (organization_id);
SELECT tenancy.enable_isolation('shop.t007') IS NOT NULL;
-- TEN008: no index on the tenant column.
CREATE TABLE shop.t008 (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                        organization_id uuid NOT NULL REFERENCES tenancy.organizations (id));
SELECT tenancy.enable_isolation('shop.t008') IS NOT NULL;
-- TEN009: no foreign key to the organizations; and one that was never validated.
CREATE TABLE shop.t009 (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, organization_id uuid NOT NULL);
CREATE INDEX ON shop.t009 (organization_id);
SELECT tenancy.enable_isolation('shop.t009') IS NOT NULL;
CREATE TABLE shop.t009b (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, tenant_id text NOT NULL);
ALTER TABLE shop.t009b ADD CONSTRAINT t009b_tenant FOREIGN KEY (tenant_id) REFERENCES tenancy.organizations (slug) NOT VALID;
CREATE INDEX ON shop.t009b (tenant_id);
SELECT tenancy.enable_isolation('shop.t009b', 'tenant_id') IS NOT NULL;
-- TEN010: a unique constraint, and a unique index, without the tenant column (seed 000: reference).
SELECT pg_temp.good_table('t010', ', reference text NOT NULL UNIQUE, email text');
CREATE UNIQUE INDEX t010_email ON shop.t010 (email);
SELECT tenancy.enable_isolation('shop.t010') IS NOT NULL;
-- TEN011: documents point at shipments by id alone (seed 000).
SELECT pg_temp.good_table('ships');
SELECT pg_temp.good_table('docs', ', ship_id bigint NOT NULL REFERENCES shop.ships (id) ON DELETE CASCADE');
SELECT tenancy.enable_isolation('shop.ships') IS NOT NULL, tenancy.enable_isolation('shop.docs') IS NOT NULL;
-- TEN012: tenant data next to the tenant tables, not registered.
SELECT pg_temp.good_table('t012');
-- TEN013: SECURITY DEFINER without a pinned search_path.
CREATE FUNCTION shop.lookup_anything(uuid) RETURNS bigint LANGUAGE sql SECURITY DEFINER AS $$ SELECT 1::bigint $$;
-- TEN014: a view over a tenant table that reads it as its owner.
CREATE VIEW shop.good_view AS SELECT * FROM shop.good;
-- TEN015: a tenant table readable by PUBLIC.
SELECT pg_temp.good_table('t015');
SELECT tenancy.enable_isolation('shop.t015') IS NOT NULL;
GRANT SELECT ON shop.t015 TO PUBLIC;

SELECT level, code, object, message FROM tenancy.lint();
SELECT code, object, fix FROM tenancy.lint();
SELECT array_agg(DISTINCT code ORDER BY code) = (SELECT array_agg('TEN' || lpad(g::text, 3, '0')) FROM generate_series(1, 15) g)
       AS every_code_found FROM tenancy.lint();

-- A finding can be silenced per object.
INSERT INTO tenancy.lint_ignores (code, object, reason) VALUES ('TEN013', 'shop.lookup_anything(uuid)', 'returns a constant');
SELECT count(*) AS ten013_after_ignore FROM tenancy.lint() WHERE code = 'TEN013';
DELETE FROM tenancy.lint_ignores;

-- Apply every fix as printed. Registering a table (TEN012) brings that table's own findings,
-- which the second round fixes.
SELECT fix FROM tenancy.lint() WHERE fix IS NOT NULL \gexec
SELECT code, object, fix FROM tenancy.lint();
SELECT fix FROM tenancy.lint() WHERE fix IS NOT NULL \gexec
SELECT * FROM tenancy.lint();

-- What the fixes made of the tricky ones.
SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'shop.docs'::regclass AND contype = 'f' ORDER BY 1;
SELECT indexrelid::regclass, pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = 'shop.t010'::regclass ORDER BY 1;
SELECT polname, pg_get_expr(polqual, polrelid) FROM pg_policy WHERE polrelid = 'shop.t004'::regclass AND polname = 'own_rows';
