-- An administrator's export: the tables (of $1, a JSON list of {relid}) owned by a role other
-- than $2 (the administrator) whose reading would run that owner's code: a relation in its tree
-- that is not a table, a policy tenancy did not write, a column of a type that is not built in
-- (an enum without a cast to json aside). src/export.rs, refuse_owner_code_for_administrator.
WITH RECURSIVE tree AS (
    SELECT x.relid AS top, x.relid FROM pg_catalog.jsonb_to_recordset($1) x(relid pg_catalog.oid)
    UNION
    SELECT tree.top, i.inhrelid FROM pg_catalog.pg_inherits i JOIN tree ON i.inhparent OPERATOR(pg_catalog.=) tree.relid)
SELECT pg_catalog.string_agg(DISTINCT tree.top::pg_catalog.regclass::pg_catalog.text, ', ')
  FROM tree
  JOIN pg_catalog.pg_class top ON top.oid OPERATOR(pg_catalog.=) tree.top
  JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) tree.relid
 WHERE top.relowner OPERATOR(pg_catalog.<>) $2
   AND (c.relkind OPERATOR(pg_catalog.<>) ALL (ARRAY['r', 'p']::"char"[])
        OR EXISTS (SELECT 1 FROM pg_catalog.pg_policy p
                    WHERE p.polrelid OPERATOR(pg_catalog.=) c.oid
                      AND p.polname::pg_catalog.text OPERATOR(pg_catalog.!~) '^tenancy_')
        OR EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                     JOIN pg_catalog.pg_type t ON t.oid OPERATOR(pg_catalog.=) a.atttypid
                     JOIN pg_catalog.pg_type b ON b.oid OPERATOR(pg_catalog.=)
                          CASE WHEN t.typtype OPERATOR(pg_catalog.=) 'd' THEN t.typbasetype ELSE t.oid END
                    WHERE a.attrelid OPERATOR(pg_catalog.=) c.oid AND a.attnum OPERATOR(pg_catalog.>) 0
                      AND NOT a.attisdropped
                      AND (t.oid OPERATOR(pg_catalog.>=) 16384 OR b.oid OPERATOR(pg_catalog.>=) 16384
                           OR b.typelem OPERATOR(pg_catalog.>=) 16384)
                      AND NOT (b.typtype OPERATOR(pg_catalog.=) 'e' AND t.typtype OPERATOR(pg_catalog.=) 'e'
                               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_cast k
                                                WHERE k.castsource OPERATOR(pg_catalog.=) t.oid
                                                  AND k.casttarget OPERATOR(pg_catalog.=) ANY
                                                      (ARRAY['pg_catalog.json'::pg_catalog.regtype,
                                                             'pg_catalog.jsonb'::pg_catalog.regtype]::pg_catalog.oid[])))))
