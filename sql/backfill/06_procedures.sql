----------------------------------------------------------------------------------------------
-- Public API
----------------------------------------------------------------------------------------------

-- No SET clause and not SECURITY DEFINER (either forbids COMMIT): names are schema-qualified
-- and the procedure uses no operators. It runs as the caller, who must own the table.
CREATE PROCEDURE tenancy.backfill(
    tbl regclass,
    organization_id uuid DEFAULT NULL,
    tenant_column name DEFAULT 'organization_id',
    column_type text DEFAULT 'uuid',
    parent regclass DEFAULT NULL,
    user_column name DEFAULT NULL,
    batch_size integer DEFAULT 10000,
    pause interval DEFAULT '0',
    lock_timeout interval DEFAULT '1s',
    max_retries integer DEFAULT 30,
    build_indexes boolean DEFAULT false)
LANGUAGE plpgsql AS $$
DECLARE
    v_done  boolean;
    v_sleep double precision;
BEGIN
    PERFORM tenancy._backfill_begin(tbl, organization_id, tenant_column, column_type, parent, user_column,
                                    batch_size, pause, lock_timeout, max_retries, build_indexes);
    COMMIT;
    LOOP
        SELECT s.done, s.sleep INTO v_done, v_sleep FROM tenancy._backfill_step(tbl) s;
        COMMIT;
        EXIT WHEN v_done;
        IF v_sleep IS NOT NULL THEN
            PERFORM pg_catalog.pg_sleep(v_sleep);
        END IF;
    END LOOP;
END $$;

-- Tables ordered so that every table comes after the tables its foreign keys point at (among
-- the given ones). A cycle is an error.
CREATE FUNCTION tenancy._fk_order(p_tables regclass[]) RETURNS regclass[]
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_left  oid[] := ARRAY(SELECT DISTINCT unnest(p_tables)::oid);
    v_out   regclass[] := '{}';
    v_ready oid[];
BEGIN
    WHILE cardinality(v_left) > 0 LOOP
        v_ready := ARRAY(SELECT t FROM unnest(v_left) t
                          WHERE NOT EXISTS (SELECT 1 FROM pg_constraint con
                                             WHERE con.conrelid = t AND con.contype = 'f' AND con.confrelid <> t
                                               AND con.confrelid = ANY (v_left))
                          ORDER BY t::regclass::text);
        IF cardinality(v_ready) = 0 THEN
            RAISE EXCEPTION 'tenancy.backfill_all: the foreign keys between % form a cycle',
                  (SELECT string_agg(t::regclass::text, ', ') FROM unnest(v_left) t)
                USING ERRCODE = 'invalid_foreign_key', HINT = 'Convert the tables of the cycle one by one with tenancy.backfill.';
        END IF;
        v_out := v_out || v_ready::regclass[];
        v_left := ARRAY(SELECT t FROM unnest(v_left) t WHERE NOT t = ANY (v_ready));
    END LOOP;
    RETURN v_out;
END $$;

-- backfill_all's derive map with its table names resolved as the caller wrote them (p_path: the
-- caller's search_path): {"<oid>": {"parent": <oid>, "user_column": name, "organization_id":
-- fallback}}. Every table it names must be one of p_tables.
CREATE FUNCTION tenancy._derive_map(p_derive jsonb, p_tables regclass[], p_path text) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_out jsonb := '{}';
    e     record;
    v_rel regclass;
    v_par regclass;
BEGIN
    IF jsonb_typeof(coalesce(p_derive, '{}')) <> 'object' THEN
        RAISE EXCEPTION 'tenancy.backfill_all: derive must be an object, e.g. {"documents": {"parent": "shipments"}}'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM set_config('search_path', p_path, true);  -- undone when this function returns
    FOR e IN SELECT * FROM jsonb_each(coalesce(p_derive, '{}')) LOOP
        v_rel := to_regclass(e.key);
        v_par := to_regclass(e.value->>'parent');
        IF v_rel IS NULL OR NOT v_rel = ANY (p_tables) THEN
            RAISE EXCEPTION 'tenancy.backfill_all: derive names %, which is not one of the tables', e.key
                USING ERRCODE = 'invalid_parameter_value';
        ELSIF e.value->>'parent' IS NOT NULL AND v_par IS NULL THEN
            RAISE EXCEPTION 'tenancy.backfill_all: no table %', e.value->>'parent' USING ERRCODE = 'undefined_table';
        END IF;
        v_out := v_out || jsonb_build_object(v_rel::oid::text,
                     jsonb_build_object('parent', v_par::oid, 'user_column', e.value->>'user_column',
                                        'organization_id', e.value->>'organization_id'));
    END LOOP;
    RETURN v_out;
END $$;

CREATE PROCEDURE tenancy.backfill_all(
    tables regclass[],
    organization_id uuid DEFAULT NULL,
    derive jsonb DEFAULT '{}',
    tenant_column name DEFAULT 'organization_id',
    column_type text DEFAULT 'uuid',
    batch_size integer DEFAULT 10000,
    pause interval DEFAULT '0',
    lock_timeout interval DEFAULT '1s',
    max_retries integer DEFAULT 30,
    build_indexes boolean DEFAULT false)
LANGUAGE plpgsql AS $$
DECLARE
    v_tbl regclass;
    v_map jsonb := tenancy._derive_map(derive, tables, pg_catalog.current_setting('search_path'));
BEGIN
    FOREACH v_tbl IN ARRAY tenancy._fk_order(tables) LOOP
        -- A derived table falls back on the organization its own derive entry names, else on
        -- organization_id (issue 15 item 2: rows a derivation leaves without one get it).
        CALL tenancy.backfill(v_tbl,
                              COALESCE(pg_catalog.jsonb_extract_path_text(v_map, v_tbl::oid::text, 'organization_id')::uuid,
                                                  organization_id),
                              tenant_column, column_type,
                              pg_catalog.jsonb_extract_path_text(v_map, v_tbl::oid::text, 'parent')::oid::regclass,
                              pg_catalog.jsonb_extract_path_text(v_map, v_tbl::oid::text, 'user_column')::name,
                              batch_size, pause, lock_timeout, max_retries, build_indexes);
    END LOOP;
END $$;

-- The statements to run outside a transaction (psql: SELECT statement FROM
-- tenancy.pending_statements() \gexec), for every table waiting for its indexes.
CREATE FUNCTION tenancy.pending_statements()
RETURNS TABLE (table_name text, statement text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT t.relid::text, s
      FROM tenancy.tenant_tables t
     CROSS JOIN LATERAL tenancy._backfill_record(t.relid) b
     CROSS JOIN LATERAL jsonb_array_elements(b.indexes) WITH ORDINALITY ix(ix, n)
     CROSS JOIN LATERAL tenancy._index_statements(t.relid, ix.ix, true) s
     WHERE b.phase IN ('fk_validated', 'awaiting_indexes')
       AND EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = t.relid::oid)  -- not a table dropped since
       AND NOT tenancy._index_ready(t.relid, ix.ix)
     ORDER BY t.relid::text, ix.n
$$;

CREATE VIEW tenancy.backfill_progress WITH (security_invoker = true) AS
SELECT t.relid::text AS table_name,
       b.phase,
       (b.fill).rows_done,
       greatest((b.fill).rows_total, (b.fill).rows_done) AS rows_total,
       CASE WHEN b.phase IN ('planned', 'column_added') THEN 0
            WHEN b.phase = 'filling'
            THEN round(100.0 * (b.fill).blocks_done / greatest((b.fill).blocks_total, 1), 1)
            ELSE 100 END AS fill_percent,
       round((((b.fill).rows_done - (b.run).rows)
              / greatest(extract(epoch FROM b.updated_at) - (b.run).started_at, 0.001))::numeric)
           AS rows_per_second,
       CASE WHEN b.phase = 'filling' AND (b.fill).blocks_done > (b.run).blocks
            THEN justify_interval(make_interval(secs => round((((b.fill).blocks_total - (b.fill).blocks_done)
                 * (extract(epoch FROM b.updated_at) - (b.run).started_at)
                 / ((b.fill).blocks_done - (b.run).blocks))::numeric, 1))) END AS eta,
       b.retries AS lock_retries,
       tenancy._backfill_running_elsewhere(b) IS NOT NULL AS running,
       b.pid,
       b.started_at,
       b.updated_at,
       b.skipped
  FROM tenancy.tenant_tables t
 CROSS JOIN LATERAL tenancy._backfill_record(t.relid) b
 WHERE t.details ? 'backfill'
   AND EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) t.relid::pg_catalog.oid);
