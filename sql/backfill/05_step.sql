----------------------------------------------------------------------------------------------
-- One step: the work of each phase (the phases in the order of 01_record.sql's list)
----------------------------------------------------------------------------------------------

-- Every function of a phase takes the record and returns it as it moved on (most through
-- tenancy._backfill_advance). They are called by tenancy._owner_backfill_step only, in its
-- transaction and with its lock, as the table's owner; each refuses to run as anybody else.

-- Phase planned: add the tenant column. One organization for every row of a new column takes
-- the metadata-only path (tenancy._backfill_fast_default): the column with its DEFAULT and NOT
-- NULL, and the fill trigger; otherwise the column alone (unless it existed). -> column_added
CREATE FUNCTION tenancy._backfill_add_column(p_rel oid, p_rec tenancy.backfill_state, p_trig text) RETURNS tenancy.backfill_state
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_rec    tenancy.backfill_state := p_rec;
    v_tbl    text := p_rel::regclass::text;
    v_col    text := p_rec.tenant_column;
BEGIN
    PERFORM tenancy._running_as_owner(p_rel);
    IF tenancy._backfill_fast_default(p_rel, v_rec) THEN
        -- One organization for every row, and a new column: the organization becomes the
        -- column's default together with NOT NULL, in one metadata-only ALTER (PostgreSQL
        -- keeps the value in the catalog as the rows' "missing value" and writes no row, nor
        -- scans for NULLs). The fill trigger, as in the batched path, gives the organization
        -- to a row written with an explicit NULL until enable_isolation retires it.
        EXECUTE format('ALTER TABLE %s ADD COLUMN %I %s NOT NULL DEFAULT %L::%s', v_tbl, v_col,
                       v_rec.column_type, (v_rec.source).value, v_rec.column_type);
        EXECUTE format('CREATE TRIGGER %I BEFORE INSERT OR UPDATE ON %s FOR EACH ROW WHEN (NEW.%I IS NULL) '
                       'EXECUTE FUNCTION tenancy._backfill_fill(%L, %L)', p_trig, v_tbl, v_col, v_col, v_rec.lookup);
        v_rec.fast_default := true;
        v_rec.set_not_null := true;
        v_rec."trigger" := p_trig;
        v_rec.default_expr :=
            (SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
              WHERE d.adrelid = p_rel AND a.attname = v_col);
        v_rec := tenancy._backfill_advance(p_rel, v_rec, 'column_added', jsonb_build_object(
            'fast_default', true, 'default', v_rec.default_expr, 'not_null', true, 'trigger', p_trig));
    ELSE
        IF NOT v_rec.column_existed THEN
            EXECUTE format('ALTER TABLE %s ADD COLUMN IF NOT EXISTS %I %s', v_tbl, v_col, v_rec.column_type);
        END IF;
        v_rec := tenancy._backfill_advance(p_rel, v_rec, 'column_added');
    END IF;
    RETURN v_rec;
END $$;

-- Phase column_added: on the metadata-only path, nothing to fill (ANALYZE, -> not_null);
-- otherwise the fill trigger (and the fixed organization's DEFAULT), and the fill planned: the
-- blocks of every leaf, the rows to expect. -> filling
CREATE FUNCTION tenancy._backfill_start_fill(p_rel oid, p_rec tenancy.backfill_state, p_trig text, p_now double precision) RETURNS tenancy.backfill_state
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_rec    tenancy.backfill_state := p_rec;
    v_tbl    text := p_rel::regclass::text;
    v_col    text := p_rec.tenant_column;
    v_leaves jsonb;
    v_n      bigint;
    v_n2     bigint;
    v_total  bigint;
    v_tpb    double precision;
BEGIN
    PERFORM tenancy._running_as_owner(p_rel);
    IF v_rec.fast_default THEN
        -- Every row has its organization already (the column's missing value): nothing to fill.
        -- The planner learns the new column (as after a batched fill), outside the ALTER's lock.
        EXECUTE format('ANALYZE %s (%I)', v_tbl, v_col);
        SELECT sum(greatest(c.reltuples, 0))::bigint, sum(pg_relation_size(l.oid) / current_setting('block_size')::bigint)
          INTO v_total, v_n
          FROM unnest(tenancy._leaves(p_rel)) l(oid) JOIN pg_class c ON c.oid = l.oid;
        v_rec.fill := ROW('[]'::jsonb, coalesce(v_n, 0), coalesce(v_n, 0), coalesce(v_total, 0), coalesce(v_total, 0), 0,
                          p_now, 0, true)::tenancy.backfill_fill;
        RAISE NOTICE 'tenancy.backfill %: % of ~% rows, 100.0 %%, from the column default (metadata only: no row written)', v_tbl,
              coalesce(v_total, 0), coalesce(v_total, 0);
        v_rec := tenancy._backfill_advance(p_rel, v_rec, 'not_null', jsonb_build_object(
            'fast_default', true, 'rows', coalesce(v_total, 0), 'batches', 0, 'blocks', coalesce(v_n, 0),
            'note', 'ADD COLUMN ... NOT NULL DEFAULT: every existing row reads the organization from the catalog; nothing filled, no CHECK needed'));
    ELSE
        -- From now on no row is written without an organization (while one can be derived):
        -- the trigger fills new rows and rows updated before the fill reached them.
        IF (v_rec.source).kind = 'fixed' AND v_rec.old_default IS NULL THEN
            EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET DEFAULT %L::%s', v_tbl, v_col,
                           (v_rec.source).value, v_rec.column_type);
            v_rec.default_expr :=
                (SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
                  WHERE d.adrelid = p_rel AND a.attname = v_col);
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = p_rel AND t.tgname = p_trig AND NOT t.tgisinternal) THEN
            EXECUTE format('CREATE TRIGGER %I BEFORE INSERT OR UPDATE ON %s FOR EACH ROW WHEN (NEW.%I IS NULL) '
                           'EXECUTE FUNCTION tenancy._backfill_fill(%L, %L)', p_trig, v_tbl, v_col, v_col, v_rec.lookup);
        END IF;
        v_rec."trigger" := p_trig;
        -- The blocks to visit: every row without an organization is in them now (the trigger
        -- handles rows written from here on, wherever they land).
        SELECT jsonb_agg(jsonb_build_object('relid', l.oid, 'name', l.oid::regclass::text, 'next', 0,
                                            'blocks', pg_relation_size(l.oid) / current_setting('block_size')::bigint)
                         ORDER BY l.oid),
               sum(greatest(c.reltuples, 0))::bigint,
               sum(pg_relation_size(l.oid) / current_setting('block_size')::bigint),
               sum(greatest(c.reltuples, 0)) / nullif(sum(c.relpages) FILTER (WHERE c.reltuples > 0), 0)
          INTO v_leaves, v_total, v_n, v_tpb
          FROM unnest(tenancy._leaves(p_rel)) l(oid) JOIN pg_class c ON c.oid = l.oid;
        IF v_tpb IS NULL AND v_n > 0 THEN  -- never analyzed: count the rows of the first blocks
            EXECUTE format('SELECT count(*) FROM ONLY %s WHERE ctid < %L::tid', ((v_leaves->0)->>'relid')::oid::regclass,
                           format('(%s,0)', least(10, ((v_leaves->0)->>'blocks')::bigint)))
               INTO v_n2;
            v_tpb := greatest(v_n2::double precision / greatest(least(10, ((v_leaves->0)->>'blocks')::bigint), 1), 1);
            v_total := (v_tpb * v_n)::bigint;
        END IF;
        v_rec.fill := ROW(coalesce(v_leaves, '[]'), coalesce(v_n, 0), 0, coalesce(v_total, 0), 0, coalesce(v_tpb, 100),
                          p_now, 0, NULL)::tenancy.backfill_fill;
        v_rec.run := ROW(p_now, 0, 0)::tenancy.backfill_run;
        v_rec := tenancy._backfill_advance(p_rel, v_rec, 'filling', jsonb_build_object('trigger', p_trig, 'default', v_rec.default_expr));
    END IF;
    RETURN v_rec;
END $$;

-- The statement that fills one ctid range ($1 to $2) of leaf p_leaf from a derived source: the
-- parent row (joined on the foreign key's columns) or the user column's user; NULL for a fixed
-- organization (the fill's second UPDATE sets it, and is the fallback of the others).
CREATE FUNCTION tenancy._backfill_fill_statement(p_rec tenancy.backfill_state, p_leaf oid) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_col    text := p_rec.tenant_column;
    v_source tenancy.backfill_source := p_rec.source;
BEGIN
    CASE v_source.kind
    WHEN 'parent' THEN
        RETURN format('UPDATE ONLY %s c SET %I = p.%I FROM %s p WHERE c.ctid >= $1 AND c.ctid < $2 AND c.%I IS NULL AND %s',
                      p_leaf::regclass, v_col, v_col, v_source.parent_oid::regclass, v_col,
                      (SELECT string_agg(format('p.%I = c.%I', v_source."join"[i][2], v_source."join"[i][1]), ' AND ' ORDER BY i)
                         FROM generate_subscripts(v_source."join", 1) i));
    WHEN 'user' THEN
        RETURN format('UPDATE ONLY %s c SET %I = %s WHERE c.ctid >= $1 AND c.ctid < $2 AND c.%I IS NULL AND c.%I IS NOT NULL',
                      p_leaf::regclass, v_col,
                      format(CASE p_rec.column_type WHEN 'uuid' THEN 'tenancy.get_user_organization_id(c.%I::text)'
                             ELSE '(SELECT o.slug FROM tenancy.organizations o WHERE o.id = tenancy.get_user_organization_id(c.%I::text))' END,
                             v_source.user_column),
                      v_col, v_source.user_column);
    ELSE
        RETURN NULL;
    END CASE;
END $$;

-- Phase filling: one batch, a ctid range of the first leaf with blocks left, its rows given
-- their organization (from the parent row, the user column, the fixed organization); with a
-- NOTICE of the progress. Once every block is visited: ANALYZE of the column. -> filled
CREATE FUNCTION tenancy._backfill_fill_batch(p_rel oid, p_rec tenancy.backfill_state, p_now double precision) RETURNS tenancy.backfill_state
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_rec    tenancy.backfill_state := p_rec;
    v_tbl    text := p_rel::regclass::text;
    v_col    text := p_rec.tenant_column;
    v_batch  integer := (p_rec.options).batch_size;
    v_fill   tenancy.backfill_fill := p_rec.fill;
    v_run    tenancy.backfill_run := p_rec.run;
    v_leaf   jsonb;
    v_i      integer;
    v_lo     bigint;
    v_hi     bigint;
    v_n      bigint;
    v_n2     bigint;
    v_sql    text;
    v_rate   double precision;
BEGIN
    PERFORM tenancy._running_as_owner(p_rel);
    SELECT n - 1 INTO v_i FROM jsonb_array_elements(v_fill.leaves) WITH ORDINALITY e(l, n)
     WHERE (l->>'next')::bigint < (l->>'blocks')::bigint ORDER BY n LIMIT 1;
    IF v_i IS NULL THEN
        v_rate := v_fill.rows_done / greatest(p_now - v_fill.started_at, 0.001);
        RAISE NOTICE 'tenancy.backfill %: fill done, % rows in % batches', v_tbl, v_fill.rows_done, v_fill.batches;
        -- The planner learns the new column now: without statistics, tenant-scoped queries
        -- are planned blind until autovacuum gets to the table (issue 15: 48-81x slower).
        EXECUTE format('ANALYZE %s (%I)', v_tbl, v_col);
        v_rec := tenancy._backfill_advance(p_rel, v_rec, 'filled', jsonb_build_object(
            'rows', v_fill.rows_done, 'batches', v_fill.batches,
            'blocks', v_fill.blocks_total, 'rows_per_second', round(v_rate::numeric)));
    ELSE
        v_leaf := v_fill.leaves->v_i;
        v_lo := (v_leaf->>'next')::bigint;
        v_hi := least((v_leaf->>'blocks')::bigint,
                      v_lo + greatest(1, ceil(v_batch::double precision / v_fill.tuples_per_block))::bigint);
        IF (v_rec.source).kind = 'parent'
           AND coalesce((SELECT c.reltuples < 0 OR c.reltuples > 20 * v_batch FROM pg_class c WHERE c.oid = (v_rec.source).parent_oid), true) THEN
            -- A parent much larger than a batch (or of unknown size: never analyzed): one index
            -- probe per row into it (a hash join would read all of it per batch). Up to 20 times
            -- a batch, reading the parent once per batch and hashing the batch is cheaper than the
            -- probes (about 0.1 us a parent row against 3-4 us a probe), and the planner's choice
            -- is left alone.
            PERFORM set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true);
        END IF;
        -- The batch and its progress record commit together, without waiting for the WAL flush
        -- (synchronous_commit off for this transaction): a crash may lose the last batches and
        -- their record together, and the next CALL fills them again. Nothing else of the
        -- backfill (the DDL phases) commits this way.
        PERFORM set_config('synchronous_commit', 'off', true);
        v_sql := tenancy._backfill_fill_statement(v_rec, (v_leaf->>'relid')::oid);
        v_n := 0;
        IF v_sql IS NOT NULL THEN
            EXECUTE v_sql USING format('(%s,0)', v_lo)::tid, format('(%s,0)', v_hi)::tid;
            GET DIAGNOSTICS v_n = ROW_COUNT;
        END IF;
        IF (v_rec.source).value IS NOT NULL THEN  -- the fixed organization, or the fallback
            EXECUTE format('UPDATE ONLY %s SET %I = %L WHERE ctid >= $1 AND ctid < $2 AND %I IS NULL',
                           (v_leaf->>'relid')::oid::regclass, v_col, (v_rec.source).value, v_col)
                USING format('(%s,0)', v_lo)::tid, format('(%s,0)', v_hi)::tid;
            GET DIAGNOSTICS v_n2 = ROW_COUNT;
            v_n := v_n + v_n2;
        END IF;
        v_fill.leaves := jsonb_set(v_fill.leaves, ARRAY[v_i::text, 'next'], to_jsonb(v_hi));
        v_fill.rows_done := v_fill.rows_done + v_n;
        v_fill.blocks_done := v_fill.blocks_done + (v_hi - v_lo);
        v_fill.batches := v_fill.batches + 1;
        v_rec.fill := v_fill;
        v_rec.retries := 0;
        v_rec := tenancy._backfill_save(p_rel, v_rec);
        -- Progress: rows, share of blocks visited, rate and ETA of this CALL.
        v_rate := (v_fill.blocks_done - v_run.blocks) / greatest(p_now - v_run.started_at, 0.001);
        RAISE NOTICE 'tenancy.backfill %: % of ~% rows, % %%, % rows/s, ETA %', v_tbl, v_fill.rows_done,
              greatest(v_fill.rows_total, v_fill.rows_done),
              round(100.0 * v_fill.blocks_done / greatest(v_fill.blocks_total, 1), 1),
              round(((v_fill.rows_done - v_run.rows) / greatest(p_now - v_run.started_at, 0.001))::numeric),
              CASE WHEN v_rate > 0 THEN justify_interval(make_interval(secs => round(((v_fill.blocks_total
                    - v_fill.blocks_done) / v_rate)::numeric, 1)))::text ELSE '?' END;
    END IF;
    RETURN v_rec;
END $$;

-- Phase filled: CHECK (col IS NOT NULL) NOT VALID on every leaf (nothing when the column was NOT
-- NULL already: -> not_null). -> check_added
CREATE FUNCTION tenancy._backfill_add_check(p_rel oid, p_rec tenancy.backfill_state, p_check text) RETURNS tenancy.backfill_state
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_rec    tenancy.backfill_state := p_rec;
    v_col    text := p_rec.tenant_column;
    v_leaf   oid;
BEGIN
    PERFORM tenancy._running_as_owner(p_rel);
    IF v_rec.column_was_not_null THEN
        v_rec := tenancy._backfill_advance(p_rel, v_rec, 'not_null', jsonb_build_object('note', 'the column was NOT NULL already'));
    ELSE
        FOR v_leaf IN SELECT unnest(tenancy._leaves(p_rel)) LOOP
            IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = v_leaf AND conname = p_check) THEN
                EXECUTE format('ALTER TABLE ONLY %s ADD CONSTRAINT %I CHECK (%I IS NOT NULL) NOT VALID',
                               v_leaf::regclass, p_check, v_col);
            END IF;
        END LOOP;
        v_rec."check" := p_check;
        v_rec := tenancy._backfill_advance(p_rel, v_rec, 'check_added');
    END IF;
    RETURN v_rec;
END $$;

-- Phase check_added: VALIDATE the CHECK of every leaf (writers go on); rows left without an
-- organization are reported (23502), the first of them shown. -> check_validated
CREATE FUNCTION tenancy._backfill_validate_check(p_rel oid, p_rec tenancy.backfill_state, p_check text) RETURNS tenancy.backfill_state
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_rec    tenancy.backfill_state := p_rec;
    v_tbl    text := p_rel::regclass::text;
    v_col    text := p_rec.tenant_column;
    v_leaf   oid;
    v_n      bigint;
    v_msg    text;
BEGIN
    PERFORM tenancy._running_as_owner(p_rel);
    FOR v_leaf IN SELECT unnest(tenancy._leaves(p_rel)) LOOP
        BEGIN
            EXECUTE format('ALTER TABLE ONLY %s VALIDATE CONSTRAINT %I', v_leaf::regclass, p_check);
        EXCEPTION WHEN check_violation THEN
            -- Rows the source gave no organization: report them, leave the constraint unvalidated.
            EXECUTE format('SELECT count(*), (SELECT string_agg(left(r::text, 120), '' | '') FROM (SELECT * FROM %1$s WHERE %2$I IS NULL LIMIT 3) r) FROM %1$s WHERE %2$I IS NULL',
                           v_tbl, v_col) INTO v_n, v_msg;
            RAISE EXCEPTION 'tenancy.backfill: % row(s) of % have no organization', v_n, v_tbl
                USING ERRCODE = 'not_null_violation',
                      DETAIL = format('The %s gave them none. First rows: %s',
                                      CASE (v_rec.source).kind WHEN 'parent' THEN 'parent row (or its missing foreign key)'
                                           WHEN 'user' THEN 'user (no active membership)' ELSE 'source' END, v_msg),
                      HINT = format('Everything filled so far is committed. Give them an organization (UPDATE %s SET %I = ... WHERE %I IS NULL), then CALL tenancy.backfill(%L) again; or undo with SELECT tenancy.rollback(%L).',
                                    v_tbl, v_col, v_col, v_tbl, v_tbl);
        END;
    END LOOP;
    v_rec := tenancy._backfill_advance(p_rel, v_rec, 'check_validated');
    RETURN v_rec;
END $$;

-- Phase check_validated: SET NOT NULL (no scan: the valid CHECK proves it), the CHECK dropped.
-- -> not_null
CREATE FUNCTION tenancy._backfill_set_not_null(p_rel oid, p_rec tenancy.backfill_state, p_check text) RETURNS tenancy.backfill_state
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_rec    tenancy.backfill_state := p_rec;
    v_tbl    text := p_rel::regclass::text;
    v_col    text := p_rec.tenant_column;
    v_leaf   oid;
BEGIN
    PERFORM tenancy._running_as_owner(p_rel);
    EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET NOT NULL', v_tbl, v_col);
    FOR v_leaf IN SELECT unnest(tenancy._leaves(p_rel)) LOOP
        EXECUTE format('ALTER TABLE ONLY %s DROP CONSTRAINT IF EXISTS %I', v_leaf::regclass, p_check);
    END LOOP;
    v_rec.set_not_null := true;
    v_rec := tenancy._backfill_advance(p_rel, v_rec, 'not_null');
    RETURN v_rec;
END $$;

-- Phase not_null: the foreign key to tenancy.organizations, NOT VALID (on every leaf first for
-- a partitioned table), unless one exists. -> fk_added
CREATE FUNCTION tenancy._backfill_add_fk(p_rel oid, p_rec tenancy.backfill_state, p_fkname text) RETURNS tenancy.backfill_state
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_rec    tenancy.backfill_state := p_rec;
    v_col    text := p_rec.tenant_column;
    v_leaf   oid;
BEGIN
    PERFORM tenancy._running_as_owner(p_rel);
    IF EXISTS (SELECT 1 FROM pg_constraint con JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = con.conkey[1]
                WHERE con.conrelid = p_rel AND con.contype = 'f' AND con.confrelid = 'tenancy.organizations'::regclass
                  AND cardinality(con.conkey) = 1 AND a.attname = v_col) THEN
        v_rec := tenancy._backfill_advance(p_rel, v_rec, 'fk_added', jsonb_build_object('note', 'a foreign key to tenancy.organizations existed'));
    ELSE
        -- NOT VALID takes a short lock; the check of existing rows comes next, without blocking
        -- writers. A partitioned table gets one per partition first: Postgres 15 cannot add a
        -- NOT VALID foreign key to a partitioned table, but attaches these when the parent's is added.
        FOR v_leaf IN SELECT unnest(tenancy._leaves(p_rel)) LOOP
            IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = v_leaf AND conname = p_fkname) THEN
                EXECUTE format('ALTER TABLE ONLY %s ADD CONSTRAINT %I FOREIGN KEY (%I) REFERENCES tenancy.organizations (%s)%s NOT VALID',
                               v_leaf::regclass, p_fkname, v_col,
                               CASE v_rec.column_type WHEN 'uuid' THEN 'id' ELSE 'slug' END,
                               CASE v_rec.column_type WHEN 'text' THEN ' ON UPDATE CASCADE' ELSE '' END);
            END IF;
        END LOOP;
        v_rec.fk := p_fkname;
        v_rec := tenancy._backfill_advance(p_rel, v_rec, 'fk_added');
    END IF;
    RETURN v_rec;
END $$;

-- Phase fk_added: VALIDATE the foreign key (and add the partitioned table's own), then plan the
-- composite indexes (tenancy._backfill_index_plan). -> fk_validated
CREATE FUNCTION tenancy._backfill_validate_fk(p_rel oid, p_rec tenancy.backfill_state, p_fkname text) RETURNS tenancy.backfill_state
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_rec    tenancy.backfill_state := p_rec;
    v_tbl    text := p_rel::regclass::text;
    v_col    text := p_rec.tenant_column;
    v_leaf   oid;
BEGIN
    PERFORM tenancy._running_as_owner(p_rel);
    IF v_rec.fk IS NOT NULL THEN
        FOR v_leaf IN SELECT unnest(tenancy._leaves(p_rel)) LOOP
            EXECUTE format('ALTER TABLE ONLY %s VALIDATE CONSTRAINT %I', v_leaf::regclass, p_fkname);
        END LOOP;
        IF v_rec.partitioned
           AND NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = p_rel AND conname = p_fkname) THEN
            EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I FOREIGN KEY (%I) REFERENCES tenancy.organizations (%s)%s',
                           v_tbl, p_fkname, v_col, CASE v_rec.column_type WHEN 'uuid' THEN 'id' ELSE 'slug' END,
                           CASE v_rec.column_type WHEN 'text' THEN ' ON UPDATE CASCADE' ELSE '' END);
        END IF;
    END IF;
    SELECT p.indexes, p.skipped INTO v_rec.indexes, v_rec.skipped FROM tenancy._backfill_index_plan(p_rel, v_rec) p;
    v_rec := tenancy._backfill_advance(p_rel, v_rec, 'fk_validated');
    RETURN v_rec;
END $$;

-- Phases fk_validated and awaiting_indexes: with every planned index in place, -> indexes_built.
-- Otherwise build the next one here (build_indexes => true), or stop the CALL (done) in
-- awaiting_indexes: tenancy.pending_statements() builds them CONCURRENTLY outside a transaction.
CREATE FUNCTION tenancy._backfill_build_index(p_rel oid, p_rec tenancy.backfill_state, OUT rec tenancy.backfill_state, OUT done boolean)
RETURNS record LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_rec    tenancy.backfill_state := p_rec;
    v_tbl    text := p_rel::regclass::text;
    v_ix     jsonb;
    v_stmt   text;
BEGIN
    PERFORM tenancy._running_as_owner(p_rel);
    done := false;
    SELECT ix INTO v_ix FROM jsonb_array_elements(v_rec.indexes) ix
     WHERE NOT tenancy._index_ready(p_rel, ix) LIMIT 1;
    IF v_ix IS NULL THEN
        v_rec := tenancy._backfill_advance(p_rel, v_rec, 'indexes_built',
                     jsonb_build_object('indexes', (SELECT jsonb_agg(ix->'name') FROM jsonb_array_elements(v_rec.indexes) ix)));
    ELSIF (v_rec.options).build_indexes THEN
        -- Asked for: build it here, with a plain CREATE INDEX (writers wait while it builds).
        PERFORM set_config('lock_timeout', '0', true);
        FOR v_stmt IN SELECT s FROM tenancy._index_statements(p_rel, v_ix, false) s LOOP
            EXECUTE v_stmt;
        END LOOP;
        RAISE NOTICE 'tenancy.backfill %: built index %', v_tbl, quote_ident(v_ix->>'name');
    ELSE
        IF p_rec.phase = 'fk_validated' THEN
            v_rec := tenancy._backfill_advance(p_rel, v_rec, 'awaiting_indexes');
        END IF;
        RAISE NOTICE 'tenancy.backfill %: % index(es) must be built outside a transaction', v_tbl,
              (SELECT count(*) FROM jsonb_array_elements(v_rec.indexes) ix WHERE NOT tenancy._index_ready(p_rel, ix))
            USING HINT = format('In psql: SELECT statement FROM tenancy.pending_statements() \gexec   then CALL tenancy.backfill(%L) again (or pass build_indexes => true to build them here, blocking writes).', v_tbl);
        done := true;
    END IF;
    rec := v_rec;
END $$;

-- Phase indexes_built: the tenant-scoped unique constraints take over from the old ones, under
-- their names. -> uniques_done
CREATE FUNCTION tenancy._backfill_take_over_uniques(p_rel oid, p_rec tenancy.backfill_state) RETURNS tenancy.backfill_state
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_rec    tenancy.backfill_state := p_rec;
    v_tbl    text := p_rel::regclass::text;
    v_ix     jsonb;
BEGIN
    PERFORM tenancy._running_as_owner(p_rel);
    -- The tenant-scoped unique constraints take over from the old ones, which are dropped
    -- only now that the new ones are valid. A replacement takes the old one's name (drop the
    -- old, add the new under its name, in this transaction): ORMs that compare names (Prisma)
    -- see no drift, and SQL written against the old name goes on working (issue 15 item 8).
    FOR v_ix IN SELECT ix FROM jsonb_array_elements(v_rec.indexes) ix WHERE ix->>'kind' IN ('pkey', 'unique') LOOP
        IF v_ix->>'kind' = 'pkey' THEN
            IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = p_rel AND conname = v_ix->>'name') THEN
                EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I UNIQUE USING INDEX %I', v_tbl, v_ix->>'name', v_ix->>'name');
            END IF;
        ELSIF NOT EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                           WHERE i.indrelid = p_rel AND c.relname = v_ix->>'name') THEN
            NULL;  -- taken over already (the index carries the old name now)
        ELSIF v_ix->'replaces'->>'constraint' IS NOT NULL THEN
            EXECUTE format('ALTER TABLE %s DROP CONSTRAINT IF EXISTS %I', v_tbl, v_ix->'replaces'->>'constraint');
            -- USING INDEX renames the index to the constraint's name.
            EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I UNIQUE USING INDEX %I', v_tbl, v_ix->'replaces'->>'constraint', v_ix->>'name');
        ELSIF v_ix->'replaces'->>'index' IS NOT NULL THEN
            EXECUTE format('DROP INDEX IF EXISTS %s.%I', tenancy._schema_of(p_rel), v_ix->'replaces'->>'index');
            EXECUTE format('ALTER INDEX %s.%I RENAME TO %I', tenancy._schema_of(p_rel), v_ix->>'name', v_ix->'replaces'->>'index');
        END IF;
    END LOOP;
    v_rec := tenancy._backfill_advance(p_rel, v_rec, 'uniques_done');
    RETURN v_rec;
END $$;

-- Phase uniques_done: foreign keys to other tenant tables rewritten to carry the tenant column,
-- NOT VALID (those that cannot be are recorded as skipped). -> fks_added
CREATE FUNCTION tenancy._backfill_rewrite_fks(p_rel oid, p_rec tenancy.backfill_state) RETURNS tenancy.backfill_state
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_rec    tenancy.backfill_state := p_rec;
    v_tbl    text := p_rel::regclass::text;
    v_col    text := p_rec.tenant_column;
    v_fks    jsonb;
    v_fk     record;
    v_sql    text;
BEGIN
    PERFORM tenancy._running_as_owner(p_rel);
    -- Foreign keys to other tenant tables carry the tenant column: a row can only point at a
    -- row of its own organization. NOT VALID now, validated in the next step.
    v_fks := coalesce(v_rec.fk_rewrites, '[]');
    FOR v_fk IN
        SELECT con.oid, con.conname, con.confrelid::regclass AS parent, pg_get_constraintdef(con.oid) AS def,
               tenancy._att_names(con.conrelid, con.conkey) AS cols, tenancy._att_names(con.confrelid, con.confkey) AS pcols,
               t.tenant_column::text AS pcol, con.confupdtype, con.confdeltype
          FROM pg_constraint con
          JOIN tenancy.tenant_tables t ON t.relid = con.confrelid::regclass AND t.column_type = v_rec.column_type
         WHERE con.conrelid = p_rel AND con.contype = 'f' AND con.confrelid <> 'tenancy.organizations'::regclass
           AND NOT (SELECT attnum FROM pg_attribute WHERE attrelid = p_rel AND attname = v_col) = ANY (con.conkey)
         ORDER BY con.conname LOOP
        IF v_fks @> jsonb_build_array(jsonb_build_object('old', v_fk.conname)) THEN
            CONTINUE;
        ELSIF NOT tenancy._has_index(v_fk.parent, ARRAY[v_fk.pcol] || v_fk.pcols, true) THEN
            v_rec.skipped := v_rec.skipped || jsonb_build_object('object', v_fk.conname,
                'reason', format('%s has no unique key on (%s, %s) yet: convert it first, then CALL tenancy.backfill(%L) again',
                                 v_fk.parent, v_fk.pcol, array_to_string(v_fk.pcols, ', '), v_tbl));
            CONTINUE;
        ELSIF v_fk.confupdtype IN ('n', 'd') THEN
            v_rec.skipped := v_rec.skipped || jsonb_build_object('object', v_fk.conname,
                'reason', 'ON UPDATE SET NULL/DEFAULT would also clear the tenant column: rewrite it by hand');
            CONTINUE;
        END IF;
        -- Built from the catalog's columns, each quoted, never from the constraint's text. ON
        -- DELETE SET NULL / SET DEFAULT clears only the key columns, never the tenant column.
        v_sql := tenancy._fk_definition(v_fk.oid, v_col, v_fk.pcol);
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s NOT VALID', v_tbl, tenancy._name(v_fk.conname, 'tenant'), v_sql);
        v_fks := v_fks || jsonb_build_object('old', v_fk.conname, 'old_def', v_fk.def,
                                             'new', tenancy._name(v_fk.conname, 'tenant'), 'new_def', v_sql);
    END LOOP;
    v_rec.fk_rewrites := v_fks;
    v_rec := tenancy._backfill_advance(p_rel, v_rec, 'fks_added');
    RETURN v_rec;
END $$;

-- Phase fks_added: the rewritten foreign keys validated, the old ones dropped; the NOTICE of the
-- end of the conversion, with what was left as it was. -> converted
CREATE FUNCTION tenancy._backfill_validate_fks(p_rel oid, p_rec tenancy.backfill_state) RETURNS tenancy.backfill_state
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_rec    tenancy.backfill_state := p_rec;
    v_tbl    text := p_rel::regclass::text;
    v_fk     record;
BEGIN
    PERFORM tenancy._running_as_owner(p_rel);
    FOR v_fk IN SELECT f->>'old' AS old, f->>'new' AS new FROM jsonb_array_elements(v_rec.fk_rewrites) f LOOP
        IF EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = p_rel AND conname = v_fk.new AND NOT convalidated) THEN
            EXECUTE format('ALTER TABLE %s VALIDATE CONSTRAINT %I', v_tbl, v_fk.new);
        END IF;
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT IF EXISTS %I', v_tbl, v_fk.old);
    END LOOP;
    v_rec := tenancy._backfill_advance(p_rel, v_rec, 'converted');
    RAISE NOTICE 'tenancy.backfill %: converted%', v_tbl,
          CASE WHEN jsonb_array_length(v_rec.skipped) > 0
               THEN format(' (left as they were: %s)', (SELECT string_agg(format('%s: %s', s->>'object', s->>'reason'), '; ')
                                                         FROM jsonb_array_elements(v_rec.skipped) s))
               ELSE '' END
        USING HINT = format('Next: SELECT tenancy.enable_isolation(%L) once the application sets the tenant context.', v_tbl);
    RETURN v_rec;
END $$;

-- Does one step of the phase p_rel is in, in the caller's transaction, and records it.
-- Returns done (nothing more to do in this CALL) and sleep (seconds to wait before the next
-- step: the pause between batches, or the back-off after a lock timeout).
-- One step as the table's owner (through tenancy._as_owner): whatever the record holds runs with
-- the owner's rights only, never with those of the administrator or superuser who called.
-- The phases' work is done by one function each (tenancy._backfill_add_column and the others
-- above, in the order of the phases); this one checks, locks, names what they create, and turns
-- a lock timeout into a retry.
CREATE FUNCTION tenancy._owner_backfill_step(p_rel oid, a jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    done     boolean := false;
    sleep    double precision;
    v_rec    tenancy.backfill_state := tenancy._backfill_record(p_rel);
    v_phase  text := v_rec.phase;
    v_tbl    text := p_rel::regclass::text;
    v_col    text := v_rec.tenant_column;
    v_opt    tenancy.backfill_options := v_rec.options;
    v_check  text;
    v_fkname text;
    v_trig   text;
    v_built  record;
    v_now    double precision := extract(epoch FROM clock_timestamp());
BEGIN
    PERFORM tenancy._running_as_owner(p_rel);
  BEGIN
    IF v_rec.phase IS NULL THEN  -- no record (a record always has its phase)
        RAISE EXCEPTION 'tenancy.backfill: % has no backfill in progress', v_tbl USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF NOT pg_try_advisory_xact_lock(hashtext('tenancy.backfill'), p_rel::integer) THEN
        RAISE EXCEPTION 'tenancy.backfill: another session is converting % right now', v_tbl
            USING ERRCODE = 'object_in_use', HINT = 'SELECT * FROM tenancy.backfill_progress shows it.';
    END IF;
    PERFORM set_config('lock_timeout', v_opt.lock_timeout_ms::text || 'ms', true);
    -- Not <table>_<column>_not_null: PostgreSQL 18 gives that name to the NOT NULL constraint of
    -- SET NOT NULL. A backfill begun earlier keeps the name it recorded.
    v_check := coalesce(v_rec."check",
                        tenancy._name(left((SELECT relname FROM pg_class WHERE oid = p_rel), 40) || '_' || v_col, 'tenancy_not_null'));
    v_fkname := tenancy._name(left((SELECT relname FROM pg_class WHERE oid = p_rel), 40) || '_' || v_col, 'tenancy_fk');
    v_trig := tenancy._name('tenancy_fill', v_col);

    BEGIN  -- a lock timeout undoes this block only; the step is then retried after a back-off
    CASE v_phase
    WHEN 'planned' THEN v_rec := tenancy._backfill_add_column(p_rel, v_rec, v_trig);
    WHEN 'column_added' THEN v_rec := tenancy._backfill_start_fill(p_rel, v_rec, v_trig, v_now);
    WHEN 'filling' THEN v_rec := tenancy._backfill_fill_batch(p_rel, v_rec, v_now);
    WHEN 'filled' THEN v_rec := tenancy._backfill_add_check(p_rel, v_rec, v_check);
    WHEN 'check_added' THEN v_rec := tenancy._backfill_validate_check(p_rel, v_rec, v_check);
    WHEN 'check_validated' THEN v_rec := tenancy._backfill_set_not_null(p_rel, v_rec, v_check);
    WHEN 'not_null' THEN v_rec := tenancy._backfill_add_fk(p_rel, v_rec, v_fkname);
    WHEN 'fk_added' THEN v_rec := tenancy._backfill_validate_fk(p_rel, v_rec, v_fkname);
    WHEN 'fk_validated', 'awaiting_indexes' THEN
        SELECT * INTO v_built FROM tenancy._backfill_build_index(p_rel, v_rec);
        v_rec := v_built.rec;
        done := v_built.done;
    WHEN 'indexes_built' THEN v_rec := tenancy._backfill_take_over_uniques(p_rel, v_rec);
    WHEN 'uniques_done' THEN
        PERFORM tenancy._backfill_lock_all(p_rel, 'SHARE ROW EXCLUSIVE');
        v_rec := tenancy._backfill_rewrite_fks(p_rel, v_rec);
    WHEN 'fks_added' THEN
        PERFORM tenancy._backfill_lock_all(p_rel, 'ACCESS EXCLUSIVE');
        v_rec := tenancy._backfill_validate_fks(p_rel, v_rec);
        done := true;
    WHEN 'converted' THEN
        RAISE NOTICE 'tenancy.backfill %: already converted', v_tbl;
        done := true;
    ELSE
        RAISE EXCEPTION 'tenancy.backfill: % is in unknown phase %', v_tbl, v_phase USING ERRCODE = 'internal_error';
    END CASE;
    -- The pause applies after every step, not only between batches: DDL steps get it too.
    IF sleep IS NULL AND NOT done THEN
        sleep := nullif(v_opt.pause_s::double precision, 0);
    END IF;
    EXCEPTION WHEN lock_not_available THEN
        IF v_rec.retries >= v_opt.max_retries THEN
            RAISE EXCEPTION 'tenancy.backfill: gave up on % after % lock timeouts in phase %', v_tbl, v_rec.retries, v_phase
                USING ERRCODE = 'lock_not_available',
                      HINT = format('A long transaction holds a lock on %s (see pg_locks). CALL tenancy.backfill(%L) again later, or pass a larger lock_timeout or max_retries.', v_tbl, v_tbl);
        END IF;
        v_rec.retries := v_rec.retries + 1;
        v_rec := tenancy._backfill_save(p_rel, v_rec);
        sleep := least(5.0, 0.05 * power(2, v_rec.retries));
        RAISE NOTICE 'tenancy.backfill %: lock timeout in phase % (retry % of %), waiting %s', v_tbl, v_phase,
              v_rec.retries, v_opt.max_retries, round(sleep::numeric, 2);
    END;
  END;
    RETURN jsonb_build_object('done', done, 'sleep', sleep);
END $$;

CREATE FUNCTION tenancy._backfill_step(p_rel oid, OUT done boolean, OUT sleep double precision)
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (r->>'done')::boolean, (r->>'sleep')::double precision
      FROM tenancy._as_owner(p_rel, 'backfill_step', '{}') r
$$;

-- The trigger that gives rows written during the backfill their organization: TG_ARGV[0] is the
-- tenant column, TG_ARGV[1] a query that returns the organization (as text) of the row given as
-- jsonb in $1. Fires only for rows whose tenant column is NULL (see its WHEN clause).
CREATE FUNCTION tenancy._backfill_fill() RETURNS trigger
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE v text;
BEGIN
    EXECUTE TG_ARGV[1] INTO v USING to_jsonb(NEW);
    IF v IS NOT NULL THEN
        NEW := jsonb_populate_record(NEW, jsonb_build_object(TG_ARGV[0], v));
    END IF;
    RETURN NEW;
END $$;

COMMENT ON FUNCTION tenancy._backfill_add_column(oid, tenancy.backfill_state, text) IS
  'Internal: backfill phase planned: add the tenant column (with its default and NOT NULL on the metadata-only path); run as the table''s owner by tenancy._owner_backfill_step.';
COMMENT ON FUNCTION tenancy._backfill_start_fill(oid, tenancy.backfill_state, text, double precision) IS
  'Internal: backfill phase column_added: the fill trigger and the fill''s plan (or nothing to fill on the metadata-only path); run as the table''s owner by tenancy._owner_backfill_step.';
COMMENT ON FUNCTION tenancy._backfill_fill_statement(tenancy.backfill_state, oid) IS
  'Internal: the UPDATE that fills a ctid range of a leaf from a backfill''s parent row or user column (NULL for a fixed organization).';
COMMENT ON FUNCTION tenancy._backfill_fill_batch(oid, tenancy.backfill_state, double precision) IS
  'Internal: backfill phase filling: one batch of the fill (a ctid range), or its end; run as the table''s owner by tenancy._owner_backfill_step.';
COMMENT ON FUNCTION tenancy._backfill_add_check(oid, tenancy.backfill_state, text) IS
  'Internal: backfill phase filled: CHECK (tenant column IS NOT NULL) NOT VALID; run as the table''s owner by tenancy._owner_backfill_step.';
COMMENT ON FUNCTION tenancy._backfill_validate_check(oid, tenancy.backfill_state, text) IS
  'Internal: backfill phase check_added: validate the NOT NULL check, naming the rows left without an organization; run as the table''s owner by tenancy._owner_backfill_step.';
COMMENT ON FUNCTION tenancy._backfill_set_not_null(oid, tenancy.backfill_state, text) IS
  'Internal: backfill phase check_validated: SET NOT NULL and drop the check; run as the table''s owner by tenancy._owner_backfill_step.';
COMMENT ON FUNCTION tenancy._backfill_add_fk(oid, tenancy.backfill_state, text) IS
  'Internal: backfill phase not_null: the foreign key to tenancy.organizations, NOT VALID; run as the table''s owner by tenancy._owner_backfill_step.';
COMMENT ON FUNCTION tenancy._backfill_validate_fk(oid, tenancy.backfill_state, text) IS
  'Internal: backfill phase fk_added: validate the foreign key to tenancy.organizations and plan the indexes; run as the table''s owner by tenancy._owner_backfill_step.';
COMMENT ON FUNCTION tenancy._backfill_build_index(oid, tenancy.backfill_state) IS
  'Internal: backfill phases fk_validated and awaiting_indexes: build the next planned index, or wait for pending_statements(); run as the table''s owner by tenancy._owner_backfill_step.';
COMMENT ON FUNCTION tenancy._backfill_take_over_uniques(oid, tenancy.backfill_state) IS
  'Internal: backfill phase indexes_built: the tenant-scoped unique keys replace the old ones, under their names; run as the table''s owner by tenancy._owner_backfill_step.';
COMMENT ON FUNCTION tenancy._backfill_rewrite_fks(oid, tenancy.backfill_state) IS
  'Internal: backfill phase uniques_done: foreign keys to other tenant tables rewritten with the tenant column, NOT VALID; run as the table''s owner by tenancy._owner_backfill_step.';
COMMENT ON FUNCTION tenancy._backfill_validate_fks(oid, tenancy.backfill_state) IS
  'Internal: backfill phase fks_added: validate the rewritten foreign keys and drop the old ones; run as the table''s owner by tenancy._owner_backfill_step.';
