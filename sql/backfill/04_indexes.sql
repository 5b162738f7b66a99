----------------------------------------------------------------------------------------------
-- The index plan: composite indexes with the tenant column leading
----------------------------------------------------------------------------------------------

-- One entry per index to build: {name, unique, columns, kind: pkey|unique|fk|tenant, replaces}.
-- Unique constraints are rewritten unless a foreign key depends on them or a lint_ignores row
-- accepts them as they are (TEN010 for that index). Returns the plan and what it leaves as it is
-- ({object, reason} each).
CREATE FUNCTION tenancy._backfill_index_plan(p_rel oid, p_rec tenancy.backfill_state, OUT indexes jsonb, OUT skipped jsonb)
RETURNS record LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_col     text := p_rec.tenant_column;
    v_att     int2 := (SELECT attnum FROM pg_attribute WHERE attrelid = p_rel AND attname = v_col);
    v_tbl     text := p_rel::regclass::text;
    v_rel     text := (SELECT relname FROM pg_class WHERE oid = p_rel);
    v_part    boolean := p_rec.partitioned;
    v_plan    jsonb := '[]';
    v_skipped jsonb := '[]';
    v_cols    text[];
    r         record;
BEGIN
    -- The primary key, made unique together with the tenant column: what composite foreign keys
    -- from other tenant tables reference, and the index of tenant-scoped lookups by id.
    FOR r IN SELECT con.conname, con.conkey FROM pg_constraint con
              WHERE con.conrelid = p_rel AND con.contype = 'p' AND NOT (v_att = ANY (con.conkey)) LOOP
        v_cols := ARRAY[v_col] || tenancy._att_names(p_rel, r.conkey);
        IF v_part THEN
            v_skipped := v_skipped || jsonb_build_object('object', r.conname,
                'reason', 'unique indexes of a partitioned table must contain the partition key; add (tenant column, key) by hand');
        ELSIF NOT tenancy._has_index(p_rel, v_cols, true) THEN
            v_plan := v_plan || jsonb_build_object('name', tenancy._name(v_rel || '_' || v_col, 'pkey_key'), 'unique', true,
                                                   'columns', to_jsonb(v_cols), 'kind', 'pkey');
        END IF;
        IF NOT tenancy._surrogate_key(p_rel, r.conkey) THEN
            v_skipped := v_skipped || jsonb_build_object('object', r.conname,
                'reason', 'the primary key is kept as it is (other tables may reference it); it is a natural key, so tenants share its values (lint TEN010)');
        END IF;
    END LOOP;
    -- Unique constraints and indexes without the tenant column.
    FOR r IN SELECT i.indexrelid, ic.relname AS idxname, con.conname, con.oid AS conoid,
                    i.indkey::int2[] AS keys, pg_get_indexdef(i.indexrelid) AS idxdef,
                    pg_get_constraintdef(con.oid) AS condef,
                    (i.indpred IS NOT NULL OR 0 = ANY (i.indkey::int2[]) OR i.indnkeyatts <> i.indnatts) AS special
               FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
               LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = p_rel AND con.contype = 'u'
              WHERE i.indrelid = p_rel AND i.indisunique AND NOT i.indisprimary AND NOT (v_att = ANY (i.indkey::int2[]))
              ORDER BY ic.relname LOOP
        IF EXISTS (SELECT 1 FROM tenancy.lint_ignores li WHERE li.code = 'TEN010'
                      AND li.object IN ('*', format('%s index %s', v_tbl, quote_ident(r.idxname)))) THEN
            v_skipped := v_skipped || jsonb_build_object('object', r.idxname, 'reason', 'kept as it is: tenancy.lint_ignores accepts it (TEN010)');
        ELSIF EXISTS (SELECT 1 FROM pg_constraint f WHERE f.contype = 'f' AND f.conindid = r.indexrelid) THEN
            v_skipped := v_skipped || jsonb_build_object('object', r.idxname, 'reason', 'a foreign key references it; rewrite that foreign key first');
        ELSIF r.special OR v_part THEN
            v_skipped := v_skipped || jsonb_build_object('object', r.idxname,
                'reason', 'partial, expression, INCLUDE or partitioned unique index: rewrite it by hand');
        ELSE
            v_cols := ARRAY[v_col] || tenancy._att_names(p_rel, r.keys);
            v_plan := v_plan || jsonb_build_object(
                'name', tenancy._name(r.idxname, 'tenant'), 'unique', true, 'columns', to_jsonb(v_cols), 'kind', 'unique',
                'replaces', jsonb_build_object('index', r.idxname, 'constraint', r.conname,
                                               'def', coalesce(r.condef, r.idxdef)));
        END IF;
    END LOOP;
    -- Foreign keys: the tenant column, then the key columns, so joins and cascades stay in a tenant.
    FOR r IN SELECT con.conname, con.conkey FROM pg_constraint con
              WHERE con.conrelid = p_rel AND con.contype = 'f' AND NOT (v_att = ANY (con.conkey))
                AND con.confrelid <> 'tenancy.organizations'::regclass
              ORDER BY con.conname LOOP
        v_cols := ARRAY[v_col] || tenancy._att_names(p_rel, r.conkey);
        IF NOT tenancy._has_index(p_rel, v_cols, false)
           AND NOT v_plan @> jsonb_build_array(jsonb_build_object('columns', to_jsonb(v_cols))) THEN
            v_plan := v_plan || jsonb_build_object('name', tenancy._name(v_rel || '_' || array_to_string(v_cols, '_'), 'idx'),
                                                   'unique', false, 'columns', to_jsonb(v_cols), 'kind', 'fk');
        END IF;
    END LOOP;
    -- At least one index leading with the tenant column.
    IF jsonb_array_length(v_plan) = 0 AND NOT EXISTS (
           SELECT 1 FROM pg_index i WHERE i.indrelid = p_rel AND i.indkey[0] = v_att AND i.indisvalid AND i.indpred IS NULL) THEN
        v_plan := jsonb_build_array(jsonb_build_object('name', tenancy._name(v_rel || '_' || v_col, 'idx'), 'unique', false,
                                                       'columns', jsonb_build_array(v_col), 'kind', 'tenant'));
    END IF;
    indexes := v_plan;
    skipped := v_skipped;
END $$;

-- Is planned index p_ix in place (exists and is valid) on p_rel?
CREATE FUNCTION tenancy._index_ready(p_rel oid, p_ix jsonb) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                    WHERE i.indrelid = p_rel AND c.relname = p_ix->>'name' AND i.indisvalid)
$$;

-- The name of planned index p_ix on partition p_leaf.
CREATE FUNCTION tenancy._leaf_index_name(p_leaf oid, p_ix jsonb) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT tenancy._name(c.relname || '_' || array_to_string(ARRAY(SELECT jsonb_array_elements_text(p_ix->'columns')), '_'), 'idx')
      FROM pg_class c WHERE c.oid = p_leaf
$$;

-- The statements that build planned index p_ix: CONCURRENTLY (p_concurrently) or not. A
-- leftover invalid index (an interrupted CREATE INDEX CONCURRENTLY) is dropped first. For a
-- partitioned table: the index ON ONLY the parent, one per leaf, each attached.
CREATE FUNCTION tenancy._index_statements(p_rel oid, p_ix jsonb, p_concurrently boolean) RETURNS SETOF text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_cols   text := tenancy._idents(ARRAY(SELECT jsonb_array_elements_text(p_ix->'columns')));
    v_conc   text := CASE WHEN p_concurrently THEN ' CONCURRENTLY' ELSE '' END;
    v_schema text := tenancy._schema_of(p_rel);
    v_leaf   record;
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = p_rel) = 'p' THEN
        IF NOT EXISTS (SELECT 1 FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid
                        WHERE i.indrelid = p_rel AND c.relname = p_ix->>'name') THEN
            RETURN NEXT format('CREATE INDEX IF NOT EXISTS %I ON ONLY %s (%s)', p_ix->>'name', p_rel::regclass, v_cols);
        END IF;
        FOR v_leaf IN SELECT l.oid, n.ixname,
                             (SELECT i.indisvalid FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid
                               WHERE i.indrelid = l.oid AND x.relname = n.ixname) AS valid,
                             EXISTS (SELECT 1 FROM pg_inherits h JOIN pg_class x ON x.oid = h.inhrelid JOIN pg_class pi ON pi.oid = h.inhparent
                                      WHERE x.relname = n.ixname AND x.relnamespace = c.relnamespace AND pi.relname = p_ix->>'name') AS attached
                        FROM unnest(tenancy._leaves(p_rel)) l(oid) JOIN pg_class c ON c.oid = l.oid
                       CROSS JOIN LATERAL (SELECT tenancy._leaf_index_name(l.oid, p_ix)) n(ixname) LOOP
            IF v_leaf.valid IS FALSE THEN
                RETURN NEXT format('DROP INDEX%s IF EXISTS %s.%I', v_conc, v_schema, v_leaf.ixname);
            END IF;
            IF v_leaf.valid IS DISTINCT FROM true THEN
                RETURN NEXT format('CREATE INDEX%s IF NOT EXISTS %I ON %s (%s)', v_conc, v_leaf.ixname, v_leaf.oid::regclass, v_cols);
            END IF;
            IF NOT v_leaf.attached THEN
                RETURN NEXT format('ALTER INDEX %s.%I ATTACH PARTITION %s.%I', v_schema, p_ix->>'name', v_schema, v_leaf.ixname);
            END IF;
        END LOOP;
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                WHERE i.indrelid = p_rel AND c.relname = p_ix->>'name' AND NOT i.indisvalid) THEN
        RETURN NEXT format('DROP INDEX%s IF EXISTS %s.%I', v_conc, v_schema, p_ix->>'name');
    END IF;
    RETURN NEXT format('CREATE %sINDEX%s IF NOT EXISTS %I ON %s (%s)',
                       CASE WHEN (p_ix->>'unique')::boolean THEN 'UNIQUE ' ELSE '' END, v_conc,
                       p_ix->>'name', p_rel::regclass, v_cols);
END $$;
