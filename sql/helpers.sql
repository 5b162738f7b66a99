-- Helpers shared by lint, the backfill and the integrity report. Loaded after the catalog and
-- before everything that uses them. Every statement that goes into DDL is built here from
-- catalog columns, each identifier quoted; never from the text of a definition.

-- The column names of attribute numbers p_atts of p_rel, in that order.
CREATE FUNCTION tenancy._att_names(p_rel oid, p_atts int2[]) RETURNS text[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(array_agg(a.attname::text ORDER BY k.n), '{}')
      FROM unnest(p_atts) WITH ORDINALITY k(att, n)
      JOIN pg_attribute a ON a.attrelid = p_rel AND a.attnum = k.att
$$;

-- "a", "b" for a list of column names.
CREATE FUNCTION tenancy._idents(p_cols text[]) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT string_agg(quote_ident(c), ', ' ORDER BY n) FROM unnest(p_cols) WITH ORDINALITY u(c, n)
$$;

-- The longest prefix of p_text that fits in p_bytes bytes, never cutting a character in two.
CREATE FUNCTION tenancy._byte_prefix(p_text text, p_bytes integer) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE n integer := least(length(p_text), greatest(p_bytes, 0));
BEGIN
    WHILE octet_length(left(p_text, n)) > p_bytes LOOP
        n := n - 1;
    END LOOP;
    RETURN left(p_text, n);
END $$;

-- A name of at most 63 bytes (NAMEDATALEN - 1) made of p_base and p_suffix: p_base_p_suffix when
-- it fits, else a prefix of p_base, 8 hex digits of its md5 and p_suffix (Postgres would
-- otherwise truncate the name silently, and a lookup by the untruncated name would never find it).
CREATE FUNCTION tenancy._name(p_base text, p_suffix text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN octet_length(p_base || '_' || p_suffix) <= 63 THEN p_base || '_' || p_suffix
                ELSE tenancy._byte_prefix(p_base, 53 - octet_length(p_suffix)) || '_' || left(md5(p_base), 8)
                     || '_' || tenancy._byte_prefix(p_suffix, 52) END
$$;

-- The definition of foreign key p_con, built from the catalog (its columns, each quoted; the
-- referenced table as regclass prints it; its match type, actions and deferrability), with the
-- tenant columns p_col (of the referencing table) and p_pcol (of the referenced one) put first
-- when given. ON DELETE SET NULL / SET DEFAULT then names the key columns alone, so that a
-- delete never clears the tenant column. p_on_update false leaves the update action out (NO
-- ACTION: Citus refuses cascading updates of the distribution column).
CREATE FUNCTION tenancy._fk_definition(p_con oid, p_col text DEFAULT NULL, p_pcol text DEFAULT NULL,
                                       p_on_update boolean DEFAULT true)
RETURNS text LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT format('FOREIGN KEY (%s) REFERENCES %s (%s)%s%s%s%s',
                  tenancy._idents(CASE WHEN p_col IS NULL THEN k.cols ELSE ARRAY[p_col] || k.cols END),
                  con.confrelid::regclass,
                  tenancy._idents(CASE WHEN p_pcol IS NULL THEN k.pcols ELSE ARRAY[p_pcol] || k.pcols END),
                  CASE con.confmatchtype WHEN 'f' THEN ' MATCH FULL' ELSE '' END,
                  CASE WHEN NOT p_on_update THEN ''
                       ELSE CASE con.confupdtype WHEN 'c' THEN ' ON UPDATE CASCADE' WHEN 'n' THEN ' ON UPDATE SET NULL'
                                                 WHEN 'd' THEN ' ON UPDATE SET DEFAULT' WHEN 'r' THEN ' ON UPDATE RESTRICT'
                                                 ELSE '' END END,
                  CASE con.confdeltype WHEN 'c' THEN ' ON DELETE CASCADE' WHEN 'r' THEN ' ON DELETE RESTRICT'
                                       WHEN 'n' THEN ' ON DELETE SET NULL' || k.setcols
                                       WHEN 'd' THEN ' ON DELETE SET DEFAULT' || k.setcols ELSE '' END,
                  CASE WHEN con.condeferrable
                       THEN ' DEFERRABLE' || CASE WHEN con.condeferred THEN ' INITIALLY DEFERRED' ELSE '' END
                       ELSE '' END)
      FROM pg_constraint con
     CROSS JOIN LATERAL (
        SELECT tenancy._att_names(con.conrelid, con.conkey) AS cols,
               tenancy._att_names(con.confrelid, con.confkey) AS pcols,
               CASE WHEN con.confdelsetcols IS NOT NULL AND cardinality(con.confdelsetcols) > 0
                    THEN ' (' || tenancy._idents(tenancy._att_names(con.conrelid, con.confdelsetcols)) || ')'
                    WHEN p_col IS NOT NULL
                    THEN ' (' || tenancy._idents(tenancy._att_names(con.conrelid, con.conkey)) || ')'
                    ELSE '' END AS setcols) k
     WHERE con.oid = p_con AND con.contype = 'f'
$$;

-- Is key p_keys of p_rel a surrogate key, one whose values mean nothing outside the row (lint
-- TEN010 and the backfill leave a surrogate primary key as it is)? One column that the database
-- fills (identity, default), a uuid, or a text/varchar column the application fills with ids
-- (cuid, ulid, nanoid) -- named id, uuid, guid, cuid, ulid or ending in _id, _uuid, ... A text key
-- named otherwise (email, sku, code, username, slug) is a natural key: tenants would share it.
CREATE FUNCTION tenancy._surrogate_key(p_rel oid, p_keys int2[]) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT cardinality(p_keys) = 1 AND EXISTS (
        SELECT 1 FROM pg_attribute a
         WHERE a.attrelid = p_rel AND a.attnum = p_keys[array_lower(p_keys, 1)]
           AND (a.attidentity <> '' OR a.atthasdef OR a.atttypid = 'uuid'::regtype
                OR (a.atttypid IN ('text'::regtype, 'character varying'::regtype, 'bpchar'::regtype)
                    AND lower(a.attname) ~ '^(.*_)?(id|uuid|guid|cuid|cuid2|ulid|nanoid)$')))
$$;

-- Refuses unless the current role is the owner of table p_rel: the internal table operations
-- (tenancy._owner_*) run only as the owner, through tenancy._as_owner.
CREATE FUNCTION tenancy._running_as_owner(p_rel oid) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner
                    WHERE c.oid = p_rel AND r.rolname = current_user) THEN
        RAISE EXCEPTION 'tenancy: internal table operation on % called as %, not as the table''s owner', p_rel::regclass, current_user
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Call the public function (tenancy.rollback, CALL tenancy.backfill): it runs the operation as the table''s owner.';
    END IF;
END $$;

COMMENT ON FUNCTION tenancy._att_names(oid, int2[]) IS 'Internal: the column names of attribute numbers of a relation, in order.';
COMMENT ON FUNCTION tenancy._idents(text[]) IS 'Internal: a list of column names, each quoted, comma-separated.';
COMMENT ON FUNCTION tenancy._byte_prefix(text, integer) IS 'Internal: the longest prefix of a text that fits in a number of bytes.';
COMMENT ON FUNCTION tenancy._name(text, text) IS 'Internal: a name of at most 63 bytes made of a base and a suffix.';
COMMENT ON FUNCTION tenancy._fk_definition(oid, text, text, boolean) IS 'Internal: a foreign key''s definition built from the catalog, optionally with tenant columns first.';
COMMENT ON FUNCTION tenancy._surrogate_key(oid, int2[]) IS 'Internal: is this key a surrogate key (one column filled by the database, a uuid, or an application-generated text id)?';
COMMENT ON FUNCTION tenancy._running_as_owner(oid) IS 'Internal: refuses unless the current role owns the table.';

-- What a relation of kind p_kind is, for error messages (Rust's messages use it too).
CREATE FUNCTION tenancy._relkind_noun(p_kind "char") RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE p_kind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'f' THEN 'foreign table'
                       WHEN 'S' THEN 'sequence' WHEN 'i' THEN 'index' WHEN 'I' THEN 'partitioned index'
                       WHEN 'c' THEN 'composite type' WHEN 't' THEN 'TOAST table'
                       ELSE 'relation of kind ' || p_kind::text END
$$;

COMMENT ON FUNCTION tenancy._relkind_noun("char") IS 'Internal: what a relation of a kind is, for error messages.';
