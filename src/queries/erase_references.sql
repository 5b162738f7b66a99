-- Foreign keys into tenant tables from tables that are not tenant tables, and from tenant tables
-- whose key does not carry the tenant column. src/lifecycle.rs, REFERENCES_SQL.
SELECT con.conrelid, con.conrelid::pg_catalog.regclass::pg_catalog.text, c.relowner, con.conname::pg_catalog.text,
       con.confrelid, ct.tenant_column::pg_catalog.text,
       tenancy._att_names(con.conrelid, con.conkey), tenancy._att_names(con.confrelid, con.confkey)
  FROM pg_catalog.pg_constraint con
  JOIN tenancy.tenant_tables pt ON pt.relid::pg_catalog.oid OPERATOR(pg_catalog.=) con.confrelid
  JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) con.conrelid
  LEFT JOIN tenancy.tenant_tables ct ON ct.relid::pg_catalog.oid OPERATOR(pg_catalog.=) con.conrelid
 WHERE con.contype OPERATOR(pg_catalog.=) 'f' AND con.conparentid OPERATOR(pg_catalog.=) 0
   AND (ct.relid IS NULL OR NOT EXISTS (
        SELECT 1 FROM pg_catalog.generate_subscripts(con.conkey, 1) i
          JOIN pg_catalog.pg_attribute ca ON ca.attrelid OPERATOR(pg_catalog.=) con.conrelid AND ca.attnum OPERATOR(pg_catalog.=) con.conkey[i]
          JOIN pg_catalog.pg_attribute pa ON pa.attrelid OPERATOR(pg_catalog.=) con.confrelid AND pa.attnum OPERATOR(pg_catalog.=) con.confkey[i]
         WHERE ca.attname OPERATOR(pg_catalog.=) ct.tenant_column AND pa.attname OPERATOR(pg_catalog.=) pt.tenant_column))
 ORDER BY 2, 4
