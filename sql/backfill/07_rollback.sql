----------------------------------------------------------------------------------------------
-- Rollback
----------------------------------------------------------------------------------------------

-- Foreign keys: the old ones back, the tenant-carrying ones gone. An old key is added NOT
-- VALID and then validated with FORCE ROW LEVEL SECURITY off on the tables (this table, its
-- parent) that the owner would otherwise see through their policies: Postgres's check of
-- existing rows runs as the owner, and under a FORCE policy it sees no parent row at all
-- (issue 15: "Key (user_id)=(...) is not present"). FORCE is back on before this returns, in
-- the same transaction; the ALTER TABLE holds its lock until the commit, so nobody sees the gap.
-- Runs the statements and returns them (part of tenancy._owner_rollback, as the table's owner).
CREATE FUNCTION tenancy._rollback_fks(p_rel oid, p_rec tenancy.backfill_state) RETURNS text[]
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_tbl    text := p_rel::regclass::text;
    v_ddl    text[] := '{}';
    v_fk     jsonb;
    v_parent oid;
    v_forced oid[];
    v_r      oid;
BEGIN
    PERFORM tenancy._running_as_owner(p_rel);
    FOR v_fk IN SELECT f FROM jsonb_array_elements(coalesce(p_rec.fk_rewrites, '[]')) f LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = p_rel AND conname = v_fk->>'old') THEN
            IF right(v_fk->>'old_def', 10) = ' NOT VALID' THEN  -- it was not valid before either
                v_ddl := v_ddl || format('ALTER TABLE %s ADD CONSTRAINT %I %s', v_tbl, v_fk->>'old', v_fk->>'old_def');
                EXECUTE v_ddl[cardinality(v_ddl)];
            ELSE
                v_ddl := v_ddl || format('ALTER TABLE %s ADD CONSTRAINT %I %s NOT VALID', v_tbl, v_fk->>'old', v_fk->>'old_def');
                EXECUTE v_ddl[cardinality(v_ddl)];
                SELECT c.confrelid INTO v_parent FROM pg_constraint c WHERE c.conrelid = p_rel AND c.conname = v_fk->>'old';
                v_forced := ARRAY(SELECT x.oid FROM pg_class x
                                   WHERE x.oid IN (p_rel, v_parent) AND x.relrowsecurity AND x.relforcerowsecurity
                                     AND pg_has_role(current_user, x.relowner, 'USAGE')
                                   ORDER BY x.oid);
                FOREACH v_r IN ARRAY v_forced LOOP
                    v_ddl := v_ddl || format('ALTER TABLE %s NO FORCE ROW LEVEL SECURITY', v_r::regclass);
                    EXECUTE v_ddl[cardinality(v_ddl)];
                END LOOP;
                v_ddl := v_ddl || format('ALTER TABLE %s VALIDATE CONSTRAINT %I', v_tbl, v_fk->>'old');
                EXECUTE v_ddl[cardinality(v_ddl)];
                FOREACH v_r IN ARRAY v_forced LOOP
                    v_ddl := v_ddl || format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', v_r::regclass);
                    EXECUTE v_ddl[cardinality(v_ddl)];
                END LOOP;
            END IF;
        END IF;
        v_ddl := v_ddl || format('ALTER TABLE %s DROP CONSTRAINT IF EXISTS %I', v_tbl, v_fk->>'new');
        EXECUTE v_ddl[cardinality(v_ddl)];
    END LOOP;
    RETURN v_ddl;
END $$;

-- Unique constraints and indexes: the old ones back, under their names; the new ones gone.
-- A replaced key took the old one's name when it took over (issue 15 item 8): that object,
-- which holds the tenant column, is dropped and the old definition added under the name.
-- Runs the statements and returns them (part of tenancy._owner_rollback, as the table's owner).
CREATE FUNCTION tenancy._rollback_uniques(p_rel oid, p_rec tenancy.backfill_state, p_att int2) RETURNS text[]
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_tbl    text := p_rel::regclass::text;
    v_ddl    text[] := '{}';
    v_schema text := tenancy._schema_of(p_rel);
    v_ix     jsonb;
    v_leaf   oid;
    v_i      integer;
BEGIN
    PERFORM tenancy._running_as_owner(p_rel);
    FOR v_ix IN SELECT ix FROM jsonb_array_elements(coalesce(p_rec.indexes, '[]')) ix LOOP
        IF v_ix->'replaces'->>'constraint' IS NOT NULL
           AND EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = p_rel AND conname = v_ix->'replaces'->>'constraint'
                          AND p_att = ANY (conkey)) THEN
            v_ddl := v_ddl || format('ALTER TABLE %s DROP CONSTRAINT %I', v_tbl, v_ix->'replaces'->>'constraint')
                           || format('ALTER TABLE %s ADD CONSTRAINT %I %s', v_tbl, v_ix->'replaces'->>'constraint', v_ix->'replaces'->>'def');
        ELSIF v_ix->'replaces'->>'constraint' IS NULL AND v_ix->'replaces'->>'index' IS NOT NULL
              AND EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                           WHERE i.indrelid = p_rel AND c.relname = v_ix->'replaces'->>'index' AND p_att = ANY (i.indkey::int2[])) THEN
            v_ddl := v_ddl || format('DROP INDEX %s.%I', v_schema, v_ix->'replaces'->>'index') || (v_ix->'replaces'->>'def');
        ELSIF v_ix->'replaces'->>'constraint' IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = p_rel AND conname = v_ix->'replaces'->>'constraint') THEN
            v_ddl := v_ddl || format('ALTER TABLE %s ADD CONSTRAINT %I %s', v_tbl, v_ix->'replaces'->>'constraint', v_ix->'replaces'->>'def');
        ELSIF v_ix->'replaces'->>'constraint' IS NULL AND v_ix->'replaces'->>'index' IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                            WHERE i.indrelid = p_rel AND c.relname = v_ix->'replaces'->>'index') THEN
            v_ddl := v_ddl || (v_ix->'replaces'->>'def');
        END IF;
        IF EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = p_rel AND conname = v_ix->>'name') THEN
            v_ddl := v_ddl || format('ALTER TABLE %s DROP CONSTRAINT %I', v_tbl, v_ix->>'name');
        ELSIF EXISTS (SELECT 1 FROM pg_class c WHERE c.relname = v_ix->>'name' AND c.relkind IN ('i', 'I')
                         AND c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = p_rel)) THEN
            v_ddl := v_ddl || format('DROP INDEX IF EXISTS %s.%I', v_schema, v_ix->>'name');
        END IF;
        IF p_rec.partitioned THEN  -- leaf indexes not attached yet
            FOR v_leaf IN SELECT unnest(tenancy._leaves(p_rel)) LOOP
                v_ddl := v_ddl || format('DROP INDEX IF EXISTS %s.%I', v_schema, tenancy._leaf_index_name(v_leaf, v_ix));
            END LOOP;
        END IF;
    END LOOP;
    FOR v_i IN 1 .. cardinality(v_ddl) LOOP
        EXECUTE v_ddl[v_i];
    END LOOP;
    RETURN v_ddl;
END $$;

-- Keys that hold the tenant column and that tenancy did not make: a fix lint printed (TEN010:
-- the key with the tenant column first) and the DBA applied. The column did not exist before
-- the backfill, so the key was (columns without it) then: it goes back to that, under its
-- name. Other objects on the column that tenancy did not make are named in a NOTICE.
-- Only for a column the backfill added. Runs the statements and returns them (part of
-- tenancy._owner_rollback, as the table's owner).
CREATE FUNCTION tenancy._rollback_hand_made_keys(p_rel oid, p_rec tenancy.backfill_state, p_att int2, p_drop boolean) RETURNS text[]
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_tbl    text := p_rel::regclass::text;
    v_col    text := p_rec.tenant_column;
    v_ddl    text[] := '{}';
    v_schema text := tenancy._schema_of(p_rel);
    v_con    record;
    v_left   text;
    v_i      integer;
BEGIN
    PERFORM tenancy._running_as_owner(p_rel);
    FOR v_con IN SELECT c.conname, c.contype,
                        ARRAY(SELECT k FROM unnest(c.conkey) WITH ORDINALITY u(k, n) WHERE k <> p_att ORDER BY n)::int2[] AS rest
                   FROM pg_constraint c
                  WHERE c.conrelid = p_rel AND c.contype IN ('p', 'u') AND p_att = ANY (c.conkey)
                    AND cardinality(c.conkey) > 1
                  ORDER BY c.conname LOOP
        v_ddl := v_ddl || format('ALTER TABLE %s DROP CONSTRAINT %I, ADD CONSTRAINT %I %s (%s)', v_tbl, v_con.conname, v_con.conname,
                                 CASE v_con.contype WHEN 'p' THEN 'PRIMARY KEY' ELSE 'UNIQUE' END,
                                 tenancy._idents(tenancy._att_names(p_rel, v_con.rest)));
        RAISE NOTICE 'tenancy.rollback %: key % held the tenant column and tenancy did not make it (a lint fix applied by hand?): it is (%) again',
              v_tbl, quote_ident(v_con.conname), tenancy._idents(tenancy._att_names(p_rel, v_con.rest));
    END LOOP;
    -- The same for a plain unique index (lint's fix: DROP INDEX, CREATE UNIQUE INDEX with the
    -- tenant column first), rebuilt under its name on its other columns.
    FOR v_con IN SELECT x.relname,
                        ARRAY(SELECT k FROM unnest(i.indkey::int2[]) k WHERE k <> p_att)::int2[] AS rest
                   FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid
                  WHERE i.indrelid = p_rel AND i.indisunique AND p_att = ANY (i.indkey::int2[])
                    AND i.indnatts > 1 AND i.indnkeyatts = i.indnatts AND i.indpred IS NULL AND i.indexprs IS NULL
                    AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid AND c.conrelid = p_rel)
                    AND NOT coalesce(p_rec.indexes, '[]') @> jsonb_build_array(jsonb_build_object('name', x.relname::text))
                  ORDER BY x.relname LOOP
        v_ddl := v_ddl || format('DROP INDEX %s.%I', v_schema, v_con.relname)
                       || format('CREATE UNIQUE INDEX %I ON %s (%s)', v_con.relname, v_tbl, tenancy._idents(tenancy._att_names(p_rel, v_con.rest)));
        RAISE NOTICE 'tenancy.rollback %: unique index % held the tenant column and tenancy did not make it (a lint fix applied by hand?): it is on (%) again',
              v_tbl, quote_ident(v_con.relname), tenancy._idents(tenancy._att_names(p_rel, v_con.rest));
    END LOOP;
    FOR v_i IN 1 .. cardinality(v_ddl) LOOP
        EXECUTE v_ddl[v_i];
    END LOOP;
    SELECT string_agg(x, ', ' ORDER BY x) INTO v_left FROM (
        SELECT 'constraint ' || quote_ident(c.conname) AS x FROM pg_constraint c
         WHERE c.conrelid = p_rel AND p_att = ANY (c.conkey) AND c.contype NOT IN ('p', 'u', 'n')
           AND c.conname IS DISTINCT FROM p_rec.fk AND c.conname IS DISTINCT FROM p_rec."check"
           AND NOT coalesce(p_rec.fk_rewrites, '[]') @> jsonb_build_array(jsonb_build_object('new', c.conname))
        UNION ALL
        SELECT 'index ' || quote_ident(x.relname) FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid
         WHERE i.indrelid = p_rel AND p_att = ANY (i.indkey::int2[])
           AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid AND c.conrelid = p_rel)
           AND NOT coalesce(p_rec.indexes, '[]') @> jsonb_build_array(jsonb_build_object('name', x.relname::text))) s;
    IF v_left IS NOT NULL THEN
        RAISE NOTICE 'tenancy.rollback %: objects on % that tenancy did not make: %', v_tbl, quote_ident(v_col), v_left
            USING HINT = CASE WHEN p_drop THEN 'Dropping the column drops them too.'
                              ELSE 'They are left as they are.' END;
    END IF;
    RETURN v_ddl;
END $$;

-- The statements that undo what the backfill did to the column itself: its foreign key to
-- tenancy.organizations, the NOT NULL check, NOT NULL, the fill trigger, the default, and the
-- column (drop_column, when the backfill added it). Returned, not run (part of
-- tenancy._owner_rollback, as the table's owner).
CREATE FUNCTION tenancy._rollback_column_statements(p_rel oid, p_rec tenancy.backfill_state, p_drop boolean) RETURNS text[]
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_tbl    text := p_rel::regclass::text;
    v_col    text := p_rec.tenant_column;
    v_ddl    text[] := '{}';
    v_leaf   oid;
BEGIN
    PERFORM tenancy._running_as_owner(p_rel);
    IF p_rec.fk IS NOT NULL THEN
        v_ddl := v_ddl || format('ALTER TABLE %s DROP CONSTRAINT IF EXISTS %I', v_tbl, p_rec.fk);
        FOR v_leaf IN SELECT unnest(tenancy._leaves(p_rel)) LOOP
            IF v_leaf <> p_rel THEN
                v_ddl := v_ddl || format('ALTER TABLE %s DROP CONSTRAINT IF EXISTS %I', v_leaf::regclass, p_rec.fk);
            END IF;
        END LOOP;
    END IF;
    IF p_rec."check" IS NOT NULL THEN
        FOR v_leaf IN SELECT unnest(tenancy._leaves(p_rel)) LOOP
            IF EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = v_leaf AND conname = p_rec."check") THEN
                v_ddl := v_ddl || format('ALTER TABLE ONLY %s DROP CONSTRAINT %I', v_leaf::regclass, p_rec."check");
            END IF;
        END LOOP;
    END IF;
    IF p_rec.set_not_null AND NOT p_rec.column_was_not_null
       AND NOT (p_drop AND NOT p_rec.column_existed) THEN
        v_ddl := v_ddl || format('ALTER TABLE %s ALTER COLUMN %I DROP NOT NULL', v_tbl, v_col);
    END IF;
    IF p_rec."trigger" IS NOT NULL THEN
        v_ddl := v_ddl || format('DROP TRIGGER IF EXISTS %I ON %s', p_rec."trigger", v_tbl);
    END IF;
    IF p_rec.default_expr IS NOT NULL AND NOT (p_drop AND NOT p_rec.column_existed) THEN
        v_ddl := v_ddl || CASE WHEN p_rec.old_default IS NULL THEN format('ALTER TABLE %s ALTER COLUMN %I DROP DEFAULT', v_tbl, v_col)
                               ELSE format('ALTER TABLE %s ALTER COLUMN %I SET DEFAULT %s', v_tbl, v_col, p_rec.old_default) END;
    END IF;
    IF p_drop THEN
        IF p_rec.column_existed THEN
            RAISE NOTICE 'tenancy.rollback: %.% existed before the backfill and is kept', v_tbl, quote_ident(v_col);
        ELSE
            v_ddl := v_ddl || format('ALTER TABLE %s DROP COLUMN IF EXISTS %I', v_tbl, v_col);
        END IF;
    END IF;
    RETURN v_ddl;
END $$;

-- The work of tenancy.rollback, as the table's owner (through tenancy._as_owner): the recorded
-- definitions it puts back run with the owner's rights only. Everything happens in the caller's
-- transaction: a table is rolled back entirely or (on an error) not at all.
CREATE FUNCTION tenancy._owner_rollback(p_rel oid, a jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tbl     regclass := p_rel::regclass;
    drop_column boolean := coalesce((a->>'drop_column')::boolean, false);
    v_rel   oid := tenancy._require('tbl', tbl)::oid;
    v_rec   tenancy.backfill_state := tenancy._backfill_record(v_rel);
    v_tbl   text := tbl::text;
    v_col   text;
    v_att   int2;
    v_ddl   text[] := '{}';
    v_done  integer := 0;
    v_iso   text;
    v_other integer;
    v_deps  text;
    v_i     integer;
BEGIN
    PERFORM tenancy._running_as_owner(v_rel);
    IF v_rec.phase IS NULL THEN  -- no record (a record always has its phase)
        RAISE EXCEPTION 'tenancy.rollback: no backfill of % is recorded', v_tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'tenancy.disable_isolation() removes policies created by enable_isolation alone.';
    END IF;
    v_other := tenancy._backfill_running_elsewhere(v_rec);
    IF v_other IS NOT NULL THEN
        RAISE EXCEPTION 'tenancy.rollback: % is being backfilled by session %', v_tbl, v_other
            USING ERRCODE = 'object_in_use', HINT = 'Stop it first: SELECT pg_cancel_backend(pid).';
    END IF;
    v_col := v_rec.tenant_column;
    v_att := (SELECT attnum FROM pg_attribute WHERE attrelid = v_rel AND attname = v_col AND attnum > 0 AND NOT attisdropped);

    -- Foreign keys of other tables that point at a key of this table holding the tenant column
    -- (a child converted after it): this rollback would drop what they reference. Say so, by
    -- name, before anything is changed (Postgres would say "use DROP ... CASCADE" halfway).
    SELECT string_agg(format('%s (%s)', f.conrelid::regclass, quote_ident(f.conname)), ', '
                      ORDER BY f.conrelid::regclass::text, f.conname)
      INTO v_deps FROM pg_constraint f
     WHERE f.contype = 'f' AND f.confrelid = v_rel AND f.conrelid <> v_rel AND v_att = ANY (f.confkey);
    IF v_deps IS NOT NULL THEN
        RAISE EXCEPTION 'tenancy.rollback: foreign keys of other tables reference the tenant keys of %: %', v_tbl, v_deps
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Rolling this table back first would drop the keys they point at. Nothing was changed.',
                  HINT = format('Roll those tables back first, or all of them children first in one call: SELECT tenancy.rollback(%L, cascade => true); or SELECT * FROM tenancy.rollback_all(%L).',
                                v_tbl, (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = v_rel));
    END IF;

    IF EXISTS (SELECT 1 FROM tenancy.tenant_tables t WHERE t.relid = tbl AND t.details ? 'isolation') THEN
        v_iso := tenancy.disable_isolation(tbl);  -- runs its own statements and returns them
    END IF;
    -- The foreign keys, then the unique keys and indexes, then the keys made by hand (each part
    -- runs its statements), then the column's own objects.
    v_ddl := tenancy._rollback_fks(v_rel, v_rec);
    v_ddl := v_ddl || tenancy._rollback_uniques(v_rel, v_rec, v_att);
    IF v_att IS NOT NULL AND NOT v_rec.column_existed THEN
        v_ddl := v_ddl || tenancy._rollback_hand_made_keys(v_rel, v_rec, v_att, drop_column);
    END IF;
    v_done := cardinality(v_ddl);
    v_ddl := v_ddl || tenancy._rollback_column_statements(v_rel, v_rec, drop_column);
    FOR v_i IN v_done + 1 .. cardinality(v_ddl) LOOP
        EXECUTE v_ddl[v_i];
    END LOOP;
    PERFORM tenancy._privileged('record_backfill', jsonb_build_object('relid', v_rel, 'backfill', 'null'::jsonb,
        'log', jsonb_build_object('operation', 'rollback', 'status', 'succeeded',
                                  'details', jsonb_build_object('phase', v_rec.phase, 'drop_column', drop_column,
                                                                'statements', to_jsonb(v_ddl)))));
    RETURN jsonb_build_object('ddl', concat_ws(E'\n', v_iso, nullif(array_to_string(v_ddl, E';\n') || ';', ';')));
END $$;

-- The tables that must be rolled back before p_tables, with them: every table whose foreign
-- keys point at a key holding the tenant column of one of them, and so on (their children).
CREATE FUNCTION tenancy._rollback_closure(p_tables oid[]) RETURNS oid[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH RECURSIVE s(rel) AS (
        SELECT unnest(p_tables)
        UNION
        SELECT f.conrelid FROM s
          JOIN tenancy.tenant_tables t ON t.relid = s.rel::regclass
          JOIN pg_attribute a ON a.attrelid = s.rel AND a.attname = t.tenant_column AND NOT a.attisdropped
          JOIN pg_constraint f ON f.contype = 'f' AND f.confrelid = s.rel AND f.conrelid <> s.rel AND a.attnum = ANY (f.confkey)
    )
    SELECT coalesce(array_agg(DISTINCT rel), '{}') FROM s
$$;

-- Roll back a set of tables in one transaction, children first (the reverse of the foreign-key
-- order), each as its owner: what a backfill did is undone (tenancy.rollback), isolation alone
-- (enable_isolation without a backfill) removed. All or nothing: the first error stops it, naming
-- the table, and nothing is changed. p_what names the public call in messages.
CREATE FUNCTION tenancy._rollback_many(p_tables oid[], p_drop boolean, p_what text)
RETURNS TABLE (table_name text, action text, detail text, ddl text)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_order regclass[];
    v_tbl   regclass;
    v_rec   tenancy.backfill_state;
    v_i     integer;
BEGIN
    BEGIN
        v_order := tenancy._fk_order(ARRAY(SELECT DISTINCT unnest(p_tables)::regclass));
    EXCEPTION WHEN invalid_foreign_key THEN
        RAISE EXCEPTION 'tenancy: % cannot put the tables in order: their foreign keys form a cycle', p_what
            USING ERRCODE = 'invalid_foreign_key', DETAIL = SQLERRM,
                  HINT = 'Drop one foreign key of the cycle (ALTER TABLE ... DROP CONSTRAINT), then roll back again. Nothing was changed.';
    END;
    FOR v_i IN REVERSE cardinality(v_order) .. 1 LOOP
        v_tbl := v_order[v_i];
        table_name := v_tbl::text;
        v_rec := tenancy._backfill_record(v_tbl);
        BEGIN
            IF v_rec.phase IS NOT NULL THEN  -- a record always has its phase
                ddl := tenancy._as_owner(v_tbl::oid, 'rollback', jsonb_build_object('drop_column', p_drop))->>'ddl';
                action := 'rolled back';
                detail := format('from phase %s%s', v_rec.phase, CASE WHEN p_drop AND NOT v_rec.column_existed
                                                                      THEN ', column ' || quote_ident(v_rec.tenant_column) || ' dropped' ELSE '' END);
            ELSIF EXISTS (SELECT 1 FROM tenancy.tenant_tables t WHERE t.relid = v_tbl AND t.details ? 'isolation') THEN
                ddl := tenancy.disable_isolation(v_tbl);
                action := 'isolation removed';
                detail := 'no backfill recorded: only what enable_isolation created';
            ELSE
                CONTINUE;
            END IF;
        EXCEPTION WHEN OTHERS THEN
            DECLARE v_state text; v_msg text; v_hint text;
            BEGIN
                GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT, v_hint = PG_EXCEPTION_HINT;
                RAISE EXCEPTION 'tenancy: % stopped at %: %', p_what, v_tbl, v_msg
                    USING ERRCODE = v_state, HINT = coalesce(v_hint || ' ', '') || 'Nothing was changed.';
            END;
        END;
        RETURN NEXT;
    END LOOP;
END $$;

CREATE FUNCTION tenancy.rollback(tbl regclass, drop_column boolean DEFAULT false, cascade boolean DEFAULT false) RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT coalesce(cascade, false) THEN
        RETURN tenancy._as_owner(tenancy._require('tbl', tbl)::oid, 'rollback', jsonb_build_object('drop_column', drop_column))->>'ddl';
    END IF;
    IF (tenancy._backfill_record(tenancy._require('tbl', tbl)::oid)).phase IS NULL THEN
        RAISE EXCEPTION 'tenancy.rollback: no backfill of % is recorded', tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'tenancy.disable_isolation() removes policies created by enable_isolation alone.';
    END IF;
    RETURN (SELECT string_agg(format('-- %s: %s (%s)', r.table_name, r.action, r.detail) || E'\n' || coalesce(r.ddl, ''), E'\n')
              FROM tenancy._rollback_many(tenancy._rollback_closure(ARRAY[tbl::oid]), coalesce(drop_column, false),
                                          format('rollback(%s, cascade => true)', tbl)) r);
END $$;

-- Every table of a schema that tenancy converted or isolated, children first, in one transaction.
CREATE FUNCTION tenancy.rollback_all(schema name DEFAULT 'public', drop_column boolean DEFAULT false)
RETURNS TABLE (table_name text, action text, detail text)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p_schema name := tenancy._require('schema', $1);
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_namespace n WHERE n.nspname = p_schema) THEN
        RAISE EXCEPTION 'tenancy: schema % does not exist', quote_ident(p_schema)
            USING ERRCODE = 'invalid_schema_name', HINT = 'Pass the schema of your tables, e.g. ''public''.';
    END IF;
    RETURN QUERY
        SELECT r.table_name, r.action, r.detail
          FROM tenancy._rollback_many(
                   tenancy._rollback_closure(ARRAY(
                       SELECT t.relid::oid FROM tenancy.tenant_tables t JOIN pg_class c ON c.oid = t.relid::oid
                        WHERE c.relnamespace = (SELECT n.oid FROM pg_namespace n WHERE n.nspname = p_schema)
                          AND (t.details ? 'backfill' OR t.details ? 'isolation'))),
                   coalesce($2, false), format('rollback_all(%L)', p_schema)) r;
END $$;

COMMENT ON FUNCTION tenancy._rollback_fks(oid, tenancy.backfill_state) IS
  'Internal: rollback of the rewritten foreign keys (the old ones back, validated); run as the table''s owner by tenancy._owner_rollback.';
COMMENT ON FUNCTION tenancy._rollback_uniques(oid, tenancy.backfill_state, int2) IS
  'Internal: rollback of the unique keys and indexes the backfill rewrote or added (the old ones back, under their names); run as the table''s owner by tenancy._owner_rollback.';
COMMENT ON FUNCTION tenancy._rollback_hand_made_keys(oid, tenancy.backfill_state, int2, boolean) IS
  'Internal: rollback of keys holding the tenant column that tenancy did not make (a lint fix applied by hand); run as the table''s owner by tenancy._owner_rollback.';
COMMENT ON FUNCTION tenancy._rollback_column_statements(oid, tenancy.backfill_state, boolean) IS
  'Internal: the statements undoing the tenant column''s foreign key, check, NOT NULL, trigger and default (and the column); for tenancy._owner_rollback.';
