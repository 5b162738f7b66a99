-- tenancy.lint(): is this database safely multi-tenant? One row per finding, with the SQL that
-- fixes it. Codes are stable (README, "Lint codes"); a finding is silenced by a row in
-- tenancy.lint_ignores (code, object), or (code, '*') for every object.

CREATE TABLE tenancy.lint_ignores (
    code        text NOT NULL CHECK (code OPERATOR(pg_catalog.~) '^TEN[0-9]{3}$'),
    object      text NOT NULL,
    reason      text,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (code, object)
);
COMMENT ON TABLE tenancy.lint_ignores IS
  'Lint findings a DBA decided to accept: (code, object as lint() prints it), or (code, ''*'') for all objects.';
SELECT pg_catalog.pg_extension_config_dump('tenancy.lint_ignores', '');

-- One query: the tenant tables, their policies and the policies' per-row calls (the CTEs tt, pol,
-- per_row), then one UNION ALL branch per check, TEN001 to TEN017, each under a comment naming
-- it. reason: over 80 lines because it holds 17 checks; each branch is short, and a function per
-- check would repeat the shared CTEs (and plan them again) without reading any better.
CREATE FUNCTION tenancy.lint()
RETURNS TABLE (level text, code text, object text, message text, fix text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $lint$
WITH tt AS (
    SELECT c.oid, c.oid::regclass::text AS tbl, c.relname, c.relnamespace, c.relkind, c.relowner,
           c.relrowsecurity AS rls, c.relforcerowsecurity AS force, c.relacl,
           t.tenant_column::text AS col, t.column_type, a.attnum, a.attnotnull, t.mode, t.details->'isolation' AS isolation
      FROM tenancy.tenant_tables t
      JOIN pg_class c ON c.oid = t.relid
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = t.tenant_column AND NOT a.attisdropped
),
cmds(cmd, label) AS (VALUES ('r', 'SELECT'), ('a', 'INSERT'), ('w', 'UPDATE'), ('d', 'DELETE')),
pol AS (
    SELECT tt.oid, tt.tbl, tt.col, p.polname::text AS polname, p.polcmd::text AS polcmd, p.polpermissive,
           pg_get_expr(p.polqual, p.polrelid) AS qual, pg_get_expr(p.polwithcheck, p.polrelid) AS checkexpr
      FROM tt JOIN pg_policy p ON p.polrelid = tt.oid
),
per_row AS (
    -- Non-immutable functions called outside a sub-select: evaluated once per row.
    SELECT pol.*, array_agg(DISTINCT f.name) AS fns, bool_and(f.constant_args) AS hoistable
      FROM pol
      CROSS JOIN LATERAL (SELECT * FROM tenancy._policy_calls(coalesce(pol.qual, ''))
                          UNION ALL SELECT * FROM tenancy._policy_calls(coalesce(pol.checkexpr, ''))) f
     WHERE EXISTS (SELECT 1 FROM pg_proc pr JOIN pg_namespace n ON n.oid = pr.pronamespace
                    WHERE pr.proname = f.name AND (f.schema IS NULL OR n.nspname = f.schema)
                      AND pr.provolatile <> 'i')
     GROUP BY pol.oid, pol.tbl, pol.col, pol.polname, pol.polcmd, pol.polpermissive, pol.qual, pol.checkexpr
),
fk AS (
    SELECT con.oid, con.conname::text AS conname, child.tbl AS child, child.col AS child_col, child.attnum AS child_att,
           parent.tbl AS parent, parent.col AS parent_col, parent.attnum AS parent_att, parent.oid AS parent_oid,
           con.conkey, con.confkey, pg_get_constraintdef(con.oid) AS def
      FROM pg_constraint con
      JOIN tt child ON child.oid = con.conrelid
      JOIN tt parent ON parent.oid = con.confrelid
     WHERE con.contype = 'f'
),
findings AS (
    -- TEN001: a tenant table without row-level security.
    SELECT 'error' AS level, 'TEN001' AS code, tbl AS object,
           format('tenant table %s has row-level security disabled: every role with table privileges reads every tenant''s rows', tbl) AS message,
           format('SELECT tenancy.enable_isolation(%L, %L);', tbl, col) AS fix
      FROM tt WHERE NOT rls
    UNION ALL
    -- TEN002: enabled but not forced: the table owner bypasses it.
    SELECT 'warning', 'TEN002', tbl,
           format('row-level security on %s is not forced: the table owner (and roles acting as it, e.g. in views) bypass the policies', tbl),
           format('ALTER TABLE %s FORCE ROW LEVEL SECURITY;', tbl)
      FROM tt WHERE rls AND NOT force
    UNION ALL
    -- TEN003: a command no permissive policy allows.
    SELECT 'warning', 'TEN003', format('%s command %s', tt.tbl, cmds.label),
           format('%s has no permissive policy for %s: nobody the policies apply to can %s its rows', tt.tbl, cmds.label, cmds.label),
           format('SELECT tenancy.enable_isolation(%L, %L);', tt.tbl, tt.col)
      FROM tt CROSS JOIN cmds
     WHERE tt.rls AND NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = tt.oid AND p.polpermissive AND p.polname <> 'tenancy_operator'
                                     AND p.polcmd IN (cmds.cmd::"char", '*'))
    UNION ALL
    -- TEN004: a policy that calls a context or membership function per row.
    SELECT 'warning', 'TEN004', format('%s policy %s', tbl, quote_ident(polname)),
           format('policy %s on %s calls %s once per row; wrapped in a scalar sub-select it runs once per statement',
                  quote_ident(polname), tbl, array_to_string(fns, ', ')),
           CASE WHEN hoistable THEN
               format('ALTER POLICY %I ON %s%s%s;', polname, tbl,
                      CASE WHEN qual IS NOT NULL THEN format(' USING (%s)', tenancy._wrap_policy_calls(qual, fns)) ELSE '' END,
                      CASE WHEN checkexpr IS NOT NULL THEN format(' WITH CHECK (%s)', tenancy._wrap_policy_calls(checkexpr, fns)) ELSE '' END)
           END
      FROM per_row
    UNION ALL
    -- TEN005: a permissive policy that is always true.
    SELECT 'error', 'TEN005', format('%s policy %s', tbl, quote_ident(polname)),
           format('permissive policy %s on %s is always true: it lets every role it names reach every tenant''s rows', quote_ident(polname), tbl),
           format('DROP POLICY %I ON %s;', polname, tbl)
      FROM pol
     WHERE polpermissive AND coalesce(qual, 'true') = 'true' AND coalesce(checkexpr, 'true') = 'true'
    UNION ALL
    -- TEN006: several permissive policies for one command, OR-ed, with no restrictive boundary.
    SELECT 'warning', 'TEN006', format('%s command %s', tt.tbl, cmds.label),
           format('%s has %s permissive policies for %s (%s) and no restrictive one: they are OR-ed, so any of them can open another tenant''s rows',
                  tt.tbl, count(*), cmds.label, string_agg(quote_ident(p.polname), ', ' ORDER BY p.polname)),
           format('SELECT tenancy.enable_isolation(%L, %L);', tt.tbl, tt.col)
      FROM tt CROSS JOIN cmds JOIN pg_policy p ON p.polrelid = tt.oid AND p.polpermissive AND p.polcmd IN (cmds.cmd::"char", '*')
     WHERE NOT EXISTS (SELECT 1 FROM pg_policy r WHERE r.polrelid = tt.oid AND NOT r.polpermissive
                          AND r.polcmd IN (cmds.cmd::"char", '*'))
     GROUP BY tt.tbl, tt.col, cmds.label, cmds.cmd
    HAVING count(*) > 1
    UNION ALL
    -- TEN007: a nullable tenant column.
    SELECT 'error', 'TEN007', tbl,
           format('tenant column %s.%I is nullable: a row without an organization belongs to nobody (validate_client_data_integrity() counts them)', tbl, col),
           format('ALTER TABLE %s ALTER COLUMN %I SET NOT NULL;', tbl, col)
      FROM tt WHERE NOT attnotnull
    UNION ALL
    -- TEN008: no index leads with the tenant column.
    SELECT 'warning', 'TEN008', tbl,
           format('no valid index on %s starts with its tenant column %I: every tenant-scoped query reads the whole table', tbl, col),
           format('CREATE INDEX%s %I ON %s (%I);', CASE WHEN relkind = 'r' THEN ' CONCURRENTLY' ELSE '' END,
                  left(relname || '_' || col, 59) || '_idx', tbl, col)
      FROM tt
     WHERE NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = tt.oid AND i.indkey[0] = tt.attnum
                          AND i.indisvalid AND i.indpred IS NULL)
    UNION ALL
    -- TEN009: the tenant column has no validated foreign key to tenancy.organizations.
    SELECT 'warning', 'TEN009', tbl,
           format('tenant column %s.%I has no validated foreign key to tenancy.organizations: rows can name organizations that do not exist', tbl, col),
           coalesce(
               (SELECT format('ALTER TABLE %s VALIDATE CONSTRAINT %I;', tbl, con.conname)
                  FROM pg_constraint con
                 WHERE con.conrelid = tt.oid AND con.contype = 'f' AND con.confrelid = 'tenancy.organizations'::regclass
                   AND con.conkey = ARRAY[tt.attnum] LIMIT 1),
               format('ALTER TABLE %1$s ADD CONSTRAINT %2$I FOREIGN KEY (%3$I) REFERENCES tenancy.organizations (%4$s) NOT VALID; ALTER TABLE %1$s VALIDATE CONSTRAINT %2$I;',
                      tbl, left(relname || '_' || col, 50) || '_tenancy_fk', col,
                      CASE column_type WHEN 'uuid' THEN 'id' ELSE 'slug' END))
      FROM tt
     WHERE NOT EXISTS (SELECT 1 FROM pg_constraint con
                        WHERE con.conrelid = tt.oid AND con.contype = 'f' AND con.convalidated
                          AND con.confrelid = 'tenancy.organizations'::regclass AND con.conkey = ARRAY[tt.attnum])
    UNION ALL
    -- TEN010: a unique constraint or index without the tenant column (surrogate primary keys aside:
    -- one column with an identity, a default or type uuid, or a text id the application fills,
    -- see tenancy._surrogate_key; issue 15: cuid keys are not natural keys).
    SELECT 'warning', 'TEN010', format('%s index %s', tt.tbl, quote_ident(ic.relname)),
           format('unique %s on %s does not include the tenant column %I: two tenants cannot use the same value, and one can probe the other''s',
                  coalesce('constraint ' || quote_ident(con.conname), 'index ' || quote_ident(ic.relname)), tt.tbl, tt.col),
           CASE
               WHEN con.oid IS NOT NULL THEN
                   format('ALTER TABLE %s DROP CONSTRAINT %I, ADD CONSTRAINT %I %s (%I, %s);', tt.tbl, con.conname, con.conname,
                          CASE con.contype WHEN 'p' THEN 'PRIMARY KEY' ELSE 'UNIQUE' END, tt.col,
                          (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.n) FROM unnest(i.indkey) WITH ORDINALITY k(att, n)
                             JOIN pg_attribute a ON a.attrelid = tt.oid AND a.attnum = k.att))
               WHEN 0 <> ALL (i.indkey) AND i.indpred IS NULL THEN
                   format('DROP INDEX %s; CREATE UNIQUE INDEX %I ON %s (%I, %s);', ic.oid::regclass, ic.relname, tt.tbl, tt.col,
                          (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.n) FROM unnest(i.indkey) WITH ORDINALITY k(att, n)
                             JOIN pg_attribute a ON a.attrelid = tt.oid AND a.attnum = k.att))
           END
      FROM tt
      JOIN pg_index i ON i.indrelid = tt.oid AND i.indisunique
      JOIN pg_class ic ON ic.oid = i.indexrelid
      LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = tt.oid AND con.contype IN ('p', 'u')
     WHERE NOT (tt.attnum = ANY (i.indkey))
       AND NOT (i.indisprimary AND i.indnatts = 1 AND tenancy._surrogate_key(tt.oid, i.indkey::int2[]))
    UNION ALL
    -- TEN011: a foreign key between tenant tables that does not carry the tenant column.
    SELECT 'warning', 'TEN011', format('%s constraint %s', fk.child, quote_ident(fk.conname)),
           format('foreign key %s from %s to %s does not include the tenant columns: a row can point at another tenant''s row, and foreign key checks (which bypass RLS) let a tenant probe the other''s keys',
                  quote_ident(fk.conname), fk.child, fk.parent),
           concat_ws(' ',
               CASE WHEN NOT EXISTS (
                        SELECT 1 FROM pg_index pi WHERE pi.indrelid = fk.parent_oid AND pi.indisunique AND pi.indpred IS NULL
                           AND pi.indnatts = array_length(fk.confkey, 1) + 1
                           AND (SELECT array_agg(x ORDER BY x) FROM unnest(pi.indkey::int2[]) x)
                             = (SELECT array_agg(x ORDER BY x) FROM unnest(fk.confkey || fk.parent_att) x))
                    THEN format('ALTER TABLE %s ADD UNIQUE (%I, %s);', fk.parent, fk.parent_col,
                                (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.n) FROM unnest(fk.confkey) WITH ORDINALITY k(att, n)
                                   JOIN pg_attribute a ON a.attrelid = fk.parent_oid AND a.attnum = k.att))
               END,
               -- Built from the catalog's columns (tenancy._fk_definition), never from the constraint's text.
               format('ALTER TABLE %1$s ADD CONSTRAINT %2$I %3$s NOT VALID; ALTER TABLE %1$s VALIDATE CONSTRAINT %2$I; ALTER TABLE %1$s DROP CONSTRAINT %4$I;',
                      fk.child, tenancy._name(fk.conname, 'tenant'),
                      tenancy._fk_definition(fk.oid, fk.child_col, fk.parent_col), fk.conname))
      FROM fk
     WHERE NOT (fk.child_att = ANY (fk.conkey) AND fk.parent_att = ANY (fk.confkey))
    UNION ALL
    -- TEN012: a table next to the tenant tables that looks like tenant data but is not registered.
    SELECT 'warning', 'TEN012', c.oid::regclass::text,
           format('%s has a column %I that looks like %s, but it is not a registered tenant table', c.oid::regclass, a.attname,
                  CASE WHEN a.attname IN ('organization_id', 'organisation_id', 'org_id', 'tenant_id', 'client_id', 'account_id', 'company_id')
                       THEN 'a tenant reference' ELSE 'a user reference' END),
           CASE WHEN a.attname IN ('organization_id', 'organisation_id', 'org_id', 'tenant_id', 'client_id', 'account_id', 'company_id')
                THEN format('SELECT tenancy.register_table(%L, %L);', c.oid::regclass, a.attname)
           END
      FROM pg_class c
      JOIN LATERAL (SELECT a.attname FROM pg_attribute a
                     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                       AND a.attname IN ('organization_id', 'organisation_id', 'org_id', 'tenant_id', 'client_id',
                                         'account_id', 'company_id', 'user_id', 'owner_id', 'created_by')
                     ORDER BY (a.attname IN ('user_id', 'owner_id', 'created_by')), a.attnum LIMIT 1) a ON true
     WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
       AND c.relnamespace IN (SELECT tt.relnamespace FROM tt)
       AND c.oid NOT IN (SELECT tt.oid FROM tt)
    UNION ALL
    -- TEN013: SECURITY DEFINER functions whose search_path a caller can choose.
    SELECT 'warning', 'TEN013', p.oid::regprocedure::text,
           format('SECURITY DEFINER function %s does not pin its search_path: a caller can make it resolve names to objects of their choosing', p.oid::regprocedure),
           format('ALTER FUNCTION %s SET search_path = pg_catalog, %I, pg_temp;', p.oid::regprocedure, n.nspname)
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE p.prosecdef
       AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_%'
       AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) s WHERE s LIKE 'search\_path=%')
       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
    UNION ALL
    -- TEN014: views over tenant tables that read them with their owner's rights.
    SELECT DISTINCT 'warning', 'TEN014', v.oid::regclass::text,
           format('view %s reads tenant table %s with its owner''s rights, not the caller''s', v.oid::regclass, tt.tbl),
           format('ALTER VIEW %s SET (security_invoker = true);', v.oid::regclass)
      FROM tt
      JOIN pg_depend d ON d.refobjid = tt.oid AND d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
      JOIN pg_rewrite r ON r.oid = d.objid
      JOIN pg_class v ON v.oid = r.ev_class AND v.relkind = 'v' AND v.oid <> tt.oid
     WHERE NOT coalesce(v.reloptions @> ARRAY['security_invoker=true'] OR v.reloptions @> ARRAY['security_invoker=on'], false)
    UNION ALL
    -- TEN015: tenant tables readable by PUBLIC or by Supabase's anon role.
    SELECT CASE WHEN tt.rls THEN 'warning' ELSE 'error' END, 'TEN015', format('%s grantee %s', tt.tbl, g.grantee),
           format('%s may SELECT from tenant table %s%s', g.grantee, tt.tbl,
                  CASE WHEN tt.rls THEN ': row-level security is all that stands between them and the rows'
                       ELSE ' and row-level security is off: every tenant''s rows are readable' END),
           format('REVOKE ALL ON %s FROM %s;', tt.tbl, g.grantee)
      FROM tt
      CROSS JOIN LATERAL (
          SELECT 'PUBLIC' AS grantee WHERE EXISTS (SELECT 1 FROM aclexplode(tt.relacl) x
                                                    WHERE x.grantee = 0 AND x.privilege_type = 'SELECT')
          UNION ALL
          SELECT 'anon' WHERE EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon')
                          AND has_table_privilege('anon', tt.oid, 'SELECT')
      ) g
    UNION ALL
    -- TEN016: privileges beyond reading and writing rows, granted on a tenant table to a role
    -- other than its owner that the policies restrict: row-level security stops none of them.
    SELECT 'error', 'TEN016', format('%s grantee %s', tt.tbl, g.grantee),
           format('%s holds %s on tenant table %s: %s; row-level security stops none of this', g.grantee, g.privs, tt.tbl,
                  concat_ws('; ',
                      CASE WHEN g.privs LIKE '%TRUNCATE%' THEN 'TRUNCATE empties every tenant''s rows' END,
                      CASE WHEN g.privs LIKE '%TRIGGER%' THEN 'TRIGGER runs its own code on every tenant''s writes, and sees them' END,
                      CASE WHEN g.privs LIKE '%REFERENCES%' THEN 'REFERENCES lets it probe every tenant''s keys with foreign key checks' END)),
           format('REVOKE %s ON %s FROM %s;', g.privs, tt.tbl, g.grantee)
      FROM tt
      CROSS JOIN LATERAL (
          SELECT CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END AS grantee,
                 string_agg(DISTINCT x.privilege_type, ', ' ORDER BY x.privilege_type) AS privs
            FROM aclexplode(tt.relacl) x LEFT JOIN pg_roles r ON r.oid = x.grantee
           WHERE x.privilege_type IN ('TRIGGER', 'TRUNCATE', 'REFERENCES') AND x.grantee <> tt.relowner
             -- roles the policies restrict: not a superuser or BYPASSRLS role (Supabase's service_role)
             AND NOT coalesce(r.rolsuper OR r.rolbypassrls, false)
           GROUP BY 1) g
    UNION ALL
    -- TEN017: a partition of an isolated table without row-level security or tenancy's policies
    -- (attached or created after enable_isolation): read directly, it is not isolated.
    SELECT 'error', 'TEN017', pc.oid::regclass::text,
           format('partition %s of isolated table %s has %s: queried directly, every tenant''s rows in it are reachable',
                  pc.oid::regclass, tt.tbl,
                  CASE WHEN NOT pc.relrowsecurity THEN 'row-level security disabled'
                       WHEN NOT pc.relforcerowsecurity THEN 'row-level security not forced'
                       ELSE 'not all of tenancy''s boundary policies' END),
           format('SELECT tenancy.enable_isolation(%L, %L, %L, %L);', tt.tbl, tt.col, tt.mode,
                  coalesce((SELECT array_agg(r)::text FROM jsonb_array_elements_text(tt.isolation->'roles') r), '{public}'))
      FROM tt
      CROSS JOIN LATERAL pg_partition_tree(tt.oid) p
      JOIN pg_class pc ON pc.oid = p.relid
     WHERE tt.isolation IS NOT NULL AND p.level > 0 AND pc.relkind IN ('r', 'p')
       AND (NOT pc.relrowsecurity OR NOT pc.relforcerowsecurity
            OR (SELECT count(*) FROM pg_policy pp WHERE pp.polrelid = pc.oid AND NOT pp.polpermissive
                   AND pp.polname LIKE 'tenancy\_%\_boundary') < 4)
)
SELECT f.level, f.code, f.object, f.message, f.fix
  FROM findings f
 WHERE NOT EXISTS (SELECT 1 FROM tenancy.lint_ignores i WHERE i.code = f.code AND i.object IN (f.object, '*'))
 ORDER BY CASE f.level WHEN 'error' THEN 1 WHEN 'warning' THEN 2 ELSE 3 END, f.code, f.object, f.message
$lint$;

COMMENT ON FUNCTION tenancy.lint() IS
  'Is this database safely multi-tenant? One row per finding (level, code, object, message, and the SQL that fixes it). Codes TEN001-TEN017 are listed in the README; silence one with INSERT INTO tenancy.lint_ignores.';
COMMENT ON FUNCTION tenancy._policy_calls(text) IS
  'Internal, for lint(): function calls of a policy expression evaluated once per row.';
COMMENT ON FUNCTION tenancy._wrap_policy_calls(text, text[]) IS
  'Internal, for lint(): the expression with the named constant-argument calls wrapped in a scalar sub-select.';

GRANT SELECT ON tenancy.lint_ignores TO PUBLIC;
ALTER TABLE tenancy.lint_ignores OWNER TO @extowner@;
