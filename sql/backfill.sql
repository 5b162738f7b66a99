-- tenancy.backfill: convert a live single-tenant table into a tenant table, online.
--
-- The work is a state machine whose state (the "record") lives in
-- tenancy.tenant_tables.details->'backfill' and whose phases are, in order:
--
--   planned          options checked and recorded
--   column_added     the tenant column exists (ADD COLUMN without a default: metadata only)
--   filling          new and updated rows get their organization from a trigger (and a DEFAULT for a
--                    fixed organization); existing rows are filled in ctid ranges, one COMMIT each
--   filled           every block that existed when the trigger was in place has been visited
--   check_added      CHECK (col IS NOT NULL) NOT VALID
--   check_validated  VALIDATE (SHARE UPDATE EXCLUSIVE: writers go on)
--   not_null         SET NOT NULL (no scan: the valid CHECK proves it) and the CHECK dropped
--   fk_added         FOREIGN KEY (col) REFERENCES tenancy.organizations NOT VALID
--   fk_validated     VALIDATE
--   awaiting_indexes composite indexes with the tenant column leading (pending_statements() builds
--                    them CONCURRENTLY outside any transaction; or build_indexes => true)
--   indexes_built    all of them exist and are valid
--   uniques_done     unique constraints rewritten to include the tenant column; the old ones dropped
--   fks_added        foreign keys to other tenant tables rewritten to carry the tenant column, NOT VALID
--   converted        the rewritten foreign keys validated and the old ones dropped
--
-- One organization for every row of a new column (no parent, no user column) takes the
-- metadata-only path instead (tenancy._backfill_fast_default; recorded as fast_default):
--   planned -> column_added   ADD COLUMN ... NOT NULL DEFAULT '<organization>' (PostgreSQL's fast
--                             default: no row written, no scan) and the fill trigger, in one ALTER
--   column_added -> not_null  ANALYZE of the column; nothing to fill, no CHECK
-- then fk_added and the rest as above.
--
-- tenancy.backfill (the procedure) only loops: it calls tenancy._backfill_step, which does one
-- step of one phase in the current transaction, and COMMITs. A procedure that COMMITs can have
-- neither a SET clause nor SECURITY DEFINER, so the procedures below name everything with its
-- schema and use no operators; the functions they call pin their search_path as usual.
-- Every step is idempotent, so after an error, a cancel, pg_terminate_backend or a crash the
-- next CALL redoes at most the step that was cut off.

----------------------------------------------------------------------------------------------
-- Catalog operation (through tenancy._privileged): record the state of a backfill
----------------------------------------------------------------------------------------------

-- A backfill record a table owner could write by hand through tenancy._privileged: the text
-- fields that the steps and rollback put back into DDL (as the table's owner) must be what Postgres
-- itself printed for this table's objects when they were first recorded, and may not change
-- afterwards; column_type is one of two words. Records are structured jsonb; this keeps their
-- text honest. Raises 42501 naming the field.
CREATE FUNCTION tenancy._check_backfill_record(p_rel oid, p_new jsonb, p_old jsonb) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE v_bad text;
BEGIN
    IF p_new->>'column_type' IS NOT NULL AND p_new->>'column_type' NOT IN ('uuid', 'text') THEN
        v_bad := 'column_type';
    ELSIF p_old ? 'old_default' THEN
        IF (p_new->'old_default') IS DISTINCT FROM (p_old->'old_default') THEN
            v_bad := 'old_default (it was recorded already)';
        END IF;
    ELSIF p_new->>'old_default' IS NOT NULL
          AND (p_new->>'old_default') IS DISTINCT FROM (
                SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d
                  JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
                 WHERE d.adrelid = p_rel AND a.attname = p_new->>'tenant_column') THEN
        v_bad := 'old_default';
    END IF;
    IF v_bad IS NULL THEN
        SELECT string_agg('fk_rewrites ' || quote_ident(e->>'old'), ', ') INTO v_bad
          FROM jsonb_array_elements(coalesce(p_new->'fk_rewrites', '[]')) e
         WHERE NOT coalesce(p_old->'fk_rewrites' @> jsonb_build_array(e), false)
           AND (e->>'old_def') IS DISTINCT FROM (SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c
                                                 WHERE c.conrelid = p_rel AND c.conname = e->>'old' AND c.contype = 'f');
    END IF;
    IF v_bad IS NULL THEN
        SELECT string_agg('indexes ' || quote_ident(e->>'name'), ', ') INTO v_bad
          FROM jsonb_array_elements(coalesce(p_new->'indexes', '[]')) e
         WHERE e->'replaces'->>'def' IS NOT NULL
           AND NOT coalesce(p_old->'indexes' @> jsonb_build_array(e), false)
           AND (e->'replaces'->>'def') IS DISTINCT FROM
               CASE WHEN e->'replaces'->>'constraint' IS NOT NULL
                    THEN (SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c
                           WHERE c.conrelid = p_rel AND c.conname = e->'replaces'->>'constraint')
                    ELSE (SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid
                           WHERE i.indrelid = p_rel AND x.relname = e->'replaces'->>'index') END;
    END IF;
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION 'tenancy: the backfill record of % does not match the table (%)', p_rel::regclass, v_bad
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Backfill records are written by CALL tenancy.backfill; they can only state what the catalog says about the table.';
    END IF;
END $$;

-- a: {relid, backfill: record | null (forget it), log: {operation, status, details, started}}
CREATE FUNCTION tenancy._op_record_backfill(a jsonb, caller oid, is_admin boolean, actor text)
RETURNS jsonb LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_rel   oid   := tenancy._require('relid', (a->>'relid')::oid);
    v_rec   jsonb := nullif(a->'backfill', 'null'::jsonb);
    v_name  text;
BEGIN
    v_name := tenancy._owned_table(v_rel, caller, 'backfill it');
    IF v_rec IS NOT NULL THEN
        PERFORM tenancy._check_backfill_record(v_rel, v_rec,
            (SELECT t.details->'backfill' FROM tenancy.tenant_tables t WHERE t.relid = v_rel::regclass));
    END IF;
    IF v_rec IS NULL THEN
        IF (SELECT (t.details->'backfill'->>'was_registered')::boolean
              FROM tenancy.tenant_tables t WHERE t.relid = v_rel::regclass) IS FALSE
           AND NOT EXISTS (SELECT 1 FROM tenancy.tenant_tables t
                            WHERE t.relid = v_rel::regclass AND t.details ? 'isolation') THEN
            DELETE FROM tenancy.tenant_tables WHERE relid = v_rel::regclass;
        ELSE
            UPDATE tenancy.tenant_tables
               SET state = CASE WHEN details ? 'isolation' THEN 'isolated' ELSE 'registered' END,
                   details = details - 'backfill', updated_at = now()
             WHERE relid = v_rel::regclass;
        END IF;
    ELSE
        INSERT INTO tenancy.tenant_tables AS t (relid, tenant_column, column_type, state, details)
        VALUES (v_rel::regclass, v_rec->>'tenant_column', v_rec->>'column_type', v_rec->>'phase',
                jsonb_build_object('backfill', v_rec))
        ON CONFLICT (relid) DO UPDATE
           SET tenant_column = excluded.tenant_column, column_type = excluded.column_type,
               state = CASE WHEN excluded.state = 'converted' AND t.details ? 'isolation' THEN 'isolated'
                            ELSE excluded.state END,
               details = t.details || excluded.details, updated_at = now();
    END IF;
    IF a ? 'log' THEN
        PERFORM tenancy._log(a->'log'->>'operation', v_name, a->'log'->>'status',
                             coalesce(a->'log'->'details', '{}') || jsonb_build_object('actor', actor),
                             (a->'log'->>'started')::timestamptz, p_caller => caller);
    END IF;
    RETURN jsonb_build_object('table', v_name);
END $$;

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

CREATE FUNCTION tenancy._backfill_record(p_rel oid) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT t.details->'backfill' FROM tenancy.tenant_tables t WHERE t.relid = p_rel::regclass
$$;

-- Save the record (and optionally log a finished phase) through the catalog door.
CREATE FUNCTION tenancy._backfill_save(p_rel oid, p_rec jsonb, p_log jsonb DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE v_rec jsonb := p_rec || jsonb_build_object('updated_at', clock_timestamp());
BEGIN
    PERFORM tenancy._privileged('record_backfill',
        jsonb_strip_nulls(jsonb_build_object('relid', p_rel, 'backfill', v_rec, 'log', p_log)));
    RETURN v_rec;
END $$;

-- Move the record to p_phase, logging the phase that ended (details.phase) with its timing.
CREATE FUNCTION tenancy._backfill_advance(p_rel oid, p_rec jsonb, p_phase text, p_details jsonb DEFAULT '{}')
RETURNS jsonb LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT tenancy._backfill_save(p_rel,
        p_rec || jsonb_build_object('phase', p_phase, 'phase_started_at', clock_timestamp(), 'retries', 0),
        jsonb_build_object('operation', 'backfill', 'status', 'succeeded',
                           'started', p_rec->'phase_started_at',
                           'details', jsonb_build_object('phase', p_rec->>'phase', 'next', p_phase) || coalesce(p_details, '{}')))
$$;

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
CREATE FUNCTION tenancy._backfill_fast_default(p_rel oid, p_rec jsonb) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT p_rec->'source'->>'kind' = 'fixed' AND p_rec->'source'->>'value' IS NOT NULL
       AND NOT coalesce((p_rec->>'column_existed')::boolean, true)
       AND NOT EXISTS (SELECT 1 FROM pg_attribute a
                        WHERE a.attrelid = p_rel AND a.attname = p_rec->>'tenant_column' AND NOT a.attisdropped)
       AND NOT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhparent
                        WHERE i.inhparent = p_rel AND c.relkind = 'r')
       AND NOT EXISTS (SELECT 1 FROM (SELECT p_rel UNION SELECT t.relid::oid FROM pg_partition_tree(p_rel::regclass) t) x(relid)
                         JOIN pg_class c ON c.oid = x.relid
                        WHERE c.relkind <> 'p'
                          AND (c.relkind <> 'r' OR c.relam IS DISTINCT FROM (SELECT m.oid FROM pg_am m WHERE m.amname = 'heap')))
$$;

-- Is another session running a backfill of this record right now?
CREATE FUNCTION tenancy._backfill_running_elsewhere(p_rec jsonb) RETURNS integer
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT a.pid FROM pg_stat_activity a
     WHERE a.pid = (p_rec->>'pid')::integer AND a.pid <> pg_backend_pid() AND a.state <> 'idle'
$$;

----------------------------------------------------------------------------------------------
-- Planning: check the options and record them (first CALL), or check a resumed CALL agrees
----------------------------------------------------------------------------------------------

CREATE FUNCTION tenancy._backfill_begin(
    p_rel oid, p_org uuid, p_col name, p_type text, p_parent oid, p_user_col name,
    p_batch integer, p_pause interval, p_lock_timeout interval, p_retries integer, p_build boolean)
RETURNS jsonb LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_rec     jsonb := tenancy._backfill_record(tenancy._require('tbl', p_rel));
    v_name    text;
    v_kind    "char";
    v_ispart  boolean;
    v_att     record;
    v_source  jsonb;
    v_value   text;
    v_fk      record;
    v_pcol    record;
    v_lookup  text;
    v_other   integer;
    v_options jsonb;
BEGIN
    PERFORM tenancy._citus_backfill_check(p_rel);  -- Citus: refused once the catalog is distributed
    SELECT c.oid::regclass::text, c.relkind, c.relispartition INTO v_name, v_kind, v_ispart
      FROM pg_class c WHERE c.oid = p_rel;
    IF v_kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'tenancy.backfill: % is not a table (it is a %)', v_name, tenancy._relkind_noun(v_kind)
            USING ERRCODE = 'wrong_object_type', HINT = 'Backfill the table the view reads from.';
    END IF;
    IF v_ispart THEN
        RAISE EXCEPTION 'tenancy.backfill: % is a partition', v_name
            USING ERRCODE = 'wrong_object_type',
                  HINT = format('Backfill the partitioned table %s: its partitions are converted with it.',
                                (SELECT i.inhparent::regclass::text FROM pg_inherits i WHERE i.inhrelid = p_rel));
    END IF;
    PERFORM tenancy._owned_table(p_rel, (SELECT oid FROM pg_roles WHERE rolname = current_user), 'backfill it');
    IF p_batch IS NULL OR p_batch < 1 OR p_batch > 10000000 THEN
        RAISE EXCEPTION 'tenancy.backfill: batch_size must be between 1 and 10000000, not %', p_batch
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_retries IS NULL OR p_retries < 0 OR p_lock_timeout IS NULL OR p_lock_timeout <= '0'::interval
       OR p_pause IS NULL OR p_pause < '0'::interval THEN
        RAISE EXCEPTION 'tenancy.backfill: lock_timeout must be positive, pause and max_retries not negative'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The foreign key of a text tenant column references tenancy.organizations(slug): that needs
    -- REFERENCES on slug, which only an administrator grants (it would let a table owner
    -- enumerate slugs through foreign key checks). Say so before anything is changed.
    IF p_type = 'text' AND NOT has_column_privilege('tenancy.organizations', 'slug', 'REFERENCES') THEN
        RAISE EXCEPTION 'tenancy.backfill: % may not reference tenancy.organizations (slug)', current_user
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('A tenancy administrator runs GRANT REFERENCES (slug) ON tenancy.organizations TO %I; then CALL tenancy.backfill again.', current_user);
    END IF;
    v_options := jsonb_build_object('batch_size', p_batch, 'pause_s', extract(epoch FROM p_pause),
                                    'lock_timeout_ms', (extract(epoch FROM p_lock_timeout) * 1000)::bigint,
                                    'max_retries', p_retries, 'build_indexes', p_build);

    v_other := tenancy._backfill_running_elsewhere(v_rec);
    IF v_other IS NOT NULL THEN
        RAISE EXCEPTION 'tenancy.backfill: % is being backfilled by session %', v_name, v_other
            USING ERRCODE = 'object_in_use',
                  HINT = 'Watch it with SELECT * FROM tenancy.backfill_progress; stop it with pg_cancel_backend(pid).';
    END IF;

    IF v_rec IS NOT NULL THEN
        -- A resumed CALL: the source of the organization may be left out, but not changed.
        IF (p_org IS NOT NULL AND p_org::text IS DISTINCT FROM v_rec->'source'->>'organization_id')
           OR (p_parent IS NOT NULL AND p_parent IS DISTINCT FROM (v_rec->'source'->>'parent_oid')::oid)
           OR (p_user_col IS NOT NULL AND p_user_col::text IS DISTINCT FROM v_rec->'source'->>'user_column')
           -- tenant_column left at its default resumes with the recorded one (the HINTs of the
           -- later steps name the table alone).
           OR (p_col::text <> v_rec->>'tenant_column' AND p_col::text <> 'organization_id') THEN
            RAISE EXCEPTION 'tenancy.backfill: % is already being converted with other options', v_name
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = format('Recorded: tenant column %s, source %s.', v_rec->>'tenant_column', v_rec->'source'),
                      HINT = format('CALL tenancy.backfill(%L%s) resumes it; SELECT tenancy.rollback(%L) undoes it.', v_name,
                                    CASE WHEN v_rec->>'tenant_column' <> 'organization_id'
                                         THEN format(', tenant_column => %L', v_rec->>'tenant_column') ELSE '' END, v_name);
        END IF;
        RETURN tenancy._backfill_save(p_rel, v_rec || jsonb_build_object(
            'options', v_options, 'pid', pg_backend_pid(), 'retries', 0,
            'run', jsonb_build_object('started_at', extract(epoch FROM clock_timestamp()),
                                      'rows', coalesce((v_rec->'fill'->>'rows_done')::bigint, 0),
                                      'blocks', coalesce((v_rec->'fill'->>'blocks_done')::bigint, 0))));
    END IF;

    -- A first CALL.
    IF p_type IS NULL OR p_type NOT IN ('uuid', 'text') THEN
        RAISE EXCEPTION 'tenancy.backfill: column_type must be uuid (organization id) or text (organization slug), not %', p_type
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT a.attnum, a.atttypid, a.attnotnull,
           (SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d WHERE d.adrelid = p_rel AND d.adnum = a.attnum) AS def
      INTO v_att FROM pg_attribute a
     WHERE a.attrelid = p_rel AND a.attname = tenancy._require('tenant_column', p_col) AND a.attnum > 0 AND NOT a.attisdropped;
    IF FOUND AND NOT (CASE p_type WHEN 'uuid' THEN v_att.atttypid = 'uuid'::regtype
                      ELSE v_att.atttypid IN ('text'::regtype, 'character varying'::regtype) END) THEN
        RAISE EXCEPTION 'tenancy.backfill: %.% already exists with type %, not %', v_name, quote_ident(p_col),
                        format_type(v_att.atttypid, NULL), p_type
            USING ERRCODE = 'datatype_mismatch',
                  HINT = 'Pass column_type => ''uuid'' or ''text'' to match it, or name another tenant_column.';
    END IF;

    IF p_org IS NOT NULL THEN
        SELECT CASE p_type WHEN 'uuid' THEN o.id::text ELSE o.slug END INTO v_value
          FROM tenancy.organizations o WHERE o.id = p_org;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'tenancy.backfill: organization % does not exist', p_org
                USING ERRCODE = 'undefined_object',
                      HINT = 'Create it first (tenancy.create_organization). Organizations you are not a member of are invisible unless you administer tenancy.';
        END IF;
    END IF;

    IF p_parent IS NOT NULL AND p_user_col IS NOT NULL THEN
        RAISE EXCEPTION 'tenancy.backfill: pass parent or user_column, not both'
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF p_parent IS NOT NULL THEN
        SELECT con.conname, con.conkey, con.confkey, count(*) OVER () AS n INTO v_fk
          FROM pg_constraint con
         WHERE con.conrelid = p_rel AND con.contype = 'f' AND con.confrelid = p_parent
         ORDER BY con.conname LIMIT 1;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'tenancy.backfill: no foreign key from % to %', v_name, p_parent::regclass
                USING ERRCODE = 'invalid_foreign_key',
                      HINT = 'The organization of each row is read from the row its foreign key points at; add that foreign key, or pass organization_id.';
        ELSIF v_fk.n > 1 THEN
            RAISE EXCEPTION 'tenancy.backfill: % has % foreign keys to %; tenancy cannot choose', v_name, v_fk.n, p_parent::regclass
                USING ERRCODE = 'invalid_foreign_key';
        END IF;
        SELECT a.attnotnull, a.atttypid INTO v_pcol FROM pg_attribute a
         WHERE a.attrelid = p_parent AND a.attname = p_col AND NOT a.attisdropped;
        IF NOT FOUND OR v_pcol.atttypid IS DISTINCT FROM coalesce(v_att.atttypid, CASE p_type WHEN 'uuid' THEN 'uuid'::regtype ELSE 'text'::regtype END) THEN
            RAISE EXCEPTION 'tenancy.backfill: parent % has no tenant column % of type %', p_parent::regclass, quote_ident(p_col), p_type
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = format('Convert %s first: CALL tenancy.backfill(%L, ...), or convert both with tenancy.backfill_all.',
                                    p_parent::regclass, p_parent::regclass::text);
        END IF;
        v_lookup := format('SELECT p.%I::text FROM %s p WHERE %s', p_col, p_parent::regclass,
            (SELECT string_agg(format('p.%I = ($1->>%L)::%s', pa.attname, ca.attname, format_type(ca.atttypid, ca.atttypmod)), ' AND ')
               FROM unnest(v_fk.conkey, v_fk.confkey) k(c, p)
               JOIN pg_attribute ca ON ca.attrelid = p_rel AND ca.attnum = k.c
               JOIN pg_attribute pa ON pa.attrelid = p_parent AND pa.attnum = k.p));
        v_source := jsonb_build_object('kind', 'parent', 'parent', p_parent::regclass::text, 'parent_oid', p_parent,
                                       'fk', v_fk.conname,
                                       'join', (SELECT jsonb_agg(jsonb_build_array(ca.attname, pa.attname))
                                                  FROM unnest(v_fk.conkey, v_fk.confkey) k(c, p)
                                                  JOIN pg_attribute ca ON ca.attrelid = p_rel AND ca.attnum = k.c
                                                  JOIN pg_attribute pa ON pa.attrelid = p_parent AND pa.attnum = k.p));
    ELSIF p_user_col IS NOT NULL THEN
        SELECT a.atttypid INTO v_pcol FROM pg_attribute a
         WHERE a.attrelid = p_rel AND a.attname = p_user_col AND a.attnum > 0 AND NOT a.attisdropped;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'tenancy.backfill: column % does not exist in %', quote_ident(p_user_col), v_name
                USING ERRCODE = 'undefined_column';
        ELSIF NOT (v_pcol.atttypid = ANY (CASE tenancy.user_id_type()
                                            WHEN 'uuid' THEN ARRAY['uuid', 'text', 'varchar']::regtype[]
                                            WHEN 'bigint' THEN ARRAY['int2', 'int4', 'int8', 'text', 'varchar']::regtype[]
                                            ELSE ARRAY['text', 'varchar', 'uuid', 'int2', 'int4', 'int8']::regtype[] END)) THEN
            RAISE EXCEPTION 'tenancy.backfill: user column %.% has type %; tenancy user ids are % in this database', v_name,
                            quote_ident(p_user_col), format_type(v_pcol.atttypid, NULL), tenancy.user_id_type()
                USING ERRCODE = 'datatype_mismatch';
        END IF;
        IF NOT has_table_privilege('tenancy.organizations', 'UPDATE') THEN
            RAISE EXCEPTION 'tenancy.backfill: deriving the organization from a user column reads every user''s memberships'
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Run it as a tenancy administrator (the role that owns the tenancy catalog).';
        END IF;
        v_lookup := format(CASE p_type WHEN 'uuid' THEN 'SELECT tenancy.get_user_organization_id(($1->>%L)::text)::text'
                           ELSE 'SELECT o.slug FROM tenancy.organizations o WHERE o.id = tenancy.get_user_organization_id(($1->>%L)::text)' END,
                           p_user_col);
        v_source := jsonb_build_object('kind', 'user', 'user_column', p_user_col);
    ELSIF p_org IS NOT NULL THEN
        v_source := jsonb_build_object('kind', 'fixed');
    ELSE
        RAISE EXCEPTION 'tenancy.backfill: where does each row''s organization come from?'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass organization_id => (one organization for every row), parent => (the table a foreign key points at), or user_column => (a column holding a user id); organization_id with either of the others is the fallback.';
    END IF;
    v_source := v_source || jsonb_build_object('organization_id', p_org, 'value', v_value);
    IF v_value IS NOT NULL THEN
        v_lookup := CASE WHEN v_lookup IS NULL THEN format('SELECT %L::text', v_value)
                         ELSE format('SELECT coalesce((%s), %L::text)', v_lookup, v_value) END;
    END IF;

    v_rec := jsonb_build_object(
        'table', v_name, 'partitioned', v_kind = 'p',
        'tenant_column', p_col, 'column_type', p_type, 'source', v_source, 'lookup', v_lookup,
        'options', v_options,
        'was_registered', EXISTS (SELECT 1 FROM tenancy.tenant_tables t WHERE t.relid = p_rel::regclass),
        'column_existed', v_att.attnum IS NOT NULL,
        'column_was_not_null', coalesce(v_att.attnotnull, false),
        'old_default', v_att.def,
        'phase', 'planned', 'phase_started_at', clock_timestamp(), 'started_at', clock_timestamp(),
        'pid', pg_backend_pid(), 'retries', 0, 'skipped', '[]'::jsonb,
        'run', jsonb_build_object('started_at', extract(epoch FROM clock_timestamp()), 'rows', 0, 'blocks', 0));
    RETURN tenancy._backfill_save(p_rel, v_rec,
        jsonb_build_object('operation', 'backfill', 'status', 'started',
                           'details', jsonb_build_object('phase', 'planned', 'source', v_source, 'options', v_options)));
END $$;

----------------------------------------------------------------------------------------------
-- The index plan: composite indexes with the tenant column leading
----------------------------------------------------------------------------------------------

-- One entry per index to build: {name, unique, columns, kind: pkey|unique|fk|tenant, replaces}.
-- Unique constraints are rewritten unless a foreign key depends on them or a lint_ignores row
-- accepts them as they are (TEN010 for that index).
CREATE FUNCTION tenancy._backfill_index_plan(p_rel oid, p_rec jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_col     text := p_rec->>'tenant_column';
    v_att     int2 := (SELECT attnum FROM pg_attribute WHERE attrelid = p_rel AND attname = v_col);
    v_tbl     text := p_rel::regclass::text;
    v_rel     text := (SELECT relname FROM pg_class WHERE oid = p_rel);
    v_part    boolean := (p_rec->>'partitioned')::boolean;
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
    RETURN jsonb_build_object('indexes', v_plan, 'skipped', v_skipped);
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

----------------------------------------------------------------------------------------------
-- One step
----------------------------------------------------------------------------------------------

-- Does one step of the phase p_rel is in, in the caller's transaction, and records it.
-- Returns done (nothing more to do in this CALL) and sleep (seconds to wait before the next
-- step: the pause between batches, or the back-off after a lock timeout).
-- One step as the table's owner (through tenancy._as_owner): whatever the record holds runs with
-- the owner's rights only, never with those of the administrator or superuser who called.
CREATE FUNCTION tenancy._owner_backfill_step(p_rel oid, a jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    done     boolean;
    sleep    double precision;
    v_rec    jsonb := tenancy._backfill_record(p_rel);
    v_phase  text := v_rec->>'phase';
    v_tbl    text := p_rel::regclass::text;
    v_col    text := v_rec->>'tenant_column';
    v_opt    jsonb := v_rec->'options';
    v_check  text;
    v_fkname text;
    v_trig   text;
    v_fill   jsonb;
    v_leaves jsonb;
    v_leaf   jsonb;
    v_i      integer;
    v_lo     bigint;
    v_hi     bigint;
    v_n      bigint;
    v_n2     bigint;
    v_total  bigint;
    v_sql    text;
    v_plan   jsonb;
    v_ix     jsonb;
    v_stmt   text;
    v_fks    jsonb;
    v_fk     record;
    v_now    double precision := extract(epoch FROM clock_timestamp());
    v_rate   double precision;
    v_msg    text;
    v_tpb    double precision;
BEGIN
    PERFORM tenancy._running_as_owner(p_rel);
  BEGIN
    done := false;
    sleep := NULL;
    IF v_rec IS NULL THEN
        RAISE EXCEPTION 'tenancy.backfill: % has no backfill in progress', v_tbl USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF NOT pg_try_advisory_xact_lock(hashtext('tenancy.backfill'), p_rel::integer) THEN
        RAISE EXCEPTION 'tenancy.backfill: another session is converting % right now', v_tbl
            USING ERRCODE = 'object_in_use', HINT = 'SELECT * FROM tenancy.backfill_progress shows it.';
    END IF;
    PERFORM set_config('lock_timeout', (v_opt->>'lock_timeout_ms') || 'ms', true);
    -- Not <table>_<column>_not_null: PostgreSQL 18 gives that name to the NOT NULL constraint of
    -- SET NOT NULL. A backfill begun earlier keeps the name it recorded.
    v_check := coalesce(v_rec->>'check',
                        tenancy._name(left((SELECT relname FROM pg_class WHERE oid = p_rel), 40) || '_' || v_col, 'tenancy_not_null'));
    v_fkname := tenancy._name(left((SELECT relname FROM pg_class WHERE oid = p_rel), 40) || '_' || v_col, 'tenancy_fk');
    v_trig := tenancy._name('tenancy_fill', v_col);

    BEGIN  -- a lock timeout undoes this block only; the step is then retried after a back-off
    CASE v_phase
    WHEN 'planned' THEN
        IF tenancy._backfill_fast_default(p_rel, v_rec) THEN
            -- One organization for every row, and a new column: the organization becomes the
            -- column's default together with NOT NULL, in one metadata-only ALTER (PostgreSQL
            -- keeps the value in the catalog as the rows' "missing value" and writes no row, nor
            -- scans for NULLs). The fill trigger, as in the batched path, gives the organization
            -- to a row written with an explicit NULL until enable_isolation retires it.
            EXECUTE format('ALTER TABLE %s ADD COLUMN %I %s NOT NULL DEFAULT %L::%s', v_tbl, v_col,
                           v_rec->>'column_type', v_rec->'source'->>'value', v_rec->>'column_type');
            EXECUTE format('CREATE TRIGGER %I BEFORE INSERT OR UPDATE ON %s FOR EACH ROW WHEN (NEW.%I IS NULL) '
                           'EXECUTE FUNCTION tenancy._backfill_fill(%L, %L)', v_trig, v_tbl, v_col, v_col, v_rec->>'lookup');
            v_rec := v_rec || jsonb_build_object('fast_default', true, 'set_not_null', true, 'trigger', v_trig, 'default_expr',
                (SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
                  WHERE d.adrelid = p_rel AND a.attname = v_col));
            v_rec := tenancy._backfill_advance(p_rel, v_rec, 'column_added', jsonb_build_object(
                'fast_default', true, 'default', v_rec->'default_expr', 'not_null', true, 'trigger', v_trig));
        ELSE
            IF NOT (v_rec->>'column_existed')::boolean THEN
                EXECUTE format('ALTER TABLE %s ADD COLUMN IF NOT EXISTS %I %s', v_tbl, v_col, v_rec->>'column_type');
            END IF;
            v_rec := tenancy._backfill_advance(p_rel, v_rec, 'column_added');
        END IF;

    WHEN 'column_added' THEN
      IF (v_rec->>'fast_default')::boolean THEN
        -- Every row has its organization already (the column's missing value): nothing to fill.
        -- The planner learns the new column (as after a batched fill), outside the ALTER's lock.
        EXECUTE format('ANALYZE %s (%I)', v_tbl, v_col);
        SELECT sum(greatest(c.reltuples, 0))::bigint, sum(pg_relation_size(l.oid) / current_setting('block_size')::bigint)
          INTO v_total, v_n
          FROM unnest(tenancy._leaves(p_rel)) l(oid) JOIN pg_class c ON c.oid = l.oid;
        v_rec := v_rec || jsonb_build_object('fill', jsonb_build_object(
            'leaves', '[]'::jsonb, 'blocks_total', coalesce(v_n, 0), 'blocks_done', coalesce(v_n, 0),
            'rows_total', coalesce(v_total, 0), 'rows_done', coalesce(v_total, 0), 'tuples_per_block', 0,
            'started_at', v_now, 'batches', 0, 'fast_default', true));
        RAISE NOTICE 'tenancy.backfill %: % of ~% rows, 100.0 %%, from the column default (metadata only: no row written)', v_tbl,
              coalesce(v_total, 0), coalesce(v_total, 0);
        v_rec := tenancy._backfill_advance(p_rel, v_rec, 'not_null', jsonb_build_object(
            'fast_default', true, 'rows', coalesce(v_total, 0), 'batches', 0, 'blocks', coalesce(v_n, 0),
            'note', 'ADD COLUMN ... NOT NULL DEFAULT: every existing row reads the organization from the catalog; nothing filled, no CHECK needed'));
      ELSE
        -- From now on no row is written without an organization (while one can be derived):
        -- the trigger fills new rows and rows updated before the fill reached them.
        IF v_rec->'source'->>'kind' = 'fixed' AND v_rec->>'old_default' IS NULL THEN
            EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET DEFAULT %L::%s', v_tbl, v_col,
                           v_rec->'source'->>'value', v_rec->>'column_type');
            v_rec := v_rec || jsonb_build_object('default_expr',
                (SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
                  WHERE d.adrelid = p_rel AND a.attname = v_col));
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = p_rel AND t.tgname = v_trig AND NOT t.tgisinternal) THEN
            EXECUTE format('CREATE TRIGGER %I BEFORE INSERT OR UPDATE ON %s FOR EACH ROW WHEN (NEW.%I IS NULL) '
                           'EXECUTE FUNCTION tenancy._backfill_fill(%L, %L)', v_trig, v_tbl, v_col, v_col, v_rec->>'lookup');
        END IF;
        v_rec := v_rec || jsonb_build_object('trigger', v_trig);
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
        v_rec := v_rec || jsonb_build_object('fill', jsonb_build_object(
            'leaves', coalesce(v_leaves, '[]'), 'blocks_total', coalesce(v_n, 0), 'blocks_done', 0,
            'rows_total', coalesce(v_total, 0), 'rows_done', 0, 'tuples_per_block', coalesce(v_tpb, 100),
            'started_at', v_now, 'batches', 0));
        v_rec := v_rec || jsonb_build_object('run', jsonb_build_object('started_at', v_now, 'rows', 0, 'blocks', 0));
        v_rec := tenancy._backfill_advance(p_rel, v_rec, 'filling', jsonb_build_object('trigger', v_trig, 'default', v_rec->'default_expr'));
      END IF;

    WHEN 'filling' THEN
        v_fill := v_rec->'fill';
        SELECT n - 1 INTO v_i FROM jsonb_array_elements(v_fill->'leaves') WITH ORDINALITY e(l, n)
         WHERE (l->>'next')::bigint < (l->>'blocks')::bigint ORDER BY n LIMIT 1;
        IF v_i IS NULL THEN
            v_rate := (v_fill->>'rows_done')::double precision / greatest(v_now - (v_fill->>'started_at')::double precision, 0.001);
            RAISE NOTICE 'tenancy.backfill %: fill done, % rows in % batches', v_tbl, v_fill->>'rows_done', v_fill->>'batches';
            -- The planner learns the new column now: without statistics, tenant-scoped queries
            -- are planned blind until autovacuum gets to the table (issue 15: 48-81x slower).
            EXECUTE format('ANALYZE %s (%I)', v_tbl, v_col);
            v_rec := tenancy._backfill_advance(p_rel, v_rec, 'filled', jsonb_build_object(
                'rows', (v_fill->>'rows_done')::bigint, 'batches', (v_fill->>'batches')::bigint,
                'blocks', (v_fill->>'blocks_total')::bigint, 'rows_per_second', round(v_rate::numeric)));
        ELSE
            v_leaf := v_fill->'leaves'->v_i;
            v_lo := (v_leaf->>'next')::bigint;
            v_hi := least((v_leaf->>'blocks')::bigint,
                          v_lo + greatest(1, ceil((v_opt->>'batch_size')::double precision / (v_fill->>'tuples_per_block')::double precision))::bigint);
            CASE v_rec->'source'->>'kind'
            WHEN 'parent' THEN
                -- One index probe per row into the parent: a hash join would read all of it per batch.
                PERFORM set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true);
                v_sql := format('UPDATE ONLY %s c SET %I = p.%I FROM %s p WHERE c.ctid >= $1 AND c.ctid < $2 AND c.%I IS NULL AND %s',
                                (v_leaf->>'relid')::oid::regclass, v_col, v_col, (v_rec->'source'->>'parent_oid')::oid::regclass, v_col,
                                (SELECT string_agg(format('p.%I = c.%I', j->>1, j->>0), ' AND ')
                                   FROM jsonb_array_elements(v_rec->'source'->'join') j));
            WHEN 'user' THEN
                v_sql := format('UPDATE ONLY %s c SET %I = %s WHERE c.ctid >= $1 AND c.ctid < $2 AND c.%I IS NULL AND c.%I IS NOT NULL',
                                (v_leaf->>'relid')::oid::regclass, v_col,
                                format(CASE v_rec->>'column_type' WHEN 'uuid' THEN 'tenancy.get_user_organization_id(c.%I::text)'
                                       ELSE '(SELECT o.slug FROM tenancy.organizations o WHERE o.id = tenancy.get_user_organization_id(c.%I::text))' END,
                                       v_rec->'source'->>'user_column'),
                                v_col, v_rec->'source'->>'user_column');
            ELSE
                v_sql := NULL;
            END CASE;
            v_n := 0;
            IF v_sql IS NOT NULL THEN
                EXECUTE v_sql USING format('(%s,0)', v_lo)::tid, format('(%s,0)', v_hi)::tid;
                GET DIAGNOSTICS v_n = ROW_COUNT;
            END IF;
            IF v_rec->'source'->>'value' IS NOT NULL THEN  -- the fixed organization, or the fallback
                EXECUTE format('UPDATE ONLY %s SET %I = %L WHERE ctid >= $1 AND ctid < $2 AND %I IS NULL',
                               (v_leaf->>'relid')::oid::regclass, v_col, v_rec->'source'->>'value', v_col)
                    USING format('(%s,0)', v_lo)::tid, format('(%s,0)', v_hi)::tid;
                GET DIAGNOSTICS v_n2 = ROW_COUNT;
                v_n := v_n + v_n2;
            END IF;
            v_fill := jsonb_set(v_fill, ARRAY['leaves', v_i::text, 'next'], to_jsonb(v_hi));
            v_fill := v_fill || jsonb_build_object(
                'rows_done', (v_fill->>'rows_done')::bigint + v_n,
                'blocks_done', (v_fill->>'blocks_done')::bigint + (v_hi - v_lo),
                'batches', (v_fill->>'batches')::bigint + 1);
            v_rec := v_rec || jsonb_build_object('fill', v_fill, 'retries', 0);
            v_rec := tenancy._backfill_save(p_rel, v_rec);
            -- Progress: rows, share of blocks visited, rate and ETA of this CALL.
            v_rate := ((v_fill->>'blocks_done')::bigint - (v_rec->'run'->>'blocks')::bigint)
                      / greatest(v_now - (v_rec->'run'->>'started_at')::double precision, 0.001);
            RAISE NOTICE 'tenancy.backfill %: % of ~% rows, % %%, % rows/s, ETA %', v_tbl, v_fill->>'rows_done',
                  greatest((v_fill->>'rows_total')::bigint, (v_fill->>'rows_done')::bigint),
                  round(100.0 * (v_fill->>'blocks_done')::bigint / greatest((v_fill->>'blocks_total')::bigint, 1), 1),
                  round((((v_fill->>'rows_done')::bigint - (v_rec->'run'->>'rows')::bigint)
                         / greatest(v_now - (v_rec->'run'->>'started_at')::double precision, 0.001))::numeric),
                  CASE WHEN v_rate > 0 THEN justify_interval(make_interval(secs => round((((v_fill->>'blocks_total')::bigint
                        - (v_fill->>'blocks_done')::bigint) / v_rate)::numeric, 1)))::text ELSE '?' END;
        END IF;

    WHEN 'filled' THEN
        IF (v_rec->>'column_was_not_null')::boolean THEN
            v_rec := tenancy._backfill_advance(p_rel, v_rec, 'not_null', jsonb_build_object('note', 'the column was NOT NULL already'));
        ELSE
            FOR v_leaf IN SELECT to_jsonb(l) FROM unnest(tenancy._leaves(p_rel)) l LOOP
                IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = (v_leaf#>>'{}')::oid AND conname = v_check) THEN
                    EXECUTE format('ALTER TABLE ONLY %s ADD CONSTRAINT %I CHECK (%I IS NOT NULL) NOT VALID',
                                   (v_leaf#>>'{}')::oid::regclass, v_check, v_col);
                END IF;
            END LOOP;
            v_rec := tenancy._backfill_advance(p_rel, v_rec || jsonb_build_object('check', v_check), 'check_added');
        END IF;

    WHEN 'check_added' THEN
        FOR v_leaf IN SELECT to_jsonb(l) FROM unnest(tenancy._leaves(p_rel)) l LOOP
            BEGIN
                EXECUTE format('ALTER TABLE ONLY %s VALIDATE CONSTRAINT %I', (v_leaf#>>'{}')::oid::regclass, v_check);
            EXCEPTION WHEN check_violation THEN
                -- Rows the source gave no organization: report them, leave the constraint unvalidated.
                EXECUTE format('SELECT count(*), (SELECT string_agg(left(r::text, 120), '' | '') FROM (SELECT * FROM %1$s WHERE %2$I IS NULL LIMIT 3) r) FROM %1$s WHERE %2$I IS NULL',
                               v_tbl, v_col) INTO v_n, v_msg;
                RAISE EXCEPTION 'tenancy.backfill: % row(s) of % have no organization', v_n, v_tbl
                    USING ERRCODE = 'not_null_violation',
                          DETAIL = format('The %s gave them none. First rows: %s',
                                          CASE v_rec->'source'->>'kind' WHEN 'parent' THEN 'parent row (or its missing foreign key)'
                                               WHEN 'user' THEN 'user (no active membership)' ELSE 'source' END, v_msg),
                          HINT = format('Everything filled so far is committed. Give them an organization (UPDATE %s SET %I = ... WHERE %I IS NULL), then CALL tenancy.backfill(%L) again; or undo with SELECT tenancy.rollback(%L).',
                                        v_tbl, v_col, v_col, v_tbl, v_tbl);
            END;
        END LOOP;
        v_rec := tenancy._backfill_advance(p_rel, v_rec, 'check_validated');

    WHEN 'check_validated' THEN
        EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET NOT NULL', v_tbl, v_col);
        FOR v_leaf IN SELECT to_jsonb(l) FROM unnest(tenancy._leaves(p_rel)) l LOOP
            EXECUTE format('ALTER TABLE ONLY %s DROP CONSTRAINT IF EXISTS %I', (v_leaf#>>'{}')::oid::regclass, v_check);
        END LOOP;
        v_rec := tenancy._backfill_advance(p_rel, v_rec || jsonb_build_object('set_not_null', true), 'not_null');

    WHEN 'not_null' THEN
        IF EXISTS (SELECT 1 FROM pg_constraint con JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = con.conkey[1]
                    WHERE con.conrelid = p_rel AND con.contype = 'f' AND con.confrelid = 'tenancy.organizations'::regclass
                      AND cardinality(con.conkey) = 1 AND a.attname = v_col) THEN
            v_rec := tenancy._backfill_advance(p_rel, v_rec, 'fk_added', jsonb_build_object('note', 'a foreign key to tenancy.organizations existed'));
        ELSE
            -- NOT VALID takes a short lock; the check of existing rows comes next, without blocking
            -- writers. A partitioned table gets one per partition first: Postgres 15 cannot add a
            -- NOT VALID foreign key to a partitioned table, but attaches these when the parent's is added.
            FOR v_leaf IN SELECT to_jsonb(l) FROM unnest(tenancy._leaves(p_rel)) l LOOP
                IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = (v_leaf#>>'{}')::oid AND conname = v_fkname) THEN
                    EXECUTE format('ALTER TABLE ONLY %s ADD CONSTRAINT %I FOREIGN KEY (%I) REFERENCES tenancy.organizations (%s)%s NOT VALID',
                                   (v_leaf#>>'{}')::oid::regclass, v_fkname, v_col,
                                   CASE v_rec->>'column_type' WHEN 'uuid' THEN 'id' ELSE 'slug' END,
                                   CASE v_rec->>'column_type' WHEN 'text' THEN ' ON UPDATE CASCADE' ELSE '' END);
                END IF;
            END LOOP;
            v_rec := tenancy._backfill_advance(p_rel, v_rec || jsonb_build_object('fk', v_fkname), 'fk_added');
        END IF;

    WHEN 'fk_added' THEN
        IF v_rec->>'fk' IS NOT NULL THEN
            FOR v_leaf IN SELECT to_jsonb(l) FROM unnest(tenancy._leaves(p_rel)) l LOOP
                EXECUTE format('ALTER TABLE ONLY %s VALIDATE CONSTRAINT %I', (v_leaf#>>'{}')::oid::regclass, v_fkname);
            END LOOP;
            IF (v_rec->>'partitioned')::boolean
               AND NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = p_rel AND conname = v_fkname) THEN
                EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I FOREIGN KEY (%I) REFERENCES tenancy.organizations (%s)%s',
                               v_tbl, v_fkname, v_col, CASE v_rec->>'column_type' WHEN 'uuid' THEN 'id' ELSE 'slug' END,
                               CASE v_rec->>'column_type' WHEN 'text' THEN ' ON UPDATE CASCADE' ELSE '' END);
            END IF;
        END IF;
        v_plan := tenancy._backfill_index_plan(p_rel, v_rec);
        v_rec := v_rec || jsonb_build_object('indexes', v_plan->'indexes', 'skipped', v_plan->'skipped');
        v_rec := tenancy._backfill_advance(p_rel, v_rec, 'fk_validated');

    WHEN 'fk_validated', 'awaiting_indexes' THEN
        SELECT ix INTO v_ix FROM jsonb_array_elements(v_rec->'indexes') ix
         WHERE NOT tenancy._index_ready(p_rel, ix) LIMIT 1;
        IF v_ix IS NULL THEN
            v_rec := tenancy._backfill_advance(p_rel, v_rec, 'indexes_built',
                         jsonb_build_object('indexes', (SELECT jsonb_agg(ix->'name') FROM jsonb_array_elements(v_rec->'indexes') ix)));
        ELSIF (v_opt->>'build_indexes')::boolean THEN
            -- Asked for: build it here, with a plain CREATE INDEX (writers wait while it builds).
            PERFORM set_config('lock_timeout', '0', true);
            FOR v_stmt IN SELECT s FROM tenancy._index_statements(p_rel, v_ix, false) s LOOP
                EXECUTE v_stmt;
            END LOOP;
            RAISE NOTICE 'tenancy.backfill %: built index %', v_tbl, quote_ident(v_ix->>'name');
        ELSE
            IF v_phase = 'fk_validated' THEN
                v_rec := tenancy._backfill_advance(p_rel, v_rec, 'awaiting_indexes');
            END IF;
            RAISE NOTICE 'tenancy.backfill %: % index(es) must be built outside a transaction', v_tbl,
                  (SELECT count(*) FROM jsonb_array_elements(v_rec->'indexes') ix WHERE NOT tenancy._index_ready(p_rel, ix))
                USING HINT = format('In psql: SELECT statement FROM tenancy.pending_statements() \gexec   then CALL tenancy.backfill(%L) again (or pass build_indexes => true to build them here, blocking writes).', v_tbl);
            done := true;
        END IF;

    WHEN 'indexes_built' THEN
        -- The tenant-scoped unique constraints take over from the old ones, which are dropped
        -- only now that the new ones are valid. A replacement takes the old one's name (drop the
        -- old, add the new under its name, in this transaction): ORMs that compare names (Prisma)
        -- see no drift, and SQL written against the old name goes on working (issue 15 item 8).
        FOR v_ix IN SELECT ix FROM jsonb_array_elements(v_rec->'indexes') ix WHERE ix->>'kind' IN ('pkey', 'unique') LOOP
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

    WHEN 'uniques_done' THEN
        -- Foreign keys to other tenant tables carry the tenant column: a row can only point at a
        -- row of its own organization. NOT VALID now, validated in the next step.
        v_fks := coalesce(v_rec->'fk_rewrites', '[]');
        FOR v_fk IN
            SELECT con.oid, con.conname, con.confrelid::regclass AS parent, pg_get_constraintdef(con.oid) AS def,
                   tenancy._att_names(con.conrelid, con.conkey) AS cols, tenancy._att_names(con.confrelid, con.confkey) AS pcols,
                   t.tenant_column::text AS pcol, con.confupdtype, con.confdeltype
              FROM pg_constraint con
              JOIN tenancy.tenant_tables t ON t.relid = con.confrelid::regclass AND t.column_type = v_rec->>'column_type'
             WHERE con.conrelid = p_rel AND con.contype = 'f' AND con.confrelid <> 'tenancy.organizations'::regclass
               AND NOT (SELECT attnum FROM pg_attribute WHERE attrelid = p_rel AND attname = v_col) = ANY (con.conkey)
             ORDER BY con.conname LOOP
            IF v_fks @> jsonb_build_array(jsonb_build_object('old', v_fk.conname)) THEN
                CONTINUE;
            ELSIF NOT tenancy._has_index(v_fk.parent, ARRAY[v_fk.pcol] || v_fk.pcols, true) THEN
                v_rec := jsonb_set(v_rec, '{skipped}', (v_rec->'skipped') || jsonb_build_object('object', v_fk.conname,
                    'reason', format('%s has no unique key on (%s, %s) yet: convert it first, then CALL tenancy.backfill(%L) again',
                                     v_fk.parent, v_fk.pcol, array_to_string(v_fk.pcols, ', '), v_tbl)));
                CONTINUE;
            ELSIF v_fk.confupdtype IN ('n', 'd') THEN
                v_rec := jsonb_set(v_rec, '{skipped}', (v_rec->'skipped') || jsonb_build_object('object', v_fk.conname,
                    'reason', 'ON UPDATE SET NULL/DEFAULT would also clear the tenant column: rewrite it by hand'));
                CONTINUE;
            END IF;
            -- Built from the catalog's columns, each quoted, never from the constraint's text. ON
            -- DELETE SET NULL / SET DEFAULT clears only the key columns, never the tenant column.
            v_sql := tenancy._fk_definition(v_fk.oid, v_col, v_fk.pcol);
            EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s NOT VALID', v_tbl, tenancy._name(v_fk.conname, 'tenant'), v_sql);
            v_fks := v_fks || jsonb_build_object('old', v_fk.conname, 'old_def', v_fk.def,
                                                 'new', tenancy._name(v_fk.conname, 'tenant'), 'new_def', v_sql);
        END LOOP;
        v_rec := tenancy._backfill_advance(p_rel, v_rec || jsonb_build_object('fk_rewrites', v_fks), 'fks_added');

    WHEN 'fks_added' THEN
        FOR v_fk IN SELECT f->>'old' AS old, f->>'new' AS new FROM jsonb_array_elements(v_rec->'fk_rewrites') f LOOP
            IF EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = p_rel AND conname = v_fk.new AND NOT convalidated) THEN
                EXECUTE format('ALTER TABLE %s VALIDATE CONSTRAINT %I', v_tbl, v_fk.new);
            END IF;
            EXECUTE format('ALTER TABLE %s DROP CONSTRAINT IF EXISTS %I', v_tbl, v_fk.old);
        END LOOP;
        v_rec := tenancy._backfill_advance(p_rel, v_rec, 'converted');
        RAISE NOTICE 'tenancy.backfill %: converted%', v_tbl,
              CASE WHEN jsonb_array_length(v_rec->'skipped') > 0
                   THEN format(' (left as they were: %s)', (SELECT string_agg(format('%s: %s', s->>'object', s->>'reason'), '; ')
                                                             FROM jsonb_array_elements(v_rec->'skipped') s))
                   ELSE '' END
            USING HINT = format('Next: SELECT tenancy.enable_isolation(%L) once the application sets the tenant context.', v_tbl);
        done := true;

    WHEN 'converted' THEN
        RAISE NOTICE 'tenancy.backfill %: already converted', v_tbl;
        done := true;
    ELSE
        RAISE EXCEPTION 'tenancy.backfill: % is in unknown phase %', v_tbl, v_phase USING ERRCODE = 'internal_error';
    END CASE;
    -- The pause applies after every step, not only between batches: DDL steps get it too.
    IF sleep IS NULL AND NOT done THEN
        sleep := nullif((v_opt->>'pause_s')::double precision, 0);
    END IF;
    EXCEPTION WHEN lock_not_available THEN
        IF (v_rec->>'retries')::integer >= (v_opt->>'max_retries')::integer THEN
            RAISE EXCEPTION 'tenancy.backfill: gave up on % after % lock timeouts in phase %', v_tbl, v_rec->>'retries', v_phase
                USING ERRCODE = 'lock_not_available',
                      HINT = format('A long transaction holds a lock on %s (see pg_locks). CALL tenancy.backfill(%L) again later, or pass a larger lock_timeout or max_retries.', v_tbl, v_tbl);
        END IF;
        v_rec := tenancy._backfill_save(p_rel, v_rec || jsonb_build_object('retries', (v_rec->>'retries')::integer + 1));
        sleep := least(5.0, 0.05 * power(2, (v_rec->>'retries')::integer));
        RAISE NOTICE 'tenancy.backfill %: lock timeout in phase % (retry % of %), waiting %s', v_tbl, v_phase,
              v_rec->>'retries', v_opt->>'max_retries', round(sleep::numeric, 2);
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
     CROSS JOIN LATERAL jsonb_array_elements(t.details->'backfill'->'indexes') WITH ORDINALITY ix(ix, n)
     CROSS JOIN LATERAL tenancy._index_statements(t.relid, ix.ix, true) s
     WHERE t.details->'backfill'->>'phase' IN ('fk_validated', 'awaiting_indexes')
       AND NOT tenancy._index_ready(t.relid, ix.ix)
     ORDER BY t.relid::text, ix.n
$$;

CREATE VIEW tenancy.backfill_progress WITH (security_invoker = true) AS
SELECT t.relid::text AS table_name,
       b->>'phase' AS phase,
       (b->'fill'->>'rows_done')::bigint AS rows_done,
       greatest((b->'fill'->>'rows_total')::bigint, (b->'fill'->>'rows_done')::bigint) AS rows_total,
       CASE WHEN b->>'phase' IN ('planned', 'column_added') THEN 0
            WHEN b->>'phase' = 'filling'
            THEN round(100.0 * (b->'fill'->>'blocks_done')::bigint / greatest((b->'fill'->>'blocks_total')::bigint, 1), 1)
            ELSE 100 END AS fill_percent,
       round((((b->'fill'->>'rows_done')::bigint - (b->'run'->>'rows')::bigint)
              / greatest(extract(epoch FROM (b->>'updated_at')::timestamptz) - (b->'run'->>'started_at')::double precision, 0.001))::numeric)
           AS rows_per_second,
       CASE WHEN b->>'phase' = 'filling' AND (b->'fill'->>'blocks_done')::bigint > (b->'run'->>'blocks')::bigint
            THEN justify_interval(make_interval(secs => round((((b->'fill'->>'blocks_total')::bigint - (b->'fill'->>'blocks_done')::bigint)
                 * (extract(epoch FROM (b->>'updated_at')::timestamptz) - (b->'run'->>'started_at')::double precision)
                 / ((b->'fill'->>'blocks_done')::bigint - (b->'run'->>'blocks')::bigint))::numeric, 1))) END AS eta,
       (b->>'retries')::integer AS lock_retries,
       tenancy._backfill_running_elsewhere(b) IS NOT NULL AS running,
       (b->>'pid')::integer AS pid,
       (b->>'started_at')::timestamptz AS started_at,
       (b->>'updated_at')::timestamptz AS updated_at,
       b->'skipped' AS skipped
  FROM tenancy.tenant_tables t
 CROSS JOIN LATERAL (SELECT t.details->'backfill') x(b)
 WHERE b IS NOT NULL;

----------------------------------------------------------------------------------------------
-- Rollback
----------------------------------------------------------------------------------------------

-- The work of tenancy.rollback, as the table's owner (through tenancy._as_owner): the recorded
-- definitions it puts back run with the owner's rights only. Everything happens in the caller's
-- transaction: a table is rolled back entirely or (on an error) not at all.
CREATE FUNCTION tenancy._owner_rollback(p_rel oid, a jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tbl     regclass := p_rel::regclass;
    drop_column boolean := coalesce((a->>'drop_column')::boolean, false);
    v_rel   oid := tenancy._require('tbl', tbl)::oid;
    v_rec   jsonb := tenancy._backfill_record(v_rel);
    v_tbl   text := tbl::text;
    v_col   text;
    v_att   int2;
    v_ddl   text[] := '{}';
    v_done  integer := 0;
    v_iso   text;
    v_stmt  text;
    v_other integer;
    v_ix    jsonb;
    v_fk    jsonb;
    v_leaf  oid;
    v_schema text := tenancy._schema_of(v_rel);
    v_deps  text;
    v_parent oid;
    v_forced oid[];
    v_r     oid;
    v_con   record;
    v_left  text;
    v_i     integer;
BEGIN
    PERFORM tenancy._running_as_owner(v_rel);
    IF v_rec IS NULL THEN
        RAISE EXCEPTION 'tenancy.rollback: no backfill of % is recorded', v_tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'tenancy.disable_isolation() removes policies created by enable_isolation alone.';
    END IF;
    v_other := tenancy._backfill_running_elsewhere(v_rec);
    IF v_other IS NOT NULL THEN
        RAISE EXCEPTION 'tenancy.rollback: % is being backfilled by session %', v_tbl, v_other
            USING ERRCODE = 'object_in_use', HINT = 'Stop it first: SELECT pg_cancel_backend(pid).';
    END IF;
    v_col := v_rec->>'tenant_column';
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
    -- Foreign keys: the old ones back, the tenant-carrying ones gone. An old key is added NOT
    -- VALID and then validated with FORCE ROW LEVEL SECURITY off on the tables (this table, its
    -- parent) that the owner would otherwise see through their policies: Postgres's check of
    -- existing rows runs as the owner, and under a FORCE policy it sees no parent row at all
    -- (issue 15: "Key (user_id)=(...) is not present"). FORCE is back on before this returns, in
    -- the same transaction; the ALTER TABLE holds its lock until the commit, so nobody sees the gap.
    FOR v_fk IN SELECT f FROM jsonb_array_elements(coalesce(v_rec->'fk_rewrites', '[]')) f LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = v_rel AND conname = v_fk->>'old') THEN
            IF right(v_fk->>'old_def', 10) = ' NOT VALID' THEN  -- it was not valid before either
                v_ddl := v_ddl || format('ALTER TABLE %s ADD CONSTRAINT %I %s', v_tbl, v_fk->>'old', v_fk->>'old_def');
                EXECUTE v_ddl[cardinality(v_ddl)];
            ELSE
                v_ddl := v_ddl || format('ALTER TABLE %s ADD CONSTRAINT %I %s NOT VALID', v_tbl, v_fk->>'old', v_fk->>'old_def');
                EXECUTE v_ddl[cardinality(v_ddl)];
                SELECT c.confrelid INTO v_parent FROM pg_constraint c WHERE c.conrelid = v_rel AND c.conname = v_fk->>'old';
                v_forced := ARRAY(SELECT x.oid FROM pg_class x
                                   WHERE x.oid IN (v_rel, v_parent) AND x.relrowsecurity AND x.relforcerowsecurity
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
    v_done := cardinality(v_ddl);
    -- Unique constraints and indexes: the old ones back, under their names; the new ones gone.
    -- A replaced key took the old one's name when it took over (issue 15 item 8): that object,
    -- which holds the tenant column, is dropped and the old definition added under the name.
    FOR v_ix IN SELECT ix FROM jsonb_array_elements(coalesce(v_rec->'indexes', '[]')) ix LOOP
        IF v_ix->'replaces'->>'constraint' IS NOT NULL
           AND EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = v_rel AND conname = v_ix->'replaces'->>'constraint'
                          AND v_att = ANY (conkey)) THEN
            v_ddl := v_ddl || format('ALTER TABLE %s DROP CONSTRAINT %I', v_tbl, v_ix->'replaces'->>'constraint')
                           || format('ALTER TABLE %s ADD CONSTRAINT %I %s', v_tbl, v_ix->'replaces'->>'constraint', v_ix->'replaces'->>'def');
        ELSIF v_ix->'replaces'->>'constraint' IS NULL AND v_ix->'replaces'->>'index' IS NOT NULL
              AND EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                           WHERE i.indrelid = v_rel AND c.relname = v_ix->'replaces'->>'index' AND v_att = ANY (i.indkey::int2[])) THEN
            v_ddl := v_ddl || format('DROP INDEX %s.%I', v_schema, v_ix->'replaces'->>'index') || (v_ix->'replaces'->>'def');
        ELSIF v_ix->'replaces'->>'constraint' IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = v_rel AND conname = v_ix->'replaces'->>'constraint') THEN
            v_ddl := v_ddl || format('ALTER TABLE %s ADD CONSTRAINT %I %s', v_tbl, v_ix->'replaces'->>'constraint', v_ix->'replaces'->>'def');
        ELSIF v_ix->'replaces'->>'constraint' IS NULL AND v_ix->'replaces'->>'index' IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                            WHERE i.indrelid = v_rel AND c.relname = v_ix->'replaces'->>'index') THEN
            v_ddl := v_ddl || (v_ix->'replaces'->>'def');
        END IF;
        IF EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = v_rel AND conname = v_ix->>'name') THEN
            v_ddl := v_ddl || format('ALTER TABLE %s DROP CONSTRAINT %I', v_tbl, v_ix->>'name');
        ELSIF EXISTS (SELECT 1 FROM pg_class c WHERE c.relname = v_ix->>'name' AND c.relkind IN ('i', 'I')
                         AND c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = v_rel)) THEN
            v_ddl := v_ddl || format('DROP INDEX IF EXISTS %s.%I', v_schema, v_ix->>'name');
        END IF;
        IF (v_rec->>'partitioned')::boolean THEN  -- leaf indexes not attached yet
            FOR v_leaf IN SELECT unnest(tenancy._leaves(v_rel)) LOOP
                v_ddl := v_ddl || format('DROP INDEX IF EXISTS %s.%I', v_schema, tenancy._leaf_index_name(v_leaf, v_ix));
            END LOOP;
        END IF;
    END LOOP;
    FOR v_i IN v_done + 1 .. cardinality(v_ddl) LOOP
        EXECUTE v_ddl[v_i];
    END LOOP;
    v_done := cardinality(v_ddl);
    -- Keys that hold the tenant column and that tenancy did not make: a fix lint printed (TEN010:
    -- the key with the tenant column first) and the DBA applied. The column did not exist before
    -- the backfill, so the key was (columns without it) then: it goes back to that, under its
    -- name. Other objects on the column that tenancy did not make are named in a NOTICE.
    IF v_att IS NOT NULL AND NOT (v_rec->>'column_existed')::boolean THEN
        FOR v_con IN SELECT c.conname, c.contype,
                            ARRAY(SELECT k FROM unnest(c.conkey) WITH ORDINALITY u(k, n) WHERE k <> v_att ORDER BY n)::int2[] AS rest
                       FROM pg_constraint c
                      WHERE c.conrelid = v_rel AND c.contype IN ('p', 'u') AND v_att = ANY (c.conkey)
                        AND cardinality(c.conkey) > 1
                      ORDER BY c.conname LOOP
            v_ddl := v_ddl || format('ALTER TABLE %s DROP CONSTRAINT %I, ADD CONSTRAINT %I %s (%s)', v_tbl, v_con.conname, v_con.conname,
                                     CASE v_con.contype WHEN 'p' THEN 'PRIMARY KEY' ELSE 'UNIQUE' END,
                                     tenancy._idents(tenancy._att_names(v_rel, v_con.rest)));
            RAISE NOTICE 'tenancy.rollback %: key % held the tenant column and tenancy did not make it (a lint fix applied by hand?): it is (%) again',
                  v_tbl, quote_ident(v_con.conname), tenancy._idents(tenancy._att_names(v_rel, v_con.rest));
        END LOOP;
        -- The same for a plain unique index (lint's fix: DROP INDEX, CREATE UNIQUE INDEX with the
        -- tenant column first), rebuilt under its name on its other columns.
        FOR v_con IN SELECT x.relname,
                            ARRAY(SELECT k FROM unnest(i.indkey::int2[]) k WHERE k <> v_att)::int2[] AS rest
                       FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid
                      WHERE i.indrelid = v_rel AND i.indisunique AND v_att = ANY (i.indkey::int2[])
                        AND i.indnatts > 1 AND i.indnkeyatts = i.indnatts AND i.indpred IS NULL AND i.indexprs IS NULL
                        AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid AND c.conrelid = v_rel)
                        AND NOT coalesce(v_rec->'indexes', '[]') @> jsonb_build_array(jsonb_build_object('name', x.relname::text))
                      ORDER BY x.relname LOOP
            v_ddl := v_ddl || format('DROP INDEX %s.%I', v_schema, v_con.relname)
                           || format('CREATE UNIQUE INDEX %I ON %s (%s)', v_con.relname, v_tbl, tenancy._idents(tenancy._att_names(v_rel, v_con.rest)));
            RAISE NOTICE 'tenancy.rollback %: unique index % held the tenant column and tenancy did not make it (a lint fix applied by hand?): it is on (%) again',
                  v_tbl, quote_ident(v_con.relname), tenancy._idents(tenancy._att_names(v_rel, v_con.rest));
        END LOOP;
        FOR v_i IN v_done + 1 .. cardinality(v_ddl) LOOP
            EXECUTE v_ddl[v_i];
        END LOOP;
        v_done := cardinality(v_ddl);
        SELECT string_agg(x, ', ' ORDER BY x) INTO v_left FROM (
            SELECT 'constraint ' || quote_ident(c.conname) AS x FROM pg_constraint c
             WHERE c.conrelid = v_rel AND v_att = ANY (c.conkey) AND c.contype NOT IN ('p', 'u', 'n')
               AND c.conname IS DISTINCT FROM v_rec->>'fk' AND c.conname IS DISTINCT FROM v_rec->>'check'
               AND NOT coalesce(v_rec->'fk_rewrites', '[]') @> jsonb_build_array(jsonb_build_object('new', c.conname))
            UNION ALL
            SELECT 'index ' || quote_ident(x.relname) FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid
             WHERE i.indrelid = v_rel AND v_att = ANY (i.indkey::int2[])
               AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid AND c.conrelid = v_rel)
               AND NOT coalesce(v_rec->'indexes', '[]') @> jsonb_build_array(jsonb_build_object('name', x.relname::text))) s;
        IF v_left IS NOT NULL THEN
            RAISE NOTICE 'tenancy.rollback %: objects on % that tenancy did not make: %', v_tbl, quote_ident(v_col), v_left
                USING HINT = CASE WHEN drop_column THEN 'Dropping the column drops them too.'
                                  ELSE 'They are left as they are.' END;
        END IF;
    END IF;
    IF v_rec->>'fk' IS NOT NULL THEN
        v_ddl := v_ddl || format('ALTER TABLE %s DROP CONSTRAINT IF EXISTS %I', v_tbl, v_rec->>'fk');
        FOR v_leaf IN SELECT unnest(tenancy._leaves(v_rel)) LOOP
            IF v_leaf <> v_rel THEN
                v_ddl := v_ddl || format('ALTER TABLE %s DROP CONSTRAINT IF EXISTS %I', v_leaf::regclass, v_rec->>'fk');
            END IF;
        END LOOP;
    END IF;
    IF v_rec->>'check' IS NOT NULL THEN
        FOR v_leaf IN SELECT unnest(tenancy._leaves(v_rel)) LOOP
            IF EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = v_leaf AND conname = v_rec->>'check') THEN
                v_ddl := v_ddl || format('ALTER TABLE ONLY %s DROP CONSTRAINT %I', v_leaf::regclass, v_rec->>'check');
            END IF;
        END LOOP;
    END IF;
    IF (v_rec->>'set_not_null')::boolean AND NOT (v_rec->>'column_was_not_null')::boolean
       AND NOT (drop_column AND NOT (v_rec->>'column_existed')::boolean) THEN
        v_ddl := v_ddl || format('ALTER TABLE %s ALTER COLUMN %I DROP NOT NULL', v_tbl, v_col);
    END IF;
    IF v_rec->>'trigger' IS NOT NULL THEN
        v_ddl := v_ddl || format('DROP TRIGGER IF EXISTS %I ON %s', v_rec->>'trigger', v_tbl);
    END IF;
    IF v_rec->>'default_expr' IS NOT NULL AND NOT (drop_column AND NOT (v_rec->>'column_existed')::boolean) THEN
        v_ddl := v_ddl || CASE WHEN v_rec->>'old_default' IS NULL THEN format('ALTER TABLE %s ALTER COLUMN %I DROP DEFAULT', v_tbl, v_col)
                               ELSE format('ALTER TABLE %s ALTER COLUMN %I SET DEFAULT %s', v_tbl, v_col, v_rec->>'old_default') END;
    END IF;
    IF drop_column THEN
        IF (v_rec->>'column_existed')::boolean THEN
            RAISE NOTICE 'tenancy.rollback: %.% existed before the backfill and is kept', v_tbl, quote_ident(v_col);
        ELSE
            v_ddl := v_ddl || format('ALTER TABLE %s DROP COLUMN IF EXISTS %I', v_tbl, v_col);
        END IF;
    END IF;
    FOR v_i IN v_done + 1 .. cardinality(v_ddl) LOOP
        EXECUTE v_ddl[v_i];
    END LOOP;
    PERFORM tenancy._privileged('record_backfill', jsonb_build_object('relid', v_rel, 'backfill', 'null'::jsonb,
        'log', jsonb_build_object('operation', 'rollback', 'status', 'succeeded',
                                  'details', jsonb_build_object('phase', v_rec->>'phase', 'drop_column', drop_column,
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
    v_rec   jsonb;
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
        SELECT t.details->'backfill' INTO v_rec FROM tenancy.tenant_tables t WHERE t.relid = v_tbl;
        BEGIN
            IF v_rec IS NOT NULL THEN
                ddl := tenancy._as_owner(v_tbl::oid, 'rollback', jsonb_build_object('drop_column', p_drop))->>'ddl';
                action := 'rolled back';
                detail := format('from phase %s%s', v_rec->>'phase', CASE WHEN p_drop AND NOT (v_rec->>'column_existed')::boolean
                                                                              THEN ', column ' || quote_ident(v_rec->>'tenant_column') || ' dropped' ELSE '' END);
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
    IF tenancy._backfill_record(tenancy._require('tbl', tbl)::oid) IS NULL THEN
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

----------------------------------------------------------------------------------------------
-- Adopting the users of the single-tenant application
----------------------------------------------------------------------------------------------

-- a: {members: [{organization_id, user_id, role}]}. Existing memberships are left as they are.
CREATE FUNCTION tenancy._op_adopt_users(a jsonb, caller oid, is_admin boolean, actor text)
RETURNS jsonb LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_org   record;
    v_rank  integer;
    v_added jsonb;
BEGIN
    FOR v_org IN SELECT (m->>'organization_id')::uuid AS id, array_agg(DISTINCT m->>'role') AS roles
                   FROM jsonb_array_elements(tenancy._require('members', a->'members')) m GROUP BY 1 LOOP
        PERFORM tenancy._organization(v_org.id, true);
        v_rank := tenancy._authorize(v_org.id, 'manage_members', is_admin, actor);
        PERFORM tenancy._check_rank(v_rank, tenancy._role(r)) FROM unnest(v_org.roles) r;
    END LOOP;
    WITH wanted AS (
        -- Each user id canonical (tenancy._user_id), as the column's type (uuid, bigint or text).
        SELECT DISTINCT ON (o, u) (m->>'organization_id')::uuid AS o,
               (jsonb_populate_record(NULL::tenancy.memberships,
                                      jsonb_build_object('user_id', tenancy._user_id(m->>'user_id')))).user_id AS u,
               m->>'role' AS role
          FROM jsonb_array_elements(a->'members') m
         ORDER BY o, u, (SELECT rank FROM tenancy.roles r WHERE r.name = m->>'role') DESC
    ), added AS (
        INSERT INTO tenancy.memberships (organization_id, user_id, role, is_default)
        SELECT w.o, w.u, w.role,
               row_number() OVER (PARTITION BY w.u ORDER BY w.o) = 1
               AND NOT EXISTS (SELECT 1 FROM tenancy.memberships m WHERE m.user_id = w.u AND m.is_default)
          FROM wanted w
         WHERE NOT EXISTS (SELECT 1 FROM tenancy.memberships m WHERE m.organization_id = w.o AND m.user_id = w.u)
        ON CONFLICT (organization_id, user_id) DO NOTHING
        RETURNING role
    )
    SELECT coalesce(jsonb_object_agg(role, n), '{}') INTO v_added FROM (SELECT role, count(*) AS n FROM added GROUP BY role) s;
    PERFORM tenancy._log('adopt_users', a->>'table_name', 'succeeded',
                         jsonb_build_object('added', v_added, 'candidates', jsonb_array_length(a->'members'), 'actor', actor), p_caller => caller);
    RETURN jsonb_build_object('added', v_added);
END $$;

CREATE FUNCTION tenancy.adopt_users(users regclass, role_map jsonb, organization_id uuid DEFAULT NULL,
                                    id_column name DEFAULT 'id', role_column name DEFAULT 'role',
                                    default_role text DEFAULT NULL)
RETURNS TABLE (role text, candidates bigint, added bigint)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_rel      oid := tenancy._require('users', users)::oid;
    v_idtype   regtype;
    v_uidtype  text := tenancy.user_id_type();
    v_org_expr text;
    v_rows     jsonb;
    v_bad      text;
    v_res      jsonb;
BEGIN
    IF jsonb_typeof(tenancy._require('role_map', role_map)) <> 'object'
       OR EXISTS (SELECT 1 FROM jsonb_each(role_map) e WHERE jsonb_typeof(e.value) <> 'string') THEN
        RAISE EXCEPTION 'tenancy.adopt_users: role_map must map application roles to tenancy roles, e.g. {"admin": "owner", "buyer": "member"}'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT string_agg(DISTINCT quote_literal(x), ', ') INTO v_bad
      FROM (SELECT e.value #>> '{}' AS x FROM jsonb_each(role_map) e UNION ALL SELECT default_role) s
     WHERE x IS NOT NULL AND NOT EXISTS (SELECT 1 FROM tenancy.roles r WHERE r.name = x);
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION 'tenancy.adopt_users: no tenancy role named %', v_bad
            USING ERRCODE = 'undefined_object', HINT = 'SELECT name FROM tenancy.roles lists them.';
    END IF;
    SELECT a.atttypid INTO v_idtype FROM pg_attribute a
     WHERE a.attrelid = v_rel AND a.attname = id_column AND a.attnum > 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenancy.adopt_users: column % does not exist in %', quote_ident(id_column), users
            USING ERRCODE = 'undefined_column';
    ELSIF NOT (v_idtype = ANY (CASE v_uidtype
                                  WHEN 'uuid' THEN ARRAY['uuid', 'text', 'varchar']::regtype[]
                                  WHEN 'bigint' THEN ARRAY['int2', 'int4', 'int8', 'text', 'varchar']::regtype[]
                                  ELSE ARRAY['text', 'varchar', 'uuid', 'int2', 'int4', 'int8']::regtype[] END)) THEN
        RAISE EXCEPTION 'tenancy.adopt_users: %.% has type %; tenancy user ids are % in this database', users, quote_ident(id_column), v_idtype, v_uidtype
            USING ERRCODE = 'datatype_mismatch',
                  HINT = 'Pass id_column => the column holding each user''s id (the id your authentication issues), or choose the type of user ids with tenancy.set_user_id_type before adding members.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = v_rel AND a.attname = role_column AND a.attnum > 0 AND NOT a.attisdropped) THEN
        RAISE EXCEPTION 'tenancy.adopt_users: column % does not exist in %', quote_ident(role_column), users
            USING ERRCODE = 'undefined_column';
    END IF;
    IF organization_id IS NOT NULL THEN
        v_org_expr := quote_literal(organization_id) || '::uuid';
    ELSE  -- each user's own organization, from the users table's tenant column
        SELECT format('u.%I', t.tenant_column) INTO v_org_expr FROM tenancy.tenant_tables t
         WHERE t.relid = users AND t.column_type = 'uuid';
        IF v_org_expr IS NULL THEN
            RAISE EXCEPTION 'tenancy.adopt_users: pass organization_id, or backfill % first so that each user has one', users
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    BEGIN
        EXECUTE format('SELECT jsonb_agg(jsonb_build_object(''user_id'', tenancy._user_id(u.%I::text), ''source'', u.%I::text, ''organization_id'', %s)) FROM %s u',
                       id_column, role_column, v_org_expr, users)
           INTO v_rows;
    EXCEPTION WHEN invalid_text_representation THEN
        RAISE EXCEPTION 'tenancy.adopt_users: %.% holds values that are not % user ids', users, quote_ident(id_column), v_uidtype
            USING ERRCODE = 'invalid_text_representation',
                  HINT = 'Pass id_column => the column holding each user''s id (the id your authentication issues). Nobody was added.';
    END;
    v_rows := coalesce(v_rows, '[]');
    SELECT string_agg(DISTINCT coalesce(quote_literal(r->>'source'), 'NULL'), ', ') INTO v_bad
      FROM jsonb_array_elements(v_rows) r
     WHERE coalesce(role_map->>(r->>'source'), default_role) IS NULL;
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION 'tenancy.adopt_users: no tenancy role for application role(s) %', v_bad
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Add them to role_map, or pass default_role. Nobody was added.';
    END IF;
    IF EXISTS (SELECT 1 FROM jsonb_array_elements(v_rows) r WHERE r->>'user_id' IS NULL OR r->>'organization_id' IS NULL) THEN
        RAISE EXCEPTION 'tenancy.adopt_users: some users of % have no id or no organization', users
            USING ERRCODE = 'not_null_violation', HINT = 'Nobody was added.';
    END IF;
    v_rows := (SELECT coalesce(jsonb_agg(r || jsonb_build_object('role', coalesce(role_map->>(r->>'source'), default_role))), '[]')
                 FROM jsonb_array_elements(v_rows) r);
    v_res := tenancy._privileged('adopt_users', jsonb_build_object('members', v_rows, 'table_name', users::text));
    RETURN QUERY
        SELECT x.role, count(*), coalesce((v_res->'added'->>x.role)::bigint, 0)
          FROM (SELECT r->>'role' AS role FROM jsonb_array_elements(v_rows) r) x
         GROUP BY x.role
         ORDER BY (SELECT rank FROM tenancy.roles ro WHERE ro.name = x.role) DESC;
END $$;

----------------------------------------------------------------------------------------------
-- Comments and privileges
----------------------------------------------------------------------------------------------

COMMENT ON PROCEDURE tenancy.backfill(regclass, uuid, name, text, regclass, name, integer, interval, interval, integer, boolean) IS
  'Convert a live table online: add the tenant column, fill it in ctid-range batches (one COMMIT each) from a fixed organization, a parent row (parent =>) or a user column (user_column =>), then NOT NULL, a foreign key and tenant-scoped indexes and unique keys without long locks. Resumable: CALL again after any interruption. Progress: tenancy.backfill_progress.';
COMMENT ON PROCEDURE tenancy.backfill_all(regclass[], uuid, jsonb, name, text, integer, interval, interval, integer, boolean) IS
  'tenancy.backfill for several tables, parents before children (foreign-key order). derive maps a table to {"parent": "shipments"} or {"user_column": "created_by"}, optionally with a fallback "organization_id"; the other tables get organization_id.';
COMMENT ON FUNCTION tenancy.pending_statements() IS
  'Statements a backfill waits for that cannot run in a transaction (CREATE INDEX CONCURRENTLY). In psql: SELECT statement FROM tenancy.pending_statements() \gexec, then CALL tenancy.backfill again.';
COMMENT ON FUNCTION tenancy.rollback(regclass, boolean, boolean) IS
  'Undo a backfill (finished or not, isolated or not) in one transaction: isolation, foreign keys, unique keys and indexes it rewrote or added (the old ones restored under their names), NOT NULL, trigger and default. Drops the tenant column only with drop_column => true. cascade => true first rolls back the tables whose foreign keys reference its tenant keys, children first.';
COMMENT ON FUNCTION tenancy.rollback_all(name, boolean) IS
  'Roll back every table of a schema that tenancy converted or isolated, children first, all or nothing in one transaction; one row per table (rolled back / isolation removed). drop_column => true drops the tenant columns the backfill added.';
COMMENT ON FUNCTION tenancy._rollback_closure(oid[]) IS 'Internal: the tables with their children (foreign keys to a key holding the tenant column), recursively.';
COMMENT ON FUNCTION tenancy._rollback_many(oid[], boolean, text) IS 'Internal: roll back tables children first, each as its owner, all or nothing.';
COMMENT ON FUNCTION tenancy.adopt_users(regclass, jsonb, uuid, name, name, text) IS
  'Create memberships for the users of an existing users table, mapping application roles to tenancy roles (role_map jsonb). All or nothing; existing memberships are kept. Needs manage_members in the organization.';
COMMENT ON VIEW tenancy.backfill_progress IS
  'One row per table converted by tenancy.backfill: phase, rows filled, percent, rate, ETA, lock retries, whether a session is running it. \watch it from another session.';
COMMENT ON FUNCTION tenancy._backfill_step(oid) IS 'Internal: one step of a backfill, in the caller''s transaction, run as the table''s owner.';
COMMENT ON FUNCTION tenancy._owner_backfill_step(oid, jsonb) IS 'Internal: the work of one backfill step; runs only as the table''s owner (through tenancy._as_owner).';
COMMENT ON FUNCTION tenancy._check_backfill_record(oid, jsonb, jsonb) IS 'Internal: refuses a backfill record whose recorded definitions are not what the catalog says about the table.';
COMMENT ON FUNCTION tenancy._owner_rollback(oid, jsonb) IS 'Internal: the work of tenancy.rollback; runs only as the table''s owner (through tenancy._as_owner).';
COMMENT ON FUNCTION tenancy._backfill_fill() IS 'Internal: trigger giving rows written during a backfill their organization.';

GRANT SELECT ON tenancy.backfill_progress TO PUBLIC;
