-- The primary keys, unique constraints and unique indexes of table $1 without its tenant column
-- $2, each with the statements that make it tenant-scoped. src/distribution.rs, key_problems.
SELECT CASE WHEN con.contype = 'p' THEN 'primary key ' WHEN con.contype = 'u' THEN 'unique constraint '
           ELSE 'unique index ' END || pg_catalog.quote_ident(coalesce(con.conname, ic.relname)::text)
      || ' does not include the tenant column ' || pg_catalog.quote_ident($2::text)
      || CASE WHEN con.oid IS NOT NULL THEN pg_catalog.format(
                  ' (to make it tenant-scoped: ALTER TABLE %s DROP CONSTRAINT %I, ADD CONSTRAINT %I %s (%I, %s))',
                  i.indrelid::regclass, con.conname, con.conname,
                  CASE con.contype WHEN 'p' THEN 'PRIMARY KEY' ELSE 'UNIQUE' END, $2::text,
                  tenancy._idents(tenancy._att_names(i.indrelid, i.indkey::int2[])))
              WHEN 0 <> ALL (i.indkey::int2[]) AND i.indpred IS NULL THEN pg_catalog.format(
                  ' (to make it tenant-scoped: DROP INDEX %s; CREATE UNIQUE INDEX %I ON %s (%I, %s))',
                  i.indexrelid::regclass, ic.relname, i.indrelid::regclass, $2::text,
                  tenancy._idents(tenancy._att_names(i.indrelid, i.indkey::int2[])))
              ELSE '' END
 FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
 LEFT JOIN pg_catalog.pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid
       AND con.contype IN ('p', 'u')
WHERE i.indrelid = $1 AND i.indisunique
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = i.indrelid
                     AND a.attname = $2::name AND a.attnum = ANY (i.indkey::int2[]))
ORDER BY 1
