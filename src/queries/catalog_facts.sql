-- What the catalogs say about tenant table $1 (tenant column $2): NOT NULL, a validated foreign
-- key to the organizations, an index leading with the column, RLS enabled and forced (on every
-- partition too), a permissive policy for each command. src/integrity.rs, CATALOG_FACTS.
WITH parts AS (
       SELECT pc.oid, pc.relrowsecurity, pc.relforcerowsecurity
         FROM pg_catalog.pg_partition_tree($1::pg_catalog.regclass) pt
         JOIN pg_catalog.pg_class pc ON pc.oid = pt.relid WHERE pt.level > 0 AND pc.relkind IN ('r', 'p')),
    cmds AS (
       SELECT p.polrelid, pg_catalog.count(DISTINCT x) AS n FROM pg_catalog.pg_policy p,
              pg_catalog.unnest(CASE p.polcmd WHEN '*' THEN '{r,a,w,d}'::text[] ELSE ARRAY[p.polcmd::text] END) x
        WHERE p.polpermissive AND p.polname <> 'tenancy_operator' GROUP BY p.polrelid)
SELECT a.attnotnull,
       EXISTS (SELECT 1 FROM pg_catalog.pg_constraint con WHERE con.conrelid = c.oid AND con.contype = 'f'
                  AND con.confrelid = 'tenancy.organizations'::pg_catalog.regclass AND con.conkey = ARRAY[a.attnum]
                  AND con.convalidated),
       EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indkey[0] = a.attnum
                  AND i.indisvalid AND i.indpred IS NULL),
       c.relrowsecurity AND NOT EXISTS (SELECT 1 FROM parts WHERE NOT parts.relrowsecurity),
       c.relforcerowsecurity AND NOT EXISTS (SELECT 1 FROM parts WHERE NOT parts.relforcerowsecurity),
       coalesce((SELECT n FROM cmds WHERE cmds.polrelid = c.oid), 0) = 4
       AND NOT EXISTS (SELECT 1 FROM parts WHERE coalesce((SELECT n FROM cmds WHERE cmds.polrelid = parts.oid), 0) < 4)
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = $2::name
 WHERE c.oid = $1
