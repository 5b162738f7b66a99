----------------------------------------------------------------------------------------------
-- Helpers
----------------------------------------------------------------------------------------------

-- Does a valid, non-partial index on p_rel lead with exactly the columns p_cols (in order), and,
-- when p_unique, is it unique on exactly that set of columns (what a foreign key can reference)?
CREATE FUNCTION tenancy._has_index(p_rel oid, p_cols text[], p_unique boolean) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (
        SELECT 1 FROM pg_index i
         WHERE i.indrelid = p_rel AND i.indpred IS NULL AND i.indisvalid
           AND CASE WHEN p_unique
                    THEN i.indisunique AND i.indnkeyatts = cardinality(p_cols)
                         AND (SELECT array_agg(c ORDER BY c) FROM unnest(tenancy._att_names(p_rel, (i.indkey::int2[])[0:i.indnkeyatts - 1])) c)
                           = (SELECT array_agg(c ORDER BY c) FROM unnest(p_cols) c)
                    ELSE tenancy._att_names(p_rel, (i.indkey::int2[])[0:cardinality(p_cols) - 1]) = p_cols
                         AND i.indnkeyatts >= cardinality(p_cols)
               END)
$$;

-- The schema of relation p_rel, quoted: for names (indexes) that live in the table's schema.
CREATE FUNCTION tenancy._schema_of(p_rel oid) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT quote_ident(n.nspname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = p_rel
$$;

-- The record of p_rel's backfill (NULL: none), typed: where the stored jsonb becomes a
-- tenancy.backfill_state (every key that names a field, nested objects into nested types).
CREATE FUNCTION tenancy._backfill_record(p_rel oid) RETURNS tenancy.backfill_state
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_populate_record(NULL::tenancy.backfill_state, t.details->'backfill')
      FROM tenancy.tenant_tables t WHERE t.relid = p_rel::regclass
$$;

-- Save the record (and optionally log a finished phase) through the catalog door: where a
-- tenancy.backfill_state becomes the stored jsonb (its null fields left out, as ever).
CREATE FUNCTION tenancy._backfill_save(p_rel oid, p_rec tenancy.backfill_state, p_log jsonb DEFAULT NULL)
RETURNS tenancy.backfill_state LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE v_rec tenancy.backfill_state := p_rec;
BEGIN
    v_rec.updated_at := clock_timestamp();
    PERFORM tenancy._privileged('record_backfill',
        jsonb_strip_nulls(jsonb_build_object('relid', p_rel, 'backfill', to_jsonb(v_rec), 'log', p_log)));
    RETURN v_rec;
END $$;

-- Move the record to p_phase, logging the phase that ended (details.phase) with its timing.
CREATE FUNCTION tenancy._backfill_advance(p_rel oid, p_rec tenancy.backfill_state, p_phase text, p_details jsonb DEFAULT '{}')
RETURNS tenancy.backfill_state LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE v_rec tenancy.backfill_state := p_rec;
BEGIN
    v_rec.phase := p_phase;
    v_rec.phase_started_at := clock_timestamp();
    v_rec.retries := 0;
    RETURN tenancy._backfill_save(p_rel, v_rec,
        jsonb_build_object('operation', 'backfill', 'status', 'succeeded', 'started', p_rec.phase_started_at,
                           'details', jsonb_build_object('phase', p_rec.phase, 'next', p_phase) || coalesce(p_details, '{}')));
END $$;

-- The leaf tables of p_rel that hold rows: p_rel itself, or its leaf partitions.
CREATE FUNCTION tenancy._leaves(p_rel oid) RETURNS oid[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN (SELECT relkind FROM pg_class WHERE oid = p_rel) = 'p'
                THEN (SELECT coalesce(array_agg(t.relid::oid ORDER BY t.relid::oid), '{}')
                        FROM pg_partition_tree(p_rel::regclass) t
                        JOIN pg_class c ON c.oid = t.relid WHERE c.relkind = 'r')
                ELSE ARRAY[p_rel] END
$$;

-- Can the backfill of p_rel take the metadata-only path (issue 17)? Only when every row gets the
-- one organization and the column is new: ADD COLUMN ... NOT NULL DEFAULT '<organization>' then
-- writes no row and scans for no NULL, because PostgreSQL keeps the constant as the "missing
-- value" of the rows that exist (on each leaf of a partitioned table too). Not when:
--   * the organization is derived (a parent row, a user column): each row has its own value;
--   * the column exists (a user column, an earlier conversion): its rows hold what they hold;
--   * the table has inheritance children (ADD COLUMN would reach them, the backfill does not);
--   * a leaf is not a heap table (a foreign table, another access method): no missing values.
-- The batched fill does those. The record says which path a backfill took ('fast_default').
CREATE FUNCTION tenancy._backfill_fast_default(p_rel oid, p_rec tenancy.backfill_state) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (p_rec.source).kind = 'fixed' AND (p_rec.source).value IS NOT NULL
       AND NOT coalesce(p_rec.column_existed, true)
       AND NOT EXISTS (SELECT 1 FROM pg_attribute a
                        WHERE a.attrelid = p_rel AND a.attname = p_rec.tenant_column AND NOT a.attisdropped)
       AND NOT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhparent
                        WHERE i.inhparent = p_rel AND c.relkind = 'r')
       AND NOT EXISTS (SELECT 1 FROM (SELECT p_rel UNION SELECT t.relid::oid FROM pg_partition_tree(p_rel::regclass) t) x(relid)
                         JOIN pg_class c ON c.oid = x.relid
                        WHERE c.relkind <> 'p'
                          AND (c.relkind <> 'r' OR c.relam IS DISTINCT FROM (SELECT m.oid FROM pg_am m WHERE m.amname = 'heap')))
$$;

-- Is another session running a backfill of this record right now?
CREATE FUNCTION tenancy._backfill_running_elsewhere(p_rec tenancy.backfill_state) RETURNS integer
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT a.pid FROM pg_stat_activity a
     WHERE a.pid = p_rec.pid AND a.pid <> pg_backend_pid() AND a.state <> 'idle'
$$;

-- The foreign-key phases lock p_rel and the tables its foreign keys reference (in p_mode) all at
-- once, never waiting while holding one of them: each try takes them NOWAIT inside a
-- subtransaction, whose abort releases what it took; tries repeat every 10 ms until the step's
-- lock_timeout, then 55P03 (the step's retry). Waiting in ALTER TABLE's order instead deadlocks
-- with applications in either order (an UPDATE of a parent then of its child; an INSERT into a
-- child, whose foreign key check then locks the parent), and PostgreSQL aborts one side, often the
-- application. Parents the table's owner may not lock are left to ALTER TABLE.
CREATE FUNCTION tenancy._backfill_lock_all(p_rel oid, p_mode text) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_tables   regclass[];
    v_t        regclass;
    v_deadline timestamptz;
BEGIN
    IF p_mode NOT IN ('SHARE ROW EXCLUSIVE', 'ACCESS EXCLUSIVE') THEN
        RAISE EXCEPTION 'tenancy: unknown lock mode %', p_mode USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT array_agg(x.t ORDER BY x.t::oid) INTO v_tables
      FROM (SELECT p_rel::regclass AS t
            UNION
            SELECT con.confrelid::regclass FROM pg_constraint con
             WHERE con.conrelid = p_rel AND con.contype = 'f'
               AND con.confrelid <> 'tenancy.organizations'::regclass
               AND has_table_privilege(con.confrelid, 'UPDATE')) x;
    v_deadline := clock_timestamp() + CASE WHEN current_setting('lock_timeout') IN ('0', '0ms') THEN interval '1 hour'
                                           ELSE current_setting('lock_timeout')::interval END;
    LOOP
        BEGIN
            FOREACH v_t IN ARRAY v_tables LOOP
                EXECUTE format('LOCK TABLE %s IN %s MODE NOWAIT', v_t, p_mode);
            END LOOP;
            RETURN;
        EXCEPTION WHEN lock_not_available THEN
            IF clock_timestamp() >= v_deadline THEN
                RAISE EXCEPTION 'tenancy.backfill: % and the tables it references stayed locked by other transactions for lock_timeout', p_rel::regclass
                    USING ERRCODE = 'lock_not_available';
            END IF;
        END;
        PERFORM pg_sleep(0.01);
    END LOOP;
END $$;
