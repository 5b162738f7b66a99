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
-- The record, typed
----------------------------------------------------------------------------------------------

-- The record is stored as jsonb (tenancy.tenant_tables.details->'backfill': one key per field
-- below, same names, null fields left out) and converted at two places only:
-- tenancy._backfill_record reads it as a tenancy.backfill_state (jsonb_populate_record, the
-- nested types included), tenancy._backfill_save writes one back (to_jsonb, nulls stripped, as
-- 0.2.0 wrote it: its records resume after ALTER EXTENSION UPDATE). Every function between them
-- takes and returns tenancy.backfill_state and reads its fields by name, with their types.
-- Still jsonb, on purpose: the lists (indexes: the index plan, one object per index with the
-- definition it replaces; fk_rewrites: the foreign keys rewritten, old and new definitions;
-- skipped: objects left as they were, with the reason; fill.leaves: the blocks of each leaf) and
-- the migration log's details: documents that are written and read whole, element by element.
-- The jsonb stays the wire format of tenancy._privileged('record_backfill', ...) too, where
-- tenancy._check_backfill_record checks what a table owner may record.

-- Where each row's organization comes from (organization_id =>, parent =>, user_column =>).
CREATE TYPE tenancy.backfill_source AS (
    kind            text,     -- fixed, parent or user
    organization_id uuid,     -- organization_id =>: the fixed organization, or the others' fallback
    value           text,     -- that organization as the tenant column holds it (id or slug)
    parent          text,     -- parent =>: the parent table, as named when planned
    parent_oid      oid,
    fk              text,     -- the one foreign key to the parent
    "join"          text[],   -- its column pairs: {{column, parent column}, ...}
    user_column     name      -- user_column =>: the column holding a user id
);

-- The options of the CALL (each CALL records its own).
CREATE TYPE tenancy.backfill_options AS (
    batch_size      integer,
    pause_s         numeric,  -- the pause between steps, in seconds
    lock_timeout_ms bigint,
    max_retries     integer,
    build_indexes   boolean
);

-- The fill (phase filling): what there is to visit, what was visited.
CREATE TYPE tenancy.backfill_fill AS (
    leaves           jsonb,             -- [{relid, name, blocks, next}]: each leaf's blocks, the next to visit
    blocks_total     bigint,
    blocks_done      bigint,
    rows_total       bigint,            -- an estimate
    rows_done        bigint,
    tuples_per_block double precision,
    started_at       double precision,  -- seconds since the epoch
    batches          bigint,
    fast_default     boolean            -- nothing filled: the metadata-only path
);

-- The counters when this CALL began (its rate and ETA are reckoned from them).
CREATE TYPE tenancy.backfill_run AS (
    started_at double precision,  -- seconds since the epoch
    rows       bigint,
    blocks     bigint
);

-- The record of one backfill: its phase, what it was asked, what it found and what it made.
CREATE TYPE tenancy.backfill_state AS (
    phase               text,
    phase_started_at    timestamptz,
    started_at          timestamptz,
    updated_at          timestamptz,
    pid                 integer,   -- the backend of the last CALL
    retries             integer,   -- lock timeouts in a row in this phase
    "table"             text,
    partitioned         boolean,
    tenant_column       name,
    column_type         text,      -- uuid or text
    source              tenancy.backfill_source,
    lookup              text,      -- the fill trigger's query: a row's organization, as text
    options             tenancy.backfill_options,
    was_registered      boolean,   -- in tenancy.tenant_tables before the backfill
    column_existed      boolean,
    column_was_not_null boolean,
    old_default         text,      -- the tenant column's default before the backfill
    fast_default        boolean,   -- the metadata-only path (tenancy._backfill_fast_default)
    default_expr        text,      -- the default the backfill gave the column
    set_not_null        boolean,
    "trigger"           text,      -- the fill trigger
    "check"             text,      -- CHECK (col IS NOT NULL) NOT VALID, on every leaf
    fk                  text,      -- the foreign key to tenancy.organizations
    fill                tenancy.backfill_fill,
    run                 tenancy.backfill_run,
    indexes             jsonb,     -- [{name, unique, columns, kind, replaces: {index, constraint, def}}]
    skipped             jsonb,     -- [{object, reason}]
    fk_rewrites         jsonb      -- [{old, old_def, new, new_def}]
);

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
