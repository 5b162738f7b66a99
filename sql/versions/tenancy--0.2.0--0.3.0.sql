-- tenancy 0.2.0 -> 0.3.0. Run by ALTER EXTENSION tenancy UPDATE, never by hand:
\echo Use "ALTER EXTENSION tenancy UPDATE TO '0.3.0'" to load this file. \quit

-- tenancy upgrade guard: the first statement of every upgrade script (sql/versions/
-- tenancy--A--B.sql starts with exactly this block; scripts/test.sh checks it).
--
-- ALTER EXTENSION tenancy UPDATE runs the upgrade scripts as a superuser (the bootstrap
-- superuser on a trusted install) with schema tenancy on the search_path. Releases up to 0.2.0
-- left that schema to the installing role, which could have added operators or functions that
-- beat pg_catalog's in overload resolution. So, before anything else, with every operator and
-- function below schema-qualified:
--   1. no other transaction of a non-superuser role that may create objects in the schema is
--      open (it could commit an object after the check);
--   2. the schema is taken over by the superuser running the update: nobody else can create
--      objects in it from then on;
--   3. every object in the schema must belong to the extension (or be part of an object that
--      does: an index, a row type), CREATE on the schema is granted to nobody else, and there are
--      no default privileges in it. Otherwise the update is refused, and nothing is changed.
DO $guard$
DECLARE
    v_nsp      oid;
    v_ext      oid;
    v_objects  text;
BEGIN
    SELECT n.oid INTO v_nsp FROM pg_catalog.pg_namespace n WHERE n.nspname OPERATOR(pg_catalog.=) 'tenancy';
    SELECT e.oid INTO v_ext FROM pg_catalog.pg_extension e WHERE e.extname OPERATOR(pg_catalog.=) 'tenancy';
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a
                WHERE a.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()
                  AND a.backend_xid IS NOT NULL
                  AND a.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()
                  AND pg_catalog.has_schema_privilege(a.usesysid, v_nsp, 'CREATE')
                  AND NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r
                            WHERE r.oid OPERATOR(pg_catalog.=) a.usesysid)) THEN
        RAISE EXCEPTION 'tenancy: another transaction that may create objects in schema tenancy is open'
            USING ERRCODE = 'object_in_use',
                  HINT = 'Run ALTER EXTENSION tenancy UPDATE again once the other sessions of the database owner have committed.';
    END IF;
    EXECUTE 'ALTER SCHEMA tenancy OWNER TO CURRENT_USER';
    WITH objs(classid, objid, what) AS (
        SELECT 'pg_catalog.pg_class'::pg_catalog.regclass::pg_catalog.oid, c.oid, pg_catalog.concat('relation ', c.relname)
          FROM pg_catalog.pg_class c WHERE c.relnamespace OPERATOR(pg_catalog.=) v_nsp
        UNION ALL SELECT 'pg_catalog.pg_proc'::pg_catalog.regclass::pg_catalog.oid, p.oid, pg_catalog.concat('function ', p.proname)
          FROM pg_catalog.pg_proc p WHERE p.pronamespace OPERATOR(pg_catalog.=) v_nsp
        UNION ALL SELECT 'pg_catalog.pg_type'::pg_catalog.regclass::pg_catalog.oid, t.oid, pg_catalog.concat('type ', t.typname)
          FROM pg_catalog.pg_type t WHERE t.typnamespace OPERATOR(pg_catalog.=) v_nsp
        UNION ALL SELECT 'pg_catalog.pg_operator'::pg_catalog.regclass::pg_catalog.oid, o.oid, pg_catalog.concat('operator ', o.oprname)
          FROM pg_catalog.pg_operator o WHERE o.oprnamespace OPERATOR(pg_catalog.=) v_nsp
        UNION ALL SELECT 'pg_catalog.pg_collation'::pg_catalog.regclass::pg_catalog.oid, c.oid, pg_catalog.concat('collation ', c.collname)
          FROM pg_catalog.pg_collation c WHERE c.collnamespace OPERATOR(pg_catalog.=) v_nsp
        UNION ALL SELECT 'pg_catalog.pg_conversion'::pg_catalog.regclass::pg_catalog.oid, c.oid, pg_catalog.concat('conversion ', c.conname)
          FROM pg_catalog.pg_conversion c WHERE c.connamespace OPERATOR(pg_catalog.=) v_nsp
        UNION ALL SELECT 'pg_catalog.pg_opclass'::pg_catalog.regclass::pg_catalog.oid, c.oid, pg_catalog.concat('operator class ', c.opcname)
          FROM pg_catalog.pg_opclass c WHERE c.opcnamespace OPERATOR(pg_catalog.=) v_nsp
        UNION ALL SELECT 'pg_catalog.pg_opfamily'::pg_catalog.regclass::pg_catalog.oid, f.oid, pg_catalog.concat('operator family ', f.opfname)
          FROM pg_catalog.pg_opfamily f WHERE f.opfnamespace OPERATOR(pg_catalog.=) v_nsp
        UNION ALL SELECT 'pg_catalog.pg_ts_config'::pg_catalog.regclass::pg_catalog.oid, c.oid, pg_catalog.concat('text search configuration ', c.cfgname)
          FROM pg_catalog.pg_ts_config c WHERE c.cfgnamespace OPERATOR(pg_catalog.=) v_nsp
        UNION ALL SELECT 'pg_catalog.pg_ts_dict'::pg_catalog.regclass::pg_catalog.oid, d.oid, pg_catalog.concat('text search dictionary ', d.dictname)
          FROM pg_catalog.pg_ts_dict d WHERE d.dictnamespace OPERATOR(pg_catalog.=) v_nsp
        UNION ALL SELECT 'pg_catalog.pg_ts_parser'::pg_catalog.regclass::pg_catalog.oid, p.oid, pg_catalog.concat('text search parser ', p.prsname)
          FROM pg_catalog.pg_ts_parser p WHERE p.prsnamespace OPERATOR(pg_catalog.=) v_nsp
        UNION ALL SELECT 'pg_catalog.pg_ts_template'::pg_catalog.regclass::pg_catalog.oid, t.oid, pg_catalog.concat('text search template ', t.tmplname)
          FROM pg_catalog.pg_ts_template t WHERE t.tmplnamespace OPERATOR(pg_catalog.=) v_nsp
        UNION ALL SELECT 'pg_catalog.pg_statistic_ext'::pg_catalog.regclass::pg_catalog.oid, s.oid, pg_catalog.concat('statistics object ', s.stxname)
          FROM pg_catalog.pg_statistic_ext s WHERE s.stxnamespace OPERATOR(pg_catalog.=) v_nsp
    )
    SELECT pg_catalog.string_agg(o.what, ', ') INTO v_objects
      FROM objs o
     WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                        WHERE d.classid OPERATOR(pg_catalog.=) o.classid AND d.objid OPERATOR(pg_catalog.=) o.objid
                          AND (d.deptype OPERATOR(pg_catalog.=) ANY (ARRAY['a', 'i']::"char"[])
                               OR (d.deptype OPERATOR(pg_catalog.=) 'e'::"char" AND d.refobjid OPERATOR(pg_catalog.=) v_ext)));
    IF v_objects IS NULL THEN
        SELECT pg_catalog.string_agg(x.what, ', ') INTO v_objects FROM (
            SELECT 'CREATE granted to another role' AS what FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a
             WHERE n.oid OPERATOR(pg_catalog.=) v_nsp AND a.grantee OPERATOR(pg_catalog.<>) n.nspowner
               AND a.privilege_type OPERATOR(pg_catalog.=) 'CREATE'
            UNION ALL SELECT 'default privileges' FROM pg_catalog.pg_default_acl d
             WHERE d.defaclnamespace OPERATOR(pg_catalog.=) v_nsp) x;
    END IF;
    IF v_objects IS NOT NULL THEN
        RAISE EXCEPTION 'tenancy: schema tenancy holds what the extension did not create (%)', v_objects
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'The update runs as a superuser with schema tenancy on its search_path; it refuses to run next to objects somebody else put there.',
                  HINT = 'Move or drop them (or revoke the grants), then run ALTER EXTENSION tenancy UPDATE again. Nothing was changed.';
    END IF;
END
$guard$;


-- Before the drafted functions (written by hand; scripts/regen-upgrade.sh keeps this part):
-- the types of the backfill's record (issue 16), which the functions below take and return, and
-- the view that reads it, which depends on functions whose arguments change (it is created again
-- after them, at the end).
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
COMMENT ON TYPE tenancy.backfill_state IS
  'Internal: the record of a backfill, typed (stored as jsonb in tenancy.tenant_tables.details->''backfill'', read by tenancy._backfill_record, written by tenancy._backfill_save); its lists (indexes, skipped, fk_rewrites) stay jsonb.';
COMMENT ON TYPE tenancy.backfill_source IS
  'Internal: where a backfill takes each row''s organization from: a fixed organization, the parent row (its foreign key and column pairs) or a user column.';
COMMENT ON TYPE tenancy.backfill_options IS 'Internal: the options of a CALL tenancy.backfill, as the backfill''s record keeps them.';
COMMENT ON TYPE tenancy.backfill_fill IS
  'Internal: a backfill''s fill: blocks and rows to visit and visited, batches; fill.leaves (each leaf''s blocks and next block) stays jsonb.';
COMMENT ON TYPE tenancy.backfill_run IS 'Internal: a backfill''s counters when its current CALL began (its rate and ETA are reckoned from them).';
DROP VIEW tenancy.backfill_progress;

-- Functions and procedures (drafted by scripts/draft-upgrade.py from the generated install scripts).
DROP FUNCTION tenancy._authorize(uuid, text, boolean, uuid);
DROP FUNCTION tenancy._backfill_advance(oid, jsonb, text, jsonb);
DROP FUNCTION tenancy._backfill_begin(oid, uuid, name, text, oid, name, integer, interval, interval, integer, boolean);
DROP FUNCTION tenancy._backfill_index_plan(oid, jsonb);
DROP FUNCTION tenancy._backfill_record(oid);
DROP FUNCTION tenancy._backfill_running_elsewhere(jsonb);
DROP FUNCTION tenancy._backfill_save(oid, jsonb, jsonb);
DROP FUNCTION tenancy._keep_an_owner(uuid, uuid);
DROP FUNCTION tenancy._log(text, text, text, jsonb, timestamptz);
DROP FUNCTION tenancy._lookups_changed();
DROP FUNCTION tenancy._membership(uuid, uuid);
DROP FUNCTION tenancy._op_accept_invitation(jsonb, oid, boolean, uuid);
DROP FUNCTION tenancy._op_add_member(jsonb, oid, boolean, uuid);
DROP FUNCTION tenancy._op_adopt_users(jsonb, oid, boolean, uuid);
DROP FUNCTION tenancy._op_change_role(jsonb, oid, boolean, uuid);
DROP FUNCTION tenancy._op_create_invitation(jsonb, oid, boolean, uuid);
DROP FUNCTION tenancy._op_create_organization(jsonb, oid, boolean, uuid);
DROP FUNCTION tenancy._op_deactivate_organization(jsonb, oid, boolean, uuid);
DROP FUNCTION tenancy._op_log(jsonb, oid, boolean, uuid);
DROP FUNCTION tenancy._op_record_backfill(jsonb, oid, boolean, uuid);
DROP FUNCTION tenancy._op_record_isolation(jsonb, oid, boolean, uuid);
DROP FUNCTION tenancy._op_register_table(jsonb, oid, boolean, uuid);
DROP FUNCTION tenancy._op_remove_member(jsonb, oid, boolean, uuid);
DROP FUNCTION tenancy._op_rename_organization(jsonb, oid, boolean, uuid);
DROP FUNCTION tenancy._table_integrity(oid);
DROP FUNCTION tenancy.enable_isolation(regclass, name, text, name[]);
DROP FUNCTION tenancy.enable_isolation_all(name, name, text, name[]);
DROP FUNCTION tenancy.isolation_sql(regclass, name, text, name[]);
DROP FUNCTION tenancy.rollback(regclass, boolean);
DROP FUNCTION tenancy.validate_client_data_integrity();
DROP FUNCTION tenancy.validate_client_data_integrity(regclass);
CREATE OR REPLACE FUNCTION tenancy."_as_owner"(
	"rel" oid, 
	"op" TEXT, 
	"args" jsonb 
) RETURNS jsonb 
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', '_as_owner_wrapper';

CREATE OR REPLACE FUNCTION tenancy._att_names(p_rel oid, p_atts int2[]) RETURNS text[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(array_agg(a.attname::text ORDER BY k.n), '{}')
      FROM unnest(p_atts) WITH ORDINALITY k(att, n)
      JOIN pg_attribute a ON a.attrelid = p_rel AND a.attnum = k.att
$$;

CREATE OR REPLACE FUNCTION tenancy._authorize(p_org uuid, p_right text, p_is_admin boolean, p_actor text)
RETURNS integer
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE r tenancy.roles;
BEGIN
    IF p_is_admin THEN
        RETURN 2147483647;
    END IF;
    IF p_actor IS NULL THEN
        RAISE EXCEPTION 'tenancy: no acting user in this transaction'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Set the user with SET LOCAL tenancy.user_id = ''<user id>'' (or a JWT sub claim), '
                         'or call as a tenancy administrator (a role with UPDATE on tenancy.organizations).';
    END IF;
    SELECT ro.* INTO r
      FROM tenancy.memberships m
      JOIN tenancy.roles ro ON ro.name = m.role
      JOIN tenancy.organizations o ON o.id = m.organization_id
     WHERE m.organization_id = p_org AND m.user_id::text = p_actor AND m.is_active AND o.is_active;
    IF NOT FOUND OR NOT (CASE p_right
                             WHEN 'manage_members' THEN r.can_manage_members
                             WHEN 'manage_organization' THEN r.can_manage_organization
                             ELSE false END) THEN
        RAISE EXCEPTION 'tenancy: user % may not % in organization %', p_actor, replace(p_right, '_', ' '), p_org
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Ask an owner or admin of the organization (see tenancy.roles for who may do what).';
    END IF;
    RETURN r.rank;
END $$;

CREATE OR REPLACE FUNCTION tenancy._backfill_add_check(p_rel oid, p_rec tenancy.backfill_state, p_check text) RETURNS tenancy.backfill_state
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

CREATE OR REPLACE FUNCTION tenancy._backfill_add_column(p_rel oid, p_rec tenancy.backfill_state, p_trig text) RETURNS tenancy.backfill_state
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

CREATE OR REPLACE FUNCTION tenancy._backfill_add_fk(p_rel oid, p_rec tenancy.backfill_state, p_fkname text) RETURNS tenancy.backfill_state
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

CREATE OR REPLACE FUNCTION tenancy._backfill_advance(p_rel oid, p_rec tenancy.backfill_state, p_phase text, p_details jsonb DEFAULT '{}')
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

CREATE OR REPLACE FUNCTION tenancy._backfill_begin(
    p_rel oid, p_org uuid, p_col name, p_type text, p_parent oid, p_user_col name,
    p_batch integer, p_pause interval, p_lock_timeout interval, p_retries integer, p_build boolean)
RETURNS tenancy.backfill_state LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_rec     tenancy.backfill_state := tenancy._backfill_record(tenancy._require('tbl', p_rel));
    v_name    text;
    v_kind    "char";
    v_ispart  boolean;
    v_att     record;
    v_found   record;
    v_other   integer;
    v_options tenancy.backfill_options;
BEGIN
    PERFORM tenancy._citus_backfill_check(p_rel);  -- Citus: refused once the catalog is distributed
    SELECT c.oid::regclass::text, c.relkind, c.relispartition INTO v_name, v_kind, v_ispart
      FROM pg_class c WHERE c.oid = p_rel;
    PERFORM tenancy._backfill_check_call(p_rel, v_name, v_kind, v_ispart, p_type, p_batch, p_pause, p_lock_timeout, p_retries);
    v_options := ROW(p_batch, extract(epoch FROM p_pause), (extract(epoch FROM p_lock_timeout) * 1000)::bigint,
                     p_retries, p_build)::tenancy.backfill_options;

    v_other := tenancy._backfill_running_elsewhere(v_rec);
    IF v_other IS NOT NULL THEN
        RAISE EXCEPTION 'tenancy.backfill: % is being backfilled by session %', v_name, v_other
            USING ERRCODE = 'object_in_use',
                  HINT = 'Watch it with SELECT * FROM tenancy.backfill_progress; stop it with pg_cancel_backend(pid).';
    END IF;

    IF v_rec.phase IS NOT NULL THEN  -- a record always has its phase
        RETURN tenancy._backfill_resume(p_rel, v_rec, v_name, p_org, p_col, p_parent, p_user_col, v_options);
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
    IF FOUND AND tenancy._tenant_column_kind(v_att.atttypid) IS DISTINCT FROM p_type THEN
        RAISE EXCEPTION 'tenancy.backfill: %.% already exists with type %, not %', v_name, quote_ident(p_col),
                        format_type(v_att.atttypid, NULL), p_type
            USING ERRCODE = 'datatype_mismatch',
                  HINT = 'Pass column_type => ''uuid'' or ''text'' to match it, or name another tenant_column.';
    END IF;

    SELECT * INTO v_found FROM tenancy._backfill_source(p_rel, v_name, p_org, p_col, p_type, p_parent, p_user_col, v_att.atttypid);
    v_rec.source := v_found.source;
    v_rec.lookup := v_found.lookup;
    v_rec."table" := v_name;
    v_rec.partitioned := v_kind = 'p';
    v_rec.tenant_column := p_col;
    v_rec.column_type := p_type;
    v_rec.options := v_options;
    v_rec.was_registered := EXISTS (SELECT 1 FROM tenancy.tenant_tables t WHERE t.relid = p_rel::regclass);
    v_rec.column_existed := v_att.attnum IS NOT NULL;
    v_rec.column_was_not_null := coalesce(v_att.attnotnull, false);
    v_rec.old_default := v_att.def;
    v_rec.phase := 'planned';
    v_rec.phase_started_at := clock_timestamp();
    v_rec.started_at := clock_timestamp();
    v_rec.pid := pg_backend_pid();
    v_rec.retries := 0;
    v_rec.skipped := '[]';
    v_rec.run := ROW(extract(epoch FROM clock_timestamp()), 0, 0)::tenancy.backfill_run;
    RETURN tenancy._backfill_save(p_rel, v_rec,
        jsonb_build_object('operation', 'backfill', 'status', 'started',
                           'details', jsonb_build_object('phase', 'planned', 'source', v_rec.source, 'options', v_options)));
END $$;

CREATE OR REPLACE FUNCTION tenancy._backfill_build_index(p_rel oid, p_rec tenancy.backfill_state, OUT rec tenancy.backfill_state, OUT done boolean)
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

CREATE OR REPLACE FUNCTION tenancy._backfill_check_call(
    p_rel oid, p_name text, p_kind "char", p_ispart boolean, p_type text,
    p_batch integer, p_pause interval, p_lock_timeout interval, p_retries integer)
RETURNS void LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'tenancy.backfill: % is not a table (it is a %)', p_name, tenancy._relkind_noun(p_kind)
            USING ERRCODE = 'wrong_object_type', HINT = 'Backfill the table the view reads from.';
    END IF;
    IF p_ispart THEN
        RAISE EXCEPTION 'tenancy.backfill: % is a partition', p_name
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
END $$;

CREATE OR REPLACE FUNCTION tenancy._backfill_fast_default(p_rel oid, p_rec tenancy.backfill_state) RETURNS boolean
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

CREATE OR REPLACE FUNCTION tenancy._backfill_fill() RETURNS trigger
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE v text;
BEGIN
    EXECUTE TG_ARGV[1] INTO v USING to_jsonb(NEW);
    IF v IS NOT NULL THEN
        NEW := jsonb_populate_record(NEW, jsonb_build_object(TG_ARGV[0], v));
    END IF;
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION tenancy._backfill_fill_batch(p_rel oid, p_rec tenancy.backfill_state, p_now double precision) RETURNS tenancy.backfill_state
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

CREATE OR REPLACE FUNCTION tenancy._backfill_fill_statement(p_rec tenancy.backfill_state, p_leaf oid) RETURNS text
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

CREATE OR REPLACE FUNCTION tenancy._backfill_index_plan(p_rel oid, p_rec tenancy.backfill_state, OUT indexes jsonb, OUT skipped jsonb)
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

CREATE OR REPLACE FUNCTION tenancy._backfill_lock_all(p_rel oid, p_mode text) RETURNS void
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

CREATE OR REPLACE FUNCTION tenancy._backfill_parent_source(
    p_rel oid, p_name text, p_col name, p_type text, p_parent oid, p_atttypid oid,
    OUT source tenancy.backfill_source, OUT lookup text)
RETURNS record LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_fk      record;
    v_pcol    record;
BEGIN
    SELECT con.conname, con.conkey, con.confkey, count(*) OVER () AS n INTO v_fk
      FROM pg_constraint con
     WHERE con.conrelid = p_rel AND con.contype = 'f' AND con.confrelid = p_parent
     ORDER BY con.conname LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenancy.backfill: no foreign key from % to %', p_name, p_parent::regclass
            USING ERRCODE = 'invalid_foreign_key',
                  HINT = 'The organization of each row is read from the row its foreign key points at; add that foreign key, or pass organization_id.';
    ELSIF v_fk.n > 1 THEN
        RAISE EXCEPTION 'tenancy.backfill: % has % foreign keys to %; tenancy cannot choose', p_name, v_fk.n, p_parent::regclass
            USING ERRCODE = 'invalid_foreign_key';
    END IF;
    SELECT a.attnotnull, a.atttypid INTO v_pcol FROM pg_attribute a
     WHERE a.attrelid = p_parent AND a.attname = p_col AND NOT a.attisdropped;
    IF NOT FOUND OR v_pcol.atttypid IS DISTINCT FROM coalesce(p_atttypid, CASE p_type WHEN 'uuid' THEN 'uuid'::regtype ELSE 'text'::regtype END) THEN
        RAISE EXCEPTION 'tenancy.backfill: parent % has no tenant column % of type %', p_parent::regclass, quote_ident(p_col), p_type
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Convert %s first: CALL tenancy.backfill(%L, ...), or convert both with tenancy.backfill_all.',
                                p_parent::regclass, p_parent::regclass::text);
    END IF;
    lookup := format('SELECT p.%I::text FROM %s p WHERE %s', p_col, p_parent::regclass,
        (SELECT string_agg(format('p.%I = ($1->>%L)::%s', pa.attname, ca.attname, format_type(ca.atttypid, ca.atttypmod)), ' AND ')
           FROM unnest(v_fk.conkey, v_fk.confkey) k(c, p)
           JOIN pg_attribute ca ON ca.attrelid = p_rel AND ca.attnum = k.c
           JOIN pg_attribute pa ON pa.attrelid = p_parent AND pa.attnum = k.p));
    source.kind := 'parent';
    source.parent := p_parent::regclass::text;
    source.parent_oid := p_parent;
    source.fk := v_fk.conname;
    source."join" := (SELECT array_agg(ARRAY[ca.attname::text, pa.attname::text])
                        FROM unnest(v_fk.conkey, v_fk.confkey) k(c, p)
                        JOIN pg_attribute ca ON ca.attrelid = p_rel AND ca.attnum = k.c
                        JOIN pg_attribute pa ON pa.attrelid = p_parent AND pa.attnum = k.p);
END $$;

CREATE OR REPLACE FUNCTION tenancy._backfill_record(p_rel oid) RETURNS tenancy.backfill_state
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_populate_record(NULL::tenancy.backfill_state, t.details->'backfill')
      FROM tenancy.tenant_tables t WHERE t.relid = p_rel::regclass
$$;

CREATE OR REPLACE FUNCTION tenancy._backfill_resume(
    p_rel oid, p_rec tenancy.backfill_state, p_name text, p_org uuid, p_col name, p_parent oid, p_user_col name,
    p_options tenancy.backfill_options)
RETURNS tenancy.backfill_state LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE v_rec tenancy.backfill_state := p_rec;
BEGIN
    IF (p_org IS NOT NULL AND p_org IS DISTINCT FROM (p_rec.source).organization_id)
       OR (p_parent IS NOT NULL AND p_parent IS DISTINCT FROM (p_rec.source).parent_oid)
       OR (p_user_col IS NOT NULL AND p_user_col IS DISTINCT FROM (p_rec.source).user_column)
       -- tenant_column left at its default resumes with the recorded one (the HINTs of the
       -- later steps name the table alone).
       OR (p_col <> p_rec.tenant_column AND p_col <> 'organization_id') THEN
        RAISE EXCEPTION 'tenancy.backfill: % is already being converted with other options', p_name
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('Recorded: tenant column %s, source %s.', p_rec.tenant_column,
                                  jsonb_strip_nulls(to_jsonb(p_rec.source))),
                  HINT = format('CALL tenancy.backfill(%L%s) resumes it; SELECT tenancy.rollback(%L) undoes it.', p_name,
                                CASE WHEN p_rec.tenant_column <> 'organization_id'
                                     THEN format(', tenant_column => %L', p_rec.tenant_column) ELSE '' END, p_name);
    END IF;
    v_rec.options := p_options;
    v_rec.pid := pg_backend_pid();
    v_rec.retries := 0;
    v_rec.run := ROW(extract(epoch FROM clock_timestamp()), coalesce((p_rec.fill).rows_done, 0),
                     coalesce((p_rec.fill).blocks_done, 0))::tenancy.backfill_run;
    RETURN tenancy._backfill_save(p_rel, v_rec);
END $$;

CREATE OR REPLACE FUNCTION tenancy._backfill_rewrite_fks(p_rel oid, p_rec tenancy.backfill_state) RETURNS tenancy.backfill_state
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

CREATE OR REPLACE FUNCTION tenancy._backfill_running_elsewhere(p_rec tenancy.backfill_state) RETURNS integer
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT a.pid FROM pg_stat_activity a
     WHERE a.pid = p_rec.pid AND a.pid <> pg_backend_pid() AND a.state <> 'idle'
$$;

CREATE OR REPLACE FUNCTION tenancy._backfill_save(p_rel oid, p_rec tenancy.backfill_state, p_log jsonb DEFAULT NULL)
RETURNS tenancy.backfill_state LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE v_rec tenancy.backfill_state := p_rec;
BEGIN
    v_rec.updated_at := clock_timestamp();
    PERFORM tenancy._privileged('record_backfill',
        jsonb_strip_nulls(jsonb_build_object('relid', p_rel, 'backfill', to_jsonb(v_rec), 'log', p_log)));
    RETURN v_rec;
END $$;

CREATE OR REPLACE FUNCTION tenancy._backfill_set_not_null(p_rel oid, p_rec tenancy.backfill_state, p_check text) RETURNS tenancy.backfill_state
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

CREATE OR REPLACE FUNCTION tenancy._backfill_source(
    p_rel oid, p_name text, p_org uuid, p_col name, p_type text, p_parent oid, p_user_col name, p_atttypid oid,
    OUT source tenancy.backfill_source, OUT lookup text)
RETURNS record LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_value   text;
    v_found   record;
BEGIN
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
        SELECT * INTO v_found FROM tenancy._backfill_parent_source(p_rel, p_name, p_col, p_type, p_parent, p_atttypid);
        source := v_found.source;
        lookup := v_found.lookup;
    ELSIF p_user_col IS NOT NULL THEN
        SELECT * INTO v_found FROM tenancy._backfill_user_source(p_rel, p_name, p_type, p_user_col);
        source := v_found.source;
        lookup := v_found.lookup;
    ELSIF p_org IS NOT NULL THEN
        source.kind := 'fixed';
    ELSE
        RAISE EXCEPTION 'tenancy.backfill: where does each row''s organization come from?'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass organization_id => (one organization for every row), parent => (the table a foreign key points at), or user_column => (a column holding a user id); organization_id with either of the others is the fallback.';
    END IF;
    source.organization_id := p_org;
    source.value := v_value;
    IF v_value IS NOT NULL THEN
        lookup := CASE WHEN lookup IS NULL THEN format('SELECT %L::text', v_value)
                       ELSE format('SELECT coalesce((%s), %L::text)', lookup, v_value) END;
    END IF;
END $$;

CREATE OR REPLACE FUNCTION tenancy._backfill_start_fill(p_rel oid, p_rec tenancy.backfill_state, p_trig text, p_now double precision) RETURNS tenancy.backfill_state
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

CREATE OR REPLACE FUNCTION tenancy._backfill_step(p_rel oid, OUT done boolean, OUT sleep double precision)
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (r->>'done')::boolean, (r->>'sleep')::double precision
      FROM tenancy._as_owner(p_rel, 'backfill_step', '{}') r
$$;

CREATE OR REPLACE FUNCTION tenancy._backfill_take_over_uniques(p_rel oid, p_rec tenancy.backfill_state) RETURNS tenancy.backfill_state
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

CREATE OR REPLACE FUNCTION tenancy._backfill_user_source(p_rel oid, p_name text, p_type text, p_user_col name,
    OUT source tenancy.backfill_source, OUT lookup text)
RETURNS record LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_pcol    record;
BEGIN
    SELECT a.atttypid INTO v_pcol FROM pg_attribute a
     WHERE a.attrelid = p_rel AND a.attname = p_user_col AND a.attnum > 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenancy.backfill: column % does not exist in %', quote_ident(p_user_col), p_name
            USING ERRCODE = 'undefined_column';
    ELSIF NOT (v_pcol.atttypid = ANY (CASE tenancy.user_id_type()
                                        WHEN 'uuid' THEN ARRAY['uuid', 'text', 'varchar']::regtype[]
                                        WHEN 'bigint' THEN ARRAY['int2', 'int4', 'int8', 'text', 'varchar']::regtype[]
                                        ELSE ARRAY['text', 'varchar', 'uuid', 'int2', 'int4', 'int8']::regtype[] END)) THEN
        RAISE EXCEPTION 'tenancy.backfill: user column %.% has type %; tenancy user ids are % in this database', p_name,
                        quote_ident(p_user_col), format_type(v_pcol.atttypid, NULL), tenancy.user_id_type()
            USING ERRCODE = 'datatype_mismatch';
    END IF;
    IF NOT has_table_privilege('tenancy.organizations', 'UPDATE') THEN
        RAISE EXCEPTION 'tenancy.backfill: deriving the organization from a user column reads every user''s memberships'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Run it as a tenancy administrator (the role that owns the tenancy catalog).';
    END IF;
    lookup := format(CASE p_type WHEN 'uuid' THEN 'SELECT tenancy.get_user_organization_id(($1->>%L)::text)::text'
                     ELSE 'SELECT o.slug FROM tenancy.organizations o WHERE o.id = tenancy.get_user_organization_id(($1->>%L)::text)' END,
                     p_user_col);
    source.kind := 'user';
    source.user_column := p_user_col;
END $$;

CREATE OR REPLACE FUNCTION tenancy._backfill_validate_check(p_rel oid, p_rec tenancy.backfill_state, p_check text) RETURNS tenancy.backfill_state
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

CREATE OR REPLACE FUNCTION tenancy._backfill_validate_fk(p_rel oid, p_rec tenancy.backfill_state, p_fkname text) RETURNS tenancy.backfill_state
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

CREATE OR REPLACE FUNCTION tenancy._backfill_validate_fks(p_rel oid, p_rec tenancy.backfill_state) RETURNS tenancy.backfill_state
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

CREATE OR REPLACE FUNCTION tenancy._byte_prefix(p_text text, p_bytes integer) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE n integer := least(length(p_text), greatest(p_bytes, 0));
BEGIN
    WHILE octet_length(left(p_text, n)) > p_bytes LOOP
        n := n - 1;
    END LOOP;
    RETURN left(p_text, n);
END $$;

CREATE OR REPLACE FUNCTION tenancy._check_backfill_record(p_rel oid, p_new jsonb, p_old jsonb) RETURNS void
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

CREATE OR REPLACE FUNCTION tenancy._check_rank(p_actor_rank integer, p_role tenancy.roles) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_role.rank > p_actor_rank THEN
        RAISE EXCEPTION 'tenancy: cannot grant or change role "%", which ranks above your own', p_role.name
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Ask a member with a higher role, or a tenancy administrator.';
    END IF;
END $$;

CREATE OR REPLACE FUNCTION tenancy."_citus_backfill_check"(
	"tbl" oid 
) RETURNS void
STRICT STABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', '_citus_backfill_check_wrapper';

CREATE OR REPLACE FUNCTION tenancy."_clone_batch"(
	"rel" oid, 
	"src" uuid, 
	"dst" uuid, 
	"after" TEXT, 
	"batch_size" INT, 
	"maps" jsonb 
) RETURNS jsonb 
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', '_clone_batch_wrapper';

CREATE OR REPLACE FUNCTION tenancy._clone_begin(p_source uuid, p_name text, p_slug text, p_organization_id uuid, p_batch_size integer)
RETURNS jsonb LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_rec jsonb;
BEGIN
    IF p_batch_size IS NULL OR p_batch_size < 1 THEN
        RAISE EXCEPTION 'tenancy.clone_organization: batch_size must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Every table can be cloned, or nothing is created (0A000).
    PERFORM tenancy._lifecycle_check(tenancy._fk_order(ARRAY(SELECT tt.relid FROM tenancy.tenant_tables tt
                                                               JOIN pg_class pc ON pc.oid = tt.relid::oid))::oid[], 'clone');
    v_rec := tenancy._privileged('clone_begin', jsonb_build_object('source_id', p_source, 'name', p_name, 'slug', p_slug,
                                                                   'organization_id', p_organization_id));
    RAISE NOTICE 'tenancy.clone_organization %: % (organization %)', p_slug,
          CASE WHEN (v_rec->>'resumed')::boolean THEN 'resumed' ELSE 'started' END, v_rec->>'organization_id';
    RETURN v_rec;
END $$;

CREATE OR REPLACE FUNCTION tenancy._clone_step(p_clone uuid, p_batch_size integer, OUT done boolean)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c      record;
    v_tbl  regclass;
    v_maps jsonb;
    v_out  jsonb;
    v_rec  jsonb;
BEGIN
    SELECT * INTO c FROM tenancy.clones WHERE id = p_clone AND status = 'running';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenancy: no such running clone' USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF c.tables_done >= cardinality(c.tables) THEN
        PERFORM tenancy._privileged('clone_finish', jsonb_build_object('clone_id', p_clone));
        RAISE NOTICE 'tenancy.clone_organization %: completed, % rows', c.organization_slug,
              (SELECT coalesce(sum(value::bigint), 0) FROM jsonb_each_text(c.rows_copied));
        done := true;
        RETURN;
    END IF;
    v_tbl := c.tables[c.tables_done + 1];
    -- The key maps of the tables this one references (itself included).
    SELECT coalesce(jsonb_object_agg(m.relid::text, m.keys), '{}') INTO v_maps
      FROM (SELECT k.relid, jsonb_object_agg(k.old_key, k.new_key) AS keys FROM tenancy.clone_keys k
             WHERE k.clone_id = p_clone
               AND k.relid IN (SELECT con.confrelid FROM pg_constraint con WHERE con.conrelid = v_tbl AND con.contype = 'f')
             GROUP BY k.relid) m;
    BEGIN
        v_out := tenancy._clone_batch(v_tbl, c.source_id, c.organization_id, c.last_key, p_batch_size, v_maps);
    EXCEPTION WHEN unique_violation OR foreign_key_violation OR not_null_violation OR check_violation THEN
        RAISE EXCEPTION 'tenancy.clone_organization: a row of % cannot be copied into organization %: %', v_tbl, c.organization_slug, SQLERRM
            USING ERRCODE = SQLSTATE,
                  HINT = 'Keys that are unique across organizations (not tenant-scoped) cannot be cloned. Nothing of this batch '
                         'was written; what was copied before stays, and the next CALL goes on from here once the conflict is fixed.';
    END;
    v_rec := tenancy._privileged('clone_progress', jsonb_build_object(
                 'clone_id', p_clone, 'keys', v_out->'keys', 'last', v_out->>'last', 'rows', v_out->'rows',
                 'done', (v_out->>'rows')::bigint < p_batch_size));
    RAISE NOTICE 'tenancy.clone_organization %: % % rows copied%', c.organization_slug, v_tbl,
          v_rec->'rows_copied'->>(c.table_names[c.tables_done + 1]),
          CASE WHEN (v_out->>'rows')::bigint < p_batch_size THEN ' (done)' ELSE '' END;
    done := false;
END $$;

CREATE OR REPLACE FUNCTION tenancy._derive_map(p_derive jsonb, p_tables regclass[], p_path text) RETURNS jsonb
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

CREATE OR REPLACE FUNCTION tenancy."_disable_isolation"(
	"tbl" oid 
) RETURNS TEXT 
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', '_disable_isolation_wrapper';

CREATE OR REPLACE FUNCTION tenancy."_distribute"(
	"tbl" oid, 
	"shard_count" INT, 
	"apply" bool 
) RETURNS SETOF TEXT 
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', '_distribute_wrapper';

CREATE OR REPLACE FUNCTION tenancy."_erase_batch"(
	"rel" oid, 
	"org" uuid, 
	"batch_size" INT 
) RETURNS jsonb 
STRICT VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', '_erase_batch_wrapper';

CREATE OR REPLACE FUNCTION tenancy._erase_begin(p_org uuid, p_batch_size integer) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_rec    jsonb;
    v_report text;
BEGIN
    IF p_batch_size IS NULL OR p_batch_size < 1 THEN
        RAISE EXCEPTION 'tenancy.erase_organization: batch_size must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Every table can be erased here, or nothing is started (0A000).
    PERFORM tenancy._lifecycle_check(tenancy._erase_order()::oid[], 'erase');
    v_rec := tenancy._privileged('erase_begin', jsonb_build_object('organization_id', p_org));
    SELECT string_agg(format('%s rows of %s (foreign key %s to %s)', r.rows, r.referencing_table, r.constraint_name, r.referenced_table), '; ')
      INTO v_report FROM tenancy._erase_references(p_org) r;
    IF v_report IS NOT NULL THEN
        RAISE EXCEPTION 'tenancy.erase_organization: rows outside organization % reference its rows: %', v_rec->>'slug', v_report
            USING ERRCODE = 'foreign_key_violation',
                  HINT = 'Delete or re-point those rows (they are not the organization''s: tenancy does not touch them), '
                         'then CALL tenancy.erase_organization again. Nothing was deleted.';
    END IF;
    RAISE NOTICE 'tenancy.erase_organization %: %', v_rec->>'slug', CASE WHEN (v_rec->>'resumed')::boolean THEN 'resumed' ELSE 'started' END;
    RETURN v_rec;
END $$;

CREATE OR REPLACE FUNCTION tenancy._erase_cascaded(p_table regclass) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT c.relkind = 'r'
       AND NOT EXISTS (SELECT 1 FROM pg_constraint r WHERE r.contype = 'f' AND r.confrelid = c.oid)
       AND EXISTS (SELECT 1 FROM pg_constraint f JOIN tenancy.tenant_tables pt ON pt.relid::oid = f.confrelid
                    WHERE f.contype = 'f' AND f.conrelid = c.oid)
       AND NOT EXISTS (SELECT 1 FROM pg_constraint f JOIN tenancy.tenant_tables pt ON pt.relid::oid = f.confrelid
                        WHERE f.contype = 'f' AND f.conrelid = c.oid AND f.confdeltype <> 'c')
      FROM pg_class c WHERE c.oid = p_table::oid
$$;

CREATE OR REPLACE FUNCTION tenancy._erase_order() RETURNS regclass[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(array_agg(t ORDER BY coalesce(tenancy._erase_cascaded(t), false), n DESC), '{}')
      FROM unnest(tenancy._fk_order(ARRAY(SELECT tt.relid FROM tenancy.tenant_tables tt
                                            JOIN pg_class c ON c.oid = tt.relid::oid))) WITH ORDINALITY u(t, n)
$$;

CREATE OR REPLACE FUNCTION tenancy."_erase_references"(
	"org" uuid 
) RETURNS TABLE (
	"referencing_table" TEXT,  
	"constraint_name" TEXT,  
	"referenced_table" TEXT,  
	"rows" bigint  
)
STRICT VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', '_erase_references_wrapper';

CREATE OR REPLACE FUNCTION tenancy."_erase_remaining"(
	"rel" oid, 
	"org" uuid 
) RETURNS bigint 
STRICT VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', '_erase_remaining_wrapper';

CREATE OR REPLACE FUNCTION tenancy._erase_step(p_org uuid, p_batch_size integer, p_pause interval,
                                    OUT done boolean, OUT sleep double precision)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e       record;
    v_tbl   regclass;
    v_out   jsonb;
    v_rows  jsonb;
    v_with  text;
    v_total bigint;
    v_left  text;
    v_rec   jsonb;
BEGIN
    SELECT * INTO e FROM tenancy.erasures WHERE organization_id = p_org AND status = 'running';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenancy: no erasure of organization % is running', p_org
            USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'CALL tenancy.erase_organization(...) starts one.';
    END IF;
    IF e.tables_done < cardinality(e.tables) THEN
        v_tbl := e.tables[e.tables_done + 1];
        -- {rows: {oid: n, ...}, done}: the table's rows, and its cascaded children's.
        v_out := tenancy._erase_batch(v_tbl, p_org, p_batch_size);
        SELECT coalesce(jsonb_object_agg(coalesce(e.table_names[array_position(e.tables, r.key::oid::regclass)],
                                                  r.key::oid::regclass::text), r.value), '{}')
          INTO v_rows FROM jsonb_each(v_out->'rows') r;
        v_rec := tenancy._privileged('erase_progress', jsonb_build_object(
                     'organization_id', p_org, 'rows', v_rows,
                     'tables_done', e.tables_done + CASE WHEN (v_out->>'done')::boolean THEN 1 ELSE 0 END));
        SELECT coalesce(sum(value::bigint), 0) INTO v_total FROM jsonb_each_text(v_rec->'rows_deleted');
        SELECT string_agg(format(', %s rows of %s with them', r.value, r.key), '' ORDER BY r.key) INTO v_with
          FROM jsonb_each_text(v_rows) r WHERE r.key <> e.table_names[e.tables_done + 1] AND r.value::bigint > 0;
        RAISE NOTICE 'tenancy.erase_organization %: % % rows deleted%, table % of %; % rows so far, % rows/s',
              e.organization_slug, e.table_names[e.tables_done + 1], (v_rec->'rows_deleted'->>e.table_names[e.tables_done + 1]),
              CASE WHEN (v_out->>'done')::boolean THEN ' (done)' ELSE '' END || coalesce(v_with, ''),
              e.tables_done + 1, cardinality(e.tables), v_total,
              round(v_total / greatest(extract(epoch FROM clock_timestamp() - e.started_at), 0.001));
        done := false;
        sleep := CASE WHEN p_pause > interval '0' THEN extract(epoch FROM p_pause) END;
        RETURN;
    END IF;
    -- Verification: no row of the organization in any tenant table (including one registered
    -- since the erase started). A row found sends the erase back over the tables.
    SELECT string_agg(format('%s (%s rows)', t, n), ', ') INTO v_left
      FROM unnest(tenancy._erase_order()) t, LATERAL tenancy._erase_remaining(t, p_org) n WHERE n > 0;
    IF v_left IS NOT NULL THEN
        RAISE NOTICE 'tenancy.erase_organization %: rows written since their table was done: %; going over the tables again',
              e.organization_slug, v_left;
        PERFORM tenancy._privileged('erase_progress', jsonb_build_object(
                    'organization_id', p_org, 'tables', to_jsonb(tenancy._erase_order()::oid[]), 'tables_done', 0));
        done := false;
        RETURN;
    END IF;
    v_rec := tenancy._privileged('erase_finish', jsonb_build_object('organization_id', p_org, 'verified', true));
    RAISE NOTICE 'tenancy.erase_organization %: completed and verified, no row left; record % in tenancy.erasures',
          e.organization_slug, v_rec->>'id';
    done := true;
END $$;

CREATE OR REPLACE FUNCTION tenancy._export_header(p_org uuid, p_tables jsonb) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t         record;
    v_outside jsonb := '[]';
    v_n       bigint;
    v_denied  text;
    o         record;
BEGIN
    SELECT * INTO o FROM tenancy.organizations WHERE id = p_org;
    SELECT string_agg(x.relid::regclass::text, ', ') INTO v_denied
      FROM jsonb_to_recordset(p_tables) x(relid oid, tenant_column name, column_type text)
     WHERE NOT has_table_privilege(x.relid, 'SELECT');
    IF v_denied IS NOT NULL THEN
        RAISE EXCEPTION 'tenancy.export_organization: permission denied to read %', v_denied
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'An export holds every tenant table: export as a role that may read them all, or ask a tenancy administrator.';
    END IF;
    -- Rows that reference outside the organization: through a foreign key to a table that is not
    -- a tenant table, or to a tenant table's row that is not the organization's (a key without the
    -- tenant column).
    FOR t IN
        SELECT con.conrelid::regclass AS child, con.conname, con.confrelid::regclass AS parent,
               ct.tenant_column AS ccol, ct.column_type, pt.tenant_column AS pcol,
               tenancy._att_names(con.conrelid, con.conkey) AS cols, tenancy._att_names(con.confrelid, con.confkey) AS pcols
          FROM pg_constraint con
          JOIN jsonb_to_recordset(p_tables) ct(relid oid, tenant_column name, column_type text) ON ct.relid = con.conrelid
          LEFT JOIN jsonb_to_recordset(p_tables) pt(relid oid, tenant_column name, column_type text) ON pt.relid = con.confrelid
         WHERE con.contype = 'f' AND con.conparentid = 0 AND con.confrelid <> 'tenancy.organizations'::regclass
           AND (pt.relid IS NULL OR NOT EXISTS (
                SELECT 1 FROM generate_subscripts(con.conkey, 1) i
                  JOIN pg_attribute ca ON ca.attrelid = con.conrelid AND ca.attnum = con.conkey[i]
                  JOIN pg_attribute pa ON pa.attrelid = con.confrelid AND pa.attnum = con.confkey[i]
                 WHERE ca.attname = ct.tenant_column AND pa.attname = pt.tenant_column))
         ORDER BY 1, 2
    LOOP
        EXECUTE format('SELECT count(*) FROM %s c WHERE c.%I = $1%s AND %s%s', t.child, t.ccol,
                       CASE WHEN t.column_type = 'text' THEN '' ELSE '::uuid' END,
                       (SELECT string_agg(format('c.%I IS NOT NULL', x), ' AND ') FROM unnest(t.cols) x),
                       CASE WHEN t.pcol IS NULL THEN ''
                            ELSE format(' AND NOT EXISTS (SELECT 1 FROM %s p WHERE p.%I = c.%I AND %s)', t.parent, t.pcol, t.ccol,
                                        (SELECT string_agg(format('p.%I = c.%I', pc, cc), ' AND ')
                                           FROM unnest(t.cols, t.pcols) k(cc, pc))) END)
           INTO v_n USING CASE WHEN t.column_type = 'text' THEN o.slug ELSE p_org::text END;
        IF v_n > 0 THEN
            v_outside := v_outside || jsonb_build_object('table', t.child::text, 'constraint', t.conname,
                                                         'references', t.parent::text, 'rows', v_n);
            RAISE NOTICE 'tenancy.export_organization %: % rows of % reference outside the organization (foreign key % to %)',
                  o.slug, v_n, t.child, t.conname, t.parent;
        END IF;
    END LOOP;
    RETURN json_build_object(
        'format', 'tenancy-export', 'format_version', 2,
        'tenancy_version', (SELECT extversion FROM pg_extension WHERE extname = 'tenancy'),
        'source_database', current_database(),
        'organization', json_build_object('id', o.id, 'name', o.name, 'slug', o.slug, 'settings', o.settings,
                                          'is_active', o.is_active),
        'snapshot', pg_current_snapshot()::text, 'exported_at', statement_timestamp(),
        'tables', (SELECT json_agg(x.relid::regclass::text ORDER BY x.i)
                     FROM ROWS FROM (jsonb_to_recordset(p_tables) AS (relid oid)) WITH ORDINALITY x(relid, i)),
        -- Each table's columns, in the order of a row line's values (SELECT *).
        'columns', (SELECT json_agg((SELECT json_agg(a.attname ORDER BY a.attnum) FROM pg_attribute a
                                      WHERE a.attrelid = x.relid AND a.attnum > 0 AND NOT a.attisdropped) ORDER BY x.i)
                      FROM ROWS FROM (jsonb_to_recordset(p_tables) AS (relid oid)) WITH ORDINALITY x(relid, i)),
        'outside_references', v_outside)::text;
END $$;

CREATE OR REPLACE FUNCTION tenancy._fk_definition(p_con oid, p_col text DEFAULT NULL, p_pcol text DEFAULT NULL,
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

CREATE OR REPLACE FUNCTION tenancy._fk_order(p_tables regclass[]) RETURNS regclass[]
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

CREATE OR REPLACE FUNCTION tenancy._has_index(p_rel oid, p_cols text[], p_unique boolean) RETURNS boolean
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

CREATE OR REPLACE FUNCTION tenancy._idents(p_cols text[]) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT string_agg(quote_ident(c), ', ' ORDER BY n) FROM unnest(p_cols) WITH ORDINALITY u(c, n)
$$;

CREATE OR REPLACE FUNCTION tenancy._import_begin(p_source regclass, p_batch_size integer) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_first  jsonb;
    v_last   jsonb;
    v_bad    text;
    v_rec    jsonb;
    v_org    uuid;
BEGIN
    IF p_source IS NULL THEN
        RAISE EXCEPTION 'tenancy.import_organization: source must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF p_batch_size IS NULL OR p_batch_size < 1 THEN
        RAISE EXCEPTION 'tenancy.import_organization: batch_size must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM tenancy._import_check_source(p_source);
    -- (Cast after the LIMIT: below a Sort the cast would read every line.)
    BEGIN
        EXECUTE format('SELECT (SELECT line::text FROM %1$s ORDER BY n LIMIT 1)::jsonb, (SELECT line::text FROM %1$s ORDER BY n DESC LIMIT 1)::jsonb', p_source)
           INTO v_first, v_last;
    EXCEPTION WHEN invalid_text_representation THEN
        RAISE EXCEPTION 'tenancy.import_organization: the first or last line of % is not JSON', p_source
            USING ERRCODE = 'invalid_parameter_value', DETAIL = SQLERRM, HINT = 'Load the whole file written by tenancy.export_organization, unchanged.';
    END;
    IF v_first IS NULL OR v_first->>'format' IS DISTINCT FROM 'tenancy-export' THEN
        RAISE EXCEPTION 'tenancy.import_organization: % does not start with a tenancy export header', p_source
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Load the file written by tenancy.export_organization, in order.';
    END IF;
    IF v_first->>'format_version' IS DISTINCT FROM '2' THEN
        RAISE EXCEPTION 'tenancy.import_organization: % is an export of format version %, this tenancy reads version 2', p_source, v_first->>'format_version'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Export again with this tenancy version (tenancy.export_organization).';
    END IF;
    IF v_first->>'tenancy_version' IS DISTINCT FROM (SELECT extversion FROM pg_extension WHERE extname = 'tenancy') THEN
        RAISE EXCEPTION 'tenancy.import_organization: the export was written by tenancy %, this database has tenancy %',
              v_first->>'tenancy_version', (SELECT extversion FROM pg_extension WHERE extname = 'tenancy')
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Import into a database with the same tenancy version (ALTER EXTENSION tenancy UPDATE), or export again from an updated one.';
    END IF;
    IF v_last IS NULL OR NOT coalesce((v_last->>'end')::boolean, false) THEN
        RAISE EXCEPTION 'tenancy.import_organization: % is truncated (no end line)', p_source
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Load the whole file again.';
    END IF;
    PERFORM tenancy._import_check_lines(p_source, v_first);
    SELECT string_agg(x, ', ') INTO v_bad FROM jsonb_array_elements_text(v_first->'tables') x
     WHERE NOT EXISTS (SELECT 1 FROM tenancy.tenant_tables tt WHERE tt.relid::oid = to_regclass(x)::oid);
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION 'tenancy.import_organization: the export has tables that are not tenant tables here: %', v_bad
            USING ERRCODE = 'undefined_object', HINT = 'Create and convert those tables first (same columns), then import again.';
    END IF;
    PERFORM tenancy._lifecycle_check(ARRAY(SELECT to_regclass(x)::oid FROM jsonb_array_elements_text(v_first->'tables') x), 'import');
    v_org := (v_first->'organization'->>'id')::uuid;
    v_rec := tenancy._privileged('import_begin', jsonb_build_object('organization_id', v_org, 'header', v_first,
                                                                    'source', p_source::text));
    RAISE NOTICE 'tenancy.import_organization %: %', v_first->'organization'->>'slug',
          CASE WHEN (v_rec->>'resumed')::boolean THEN 'resumed at line ' || (v_rec->>'lines_done') ELSE 'started' END;
    RETURN v_rec || jsonb_build_object('organization_id', v_org);
END $$;

CREATE OR REPLACE FUNCTION tenancy._import_check_lines(p_source regclass, p_header jsonb) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_tables integer := CASE WHEN jsonb_typeof(p_header->'tables') = 'array' THEN jsonb_array_length(p_header->'tables') END;
    v_n      bigint;
    v_start  text;
BEGIN
    IF v_tables IS NULL OR jsonb_typeof(p_header->'columns') IS DISTINCT FROM 'array'
       OR jsonb_array_length(p_header->'columns') <> v_tables THEN
        RAISE EXCEPTION 'tenancy.import_organization: the header of % does not list the tables and their columns', p_source
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Load the file written by tenancy.export_organization, unchanged.';
    END IF;
    BEGIN
        EXECUTE format('SELECT x.n, x.j->0 FROM (SELECT l.n, l.line::text::jsonb AS j FROM %s l) x
                         WHERE jsonb_typeof(x.j) = ''array''
                           AND NOT (jsonb_typeof(x.j->0) = ''number'' AND (x.j->>0) ~ ''^[0-9]{1,9}$''
                                    AND (x.j->>0)::integer < $1)
                         ORDER BY x.n LIMIT 1', p_source)
           INTO v_n, v_start USING v_tables;
    EXCEPTION WHEN invalid_text_representation THEN
        RAISE EXCEPTION 'tenancy.import_organization: % has a line that is not JSON', p_source
            USING ERRCODE = 'invalid_parameter_value', DETAIL = SQLERRM,
                  HINT = 'Load the file written by tenancy.export_organization, unchanged (\copy ... FROM with FORMAT csv, QUOTE e''\x01'', DELIMITER e''\x02'').';
    END;
    IF v_n IS NOT NULL THEN
        RAISE EXCEPTION 'tenancy.import_organization: line % of % does not start with the index of a table of the header (it starts with %)',
              v_n, p_source, coalesce(v_start, 'nothing')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Load the file written by tenancy.export_organization, unchanged.';
    END IF;
END $$;

CREATE OR REPLACE FUNCTION tenancy._import_check_source(p_source regclass) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c        record;
    v_n      oid := (SELECT atttypid FROM pg_attribute WHERE attrelid = p_source AND attname = 'n' AND NOT attisdropped);
    v_line   oid := (SELECT atttypid FROM pg_attribute WHERE attrelid = p_source AND attname = 'line' AND NOT attisdropped);
BEGIN
    SELECT relkind, relowner, relrowsecurity INTO c FROM pg_class WHERE oid = p_source;
    IF c.relkind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'tenancy.import_organization: % is not a table (it is %)', p_source, tenancy._relkind_noun(c.relkind)
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Load the export into a table of your own: CREATE TABLE export (n bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, line text).';
    END IF;
    IF v_n IS NULL OR v_line IS NULL THEN
        RAISE EXCEPTION 'tenancy.import_organization: % must have the columns n (line number) and line', p_source
            USING ERRCODE = 'undefined_column',
                  HINT = 'CREATE TABLE export (n bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, line text); then \copy export (line) FROM ''org.jsonl'' (see docs/lifecycle.md).';
    END IF;
    IF v_n NOT IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)
       OR v_line NOT IN ('text'::regtype, 'varchar'::regtype, 'json'::regtype, 'jsonb'::regtype) THEN
        RAISE EXCEPTION 'tenancy.import_organization: %''s columns are % n and % line: reading them could run another role''s code with your rights',
              p_source, v_n::regtype, v_line::regtype
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'n must be smallint, integer or bigint, line text, varchar, json or jsonb (built-in types).';
    END IF;
    IF c.relrowsecurity AND c.relowner <> current_user::regrole::oid THEN
        RAISE EXCEPTION 'tenancy.import_organization: % has row-level security and belongs to %: its policies would run with your rights',
              p_source, c.relowner::regrole
            USING ERRCODE = 'feature_not_supported', HINT = 'Import from a table of your own.';
    END IF;
END $$;

CREATE OR REPLACE FUNCTION tenancy."_import_rows"(
	"rel" oid, 
	"org" uuid, 
	"rows" jsonb 
) RETURNS bigint 
STRICT VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', '_import_rows_wrapper';

CREATE OR REPLACE FUNCTION tenancy._import_step(p_source regclass, p_org uuid, p_batch_size integer, OUT done boolean)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    i       record;
    v_tbl   text;
    v_index integer;
    v_rows  jsonb;
    v_max   bigint;
    v_n     bigint;
    v_from  bigint;
BEGIN
    SELECT * INTO i FROM tenancy.imports WHERE organization_id = p_org AND status = 'running';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenancy: no import into organization % is running', p_org USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM tenancy._import_check_source(p_source);
    -- The table of the next row line ([<table index>, <values>...], the index into the header's
    -- tables and columns), then that table's consecutive lines (at most p_batch_size).
    EXECUTE format('SELECT l.n, (l.line::text::jsonb->>0)::integer FROM %s l
                     WHERE l.n > $1 AND (jsonb_typeof(l.line::text::jsonb) = ''array'' OR l.line::text::jsonb ? ''end'')
                     ORDER BY l.n LIMIT 1', p_source)
       INTO v_from, v_index USING i.lines_done;
    v_tbl := i.header->'tables'->>v_index;
    IF v_index IS NOT NULL AND (v_tbl IS NULL OR jsonb_typeof(i.header->'columns'->v_index) IS DISTINCT FROM 'array') THEN
        RAISE EXCEPTION 'tenancy.import_organization: line % names table % that the export''s header does not list', v_from, v_index
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Load the file written by tenancy.export_organization, unchanged.';
    END IF;
    IF v_index IS NULL THEN
        -- The end line: check the counts against it, and finish.
        EXECUTE format('SELECT l.line::text::jsonb->''rows'' FROM %s l ORDER BY l.n DESC LIMIT 1', p_source) INTO v_rows;
        IF EXISTS (SELECT 1 FROM jsonb_each(v_rows) r
                    WHERE (r.value)::bigint <> coalesce((i.rows_imported->>r.key)::bigint, 0)) THEN
            RAISE EXCEPTION 'tenancy.import_organization: rows imported % differ from the export''s %', i.rows_imported, v_rows
                USING ERRCODE = 'data_exception', HINT = 'Was the source table changed during the import?';
        END IF;
        PERFORM tenancy._privileged('import_finish', jsonb_build_object('organization_id', p_org));
        RAISE NOTICE 'tenancy.import_organization %: completed, % rows', i.organization_slug,
              (SELECT coalesce(sum(value::bigint), 0) FROM jsonb_each_text(i.rows_imported));
        done := true;
        RETURN;
    END IF;
    -- Each row line becomes an object of the header's column names, values keeping their JSON
    -- types (a json column's object stays an object), as _import_rows reads them.
    EXECUTE format('WITH run AS (SELECT l.n, l.line::text::jsonb AS j FROM %s l WHERE l.n >= $1 ORDER BY l.n LIMIT $3),
                         stop AS (SELECT min(r.n) AS n FROM run r
                                   WHERE jsonb_typeof(r.j) IS DISTINCT FROM ''array'' OR (r.j->>0)::integer IS DISTINCT FROM $2)
                    SELECT coalesce(jsonb_agg((SELECT jsonb_object_agg(c.name, r.j->(c.i::integer))
                                                 FROM jsonb_array_elements_text($4) WITH ORDINALITY c(name, i)) ORDER BY r.n), ''[]''),
                           max(r.n)
                      FROM run r, stop s WHERE s.n IS NULL OR r.n < s.n', p_source)
       INTO v_rows, v_max USING v_from, v_index, p_batch_size, i.header->'columns'->v_index;
    v_n := tenancy._import_rows(to_regclass(v_tbl)::oid, p_org, v_rows);
    PERFORM tenancy._privileged('import_progress', jsonb_build_object('organization_id', p_org, 'lines_done', v_max,
                                                                      'table', v_tbl, 'rows', v_n));
    RAISE NOTICE 'tenancy.import_organization %: % rows into %, line %', i.organization_slug, v_n, v_tbl, v_max;
    done := false;
END $$;

CREATE OR REPLACE FUNCTION tenancy._incomplete(p_rel oid, p_col name) RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_rec  tenancy.backfill_state := tenancy._backfill_record(p_rel);
    v_null boolean;
BEGIN
    IF v_rec.phase <> 'converted' THEN  -- (no record: no phase)
        RETURN format('its backfill is unfinished (phase %s%s)', v_rec.phase,
                      CASE WHEN v_rec.phase = 'filling'
                           THEN format(', %s of ~%s rows filled', coalesce((v_rec.fill).rows_done, 0),
                                       greatest((v_rec.fill).rows_total, (v_rec.fill).rows_done))
                           ELSE '' END);
    END IF;
    IF EXISTS (SELECT 1 FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
                WHERE c.oid = p_rel AND c.relkind IN ('r', 'p') AND a.attname = p_col AND a.attnum > 0
                  AND NOT a.attisdropped AND NOT a.attnotnull AND pg_has_role(c.relowner, 'USAGE')) THEN
        -- Read as the table's owner (the table's code never runs with the caller's rights).
        v_null := (tenancy._as_owner(p_rel, 'null_check', jsonb_build_object('column', p_col))->>'nulls')::boolean;
        IF v_null THEN
            RETURN format('it has rows whose %I is NULL', p_col);
        END IF;
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION tenancy._index_ready(p_rel oid, p_ix jsonb) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                    WHERE i.indrelid = p_rel AND c.relname = p_ix->>'name' AND i.indisvalid)
$$;

CREATE OR REPLACE FUNCTION tenancy._index_statements(p_rel oid, p_ix jsonb, p_concurrently boolean) RETURNS SETOF text
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

CREATE OR REPLACE FUNCTION tenancy._is_member_of(organization_id uuid) RETURNS boolean
LANGUAGE sql STABLE PARALLEL RESTRICTED SET search_path = pg_catalog, pg_temp
SET citus.allow_nested_distributed_execution = on AS $$
    SELECT EXISTS (SELECT 1 FROM tenancy.memberships m
                    WHERE m.organization_id = $1 AND m.user_id = tenancy.current_user_id())
$$;

CREATE OR REPLACE FUNCTION tenancy."_isolation"(
	"tbl" oid, 
	"tenant_column" TEXT, 
	"mode" TEXT, 
	"roles" TEXT[], 
	"apply" bool 
) RETURNS TEXT 
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', '_isolation_wrapper';

CREATE OR REPLACE FUNCTION tenancy._keep_an_owner(p_org uuid, p_user text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM tenancy.memberships
                WHERE organization_id = p_org AND user_id::text = p_user AND role = 'owner' AND is_active)
       AND NOT EXISTS (SELECT 1 FROM tenancy.memberships
                        WHERE organization_id = p_org AND user_id::text <> p_user AND role = 'owner' AND is_active) THEN
        RAISE EXCEPTION 'tenancy: user % is the last owner of organization %', p_user, p_org
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Make another member owner first (tenancy.change_role), or deactivate the organization.';
    END IF;
END $$;

CREATE OR REPLACE FUNCTION tenancy._leaf_index_name(p_leaf oid, p_ix jsonb) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT tenancy._name(c.relname || '_' || array_to_string(ARRAY(SELECT jsonb_array_elements_text(p_ix->'columns')), '_'), 'idx')
      FROM pg_class c WHERE c.oid = p_leaf
$$;

CREATE OR REPLACE FUNCTION tenancy._leaves(p_rel oid) RETURNS oid[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN (SELECT relkind FROM pg_class WHERE oid = p_rel) = 'p'
                THEN (SELECT coalesce(array_agg(t.relid::oid ORDER BY t.relid::oid), '{}')
                        FROM pg_partition_tree(p_rel::regclass) t
                        JOIN pg_class c ON c.oid = t.relid WHERE c.relkind = 'r')
                ELSE ARRAY[p_rel] END
$$;

CREATE OR REPLACE FUNCTION tenancy._lifecycle_admin(p_is_admin boolean, p_what text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT p_is_admin THEN
        RAISE EXCEPTION 'tenancy: only a tenancy administrator may %', p_what
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Run this as a role with UPDATE on tenancy.organizations (the role that installed tenancy). '
                         'An organization''s owner may deactivate it and export it; the erase itself is an administrator''s act.';
    END IF;
END $$;

CREATE OR REPLACE FUNCTION tenancy."_lifecycle_check"(
	"tables" oid[], 
	"operation" TEXT 
) RETURNS void
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', '_lifecycle_check_wrapper';

CREATE OR REPLACE FUNCTION tenancy._log(p_operation text, p_table text, p_status text, p_details jsonb,
                             p_started timestamptz DEFAULT NULL, p_caller oid DEFAULT NULL)
RETURNS bigint LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO tenancy.migration_log (operation, table_name, status, details, started_at, finished_at, actor)
    VALUES (p_operation, p_table, p_status, coalesce(p_details, '{}'),
            coalesce(p_started, clock_timestamp()),
            CASE WHEN p_status = 'started' THEN NULL ELSE clock_timestamp() END,
            coalesce((SELECT r.rolname FROM pg_roles r WHERE r.oid = p_caller), current_user))
    RETURNING id
$$;

CREATE OR REPLACE FUNCTION tenancy."_login_lookup"(
	"tbl" oid, 
	"key" TEXT 
) RETURNS SETOF jsonb 
STRICT STABLE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', '_login_lookup_wrapper';

CREATE OR REPLACE FUNCTION tenancy."_lookups_changed_trigger"()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', '_lookups_changed_trigger_wrapper';

CREATE OR REPLACE FUNCTION tenancy._membership(p_org uuid, p_user text) RETURNS tenancy.memberships
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE m tenancy.memberships;
BEGIN
    SELECT * INTO m FROM tenancy.memberships WHERE organization_id = p_org AND user_id::text = p_user FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenancy: user % is not a member of organization %', p_user, p_org
            USING ERRCODE = 'undefined_object',
                  HINT = 'List the members with SELECT * FROM tenancy.memberships WHERE organization_id = ...';
    END IF;
    RETURN m;
END $$;

CREATE OR REPLACE FUNCTION tenancy._name(p_base text, p_suffix text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN octet_length(p_base || '_' || p_suffix) <= 63 THEN p_base || '_' || p_suffix
                ELSE tenancy._byte_prefix(p_base, 53 - octet_length(p_suffix)) || '_' || left(md5(p_base), 8)
                     || '_' || tenancy._byte_prefix(p_suffix, 52) END
$$;

CREATE OR REPLACE FUNCTION tenancy._op_accept_invitation(a jsonb, caller oid, is_admin boolean, actor text)
RETURNS jsonb LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_token text := tenancy._require('token', a->>'token');
    v_default boolean;
    v_actor tenancy.memberships.user_id%TYPE := actor;
    i tenancy.invitations;
BEGIN
    IF actor IS NULL THEN
        RAISE EXCEPTION 'tenancy: no acting user to accept the invitation for'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Set the user with SET LOCAL tenancy.user_id = ''<user id>'' (or a JWT sub claim) first.';
    END IF;
    SELECT * INTO i FROM tenancy.invitations WHERE token_sha256 = sha256(convert_to(v_token, 'UTF8')) FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenancy: unknown invitation token'
            USING ERRCODE = 'undefined_object', HINT = 'Check the token; ask for a new invitation if it was lost.';
    END IF;
    IF i.accepted_at IS NOT NULL THEN
        RAISE EXCEPTION 'tenancy: invitation % was already accepted at %', i.id, i.accepted_at
            USING ERRCODE = 'unique_violation', HINT = 'An invitation can be used once; ask for a new one.';
    END IF;
    IF i.expires_at <= now() THEN
        RAISE EXCEPTION 'tenancy: invitation % expired at %', i.id, i.expires_at
            USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'Ask the organization for a new invitation.';
    END IF;
    PERFORM tenancy._organization(i.organization_id, true);
    -- An invitation speaks for the member who created it: it counts only while that member may
    -- still manage members with a rank at least the invited role's.
    IF i.invited_by IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM tenancy.memberships m JOIN tenancy.roles r ON r.name = m.role
         WHERE m.organization_id = i.organization_id AND m.user_id = i.invited_by AND m.is_active
           AND r.can_manage_members AND r.rank >= (SELECT r2.rank FROM tenancy.roles r2 WHERE r2.name = i.role)) THEN
        RAISE EXCEPTION 'tenancy: invitation % is no longer valid: its creator may no longer invite with role "%"', i.id, i.role
            USING ERRCODE = 'insufficient_privilege', HINT = 'Ask the organization for a new invitation.';
    END IF;
    -- Computed first: Citus refuses a subquery inside an INSERT into a reference table.
    v_default := NOT EXISTS (SELECT 1 FROM tenancy.memberships WHERE user_id = v_actor AND is_default);
    INSERT INTO tenancy.memberships AS m (organization_id, user_id, role, is_default, is_active)
    VALUES (i.organization_id, v_actor, i.role, v_default, true)
    ON CONFLICT (organization_id, user_id) DO UPDATE SET is_active = true;
    UPDATE tenancy.invitations SET accepted_at = now(), accepted_by = v_actor WHERE id = i.id;
    PERFORM tenancy._log('accept_invitation', NULL, 'succeeded',
                         jsonb_build_object('organization_id', i.organization_id, 'invitation_id', i.id, 'user_id', actor), p_caller => caller);
    RETURN jsonb_build_object('organization_id', i.organization_id);
END $$;

CREATE OR REPLACE FUNCTION tenancy._op_add_member(a jsonb, caller oid, is_admin boolean, actor text)
RETURNS jsonb LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_org     uuid    := tenancy._require('organization_id', (a->>'organization_id')::uuid);
    v_user    tenancy.memberships.user_id%TYPE := tenancy._require('user_id', tenancy._user_id(a->>'user_id'));
    v_default boolean := coalesce((a->>'is_default')::boolean, false);
    v_rank    integer;
    v_exists  boolean;
    r         tenancy.roles;
    m         tenancy.memberships;
BEGIN
    v_rank := tenancy._authorize(v_org, 'manage_members', is_admin, actor);
    PERFORM tenancy._organization(v_org, true);
    r := tenancy._role(coalesce(a->>'role', 'member'));
    PERFORM tenancy._check_rank(v_rank, r);

    SELECT * INTO m FROM tenancy.memberships WHERE organization_id = v_org AND user_id = v_user FOR UPDATE;
    v_exists := FOUND AND m.is_active;
    IF v_exists AND m.role <> r.name THEN
        RAISE EXCEPTION 'tenancy: user % is already a member of organization % with role "%"', v_user, v_org, m.role
            USING ERRCODE = 'unique_violation', HINT = 'Use tenancy.change_role to change the role.';
    END IF;
    -- An operation in one organization never changes another organization's rows: a user whose
    -- default organization is another one keeps it, unless a tenancy administrator moves it.
    IF v_default AND EXISTS (SELECT 1 FROM tenancy.memberships
                              WHERE user_id = v_user AND is_default AND organization_id <> v_org) THEN
        IF NOT is_admin THEN
            RAISE EXCEPTION 'tenancy: user % already has a default organization, which is not %', v_user, v_org
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Add the member without is_default. Only a tenancy administrator changes the default organization of a user who belongs to another organization.';
        END IF;
        UPDATE tenancy.memberships SET is_default = false
         WHERE user_id = v_user AND is_default AND organization_id <> v_org;
    END IF;
    IF v_exists THEN
        -- Idempotent: the same membership again only updates the default flag when asked.
        IF v_default AND NOT m.is_default THEN
            UPDATE tenancy.memberships SET is_default = true WHERE organization_id = v_org AND user_id = v_user;
        END IF;
        RETURN jsonb_build_object('organization_id', v_org, 'user_id', v_user, 'role', r.name, 'added', false);
    END IF;
    INSERT INTO tenancy.memberships AS mm (organization_id, user_id, role, is_default, is_active)
    VALUES (v_org, v_user, r.name, v_default, true)
    ON CONFLICT (organization_id, user_id)
    DO UPDATE SET role = excluded.role, is_active = true, is_default = mm.is_default OR excluded.is_default;
    PERFORM tenancy._log('add_member', NULL, 'succeeded',
                         jsonb_build_object('organization_id', v_org, 'user_id', v_user, 'role', r.name), p_caller => caller);
    RETURN jsonb_build_object('organization_id', v_org, 'user_id', v_user, 'role', r.name, 'added', true);
END $$;

CREATE OR REPLACE FUNCTION tenancy._op_adopt_users(a jsonb, caller oid, is_admin boolean, actor text)
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

CREATE OR REPLACE FUNCTION tenancy._op_change_role(a jsonb, caller oid, is_admin boolean, actor text)
RETURNS jsonb LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_org  uuid := tenancy._require('organization_id', (a->>'organization_id')::uuid);
    v_user tenancy.memberships.user_id%TYPE := tenancy._require('user_id', tenancy._user_id(a->>'user_id'));
    v_rank integer;
    r tenancy.roles;
    m tenancy.memberships;
BEGIN
    v_rank := tenancy._authorize(v_org, 'manage_members', is_admin, actor);
    PERFORM tenancy._organization(v_org, false);
    r := tenancy._role(a->>'role');
    m := tenancy._membership(v_org, v_user::text);
    PERFORM tenancy._check_rank(v_rank, tenancy._role(m.role));
    PERFORM tenancy._check_rank(v_rank, r);
    IF m.role = r.name THEN
        RETURN jsonb_build_object('organization_id', v_org, 'user_id', v_user, 'role', r.name, 'changed', false);
    END IF;
    IF r.name <> 'owner' THEN
        PERFORM tenancy._keep_an_owner(v_org, v_user::text);
    END IF;
    UPDATE tenancy.memberships SET role = r.name WHERE organization_id = v_org AND user_id = v_user;
    PERFORM tenancy._log('change_role', NULL, 'succeeded',
                         jsonb_build_object('organization_id', v_org, 'user_id', v_user, 'from', m.role, 'to', r.name), p_caller => caller);
    RETURN jsonb_build_object('organization_id', v_org, 'user_id', v_user, 'role', r.name, 'changed', true);
END $$;

CREATE OR REPLACE FUNCTION tenancy._op_clone_begin(a jsonb, caller oid, is_admin boolean, actor text)
RETURNS jsonb LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_src    uuid := tenancy._require('source', (a->>'source_id')::uuid);
    v_slug   text := tenancy._require('slug', a->>'slug');
    o        record;
    c        record;
    v_org    uuid;
    v_tables regclass[];
BEGIN
    PERFORM tenancy._lifecycle_admin(is_admin, 'clone an organization');
    SELECT * INTO c FROM tenancy.clones WHERE source_id = v_src AND organization_slug = v_slug AND status = 'running';
    IF FOUND THEN
        RETURN jsonb_build_object('id', c.id, 'organization_id', c.organization_id, 'resumed', true);
    END IF;
    SELECT * INTO o FROM tenancy.organizations WHERE id = v_src;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenancy: organization % does not exist', v_src
            USING ERRCODE = 'undefined_object', HINT = 'List organizations with SELECT id, slug FROM tenancy.organizations.';
    END IF;
    v_org := coalesce((a->>'organization_id')::uuid, gen_random_uuid());
    IF EXISTS (SELECT 1 FROM tenancy.organizations WHERE id = v_org OR slug = v_slug) THEN
        RAISE EXCEPTION 'tenancy: organization % (%) exists already', v_slug, v_org
            USING ERRCODE = 'unique_violation', HINT = 'A clone creates a new organization: choose another slug (and id). Nothing was changed.';
    END IF;
    INSERT INTO tenancy.organizations (id, name, slug, settings, is_active)
    VALUES (v_org, tenancy._require('name', a->>'name'), v_slug, o.settings, true);
    v_tables := tenancy._fk_order(ARRAY(SELECT tt.relid FROM tenancy.tenant_tables tt JOIN pg_class pc ON pc.oid = tt.relid::oid));
    INSERT INTO tenancy.clones (source_id, organization_id, organization_slug, tables, table_names, requested_by)
    VALUES (v_src, v_org, v_slug, v_tables, ARRAY(SELECT t::text FROM unnest(v_tables) t),
            (SELECT rolname FROM pg_roles WHERE oid = caller))
    RETURNING * INTO c;
    PERFORM tenancy._log('clone_organization', NULL, 'started',
                         jsonb_build_object('source_id', v_src, 'organization_id', v_org, 'slug', v_slug, 'clone_id', c.id,
                                            'actor', actor), p_caller => caller);
    RETURN jsonb_build_object('id', c.id, 'organization_id', v_org, 'resumed', false);
END $$;

CREATE OR REPLACE FUNCTION tenancy._op_clone_finish(a jsonb, caller oid, is_admin boolean, actor text)
RETURNS jsonb LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c record;
BEGIN
    PERFORM tenancy._lifecycle_admin(is_admin, 'clone an organization');
    UPDATE tenancy.clones SET status = 'completed', finished_at = clock_timestamp()
     WHERE id = (a->>'clone_id')::uuid AND status = 'running' AND tables_done = cardinality(tables)
    RETURNING * INTO c;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenancy: the clone has not copied every table yet' USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    DELETE FROM tenancy.clone_keys WHERE clone_id = c.id;
    PERFORM tenancy._log('clone_organization', NULL, 'succeeded',
                         jsonb_build_object('source_id', c.source_id, 'organization_id', c.organization_id,
                                            'slug', c.organization_slug, 'clone_id', c.id, 'rows_copied', c.rows_copied,
                                            'actor', actor),
                         p_started => c.started_at, p_caller => caller);
    RETURN to_jsonb(c);
END $$;

CREATE OR REPLACE FUNCTION tenancy._op_clone_progress(a jsonb, caller oid, is_admin boolean, actor text)
RETURNS jsonb LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c record;
BEGIN
    PERFORM tenancy._lifecycle_admin(is_admin, 'clone an organization');
    SELECT * INTO c FROM tenancy.clones WHERE id = (a->>'clone_id')::uuid AND status = 'running' FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenancy: no such running clone' USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    INSERT INTO tenancy.clone_keys (clone_id, relid, old_key, new_key)
    SELECT c.id, c.tables[c.tables_done + 1]::oid, k->>0, k->>1 FROM jsonb_array_elements(a->'keys') k;
    UPDATE tenancy.clones
       SET rows_copied = jsonb_set(rows_copied, ARRAY[table_names[tables_done + 1]],
                                   to_jsonb(coalesce((rows_copied->>(table_names[tables_done + 1]))::bigint, 0) + (a->>'rows')::bigint)),
           last_key = CASE WHEN (a->>'done')::boolean THEN NULL ELSE coalesce(a->>'last', last_key) END,
           tables_done = tables_done + CASE WHEN (a->>'done')::boolean THEN 1 ELSE 0 END
     WHERE id = c.id
    RETURNING * INTO c;
    RETURN to_jsonb(c);
END $$;

CREATE OR REPLACE FUNCTION tenancy._op_create_invitation(a jsonb, caller oid, is_admin boolean, actor text)
RETURNS jsonb LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_org     uuid     := tenancy._require('organization_id', (a->>'organization_id')::uuid);
    v_email   text     := lower(btrim(tenancy._require('email', a->>'email')));
    v_expires interval := coalesce((a->>'expires_in')::interval, interval '7 days');
    v_rank    integer;
    v_token   text;
    v_id      uuid;
    v_at      timestamptz;
    v_actor   tenancy.invitations.invited_by%TYPE := actor;
    r tenancy.roles;
BEGIN
    v_rank := tenancy._authorize(v_org, 'manage_members', is_admin, actor);
    PERFORM tenancy._organization(v_org, true);
    r := tenancy._role(coalesce(a->>'role', 'member'));
    PERFORM tenancy._check_rank(v_rank, r);
    IF v_email !~ '^[^@[:space:]]+@[^@[:space:]]+$' THEN
        RAISE EXCEPTION 'tenancy: invalid email address "%"', v_email
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass an address like user@example.com.';
    END IF;
    IF v_expires <= interval '0' THEN
        RAISE EXCEPTION 'tenancy: expires_in must be positive, not %', v_expires
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass e.g. interval ''7 days''.';
    END IF;
    -- 244 bits from the server's strong random source (gen_random_uuid uses pg_strong_random).
    v_token := replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '');
    INSERT INTO tenancy.invitations (organization_id, email, role, token_sha256, invited_by, expires_at)
    -- invited_by: the member whose right the invitation rests on (checked again when it is
    -- accepted); NULL when a tenancy administrator created it.
    VALUES (v_org, v_email, r.name, sha256(convert_to(v_token, 'UTF8')), CASE WHEN is_admin THEN NULL ELSE v_actor END,
            now() + v_expires)
    RETURNING id, expires_at INTO v_id, v_at;
    PERFORM tenancy._log('create_invitation', NULL, 'succeeded',
                         jsonb_build_object('organization_id', v_org, 'invitation_id', v_id, 'email', v_email, 'role', r.name), p_caller => caller);
    RETURN jsonb_build_object('id', v_id, 'token', v_token, 'expires_at', v_at);
END $$;

CREATE OR REPLACE FUNCTION tenancy._op_create_organization(a jsonb, caller oid, is_admin boolean, actor text)
RETURNS jsonb LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_name  text  := tenancy._require('name', a->>'name');
    v_slug  text  := tenancy._require('slug', a->>'slug');
    v_id    uuid  := (a->>'id')::uuid;
    -- User ids have the column's type (uuid, bigint or text: tenancy.set_user_id_type).
    v_owner tenancy.memberships.user_id%TYPE := tenancy._user_id(a->>'owner_user_id');
    v_settings jsonb := coalesce(nullif(a->'settings', 'null'::jsonb), '{}');
    v_default boolean;
    existing tenancy.organizations;
BEGIN
    IF NOT is_admin THEN
        RAISE EXCEPTION 'tenancy: only a tenancy administrator may create organizations'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Connect as the database owner, or have it run GRANT UPDATE ON tenancy.organizations TO <role>.';
    END IF;
    IF v_slug !~ '^[a-z0-9][a-z0-9_-]{0,62}$' THEN
        RAISE EXCEPTION 'tenancy: invalid slug "%"', v_slug
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A slug is 1-63 characters of a-z, 0-9, "-" and "_", starting with a letter or digit.';
    END IF;
    IF btrim(v_name) = '' THEN
        RAISE EXCEPTION 'tenancy: organization name must not be empty'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass a display name, e.g. ''Acme Inc.''.';
    END IF;
    IF jsonb_typeof(v_settings) <> 'object' THEN
        RAISE EXCEPTION 'tenancy: settings must be a JSON object, not %', jsonb_typeof(v_settings)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass e.g. ''{"timezone": "Europe/Berlin"}''::jsonb.';
    END IF;

    SELECT * INTO existing FROM tenancy.organizations WHERE slug = v_slug;
    IF FOUND THEN
        -- Idempotent: the same id, slug and name again is a no-op.
        IF v_id IS NOT DISTINCT FROM existing.id AND v_name = existing.name THEN
            RETURN jsonb_build_object('id', existing.id, 'created', false);
        END IF;
        RAISE EXCEPTION 'tenancy: slug "%" is already used by organization %', v_slug, existing.id
            USING ERRCODE = 'unique_violation', HINT = 'Choose another slug, or use that organization.';
    END IF;
    IF v_id IS NOT NULL AND EXISTS (SELECT 1 FROM tenancy.organizations WHERE id = v_id) THEN
        RAISE EXCEPTION 'tenancy: an organization with id % already exists', v_id
            USING ERRCODE = 'unique_violation', HINT = 'Omit id to have one generated, or choose another.';
    END IF;

    INSERT INTO tenancy.organizations (id, name, slug, settings)
    VALUES (coalesce(v_id, gen_random_uuid()), v_name, v_slug, v_settings)
    RETURNING id INTO v_id;

    IF v_owner IS NOT NULL THEN
        -- Computed first: Citus refuses a subquery inside an INSERT into a reference table.
        v_default := NOT EXISTS (SELECT 1 FROM tenancy.memberships WHERE user_id = v_owner AND is_default);
        INSERT INTO tenancy.memberships (organization_id, user_id, role, is_default)
        VALUES (v_id, v_owner, 'owner', v_default);
    END IF;
    PERFORM tenancy._log('create_organization', NULL, 'succeeded',
                         jsonb_build_object('organization_id', v_id, 'slug', v_slug, 'owner_user_id', v_owner), p_caller => caller);
    RETURN jsonb_build_object('id', v_id, 'created', true);
END $$;

CREATE OR REPLACE FUNCTION tenancy._op_deactivate_organization(a jsonb, caller oid, is_admin boolean, actor text)
RETURNS jsonb LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_org uuid := tenancy._require('organization_id', (a->>'organization_id')::uuid);
BEGIN
    PERFORM tenancy._authorize(v_org, 'manage_organization', is_admin, actor);
    PERFORM tenancy._organization(v_org, false);
    UPDATE tenancy.organizations SET is_active = false, updated_at = now()
     WHERE id = v_org AND is_active;
    IF FOUND THEN
        PERFORM tenancy._log('deactivate_organization', NULL, 'succeeded', jsonb_build_object('organization_id', v_org), p_caller => caller);
    END IF;
    RETURN jsonb_build_object('id', v_org);
END $$;

CREATE OR REPLACE FUNCTION tenancy._op_erase_begin(a jsonb, caller oid, is_admin boolean, actor text)
RETURNS jsonb LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_org    uuid := tenancy._require('organization_id', (a->>'organization_id')::uuid);
    o        record;
    e        record;
    v_tables regclass[];
    v_denied text;
BEGIN
    PERFORM tenancy._lifecycle_admin(is_admin, 'erase an organization');
    SELECT * INTO o FROM tenancy.organizations WHERE id = v_org;
    IF NOT FOUND THEN
        SELECT * INTO e FROM tenancy.erasures WHERE organization_id = v_org ORDER BY started_at DESC LIMIT 1;
        RAISE EXCEPTION 'tenancy: organization % does not exist', v_org
            USING ERRCODE = 'undefined_object',
                  HINT = CASE WHEN e.id IS NOT NULL
                              THEN format('It was erased at %s (SELECT * FROM tenancy.erasures WHERE organization_id = %L).', e.finished_at, v_org)
                              ELSE 'List organizations with SELECT id, slug, is_active FROM tenancy.organizations.' END;
    END IF;
    SELECT * INTO e FROM tenancy.erasures WHERE organization_id = v_org AND status = 'running';
    IF FOUND THEN
        RETURN jsonb_build_object('id', e.id, 'resumed', true, 'slug', o.slug);
    END IF;
    IF o.is_active THEN
        RAISE EXCEPTION 'tenancy: organization % (%) is active; only a deactivated organization can be erased', o.slug, v_org
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Export it first if it must be handed over (tenancy.export_organization), then '
                                'SELECT tenancy.deactivate_organization(%L); and CALL tenancy.erase_organization again.', v_org);
    END IF;
    v_tables := tenancy._erase_order();
    SELECT string_agg(t::text, ', ') INTO v_denied FROM unnest(v_tables) t WHERE NOT has_table_privilege(caller, t, 'DELETE');
    IF v_denied IS NOT NULL THEN
        RAISE EXCEPTION 'tenancy: permission denied to delete from %', v_denied
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'The administrator who erases needs DELETE on every tenant table (GRANT DELETE ON ... TO ...).';
    END IF;
    INSERT INTO tenancy.erasures (organization_id, organization_slug, tables, table_names, requested_by)
    VALUES (v_org, o.slug, v_tables, ARRAY(SELECT t::text FROM unnest(v_tables) t),
            (SELECT rolname FROM pg_roles WHERE oid = caller))
    RETURNING * INTO e;
    PERFORM tenancy._log('erase_organization', NULL, 'started',
                         jsonb_build_object('organization_id', v_org, 'slug', o.slug, 'erasure_id', e.id,
                                            'tables', e.table_names, 'actor', actor), p_caller => caller);
    RETURN jsonb_build_object('id', e.id, 'resumed', false, 'slug', o.slug);
END $$;

CREATE OR REPLACE FUNCTION tenancy._op_erase_finish(a jsonb, caller oid, is_admin boolean, actor text)
RETURNS jsonb LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_org uuid := tenancy._require('organization_id', (a->>'organization_id')::uuid);
    e     record;
    v_inv bigint;
    v_mem bigint;
    v_o   bigint;
BEGIN
    PERFORM tenancy._lifecycle_admin(is_admin, 'erase an organization');
    SELECT * INTO e FROM tenancy.erasures WHERE organization_id = v_org AND status = 'running' FOR UPDATE;
    IF NOT FOUND OR e.tables_done < cardinality(e.tables) OR NOT coalesce((a->>'verified')::boolean, false) THEN
        RAISE EXCEPTION 'tenancy: the erasure of organization % has not deleted every table yet', v_org
            USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'CALL tenancy.erase_organization(...) again.';
    END IF;
    DELETE FROM tenancy.invitations WHERE organization_id = v_org;
    GET DIAGNOSTICS v_inv = ROW_COUNT;
    DELETE FROM tenancy.memberships WHERE organization_id = v_org;
    GET DIAGNOSTICS v_mem = ROW_COUNT;
    -- A tenant row left behind (whoever wrote it) makes this fail: tenant columns reference it.
    DELETE FROM tenancy.organizations WHERE id = v_org;
    GET DIAGNOSTICS v_o = ROW_COUNT;
    UPDATE tenancy.erasures
       SET status = 'completed', verified = true, finished_at = clock_timestamp(),
           finished_by = (SELECT rolname FROM pg_roles WHERE oid = caller),
           catalog_rows_deleted = jsonb_build_object('tenancy.invitations', v_inv, 'tenancy.memberships', v_mem,
                                                     'tenancy.organizations', v_o)
     WHERE id = e.id
    RETURNING * INTO e;
    PERFORM tenancy._log('erase_organization', NULL, 'succeeded',
                         jsonb_build_object('organization_id', v_org, 'slug', e.organization_slug, 'erasure_id', e.id,
                                            'rows_deleted', e.rows_deleted, 'catalog_rows_deleted', e.catalog_rows_deleted,
                                            'actor', actor),
                         p_started => e.started_at, p_caller => caller);
    RETURN to_jsonb(e);
END $$;

CREATE OR REPLACE FUNCTION tenancy._op_erase_progress(a jsonb, caller oid, is_admin boolean, actor text)
RETURNS jsonb LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_org uuid := tenancy._require('organization_id', (a->>'organization_id')::uuid);
    e     record;
BEGIN
    PERFORM tenancy._lifecycle_admin(is_admin, 'erase an organization');
    UPDATE tenancy.erasures
       SET rows_deleted = CASE WHEN a ? 'rows'
                               THEN rows_deleted || (SELECT coalesce(jsonb_object_agg(r.key,
                                                                to_jsonb(coalesce((rows_deleted->>r.key)::bigint, 0) + r.value::bigint)), '{}')
                                                       FROM jsonb_each_text(a->'rows') r)
                               ELSE rows_deleted END,
           tables = CASE WHEN a ? 'tables' THEN ARRAY(SELECT x::oid::regclass FROM jsonb_array_elements_text(a->'tables') x) ELSE tables END,
           table_names = CASE WHEN a ? 'tables' THEN ARRAY(SELECT x::oid::regclass::text FROM jsonb_array_elements_text(a->'tables') x) ELSE table_names END,
           tables_done = (a->>'tables_done')::integer
     WHERE organization_id = v_org AND status = 'running'
    RETURNING * INTO e;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenancy: no erasure of organization % is running', v_org
            USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'CALL tenancy.erase_organization(...) starts one.';
    END IF;
    RETURN to_jsonb(e);
END $$;

CREATE OR REPLACE FUNCTION tenancy._op_import_begin(a jsonb, caller oid, is_admin boolean, actor text)
RETURNS jsonb LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    h     jsonb := a->'header';
    v_org uuid := tenancy._require('organization_id', (a->>'organization_id')::uuid);
    i     record;
BEGIN
    PERFORM tenancy._lifecycle_admin(is_admin, 'import an organization');
    SELECT * INTO i FROM tenancy.imports WHERE organization_id = v_org AND status = 'running';
    IF FOUND THEN
        IF i.source IS DISTINCT FROM a->>'source' OR i.header IS DISTINCT FROM h THEN
            RAISE EXCEPTION 'tenancy: another import into organization % is running (from %)', v_org, i.source
                USING ERRCODE = 'object_in_use', HINT = 'CALL tenancy.import_organization with that source to finish it.';
        END IF;
        RETURN jsonb_build_object('id', i.id, 'resumed', true, 'lines_done', i.lines_done);
    END IF;
    IF EXISTS (SELECT 1 FROM tenancy.organizations WHERE id = v_org OR slug = h->'organization'->>'slug') THEN
        RAISE EXCEPTION 'tenancy: organization % (%) exists already', h->'organization'->>'slug', v_org
            USING ERRCODE = 'unique_violation',
                  HINT = 'An import creates the organization: import into a database without it (or erase it first). Nothing was changed.';
    END IF;
    INSERT INTO tenancy.organizations (id, name, slug, settings, is_active)
    VALUES (v_org, h->'organization'->>'name', h->'organization'->>'slug',
            coalesce(h->'organization'->'settings', '{}'), true);
    INSERT INTO tenancy.imports (organization_id, organization_slug, source, header, requested_by)
    VALUES (v_org, h->'organization'->>'slug', a->>'source', h, (SELECT rolname FROM pg_roles WHERE oid = caller))
    RETURNING * INTO i;
    PERFORM tenancy._log('import_organization', NULL, 'started',
                         jsonb_build_object('organization_id', v_org, 'slug', i.organization_slug, 'import_id', i.id,
                                            'source', i.source, 'source_database', h->>'source_database', 'actor', actor),
                         p_caller => caller);
    RETURN jsonb_build_object('id', i.id, 'resumed', false, 'lines_done', 0);
END $$;

CREATE OR REPLACE FUNCTION tenancy._op_import_finish(a jsonb, caller oid, is_admin boolean, actor text)
RETURNS jsonb LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_org uuid := tenancy._require('organization_id', (a->>'organization_id')::uuid);
    i     record;
BEGIN
    PERFORM tenancy._lifecycle_admin(is_admin, 'import an organization');
    UPDATE tenancy.imports SET status = 'completed', finished_at = clock_timestamp()
     WHERE organization_id = v_org AND status = 'running'
    RETURNING * INTO i;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenancy: no import into organization % is running', v_org USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM tenancy._log('import_organization', NULL, 'succeeded',
                         jsonb_build_object('organization_id', v_org, 'slug', i.organization_slug, 'import_id', i.id,
                                            'rows_imported', i.rows_imported, 'actor', actor),
                         p_started => i.started_at, p_caller => caller);
    RETURN to_jsonb(i);
END $$;

CREATE OR REPLACE FUNCTION tenancy._op_import_progress(a jsonb, caller oid, is_admin boolean, actor text)
RETURNS jsonb LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_org uuid := tenancy._require('organization_id', (a->>'organization_id')::uuid);
    i     record;
BEGIN
    PERFORM tenancy._lifecycle_admin(is_admin, 'import an organization');
    UPDATE tenancy.imports
       SET lines_done = (a->>'lines_done')::bigint,
           rows_imported = CASE WHEN a ? 'table'
                                THEN jsonb_set(rows_imported, ARRAY[a->>'table'],
                                               to_jsonb(coalesce((rows_imported->>(a->>'table'))::bigint, 0) + (a->>'rows')::bigint))
                                ELSE rows_imported END
     WHERE organization_id = v_org AND status = 'running'
    RETURNING * INTO i;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenancy: no import into organization % is running', v_org USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    RETURN to_jsonb(i);
END $$;

CREATE OR REPLACE FUNCTION tenancy._op_log_lifecycle(a jsonb, caller oid, is_admin boolean, actor text)
RETURNS jsonb LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT a->>'operation' = ANY (ARRAY['export_organization']) THEN
        RAISE EXCEPTION 'tenancy: unknown lifecycle operation %', a->>'operation' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM tenancy._log(a->>'operation', NULL, 'succeeded', (a - 'operation') || jsonb_build_object('actor', actor),
                         p_caller => caller);
    RETURN '{}';
END $$;

CREATE OR REPLACE FUNCTION tenancy._op_operate(a jsonb, caller oid, is_admin boolean, actor text)
RETURNS jsonb LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE v_id bigint;
BEGIN
    IF NOT is_admin OR actor IS NOT NULL THEN
        RAISE EXCEPTION 'tenancy.operate: only a tenancy administrator acting as itself may enter operator mode'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Connect as the role that owns tenancy.organizations, with no tenancy.user_id or JWT set.';
    END IF;
    v_id := tenancy._log('operate', NULL, 'succeeded',
                         jsonb_build_object('reason', tenancy._require('reason', a->>'reason'),
                                            'session_user', a->>'session_user',
                                            'current_user', a->>'current_user',
                                            'outer_role', a->>'outer_role'), p_caller => caller);
    RETURN jsonb_build_object('log_id', v_id);
END $$;

CREATE OR REPLACE FUNCTION tenancy._op_record_backfill(a jsonb, caller oid, is_admin boolean, actor text)
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

CREATE OR REPLACE FUNCTION tenancy._op_record_isolation(a jsonb, caller oid, is_admin boolean, actor text)
RETURNS jsonb LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_rel   oid   := tenancy._require('relid', (a->>'relid')::oid);
    v_iso   jsonb := nullif(a->'isolation', 'null'::jsonb);
    v_name  text;
BEGIN
    v_name := tenancy._owned_table(v_rel, caller, 'change its isolation');
    IF v_iso IS NULL THEN
        IF (SELECT (t.details->'isolation'->>'was_registered')::boolean
              FROM tenancy.tenant_tables t WHERE t.relid = v_rel::regclass) IS FALSE THEN
            DELETE FROM tenancy.tenant_tables WHERE relid = v_rel::regclass;
        ELSE
            UPDATE tenancy.tenant_tables
               SET mode = NULL, state = 'registered', details = details - 'isolation', updated_at = now()
             WHERE relid = v_rel::regclass;
        END IF;
    ELSE
        INSERT INTO tenancy.tenant_tables AS t (relid, tenant_column, column_type, mode, state, details)
        VALUES (v_rel::regclass, a->>'tenant_column', a->>'column_type', a->>'mode', 'isolated',
                jsonb_build_object('isolation', v_iso))
        ON CONFLICT (relid) DO UPDATE
           SET tenant_column = excluded.tenant_column, column_type = excluded.column_type,
               mode = excluded.mode, state = 'isolated',
               details = t.details || excluded.details, updated_at = now();
    END IF;
    PERFORM tenancy._log(tenancy._require('operation', a->>'operation'), v_name, 'succeeded',
                         coalesce(a->'log_details', '{}') || jsonb_build_object('actor', actor), p_caller => caller);
    RETURN jsonb_build_object('table', v_name);
END $$;

CREATE OR REPLACE FUNCTION tenancy._op_record_login_lookup(a jsonb, caller oid, is_admin boolean, actor text)
RETURNS jsonb LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_rel     oid    := tenancy._require('tbl', (a->>'relid')::oid);
    v_name    text;
    v_key     name;
    v_cols    name[];
    v_grantee oid;
    v_col     name;
    v_attnum  smallint;
    v_base    oid;
BEGIN
    v_name := tenancy._owned_table(v_rel, caller, 'allow login lookups on it');
    IF a->'columns' IS NULL OR a->'columns' = 'null'::jsonb THEN
        DELETE FROM tenancy.login_lookups WHERE relid = v_rel::regclass;
        PERFORM tenancy._log('revoke_login_lookup', v_name, 'succeeded', '{}', p_caller => caller);
        RETURN jsonb_build_object('table', v_name);
    END IF;
    v_key := tenancy._require('key_column', a->>'key_column');
    v_cols := ARRAY(SELECT jsonb_array_elements_text(a->'columns'))::name[];
    v_grantee := tenancy._require('grantee', (a->>'grantee')::oid);
    IF cardinality(v_cols) = 0 OR array_position(v_cols, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'tenancy: columns must name at least one column, and no NULL'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass what login needs, e.g. ''{id,password_hash}''.';
    END IF;
    -- Only the tree of a plain or partitioned table: anything else (a view, a foreign table
    -- anywhere in the tree) runs its owner's code when read.
    IF EXISTS (WITH RECURSIVE tree AS (SELECT v_rel AS relid
                                       UNION SELECT i.inhrelid FROM pg_inherits i JOIN tree ON i.inhparent = tree.relid)
               SELECT 1 FROM tree JOIN pg_class c ON c.oid = tree.relid WHERE c.relkind NOT IN ('r', 'p')) THEN
        RAISE EXCEPTION 'tenancy: % is not a plain or partitioned table (or has foreign partitions)', v_name
            USING ERRCODE = 'wrong_object_type', HINT = 'Login lookups read tables only.';
    END IF;
    FOREACH v_col IN ARRAY array_prepend(v_key, v_cols) LOOP
        SELECT a2.attnum, CASE WHEN t2.typtype = 'd' THEN t2.typbasetype ELSE a2.atttypid END
          INTO v_attnum, v_base
          FROM pg_attribute a2 JOIN pg_type t2 ON t2.oid = a2.atttypid
         WHERE a2.attrelid = v_rel AND a2.attname = v_col AND a2.attnum > 0 AND NOT a2.attisdropped;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'tenancy: column % does not exist in %', quote_ident(v_col), v_name
                USING ERRCODE = 'undefined_column', HINT = 'Name columns of the table.';
        END IF;
        IF v_base >= 16384 THEN
            RAISE EXCEPTION 'tenancy: column % of % has a type that is not built in', quote_ident(v_col), v_name
                USING ERRCODE = 'datatype_mismatch',
                      HINT = 'A login lookup reads with row-level security bypassed and runs no owner''s code: built-in types only.';
        END IF;
    END LOOP;
    INSERT INTO tenancy.login_lookups AS l (relid, key_column, columns, grantee, created_by)
    VALUES (v_rel::regclass, v_key, v_cols, v_grantee::regrole, (SELECT r.rolname FROM pg_roles r WHERE r.oid = caller))
    ON CONFLICT (relid) DO UPDATE
       SET key_column = excluded.key_column, columns = excluded.columns, grantee = excluded.grantee,
           created_by = excluded.created_by, created_at = now();
    PERFORM tenancy._log('allow_login_lookup', v_name, 'succeeded',
                         jsonb_build_object('key_column', v_key, 'columns', to_jsonb(v_cols),
                                            'grantee', v_grantee::regrole::text), p_caller => caller);
    RETURN jsonb_build_object('table', v_name);
END $$;

CREATE OR REPLACE FUNCTION tenancy._op_register_table(a jsonb, caller oid, is_admin boolean, actor text)
RETURNS jsonb LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_rel    oid  := tenancy._require('tbl', (a->>'relid')::oid);
    v_col    text := tenancy._require('tenant_column', a->>'tenant_column');
    v_kind   "char";
    v_name   text;
    v_type   regtype;
    v_ctype  text;
BEGIN
    v_name := tenancy._owned_table(v_rel, caller, 'register it');
    SELECT c.relkind INTO v_kind FROM pg_class c WHERE c.oid = v_rel;
    IF v_kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'tenancy: % is not a table (it is a %)', v_name, tenancy._relkind_noun(v_kind)
            USING ERRCODE = 'wrong_object_type', HINT = 'Register the table the view or foreign table reads from.';
    END IF;
    SELECT a2.atttypid::regtype INTO v_type
      FROM pg_attribute a2 WHERE a2.attrelid = v_rel AND a2.attname = v_col AND a2.attnum > 0 AND NOT a2.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenancy: column "%" does not exist in %', v_col, v_name
            USING ERRCODE = 'undefined_column', HINT = 'Add the column first, or name the tenant column of this table.';
    END IF;
    v_ctype := tenancy._tenant_column_kind(v_type);
    IF v_ctype IS NULL THEN
        RAISE EXCEPTION 'tenancy: tenant column %.% has type %, which tenancy does not support', v_name, v_col, v_type
            USING ERRCODE = 'datatype_mismatch',
                  HINT = 'Use uuid (the organization id) or text/varchar/char (the organization slug), or a domain over one of them.';
    END IF;
    INSERT INTO tenancy.tenant_tables AS t (relid, tenant_column, column_type)
    VALUES (v_rel, v_col, v_ctype)
    ON CONFLICT (relid) DO UPDATE
       SET tenant_column = excluded.tenant_column, column_type = excluded.column_type, updated_at = now()
     WHERE (t.tenant_column, t.column_type) IS DISTINCT FROM (excluded.tenant_column, excluded.column_type);
    IF FOUND THEN  -- registering the same table the same way again changes nothing and logs nothing
        PERFORM tenancy._log('register_table', v_name, 'succeeded',
                             jsonb_build_object('tenant_column', v_col, 'column_type', v_ctype), p_caller => caller);
    END IF;
    RETURN jsonb_build_object('table', v_name, 'tenant_column', v_col, 'column_type', v_ctype);
END $$;

CREATE OR REPLACE FUNCTION tenancy._op_remove_member(a jsonb, caller oid, is_admin boolean, actor text)
RETURNS jsonb LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_org  uuid := tenancy._require('organization_id', (a->>'organization_id')::uuid);
    v_user tenancy.memberships.user_id%TYPE := tenancy._require('user_id', tenancy._user_id(a->>'user_id'));
    v_rank integer;
    m tenancy.memberships;
BEGIN
    v_rank := tenancy._authorize(v_org, 'manage_members', is_admin, actor);
    PERFORM tenancy._organization(v_org, false);
    m := tenancy._membership(v_org, v_user::text);
    PERFORM tenancy._check_rank(v_rank, tenancy._role(m.role));
    PERFORM tenancy._keep_an_owner(v_org, v_user::text);
    DELETE FROM tenancy.memberships WHERE organization_id = v_org AND user_id = v_user;
    PERFORM tenancy._log('remove_member', NULL, 'succeeded',
                         jsonb_build_object('organization_id', v_org, 'user_id', v_user, 'role', m.role), p_caller => caller);
    RETURN jsonb_build_object('organization_id', v_org, 'user_id', v_user);
END $$;

CREATE OR REPLACE FUNCTION tenancy._op_rename_organization(a jsonb, caller oid, is_admin boolean, actor text)
RETURNS jsonb LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_org  uuid := tenancy._require('organization_id', (a->>'organization_id')::uuid);
    v_name text := tenancy._require('name', a->>'name');
    v_slug text := a->>'slug';
    o tenancy.organizations;
BEGIN
    PERFORM tenancy._authorize(v_org, 'manage_organization', is_admin, actor);
    o := tenancy._organization(v_org, false);
    IF btrim(v_name) = '' THEN
        RAISE EXCEPTION 'tenancy: organization name must not be empty'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass a display name.';
    END IF;
    IF v_slug IS NOT NULL AND v_slug !~ '^[a-z0-9][a-z0-9_-]{0,62}$' THEN
        RAISE EXCEPTION 'tenancy: invalid slug "%"', v_slug
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A slug is 1-63 characters of a-z, 0-9, "-" and "_", starting with a letter or digit.';
    END IF;
    IF v_slug IS NOT NULL AND EXISTS (SELECT 1 FROM tenancy.organizations WHERE slug = v_slug AND id <> v_org) THEN
        RAISE EXCEPTION 'tenancy: slug "%" is already used by another organization', v_slug
            USING ERRCODE = 'unique_violation', HINT = 'Choose another slug.';
    END IF;
    IF v_slug IS NOT NULL AND v_slug <> o.slug
       AND EXISTS (SELECT 1 FROM tenancy.tenant_tables WHERE column_type = 'text') THEN
        RAISE EXCEPTION 'tenancy: cannot change the slug of organization %: text tenant columns store slugs', v_org
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Rename without a new slug, or migrate the text tenant columns first.';
    END IF;
    UPDATE tenancy.organizations
       SET name = v_name, slug = coalesce(v_slug, slug), updated_at = now()
     WHERE id = v_org;
    PERFORM tenancy._log('rename_organization', NULL, 'succeeded',
                         jsonb_build_object('organization_id', v_org, 'name', v_name, 'slug', coalesce(v_slug, o.slug)), p_caller => caller);
    RETURN jsonb_build_object('id', v_org);
END $$;

CREATE OR REPLACE FUNCTION tenancy._op_set_user_id_type(a jsonb, caller oid, is_admin boolean, actor text)
RETURNS jsonb LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_type text := lower(btrim(tenancy._require('type', a->>'type')));
    v_sql  text := CASE v_type WHEN 'uuid' THEN 'pg_catalog.uuid' WHEN 'bigint' THEN 'pg_catalog.int8'
                               WHEN 'int8' THEN 'pg_catalog.int8' WHEN 'text' THEN 'pg_catalog.text' END;
    v_old  text := tenancy.user_id_type();
    f      regprocedure;
BEGIN
    IF NOT is_admin THEN
        RAISE EXCEPTION 'tenancy: only a tenancy administrator may change the type of user ids'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Connect as the role that owns the tenancy catalog (or one granted UPDATE on tenancy.organizations).';
    END IF;
    IF v_sql IS NULL THEN
        RAISE EXCEPTION 'tenancy: user ids cannot be of type "%"', a->>'type'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Choose uuid, bigint or text.';
    END IF;
    IF v_type = 'int8' THEN
        v_type := 'bigint';
    END IF;
    IF v_type = v_old THEN
        RETURN jsonb_build_object('type', v_type, 'changed', false);
    END IF;
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RAISE EXCEPTION 'tenancy: user ids of type % are not supported with Citus', v_type
            USING ERRCODE = 'feature_not_supported', HINT = 'With Citus, user ids are uuids.';
    END IF;
    -- The lock first: no membership or invitation can be added between the check and the change.
    LOCK TABLE tenancy.memberships, tenancy.invitations IN ACCESS EXCLUSIVE MODE;
    IF EXISTS (SELECT 1 FROM tenancy.memberships) OR EXISTS (SELECT 1 FROM tenancy.invitations) THEN
        RAISE EXCEPTION 'tenancy: cannot change user ids from % to %: memberships or invitations exist', v_old, v_type
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Choose the type of user ids before adding members (right after CREATE EXTENSION tenancy).';
    END IF;
    DROP POLICY memberships_of_current_user ON tenancy.memberships;
    DROP POLICY organizations_of_current_user ON tenancy.organizations;
    -- The tables are empty (checked above, under the lock); the conversions only name a type.
    EXECUTE format('ALTER TABLE tenancy.memberships ALTER COLUMN user_id TYPE %1$s USING user_id::pg_catalog.text::%1$s', v_sql);
    EXECUTE format('ALTER TABLE tenancy.invitations ALTER COLUMN invited_by TYPE %1$s USING invited_by::pg_catalog.text::%1$s,'
                   ' ALTER COLUMN accepted_by TYPE %1$s USING accepted_by::pg_catalog.text::%1$s', v_sql);
    EXECUTE tenancy._user_policies_sql(v_type);
    -- Sessions compiled the operations with the old type (%TYPE): a new version of each makes
    -- every session compile them again.
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
              WHERE p.pronamespace = 'tenancy'::regnamespace AND p.proname LIKE '\_op\_%'
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, pg_temp', f);
    END LOOP;
    PERFORM tenancy._log('set_user_id_type', NULL, 'succeeded',
                         jsonb_build_object('from', v_old, 'to', v_type), p_caller => caller);
    RETURN jsonb_build_object('type', v_type, 'changed', true);
END $$;

CREATE OR REPLACE FUNCTION tenancy._organization(p_org uuid, p_active boolean DEFAULT true)
RETURNS tenancy.organizations
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE o tenancy.organizations;
BEGIN
    PERFORM tenancy._require('organization_id', p_org);
    SELECT * INTO o FROM tenancy.organizations WHERE id = p_org;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenancy: organization % does not exist', p_org
            USING ERRCODE = 'undefined_object',
                  HINT = 'List organizations with SELECT id, slug, name FROM tenancy.organizations.';
    END IF;
    IF p_active AND NOT o.is_active THEN
        RAISE EXCEPTION 'tenancy: organization % (%) is deactivated', o.slug, p_org
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Reactivate it with UPDATE tenancy.organizations SET is_active = true WHERE id = ...';
    END IF;
    RETURN o;
END $$;

CREATE OR REPLACE FUNCTION tenancy._owned_table(p_rel oid, p_caller oid, p_action text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE v_owner oid; v_name text;
BEGIN
    SELECT c.relowner, c.oid::regclass::text INTO v_owner, v_name FROM pg_class c WHERE c.oid = p_rel;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenancy: no table with oid %', p_rel
            USING ERRCODE = 'undefined_table', HINT = 'Pass the table name, e.g. ''public.shipments''.';
    END IF;
    IF NOT pg_has_role(p_caller, v_owner, 'USAGE') THEN
        RAISE EXCEPTION 'tenancy: must be owner of table % to %', v_name, p_action
            USING ERRCODE = 'insufficient_privilege', HINT = 'Run this as the table''s owner (or a role that is a member of it).';
    END IF;
    RETURN v_name;
END $$;

CREATE OR REPLACE FUNCTION tenancy._owner_backfill_step(p_rel oid, a jsonb) RETURNS jsonb
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

CREATE OR REPLACE FUNCTION tenancy._owner_null_check(p_rel oid, a jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE v_null boolean;
BEGIN
    PERFORM tenancy._running_as_owner(p_rel);
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = p_rel AND attname = a->>'column' AND attnum > 0 AND NOT attisdropped) THEN
        RAISE EXCEPTION 'tenancy: column % does not exist in %', quote_ident(a->>'column'), p_rel::regclass
            USING ERRCODE = 'undefined_column';
    END IF;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s WHERE %I IS NULL)', p_rel::regclass, a->>'column') INTO v_null;
    RETURN jsonb_build_object('nulls', v_null);
END $$;

CREATE OR REPLACE FUNCTION tenancy._owner_rollback(p_rel oid, a jsonb) RETURNS jsonb
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

CREATE OR REPLACE FUNCTION tenancy."_policy_calls"(
	"expr" TEXT 
) RETURNS TABLE (
	"schema" TEXT,  
	"name" TEXT,  
	"constant_args" bool  
)
IMMUTABLE STRICT PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', '_policy_calls_wrapper';

CREATE OR REPLACE FUNCTION tenancy."_privileged"(
	"op" TEXT, 
	"args" jsonb 
) RETURNS jsonb 
STRICT VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', '_privileged_wrapper';

CREATE OR REPLACE FUNCTION tenancy._relkind_noun(p_kind "char") RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE p_kind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'f' THEN 'foreign table'
                       WHEN 'S' THEN 'sequence' WHEN 'i' THEN 'index' WHEN 'I' THEN 'partitioned index'
                       WHEN 'c' THEN 'composite type' WHEN 't' THEN 'TOAST table'
                       ELSE 'relation of kind ' || p_kind::text END
$$;

CREATE OR REPLACE FUNCTION tenancy._require(p_name text, p_value anyelement) RETURNS anyelement
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_value IS NULL THEN
        RAISE EXCEPTION 'tenancy: % must not be NULL', p_name
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = format('Pass a value for %s.', p_name);
    END IF;
    RETURN p_value;
END $$;

CREATE OR REPLACE FUNCTION tenancy._role(p_role text) RETURNS tenancy.roles
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE r tenancy.roles;
BEGIN
    PERFORM tenancy._require('role', p_role);
    SELECT * INTO r FROM tenancy.roles WHERE name = p_role;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenancy: unknown role "%"', p_role
            USING ERRCODE = 'undefined_object',
                  HINT = 'Valid roles: ' || (SELECT string_agg(name, ', ' ORDER BY rank DESC) FROM tenancy.roles)
                         || '. A DBA can add roles with INSERT INTO tenancy.roles.';
    END IF;
    RETURN r;
END $$;

CREATE OR REPLACE FUNCTION tenancy._rollback_closure(p_tables oid[]) RETURNS oid[]
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

CREATE OR REPLACE FUNCTION tenancy._rollback_column_statements(p_rel oid, p_rec tenancy.backfill_state, p_drop boolean) RETURNS text[]
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

CREATE OR REPLACE FUNCTION tenancy._rollback_fks(p_rel oid, p_rec tenancy.backfill_state) RETURNS text[]
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

CREATE OR REPLACE FUNCTION tenancy._rollback_hand_made_keys(p_rel oid, p_rec tenancy.backfill_state, p_att int2, p_drop boolean) RETURNS text[]
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

CREATE OR REPLACE FUNCTION tenancy._rollback_many(p_tables oid[], p_drop boolean, p_what text)
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

CREATE OR REPLACE FUNCTION tenancy._rollback_uniques(p_rel oid, p_rec tenancy.backfill_state, p_att int2) RETURNS text[]
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

CREATE OR REPLACE FUNCTION tenancy._running_as_owner(p_rel oid) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner
                    WHERE c.oid = p_rel AND r.rolname = current_user) THEN
        RAISE EXCEPTION 'tenancy: internal table operation on % called as %, not as the table''s owner', p_rel::regclass, current_user
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Call the public function (tenancy.rollback, CALL tenancy.backfill): it runs the operation as the table''s owner.';
    END IF;
END $$;

CREATE OR REPLACE FUNCTION tenancy._schema_of(p_rel oid) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT quote_ident(n.nspname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = p_rel
$$;

CREATE OR REPLACE FUNCTION tenancy._surrogate_key(p_rel oid, p_keys int2[]) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT cardinality(p_keys) = 1 AND EXISTS (
        SELECT 1 FROM pg_attribute a
         WHERE a.attrelid = p_rel AND a.attnum = p_keys[array_lower(p_keys, 1)]
           AND (a.attidentity <> '' OR a.atthasdef OR a.atttypid = 'uuid'::regtype
                OR (a.atttypid IN ('text'::regtype, 'character varying'::regtype, 'bpchar'::regtype)
                    AND lower(a.attname) ~ '^(.*_)?(id|uuid|guid|cuid|cuid2|ulid|nanoid)$')))
$$;

CREATE OR REPLACE FUNCTION tenancy."_table_integrity"(
	"tbl" oid 
) RETURNS TABLE (
	"table_name" TEXT,  
	"tenant_column" TEXT,  
	"total_rows" bigint,  
	"null_rows" bigint,  
	"orphan_rows" bigint,  
	"cross_tenant_rows" bigint,  
	"not_null" bool,  
	"fk_validated" bool,  
	"tenant_index" bool,  
	"rls_enabled" bool,  
	"rls_forced" bool,  
	"policies_complete" bool,  
	"saw_every_row" bool,  
	"ok" bool,  
	"note" TEXT  
)
STRICT STABLE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', '_table_integrity_wrapper';

CREATE OR REPLACE FUNCTION tenancy."_tenant_column_kind"(
	"typid" oid 
) RETURNS TEXT 
STRICT STABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', '_tenant_column_kind_wrapper';

CREATE OR REPLACE FUNCTION tenancy."_usage"() RETURNS TABLE (
	"table_name" TEXT,  
	"column_type" TEXT,  
	"tenant_value" TEXT,  
	"rows" bigint,  
	"table_bytes" bigint,  
	"table_rows" bigint  
)
STRICT VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', '_usage_wrapper';

CREATE OR REPLACE FUNCTION tenancy."_user_id"(
	"user_id" TEXT 
) RETURNS TEXT 
STRICT STABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', '_user_id_wrapper';

CREATE OR REPLACE FUNCTION tenancy._user_policies_sql(p_type text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.format(
        'CREATE POLICY memberships_of_current_user ON tenancy.memberships FOR SELECT'
        ' USING (user_id OPERATOR(pg_catalog.=) %1$s'
        ' OR (SELECT pg_catalog.has_table_privilege(''tenancy.organizations'', ''UPDATE'')));'
        ' CREATE POLICY organizations_of_current_user ON tenancy.organizations FOR SELECT'
        ' USING (EXISTS (SELECT 1 FROM tenancy.memberships m'
        ' WHERE m.organization_id OPERATOR(pg_catalog.=) organizations.id'
        ' AND m.user_id OPERATOR(pg_catalog.=) %1$s)'
        ' OR (SELECT pg_catalog.has_table_privilege(''tenancy.organizations'', ''UPDATE'')))',
        CASE p_type WHEN 'uuid' THEN '(SELECT tenancy.current_user_id())'
                    WHEN 'bigint' THEN '((SELECT tenancy.current_user_id_text()))::pg_catalog.int8'
                    WHEN 'text' THEN '(SELECT tenancy.current_user_id_text())' END)
$$;

CREATE OR REPLACE FUNCTION tenancy."_wrap_policy_calls"(
	"expr" TEXT, 
	"names" TEXT[] 
) RETURNS TEXT 
IMMUTABLE STRICT PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', '_wrap_policy_calls_wrapper';

CREATE OR REPLACE FUNCTION tenancy.accept_invitation(token text)
RETURNS uuid LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (tenancy._privileged('accept_invitation', jsonb_build_object('token', $1))->>'organization_id')::uuid
$$;

CREATE OR REPLACE FUNCTION tenancy.add_member(organization_id uuid, user_id text, role text DEFAULT 'member',
                                   is_default boolean DEFAULT false)
RETURNS boolean LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (tenancy._privileged('add_member',
              jsonb_build_object('organization_id', $1, 'user_id', $2, 'role', $3, 'is_default', $4))->>'added')::boolean
$$;

CREATE OR REPLACE FUNCTION tenancy.add_member(organization_id uuid, user_id uuid, role text DEFAULT 'member',
                                   is_default boolean DEFAULT false)
RETURNS boolean LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (tenancy._privileged('add_member',
              jsonb_build_object('organization_id', $1, 'user_id', $2, 'role', $3, 'is_default', $4))->>'added')::boolean
$$;

CREATE OR REPLACE FUNCTION tenancy.adopt_users(users regclass, role_map jsonb, organization_id uuid DEFAULT NULL,
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

CREATE OR REPLACE FUNCTION tenancy.allow_login_lookup(tbl regclass, key_column name, columns name[], grantee regrole)
RETURNS text LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT tenancy._privileged('record_login_lookup',
              jsonb_build_object('relid', $1::oid, 'key_column', $2, 'columns', $3, 'grantee', $4::oid))->>'table'
$$;

CREATE OR REPLACE PROCEDURE tenancy.backfill(
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

CREATE OR REPLACE PROCEDURE tenancy.backfill_all(
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

CREATE OR REPLACE FUNCTION tenancy.change_role(organization_id uuid, user_id text, role text)
RETURNS boolean LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (tenancy._privileged('change_role',
              jsonb_build_object('organization_id', $1, 'user_id', $2, 'role', $3))->>'changed')::boolean
$$;

CREATE OR REPLACE FUNCTION tenancy.change_role(organization_id uuid, user_id uuid, role text)
RETURNS boolean LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (tenancy._privileged('change_role',
              jsonb_build_object('organization_id', $1, 'user_id', $2, 'role', $3))->>'changed')::boolean
$$;

CREATE OR REPLACE PROCEDURE tenancy.clone_organization(source uuid, name text, slug text, organization_id uuid DEFAULT NULL,
                                            batch_size integer DEFAULT 5000)
LANGUAGE plpgsql AS $$
DECLARE
    v_rec  jsonb;
    v_done boolean;
BEGIN
    v_rec := tenancy._clone_begin(source, name, slug, organization_id, batch_size);
    COMMIT;
    LOOP
        SELECT s.done INTO v_done
          FROM tenancy._clone_step(pg_catalog.jsonb_extract_path_text(v_rec, 'id')::uuid, batch_size) s;
        COMMIT;
        EXIT WHEN v_done;
    END LOOP;
END $$;

CREATE OR REPLACE FUNCTION tenancy.create_invitation(organization_id uuid, email text, role text DEFAULT 'member',
                                          expires_in interval DEFAULT interval '7 days')
RETURNS text LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT tenancy._privileged('create_invitation',
              jsonb_build_object('organization_id', $1, 'email', $2, 'role', $3, 'expires_in', $4))->>'token'
$$;

CREATE OR REPLACE FUNCTION tenancy.create_organization(name text, slug text, id uuid DEFAULT NULL,
                                            settings jsonb DEFAULT '{}', owner_user_id uuid DEFAULT NULL)
RETURNS uuid LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (tenancy._privileged('create_organization',
              jsonb_build_object('name', $1, 'slug', $2, 'id', $3, 'settings', $4, 'owner_user_id', $5))->>'id')::uuid
$$;

CREATE OR REPLACE FUNCTION tenancy."current_organization_id"() RETURNS uuid 
STRICT STABLE PARALLEL RESTRICTED
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', 'current_organization_id_wrapper';

CREATE OR REPLACE FUNCTION tenancy."current_organization_slug"() RETURNS TEXT 
STRICT STABLE PARALLEL RESTRICTED
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', 'current_organization_slug_wrapper';

CREATE OR REPLACE FUNCTION tenancy."current_user_id"() RETURNS uuid 
STRICT STABLE PARALLEL RESTRICTED
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', 'current_user_id_wrapper';

CREATE OR REPLACE FUNCTION tenancy."current_user_id_text"() RETURNS TEXT 
STRICT STABLE PARALLEL RESTRICTED
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', 'current_user_id_text_wrapper';

CREATE OR REPLACE FUNCTION tenancy.deactivate_organization(organization_id uuid)
RETURNS uuid LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (tenancy._privileged('deactivate_organization', jsonb_build_object('organization_id', $1))->>'id')::uuid
$$;

CREATE OR REPLACE FUNCTION tenancy.disable_isolation(tbl regclass)
RETURNS text LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT tenancy._disable_isolation($1::oid)
$$;

CREATE OR REPLACE FUNCTION tenancy.distribute(tbl regclass, shard_count integer DEFAULT NULL) RETURNS SETOF text
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'tenancy.distribute: tbl must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass a tenant table, or call tenancy.distribute_all() for every one.';
    END IF;
    RETURN QUERY SELECT tenancy._distribute(tbl, shard_count, true);
END $$;

CREATE OR REPLACE FUNCTION tenancy.distribute_all(shard_count integer DEFAULT NULL) RETURNS SETOF text
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT tenancy._distribute(NULL, shard_count, true)
$$;

CREATE OR REPLACE FUNCTION tenancy.distribution_plan(tbl regclass DEFAULT NULL, shard_count integer DEFAULT NULL)
RETURNS SETOF text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT tenancy._distribute(tbl, shard_count, false)
$$;

CREATE OR REPLACE FUNCTION tenancy.enable_isolation(tbl regclass, tenant_column name DEFAULT 'organization_id',
                                         mode text DEFAULT NULL, roles name[] DEFAULT '{public}',
                                         allow_incomplete boolean DEFAULT false)
RETURNS text LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE v_why text;
BEGIN
    IF tbl IS NOT NULL AND tenant_column IS NOT NULL THEN
        v_why := tenancy._incomplete(tbl::oid, tenant_column);
    END IF;
    IF v_why IS NOT NULL AND NOT coalesce(allow_incomplete, false) THEN
        RAISE EXCEPTION 'tenancy.enable_isolation: % is not ready to be isolated: %', tbl, v_why
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Isolation hides every row without an organization from every tenant.',
                  HINT = format('Finish the backfill first (CALL tenancy.backfill(%L)), or give those rows an organization; pass allow_incomplete => true to isolate it anyway.', tbl::text);
    ELSIF v_why IS NOT NULL THEN
        RAISE WARNING 'tenancy.enable_isolation: % is isolated although %: rows without an organization are hidden from every tenant', tbl, v_why;
    END IF;
    RETURN tenancy._isolation(tbl::oid, tenant_column::text, mode, roles::text[], true);
END $$;

CREATE OR REPLACE FUNCTION tenancy.enable_isolation_all(schema name DEFAULT 'public',
                                             tenant_column name DEFAULT 'organization_id',
                                             mode text DEFAULT NULL,
                                             roles name[] DEFAULT '{public}',
                                             allow_incomplete boolean DEFAULT false)
RETURNS TABLE (table_name text, action text, detail text)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p_schema name   := tenancy._require('schema', $1);
    p_column name   := tenancy._require('tenant_column', $2);
    p_mode   text   := $3;
    p_roles  name[] := $4;
    p_allow  boolean := coalesce($5, false);
    r        record;
    v_ddl    text;
    v_why    text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_namespace n WHERE n.nspname = p_schema) THEN
        RAISE EXCEPTION 'tenancy: schema % does not exist', quote_ident(p_schema)
            USING ERRCODE = 'invalid_schema_name', HINT = 'Pass the schema of your tables, e.g. ''public''.';
    END IF;
    FOR r IN
        SELECT c.oid, c.oid::regclass::text AS rel, c.relkind, c.relispartition,
               (SELECT pc.oid::regclass::text FROM pg_inherits i JOIN pg_class pc ON pc.oid = i.inhparent
                 WHERE i.inhrelid = c.oid LIMIT 1) AS parent,
               EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = p_column
                          AND a.attnum > 0 AND NOT a.attisdropped) AS has_column
          FROM pg_class c
         WHERE c.relnamespace = (SELECT n.oid FROM pg_namespace n WHERE n.nspname = p_schema)
           AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
         ORDER BY c.relname
    LOOP
        table_name := r.rel;
        IF NOT r.has_column THEN
            action := 'skipped';
            detail := format('no column %I', p_column);
        ELSIF r.relkind IN ('v', 'm', 'f') THEN
            action := 'skipped';
            detail := CASE r.relkind
                        WHEN 'v' THEN 'a view: isolate the tables it reads, and create it WITH (security_invoker = true)'
                        WHEN 'm' THEN 'a materialized view: row-level security cannot apply; do not grant it to tenants'
                        ELSE 'a foreign table: row-level security cannot apply to it' END;
        ELSIF r.relispartition THEN
            action := 'skipped';
            detail := format('a partition of %s: isolated with its parent', r.parent);
        ELSE
            BEGIN
                v_why := tenancy._incomplete(r.oid, p_column);
                v_ddl := tenancy.enable_isolation(r.oid::regclass, p_column, p_mode, p_roles, p_allow);
            EXCEPTION WHEN OTHERS THEN
                DECLARE v_state text; v_msg text; v_hint text;
                BEGIN
                    GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT, v_hint = PG_EXCEPTION_HINT;
                    RAISE EXCEPTION 'tenancy: enable_isolation_all stopped at %: %', r.rel, v_msg
                        USING ERRCODE = v_state, HINT = coalesce(v_hint, '') || ' Nothing was changed.';
                END;
            END;
            IF v_ddl ~ '(^|\n)[^-\n]' THEN
                action := 'isolated';
                detail := (SELECT count(*) FROM regexp_split_to_table(v_ddl, E'\n') l WHERE l !~ '^(--|$)')
                          || ' statement(s)';
            ELSE
                action := 'unchanged';
                detail := 'already isolated as requested';
            END IF;
            IF v_why IS NOT NULL THEN  -- allow_incomplete => true: say it on the table's row
                detail := detail || '; INCOMPLETE: ' || v_why || ', rows without an organization are hidden from every tenant';
            END IF;
        END IF;
        RETURN NEXT;
    END LOOP;
END $$;

CREATE OR REPLACE PROCEDURE tenancy.erase_organization(organization_id uuid, batch_size integer DEFAULT 50000,
                                            pause interval DEFAULT '0')
LANGUAGE plpgsql AS $$
DECLARE
    v_done  boolean;
    v_sleep double precision;
BEGIN
    PERFORM tenancy._erase_begin(organization_id, batch_size);
    COMMIT;
    LOOP
        SELECT s.done, s.sleep INTO v_done, v_sleep FROM tenancy._erase_step(organization_id, batch_size, pause) s;
        COMMIT;
        EXIT WHEN v_done;
        IF v_sleep IS NOT NULL THEN
            PERFORM pg_catalog.pg_sleep(v_sleep);
        END IF;
    END LOOP;
END $$;

CREATE OR REPLACE FUNCTION tenancy."export_organization"(
	"organization_id" uuid 
) RETURNS TABLE (
	"line" TEXT  
)
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', 'export_organization_wrapper';

CREATE OR REPLACE FUNCTION tenancy."get_user_organization_id"(
	"user_id" TEXT 
) RETURNS uuid 
STRICT STABLE PARALLEL RESTRICTED 
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', 'get_user_organization_id_text_wrapper';

CREATE OR REPLACE FUNCTION tenancy."get_user_organization_id"(
	"user_id" uuid 
) RETURNS uuid 
STRICT STABLE PARALLEL RESTRICTED
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', 'get_user_organization_id_wrapper';

CREATE OR REPLACE PROCEDURE tenancy.import_organization(source regclass, batch_size integer DEFAULT 5000)
LANGUAGE plpgsql AS $$
DECLARE
    v_rec  jsonb;
    v_org  uuid;
    v_done boolean;
BEGIN
    v_rec := tenancy._import_begin(source, batch_size);
    v_org := pg_catalog.jsonb_extract_path_text(v_rec, 'organization_id')::uuid;
    COMMIT;
    LOOP
        SELECT s.done INTO v_done FROM tenancy._import_step(source, v_org, batch_size) s;
        COMMIT;
        EXIT WHEN v_done;
    END LOOP;
END $$;

CREATE OR REPLACE FUNCTION tenancy.isolation_sql(tbl regclass, tenant_column name DEFAULT 'organization_id',
                                      mode text DEFAULT NULL, roles name[] DEFAULT '{public}')
RETURNS text LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT tenancy._isolation($1::oid, $2::text, $3, $4::text[], false)
$$;

CREATE OR REPLACE FUNCTION tenancy.lint()
RETURNS TABLE (level text, code text, object text, message text, fix text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $lint$
WITH tt AS (
    SELECT c.oid, c.oid::regclass::text AS tbl, c.relname, c.relnamespace, c.relkind, c.relowner,
           c.relrowsecurity AS rls, c.relforcerowsecurity AS force, c.relacl,
           t.tenant_column::text AS col, t.column_type, a.attnum, a.attnotnull, t.mode, t.details->'isolation' AS isolation
      FROM tenancy.tenant_tables t
      JOIN pg_class c ON c.oid = t.relid
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = t.tenant_column AND NOT a.attisdropped
),
cmds(cmd, label) AS (VALUES ('r', 'SELECT'), ('a', 'INSERT'), ('w', 'UPDATE'), ('d', 'DELETE')),
pol AS (
    SELECT tt.oid, tt.tbl, tt.col, p.polname::text AS polname, p.polcmd::text AS polcmd, p.polpermissive,
           pg_get_expr(p.polqual, p.polrelid) AS qual, pg_get_expr(p.polwithcheck, p.polrelid) AS checkexpr
      FROM tt JOIN pg_policy p ON p.polrelid = tt.oid
),
per_row AS (
    -- Non-immutable functions called outside a sub-select: evaluated once per row.
    SELECT pol.*, array_agg(DISTINCT f.name) AS fns, bool_and(f.constant_args) AS hoistable
      FROM pol
      CROSS JOIN LATERAL (SELECT * FROM tenancy._policy_calls(coalesce(pol.qual, ''))
                          UNION ALL SELECT * FROM tenancy._policy_calls(coalesce(pol.checkexpr, ''))) f
     WHERE EXISTS (SELECT 1 FROM pg_proc pr JOIN pg_namespace n ON n.oid = pr.pronamespace
                    WHERE pr.proname = f.name AND (f.schema IS NULL OR n.nspname = f.schema)
                      AND pr.provolatile <> 'i')
     GROUP BY pol.oid, pol.tbl, pol.col, pol.polname, pol.polcmd, pol.polpermissive, pol.qual, pol.checkexpr
),
fk AS (
    SELECT con.oid, con.conname::text AS conname, child.tbl AS child, child.col AS child_col, child.attnum AS child_att,
           parent.tbl AS parent, parent.col AS parent_col, parent.attnum AS parent_att, parent.oid AS parent_oid,
           con.conkey, con.confkey, pg_get_constraintdef(con.oid) AS def
      FROM pg_constraint con
      JOIN tt child ON child.oid = con.conrelid
      JOIN tt parent ON parent.oid = con.confrelid
     WHERE con.contype = 'f'
),
findings AS (
    -- TEN001: a tenant table without row-level security.
    SELECT 'error' AS level, 'TEN001' AS code, tbl AS object,
           format('tenant table %s has row-level security disabled: every role with table privileges reads every tenant''s rows', tbl) AS message,
           format('SELECT tenancy.enable_isolation(%L, %L);', tbl, col) AS fix
      FROM tt WHERE NOT rls
    UNION ALL
    -- TEN002: enabled but not forced: the table owner bypasses it.
    SELECT 'warning', 'TEN002', tbl,
           format('row-level security on %s is not forced: the table owner (and roles acting as it, e.g. in views) bypass the policies', tbl),
           format('ALTER TABLE %s FORCE ROW LEVEL SECURITY;', tbl)
      FROM tt WHERE rls AND NOT force
    UNION ALL
    -- TEN003: a command no permissive policy allows.
    SELECT 'warning', 'TEN003', format('%s command %s', tt.tbl, cmds.label),
           format('%s has no permissive policy for %s: nobody the policies apply to can %s its rows', tt.tbl, cmds.label, cmds.label),
           format('SELECT tenancy.enable_isolation(%L, %L);', tt.tbl, tt.col)
      FROM tt CROSS JOIN cmds
     WHERE tt.rls AND NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = tt.oid AND p.polpermissive AND p.polname <> 'tenancy_operator'
                                     AND p.polcmd IN (cmds.cmd::"char", '*'))
    UNION ALL
    -- TEN004: a policy that calls a context or membership function per row.
    SELECT 'warning', 'TEN004', format('%s policy %s', tbl, quote_ident(polname)),
           format('policy %s on %s calls %s once per row; wrapped in a scalar sub-select it runs once per statement',
                  quote_ident(polname), tbl, array_to_string(fns, ', ')),
           CASE WHEN hoistable THEN
               format('ALTER POLICY %I ON %s%s%s;', polname, tbl,
                      CASE WHEN qual IS NOT NULL THEN format(' USING (%s)', tenancy._wrap_policy_calls(qual, fns)) ELSE '' END,
                      CASE WHEN checkexpr IS NOT NULL THEN format(' WITH CHECK (%s)', tenancy._wrap_policy_calls(checkexpr, fns)) ELSE '' END)
           END
      FROM per_row
    UNION ALL
    -- TEN005: a permissive policy that is always true.
    SELECT 'error', 'TEN005', format('%s policy %s', tbl, quote_ident(polname)),
           format('permissive policy %s on %s is always true: it lets every role it names reach every tenant''s rows', quote_ident(polname), tbl),
           format('DROP POLICY %I ON %s;', polname, tbl)
      FROM pol
     WHERE polpermissive AND coalesce(qual, 'true') = 'true' AND coalesce(checkexpr, 'true') = 'true'
    UNION ALL
    -- TEN006: several permissive policies for one command, OR-ed, with no restrictive boundary.
    SELECT 'warning', 'TEN006', format('%s command %s', tt.tbl, cmds.label),
           format('%s has %s permissive policies for %s (%s) and no restrictive one: they are OR-ed, so any of them can open another tenant''s rows',
                  tt.tbl, count(*), cmds.label, string_agg(quote_ident(p.polname), ', ' ORDER BY p.polname)),
           format('SELECT tenancy.enable_isolation(%L, %L);', tt.tbl, tt.col)
      FROM tt CROSS JOIN cmds JOIN pg_policy p ON p.polrelid = tt.oid AND p.polpermissive AND p.polcmd IN (cmds.cmd::"char", '*')
     WHERE NOT EXISTS (SELECT 1 FROM pg_policy r WHERE r.polrelid = tt.oid AND NOT r.polpermissive
                          AND r.polcmd IN (cmds.cmd::"char", '*'))
     GROUP BY tt.tbl, tt.col, cmds.label, cmds.cmd
    HAVING count(*) > 1
    UNION ALL
    -- TEN007: a nullable tenant column.
    SELECT 'error', 'TEN007', tbl,
           format('tenant column %s.%I is nullable: a row without an organization belongs to nobody (validate_client_data_integrity() counts them)', tbl, col),
           format('ALTER TABLE %s ALTER COLUMN %I SET NOT NULL;', tbl, col)
      FROM tt WHERE NOT attnotnull
    UNION ALL
    -- TEN008: no index leads with the tenant column.
    SELECT 'warning', 'TEN008', tbl,
           format('no valid index on %s starts with its tenant column %I: every tenant-scoped query reads the whole table', tbl, col),
           format('CREATE INDEX%s %I ON %s (%I);', CASE WHEN relkind = 'r' THEN ' CONCURRENTLY' ELSE '' END,
                  left(relname || '_' || col, 59) || '_idx', tbl, col)
      FROM tt
     WHERE NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = tt.oid AND i.indkey[0] = tt.attnum
                          AND i.indisvalid AND i.indpred IS NULL)
    UNION ALL
    -- TEN009: the tenant column has no validated foreign key to tenancy.organizations.
    SELECT 'warning', 'TEN009', tbl,
           format('tenant column %s.%I has no validated foreign key to tenancy.organizations: rows can name organizations that do not exist', tbl, col),
           coalesce(
               (SELECT format('ALTER TABLE %s VALIDATE CONSTRAINT %I;', tbl, con.conname)
                  FROM pg_constraint con
                 WHERE con.conrelid = tt.oid AND con.contype = 'f' AND con.confrelid = 'tenancy.organizations'::regclass
                   AND con.conkey = ARRAY[tt.attnum] LIMIT 1),
               format('ALTER TABLE %1$s ADD CONSTRAINT %2$I FOREIGN KEY (%3$I) REFERENCES tenancy.organizations (%4$s) NOT VALID; ALTER TABLE %1$s VALIDATE CONSTRAINT %2$I;',
                      tbl, left(relname || '_' || col, 50) || '_tenancy_fk', col,
                      CASE column_type WHEN 'uuid' THEN 'id' ELSE 'slug' END))
      FROM tt
     WHERE NOT EXISTS (SELECT 1 FROM pg_constraint con
                        WHERE con.conrelid = tt.oid AND con.contype = 'f' AND con.convalidated
                          AND con.confrelid = 'tenancy.organizations'::regclass AND con.conkey = ARRAY[tt.attnum])
    UNION ALL
    -- TEN010: a unique constraint or index without the tenant column (surrogate primary keys aside:
    -- one column with an identity, a default or type uuid, or a text id the application fills,
    -- see tenancy._surrogate_key; issue 15: cuid keys are not natural keys).
    SELECT 'warning', 'TEN010', format('%s index %s', tt.tbl, quote_ident(ic.relname)),
           format('unique %s on %s does not include the tenant column %I: two tenants cannot use the same value, and one can probe the other''s',
                  coalesce('constraint ' || quote_ident(con.conname), 'index ' || quote_ident(ic.relname)), tt.tbl, tt.col),
           CASE
               WHEN con.oid IS NOT NULL THEN
                   format('ALTER TABLE %s DROP CONSTRAINT %I, ADD CONSTRAINT %I %s (%I, %s);', tt.tbl, con.conname, con.conname,
                          CASE con.contype WHEN 'p' THEN 'PRIMARY KEY' ELSE 'UNIQUE' END, tt.col,
                          (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.n) FROM unnest(i.indkey) WITH ORDINALITY k(att, n)
                             JOIN pg_attribute a ON a.attrelid = tt.oid AND a.attnum = k.att))
               WHEN 0 <> ALL (i.indkey) AND i.indpred IS NULL THEN
                   format('DROP INDEX %s; CREATE UNIQUE INDEX %I ON %s (%I, %s);', ic.oid::regclass, ic.relname, tt.tbl, tt.col,
                          (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.n) FROM unnest(i.indkey) WITH ORDINALITY k(att, n)
                             JOIN pg_attribute a ON a.attrelid = tt.oid AND a.attnum = k.att))
           END
      FROM tt
      JOIN pg_index i ON i.indrelid = tt.oid AND i.indisunique
      JOIN pg_class ic ON ic.oid = i.indexrelid
      LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = tt.oid AND con.contype IN ('p', 'u')
     WHERE NOT (tt.attnum = ANY (i.indkey))
       AND NOT (i.indisprimary AND i.indnatts = 1 AND tenancy._surrogate_key(tt.oid, i.indkey::int2[]))
    UNION ALL
    -- TEN011: a foreign key between tenant tables that does not carry the tenant column.
    SELECT 'warning', 'TEN011', format('%s constraint %s', fk.child, quote_ident(fk.conname)),
           format('foreign key %s from %s to %s does not include the tenant columns: a row can point at another tenant''s row, and foreign key checks (which bypass RLS) let a tenant probe the other''s keys',
                  quote_ident(fk.conname), fk.child, fk.parent),
           concat_ws(' ',
               CASE WHEN NOT EXISTS (
                        SELECT 1 FROM pg_index pi WHERE pi.indrelid = fk.parent_oid AND pi.indisunique AND pi.indpred IS NULL
                           AND pi.indnatts = array_length(fk.confkey, 1) + 1
                           AND (SELECT array_agg(x ORDER BY x) FROM unnest(pi.indkey::int2[]) x)
                             = (SELECT array_agg(x ORDER BY x) FROM unnest(fk.confkey || fk.parent_att) x))
                    THEN format('ALTER TABLE %s ADD UNIQUE (%I, %s);', fk.parent, fk.parent_col,
                                (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.n) FROM unnest(fk.confkey) WITH ORDINALITY k(att, n)
                                   JOIN pg_attribute a ON a.attrelid = fk.parent_oid AND a.attnum = k.att))
               END,
               -- Built from the catalog's columns (tenancy._fk_definition), never from the constraint's text.
               format('ALTER TABLE %1$s ADD CONSTRAINT %2$I %3$s NOT VALID; ALTER TABLE %1$s VALIDATE CONSTRAINT %2$I; ALTER TABLE %1$s DROP CONSTRAINT %4$I;',
                      fk.child, tenancy._name(fk.conname, 'tenant'),
                      tenancy._fk_definition(fk.oid, fk.child_col, fk.parent_col), fk.conname))
      FROM fk
     WHERE NOT (fk.child_att = ANY (fk.conkey) AND fk.parent_att = ANY (fk.confkey))
    UNION ALL
    -- TEN012: a table next to the tenant tables that looks like tenant data but is not registered.
    SELECT 'warning', 'TEN012', c.oid::regclass::text,
           format('%s has a column %I that looks like %s, but it is not a registered tenant table', c.oid::regclass, a.attname,
                  CASE WHEN a.attname IN ('organization_id', 'organisation_id', 'org_id', 'tenant_id', 'client_id', 'account_id', 'company_id')
                       THEN 'a tenant reference' ELSE 'a user reference' END),
           CASE WHEN a.attname IN ('organization_id', 'organisation_id', 'org_id', 'tenant_id', 'client_id', 'account_id', 'company_id')
                THEN format('SELECT tenancy.register_table(%L, %L);', c.oid::regclass, a.attname)
           END
      FROM pg_class c
      JOIN LATERAL (SELECT a.attname FROM pg_attribute a
                     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                       AND a.attname IN ('organization_id', 'organisation_id', 'org_id', 'tenant_id', 'client_id',
                                         'account_id', 'company_id', 'user_id', 'owner_id', 'created_by')
                     ORDER BY (a.attname IN ('user_id', 'owner_id', 'created_by')), a.attnum LIMIT 1) a ON true
     WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
       AND c.relnamespace IN (SELECT tt.relnamespace FROM tt)
       AND c.oid NOT IN (SELECT tt.oid FROM tt)
    UNION ALL
    -- TEN013: SECURITY DEFINER functions whose search_path a caller can choose.
    SELECT 'warning', 'TEN013', p.oid::regprocedure::text,
           format('SECURITY DEFINER function %s does not pin its search_path: a caller can make it resolve names to objects of their choosing', p.oid::regprocedure),
           format('ALTER FUNCTION %s SET search_path = pg_catalog, %I, pg_temp;', p.oid::regprocedure, n.nspname)
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE p.prosecdef
       AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_%'
       AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) s WHERE s LIKE 'search\_path=%')
       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
    UNION ALL
    -- TEN014: views over tenant tables that read them with their owner's rights.
    SELECT DISTINCT 'warning', 'TEN014', v.oid::regclass::text,
           format('view %s reads tenant table %s with its owner''s rights, not the caller''s', v.oid::regclass, tt.tbl),
           format('ALTER VIEW %s SET (security_invoker = true);', v.oid::regclass)
      FROM tt
      JOIN pg_depend d ON d.refobjid = tt.oid AND d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
      JOIN pg_rewrite r ON r.oid = d.objid
      JOIN pg_class v ON v.oid = r.ev_class AND v.relkind = 'v' AND v.oid <> tt.oid
     WHERE NOT coalesce(v.reloptions @> ARRAY['security_invoker=true'] OR v.reloptions @> ARRAY['security_invoker=on'], false)
    UNION ALL
    -- TEN015: tenant tables readable by PUBLIC or by Supabase's anon role.
    SELECT CASE WHEN tt.rls THEN 'warning' ELSE 'error' END, 'TEN015', format('%s grantee %s', tt.tbl, g.grantee),
           format('%s may SELECT from tenant table %s%s', g.grantee, tt.tbl,
                  CASE WHEN tt.rls THEN ': row-level security is all that stands between them and the rows'
                       ELSE ' and row-level security is off: every tenant''s rows are readable' END),
           format('REVOKE ALL ON %s FROM %s;', tt.tbl, g.grantee)
      FROM tt
      CROSS JOIN LATERAL (
          SELECT 'PUBLIC' AS grantee WHERE EXISTS (SELECT 1 FROM aclexplode(tt.relacl) x
                                                    WHERE x.grantee = 0 AND x.privilege_type = 'SELECT')
          UNION ALL
          SELECT 'anon' WHERE EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon')
                          AND has_table_privilege('anon', tt.oid, 'SELECT')
      ) g
    UNION ALL
    -- TEN016: privileges beyond reading and writing rows, granted on a tenant table to a role
    -- other than its owner that the policies restrict: row-level security stops none of them.
    SELECT 'error', 'TEN016', format('%s grantee %s', tt.tbl, g.grantee),
           format('%s holds %s on tenant table %s: %s; row-level security stops none of this', g.grantee, g.privs, tt.tbl,
                  concat_ws('; ',
                      CASE WHEN g.privs LIKE '%TRUNCATE%' THEN 'TRUNCATE empties every tenant''s rows' END,
                      CASE WHEN g.privs LIKE '%TRIGGER%' THEN 'TRIGGER runs its own code on every tenant''s writes, and sees them' END,
                      CASE WHEN g.privs LIKE '%REFERENCES%' THEN 'REFERENCES lets it probe every tenant''s keys with foreign key checks' END)),
           format('REVOKE %s ON %s FROM %s;', g.privs, tt.tbl, g.grantee)
      FROM tt
      CROSS JOIN LATERAL (
          SELECT CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END AS grantee,
                 string_agg(DISTINCT x.privilege_type, ', ' ORDER BY x.privilege_type) AS privs
            FROM aclexplode(tt.relacl) x LEFT JOIN pg_roles r ON r.oid = x.grantee
           WHERE x.privilege_type IN ('TRIGGER', 'TRUNCATE', 'REFERENCES') AND x.grantee <> tt.relowner
             -- roles the policies restrict: not a superuser or BYPASSRLS role (Supabase's service_role)
             AND NOT coalesce(r.rolsuper OR r.rolbypassrls, false)
           GROUP BY 1) g
    UNION ALL
    -- TEN017: a partition of an isolated table without row-level security or tenancy's policies
    -- (attached or created after enable_isolation): read directly, it is not isolated.
    SELECT 'error', 'TEN017', pc.oid::regclass::text,
           format('partition %s of isolated table %s has %s: queried directly, every tenant''s rows in it are reachable',
                  pc.oid::regclass, tt.tbl,
                  CASE WHEN NOT pc.relrowsecurity THEN 'row-level security disabled'
                       WHEN NOT pc.relforcerowsecurity THEN 'row-level security not forced'
                       ELSE 'not all of tenancy''s boundary policies' END),
           format('SELECT tenancy.enable_isolation(%L, %L, %L, %L);', tt.tbl, tt.col, tt.mode,
                  coalesce((SELECT array_agg(r)::text FROM jsonb_array_elements_text(tt.isolation->'roles') r), '{public}'))
      FROM tt
      CROSS JOIN LATERAL pg_partition_tree(tt.oid) p
      JOIN pg_class pc ON pc.oid = p.relid
     WHERE tt.isolation IS NOT NULL AND p.level > 0 AND pc.relkind IN ('r', 'p')
       AND (NOT pc.relrowsecurity OR NOT pc.relforcerowsecurity
            OR (SELECT count(*) FROM pg_policy pp WHERE pp.polrelid = pc.oid AND NOT pp.polpermissive
                   AND pp.polname LIKE 'tenancy\_%\_boundary') < 4)
)
SELECT f.level, f.code, f.object, f.message, f.fix
  FROM findings f
 WHERE NOT EXISTS (SELECT 1 FROM tenancy.lint_ignores i WHERE i.code = f.code AND i.object IN (f.object, '*'))
 ORDER BY CASE f.level WHEN 'error' THEN 1 WHEN 'warning' THEN 2 ELSE 3 END, f.code, f.object, f.message
$lint$;

CREATE OR REPLACE FUNCTION tenancy.login_lookup(tbl regclass, key text)
RETURNS SETOF jsonb LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM tenancy._login_lookup($1::oid, $2)
$$;

CREATE OR REPLACE FUNCTION tenancy."lookup_cache_size"() RETURNS bigint 
STRICT VOLATILE PARALLEL RESTRICTED
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', 'lookup_cache_size_wrapper';

CREATE OR REPLACE FUNCTION tenancy."operate"(
	"reason" TEXT 
) RETURNS bool 
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', 'operate_wrapper';

CREATE OR REPLACE FUNCTION tenancy."operating"() RETURNS bool 
STRICT STABLE PARALLEL RESTRICTED
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', 'operating_wrapper';

CREATE OR REPLACE FUNCTION tenancy.organization_usage()
RETURNS TABLE (organization_id uuid, organization_slug text, table_name text, rows bigint, bytes bigint)
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(oi.id, os.id), coalesce(oi.slug, os.slug, u.tenant_value), u.table_name, u.rows,
           CASE WHEN u.table_rows > 0 THEN (u.table_bytes::numeric * u.rows / u.table_rows)::bigint ELSE 0 END
      FROM tenancy._usage() u
      LEFT JOIN tenancy.organizations oi ON u.column_type = 'uuid' AND oi.id::text = u.tenant_value
      LEFT JOIN tenancy.organizations os ON u.column_type = 'text' AND os.slug = u.tenant_value
     ORDER BY 2, 3
$$;

CREATE OR REPLACE FUNCTION tenancy.pending_statements()
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

CREATE OR REPLACE FUNCTION tenancy."policy_organization_id"(
	"privilege" TEXT 
) RETURNS uuid 
STRICT STABLE PARALLEL RESTRICTED
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', 'policy_organization_id_wrapper';

CREATE OR REPLACE FUNCTION tenancy."policy_organization_ids"(
	"privilege" TEXT 
) RETURNS uuid[] 
STRICT STABLE PARALLEL RESTRICTED
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', 'policy_organization_ids_wrapper';

CREATE OR REPLACE FUNCTION tenancy."policy_organization_slug"(
	"privilege" TEXT 
) RETURNS TEXT 
STRICT STABLE PARALLEL RESTRICTED
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', 'policy_organization_slug_wrapper';

CREATE OR REPLACE FUNCTION tenancy."policy_organization_slugs"(
	"privilege" TEXT 
) RETURNS TEXT[] 
STRICT STABLE PARALLEL RESTRICTED
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', 'policy_organization_slugs_wrapper';

CREATE OR REPLACE FUNCTION tenancy.register_table(tbl regclass, tenant_column name DEFAULT 'organization_id')
RETURNS text LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT tenancy._privileged('register_table',
              jsonb_build_object('relid', $1::oid, 'tenant_column', $2))->>'column_type'
$$;

CREATE OR REPLACE FUNCTION tenancy.remove_member(organization_id uuid, user_id text)
RETURNS void LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT FROM tenancy._privileged('remove_member', jsonb_build_object('organization_id', $1, 'user_id', $2))
$$;

CREATE OR REPLACE FUNCTION tenancy.remove_member(organization_id uuid, user_id uuid)
RETURNS void LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT FROM tenancy._privileged('remove_member', jsonb_build_object('organization_id', $1, 'user_id', $2))
$$;

CREATE OR REPLACE FUNCTION tenancy.rename_organization(organization_id uuid, name text, slug text DEFAULT NULL)
RETURNS uuid LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (tenancy._privileged('rename_organization',
              jsonb_build_object('organization_id', $1, 'name', $2, 'slug', $3))->>'id')::uuid
$$;

CREATE OR REPLACE FUNCTION tenancy.revoke_login_lookup(tbl regclass)
RETURNS text LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT tenancy._privileged('record_login_lookup', jsonb_build_object('relid', $1::oid, 'columns', NULL))->>'table'
$$;

CREATE OR REPLACE FUNCTION tenancy.rollback(tbl regclass, drop_column boolean DEFAULT false, cascade boolean DEFAULT false) RETURNS text
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

CREATE OR REPLACE FUNCTION tenancy.rollback_all(schema name DEFAULT 'public', drop_column boolean DEFAULT false)
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

CREATE OR REPLACE FUNCTION tenancy."set_organization"() RETURNS uuid 
STRICT VOLATILE PARALLEL UNSAFE 
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', 'set_organization_from_context_wrapper';

CREATE OR REPLACE FUNCTION tenancy."set_organization"(
	"organization" TEXT 
) RETURNS uuid 
VOLATILE PARALLEL UNSAFE 
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', 'set_organization_by_slug_wrapper';

CREATE OR REPLACE FUNCTION tenancy."set_organization"(
	"organization_id" uuid 
) RETURNS uuid 
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', 'set_organization_wrapper';

CREATE OR REPLACE FUNCTION tenancy.set_user_id_type(type text)
RETURNS boolean LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (tenancy._privileged('set_user_id_type', jsonb_build_object('type', $1))->>'changed')::boolean
$$;

CREATE OR REPLACE FUNCTION tenancy."signed_organization_id"(
	"token" TEXT, 
	"privilege" TEXT 
) RETURNS uuid 
STRICT STABLE PARALLEL RESTRICTED
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', 'signed_organization_id_wrapper';

CREATE OR REPLACE FUNCTION tenancy."signed_organization_slug"(
	"token" TEXT, 
	"privilege" TEXT 
) RETURNS TEXT 
STRICT STABLE PARALLEL RESTRICTED
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', 'signed_organization_slug_wrapper';

CREATE OR REPLACE FUNCTION tenancy."user_id_type"() RETURNS TEXT 
STRICT STABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', 'user_id_type_wrapper';

CREATE OR REPLACE FUNCTION tenancy."validate_client_access"(
	"user_id" TEXT, 
	"organization_id" uuid 
) RETURNS bool 
STABLE PARALLEL RESTRICTED 
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', 'validate_client_access_text_wrapper';

CREATE OR REPLACE FUNCTION tenancy."validate_client_access"(
	"user_id" uuid, 
	"organization_id" uuid 
) RETURNS bool 
STABLE PARALLEL RESTRICTED
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', 'validate_client_access_wrapper';

CREATE OR REPLACE FUNCTION tenancy."validate_client_data_integrity"() RETURNS TABLE (
	"table_name" TEXT,  
	"tenant_column" TEXT,  
	"total_rows" bigint,  
	"null_rows" bigint,  
	"orphan_rows" bigint,  
	"cross_tenant_rows" bigint,  
	"not_null" bool,  
	"fk_validated" bool,  
	"tenant_index" bool,  
	"rls_enabled" bool,  
	"rls_forced" bool,  
	"policies_complete" bool,  
	"saw_every_row" bool,  
	"ok" bool,  
	"note" TEXT  
)
STRICT STABLE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c 
AS 'MODULE_PATHNAME', 'validate_client_data_integrity_wrapper';

CREATE OR REPLACE FUNCTION tenancy.validate_client_data_integrity(tbl regclass)
RETURNS TABLE (table_name text, tenant_column text, total_rows bigint, null_rows bigint,
               orphan_rows bigint, cross_tenant_rows bigint, not_null boolean, fk_validated boolean,
               tenant_index boolean, rls_enabled boolean, rls_forced boolean, policies_complete boolean,
               saw_every_row boolean, ok boolean, note text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM tenancy._table_integrity(tenancy._require('tbl', $1)::oid)
$$;

COMMENT ON FUNCTION tenancy._att_names(oid, int2[]) IS 'Internal: the column names of attribute numbers of a relation, in order.';
COMMENT ON FUNCTION tenancy._idents(text[]) IS 'Internal: a list of column names, each quoted, comma-separated.';
COMMENT ON FUNCTION tenancy._byte_prefix(text, integer) IS 'Internal: the longest prefix of a text that fits in a number of bytes.';
COMMENT ON FUNCTION tenancy._name(text, text) IS 'Internal: a name of at most 63 bytes made of a base and a suffix.';
COMMENT ON FUNCTION tenancy._fk_definition(oid, text, text, boolean) IS 'Internal: a foreign key''s definition built from the catalog, optionally with tenant columns first.';
COMMENT ON FUNCTION tenancy._surrogate_key(oid, int2[]) IS 'Internal: is this key a surrogate key (one column filled by the database, a uuid, or an application-generated text id)?';
COMMENT ON FUNCTION tenancy._running_as_owner(oid) IS 'Internal: refuses unless the current role owns the table.';
COMMENT ON FUNCTION tenancy._relkind_noun("char") IS 'Internal: what a relation of a kind is, for error messages.';
COMMENT ON FUNCTION tenancy.lint() IS
  'Is this database safely multi-tenant? One row per finding (level, code, object, message, and the SQL that fixes it). Codes TEN001-TEN017 are listed in the README; silence one with INSERT INTO tenancy.lint_ignores.';
COMMENT ON FUNCTION tenancy._policy_calls(text) IS
  'Internal, for lint(): function calls of a policy expression evaluated once per row.';
COMMENT ON FUNCTION tenancy._wrap_policy_calls(text, text[]) IS
  'Internal, for lint(): the expression with the named constant-argument calls wrapped in a scalar sub-select.';
COMMENT ON FUNCTION tenancy._backfill_begin(oid, uuid, name, text, oid, name, integer, interval, interval, integer, boolean) IS
  'Internal: the first step of CALL tenancy.backfill: check the call, then resume the recorded backfill or plan and record a new one.';
COMMENT ON FUNCTION tenancy._backfill_check_call(oid, text, "char", boolean, text, integer, interval, interval, integer) IS
  'Internal: the checks of every CALL tenancy.backfill (the table, its owner, the options, REFERENCES for a text tenant column).';
COMMENT ON FUNCTION tenancy._backfill_resume(oid, tenancy.backfill_state, text, uuid, name, oid, name, tenancy.backfill_options) IS
  'Internal: a resumed CALL tenancy.backfill: refuses other options, records this CALL''s options and session.';
COMMENT ON FUNCTION tenancy._backfill_source(oid, text, uuid, name, text, oid, name, oid) IS
  'Internal: where each row''s organization comes from in a new backfill (fixed, parent row, user column), checked; its source and lookup.';
COMMENT ON FUNCTION tenancy._backfill_parent_source(oid, text, name, text, oid, oid) IS
  'Internal: a backfill''s organization read from the parent row through the one foreign key to it; its source and lookup.';
COMMENT ON FUNCTION tenancy._backfill_user_source(oid, text, text, name) IS
  'Internal: a backfill''s organization derived from the user in a column (administrators only); its source and lookup.';
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
COMMENT ON FUNCTION tenancy._rollback_fks(oid, tenancy.backfill_state) IS
  'Internal: rollback of the rewritten foreign keys (the old ones back, validated); run as the table''s owner by tenancy._owner_rollback.';
COMMENT ON FUNCTION tenancy._rollback_uniques(oid, tenancy.backfill_state, int2) IS
  'Internal: rollback of the unique keys and indexes the backfill rewrote or added (the old ones back, under their names); run as the table''s owner by tenancy._owner_rollback.';
COMMENT ON FUNCTION tenancy._rollback_hand_made_keys(oid, tenancy.backfill_state, int2, boolean) IS
  'Internal: rollback of keys holding the tenant column that tenancy did not make (a lint fix applied by hand); run as the table''s owner by tenancy._owner_rollback.';
COMMENT ON FUNCTION tenancy._rollback_column_statements(oid, tenancy.backfill_state, boolean) IS
  'Internal: the statements undoing the tenant column''s foreign key, check, NOT NULL, trigger and default (and the column); for tenancy._owner_rollback.';
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
COMMENT ON FUNCTION tenancy._backfill_step(oid) IS 'Internal: one step of a backfill, in the caller''s transaction, run as the table''s owner.';
COMMENT ON FUNCTION tenancy._owner_backfill_step(oid, jsonb) IS 'Internal: the work of one backfill step; runs only as the table''s owner (through tenancy._as_owner).';
COMMENT ON FUNCTION tenancy._check_backfill_record(oid, jsonb, jsonb) IS 'Internal: refuses a backfill record whose recorded definitions are not what the catalog says about the table.';
COMMENT ON FUNCTION tenancy._owner_rollback(oid, jsonb) IS 'Internal: the work of tenancy.rollback; runs only as the table''s owner (through tenancy._as_owner).';
COMMENT ON FUNCTION tenancy._backfill_fill() IS 'Internal: trigger giving rows written during a backfill their organization.';
COMMENT ON FUNCTION tenancy._backfill_lock_all(oid, text) IS 'Internal: locks a table and the tables its foreign keys reference all at once (NOWAIT tries until lock_timeout), for the foreign-key phases: never waits while holding one, so no deadlock with applications.';
COMMENT ON FUNCTION tenancy._lifecycle_admin(boolean, text) IS 'Internal: refuses unless the caller is a tenancy administrator.';
COMMENT ON FUNCTION tenancy._erase_order() IS 'Internal: the tenant tables in erase order (children before parents; the tables whose rows go with their parents'' last).';
COMMENT ON FUNCTION tenancy._erase_cascaded(regclass) IS 'Internal: whether the erase deletes a tenant table''s rows with its parents'' batches (nothing references it; its every foreign key to a tenant table is ON DELETE CASCADE).';
COMMENT ON FUNCTION tenancy._op_erase_begin(jsonb, oid, boolean, text) IS 'Internal catalog operation: checks an erase and creates (or finds) its record.';
COMMENT ON FUNCTION tenancy._op_erase_progress(jsonb, oid, boolean, text) IS 'Internal catalog operation: records an erase''s progress.';
COMMENT ON FUNCTION tenancy._op_erase_finish(jsonb, oid, boolean, text) IS 'Internal catalog operation: deletes the erased organization''s invitations, memberships and row, and completes the record.';
COMMENT ON FUNCTION tenancy._op_log_lifecycle(jsonb, oid, boolean, text) IS 'Internal catalog operation: logs a lifecycle operation on rows (an export).';
COMMENT ON FUNCTION tenancy._op_import_begin(jsonb, oid, boolean, text) IS 'Internal catalog operation: creates the imported organization and the import record (or finds it).';
COMMENT ON FUNCTION tenancy._op_import_progress(jsonb, oid, boolean, text) IS 'Internal catalog operation: records an import''s progress.';
COMMENT ON FUNCTION tenancy._op_import_finish(jsonb, oid, boolean, text) IS 'Internal catalog operation: completes an import record.';
COMMENT ON FUNCTION tenancy._erase_begin(uuid, integer) IS 'Internal: starts or resumes an erase; refuses when rows outside the organization reference its rows.';
COMMENT ON FUNCTION tenancy._erase_step(uuid, integer, interval) IS 'Internal: one step of an erase (a batch, or the verification and the end).';
COMMENT ON FUNCTION tenancy._erase_batch(oid, uuid, integer) IS 'Internal: deletes one batch of an organization''s rows from a tenant table (with its cascaded children''s), as the table''s owner; returns the rows per table and whether the table is done.';
COMMENT ON FUNCTION tenancy._erase_remaining(oid, uuid) IS 'Internal: counts an organization''s rows left in a tenant table, as the table''s owner.';
COMMENT ON FUNCTION tenancy._erase_references(uuid) IS 'Internal: foreign keys through which rows outside an organization reference its rows, with how many.';
COMMENT ON FUNCTION tenancy._usage() IS 'Internal: rows per tenant value and tenant table, with each table''s size.';
COMMENT ON FUNCTION tenancy._export_header(uuid, jsonb) IS 'Internal: the header line of an export (the organization, the tables, the references outside it), in the snapshot of the query that called it.';
COMMENT ON FUNCTION tenancy._import_begin(regclass, integer) IS 'Internal: checks an export''s header and trailer and starts or resumes its import.';
COMMENT ON FUNCTION tenancy._import_check_source(regclass) IS 'Internal: refuses (0A000) an import source whose reading could run another role''s code with the caller''s rights: not a table, columns n and line of other than built-in integer and text types, row-level security of another owner.';
COMMENT ON FUNCTION tenancy._import_check_lines(regclass, jsonb) IS 'Internal: refuses (22023) an export whose lines are not JSON or whose row lines do not start with the index of a table of its header, before the import starts.';
COMMENT ON FUNCTION tenancy._import_step(regclass, uuid, integer) IS 'Internal: imports the next run of one table''s lines.';
COMMENT ON FUNCTION tenancy._op_clone_begin(jsonb, oid, boolean, text) IS 'Internal catalog operation: creates a clone''s organization and record (or finds the running one).';
COMMENT ON FUNCTION tenancy._op_clone_progress(jsonb, oid, boolean, text) IS 'Internal catalog operation: records a clone batch''s keys and progress.';
COMMENT ON FUNCTION tenancy._op_clone_finish(jsonb, oid, boolean, text) IS 'Internal catalog operation: completes a clone and drops its key map.';
COMMENT ON FUNCTION tenancy._clone_begin(uuid, text, text, uuid, integer) IS 'Internal: starts or resumes a clone.';
COMMENT ON FUNCTION tenancy._clone_step(uuid, integer) IS 'Internal: one step of a clone (a batch of one table, or the end).';
COMMENT ON FUNCTION tenancy._lifecycle_check(oid[], text) IS 'Internal: refuses (0A000) an erase, import or clone that could not finish (a table the clone cannot map, a distributed table whose owner is under row-level security), before anything is changed.';
COMMENT ON FUNCTION tenancy._clone_batch(oid, uuid, uuid, text, integer, jsonb) IS 'Internal: copies one batch of an organization''s rows of a tenant table into its clone with new keys, as the table''s owner.';
COMMENT ON PROCEDURE tenancy.clone_organization(uuid, text, text, uuid, integer) IS
  'Copy an organization into a new one in this database (a sandbox, a demo): parents first, in batches with a COMMIT each, as each table''s owner; primary keys get new values (sequence, uuid) and every foreign key inside the organization is mapped to them; other columns, natural keys included, are kept. Resumable: CALL again. Administrators only.';
COMMENT ON FUNCTION tenancy._import_rows(oid, uuid, jsonb) IS 'Internal: inserts rows of an import into a tenant table, as the table''s owner.';
COMMENT ON PROCEDURE tenancy.erase_organization(uuid, integer, interval) IS
  'Delete every row of a deactivated organization from every tenant table (children first, batches with a COMMIT each, as each table''s owner), then its invitations, memberships and the organization; verifies that no row is left and completes its record in tenancy.erasures. Resumable: CALL again. Administrators only.';
COMMENT ON FUNCTION tenancy.organization_usage() IS
  'Rows and estimated bytes per organization and tenant table. Bytes: the table''s total size (heap, TOAST, indexes) shared in proportion to rows. Administrators see every organization; others the rows they may read.';
COMMENT ON FUNCTION tenancy.export_organization(uuid) IS
  'Every row of an organization from every tenant table, parents first, from one snapshot, as JSON lines: a header (the organization, the tables and their columns), one [table index, values...] line per row, an end line with the counts. Owners of the organization and administrators.';
COMMENT ON PROCEDURE tenancy.import_organization(regclass, integer) IS
  'Load an export (its lines in a table with columns n, line) into this database: creates the organization with its id, inserts the rows with their ids, parents first, in batches with a COMMIT each, as each table''s owner. Resumable: CALL again. Administrators only.';
COMMENT ON FUNCTION tenancy.lookup_cache_size() IS
  'How many membership answers this session holds in memory. They are forgotten whenever a change to memberships, organizations or roles commits.';
COMMENT ON FUNCTION tenancy.distribution_plan(regclass, integer) IS
  'The statements tenancy.distribute (one table) or distribute_all (tbl NULL: every tenant table) would run on Citus, without running them. Checks that keys include the tenant column.';
COMMENT ON FUNCTION tenancy.distribute(regclass, integer) IS
  'Citus: makes the catalog reference tables, switches the table''s policies to the subquery-free signed form, and distributes it by its tenant column, co-located with the other tenant tables. Returns what it ran.';
COMMENT ON FUNCTION tenancy.distribute_all(integer) IS
  'tenancy.distribute for every registered tenant table, parents before children. Returns what it ran.';
COMMENT ON FUNCTION tenancy._distribute(oid, integer, boolean) IS
  'Internal: the work of distribution_plan (apply false), distribute and distribute_all.';
COMMENT ON FUNCTION tenancy._citus_backfill_check(oid) IS
  'Internal: refuses (0A000) to backfill a table on Citus once the catalog is distributed (the foreign key the backfill adds would make Citus recreate the table under another oid).';
COMMENT ON FUNCTION tenancy._is_member_of(uuid) IS
  'Internal: is the current user a member of the organization? The catalog''s organizations policy on Citus (no subquery).';
COMMENT ON FUNCTION tenancy.signed_organization_id(text, text) IS
  'Policies of distributed tables: the organization in the signed context (tenancy.context) if tenancy.set_organization signed it in this transaction for the current user and role, and the role there grants the privilege; else NULL.';
COMMENT ON FUNCTION tenancy.signed_organization_slug(text, text) IS
  'signed_organization_id, as the organization''s slug (text tenant columns).';
COMMENT ON FUNCTION tenancy.operate(text) IS
  'Operator mode: a tenancy administrator acting as itself (no user set) acts across every organization for the rest of this transaction, for operations and validation; logged in migration_log with the reason. Ends at COMMIT/ROLLBACK, when its savepoint is rolled back, or when a user is set.';
COMMENT ON FUNCTION tenancy.operating() IS
  'True when this transaction entered operator mode (tenancy.operate) and the role running the statement, and the one outside every SECURITY DEFINER function, are tenancy administrators and no user is set.';
COMMENT ON FUNCTION tenancy.allow_login_lookup(regclass, name, name[], regrole) IS
  'Login before any tenant context: members of grantee may read these columns of the table''s rows by key_column with tenancy.login_lookup, across organizations, and nothing else. Table owners only; built-in column types; logged.';
COMMENT ON FUNCTION tenancy._login_lookup(oid, text) IS
  'Internal: the work of login_lookup.';
COMMENT ON FUNCTION tenancy.revoke_login_lookup(regclass) IS
  'Forbid login lookups on the table again (seen by the next statement of every session). Table owners only; logged.';
COMMENT ON FUNCTION tenancy.login_lookup(regclass, text) IS
  'Login before any tenant context: the columns allow_login_lookup named, as JSON, of the rows whose key column equals key (at most 100), for a member of the role it named; 42501 for anybody else.';
COMMENT ON FUNCTION tenancy.current_user_id() IS
  'The acting user: tenancy.user_id, else the sub claim of request.jwt.claims, each only when written in this transaction. NULL when there is none. With bigint or text user ids: 42804 when there is one (use current_user_id_text()).';
COMMENT ON FUNCTION tenancy.current_organization_id() IS
  'The organization this transaction acts for: set_organization(), else the JWT organization_id claim, else the user''s default; only if the user is an active member. NULL otherwise (matches no rows).';
COMMENT ON FUNCTION tenancy.current_organization_slug() IS
  'The slug of current_organization_id(), for tenant columns that store slugs (text).';
COMMENT ON FUNCTION tenancy.set_organization(uuid) IS
  'Choose the organization for the rest of this transaction. Refuses (42501) unless the current user is an active member.';
COMMENT ON FUNCTION tenancy.set_organization() IS
  'Choose the organization the context names without a choice (the JWT organization_id claim, else the user''s default organization) for the rest of the transaction, with the checks of set_organization(uuid); NULL when there is none. On Citus only a chosen organization reaches distributed tables: PostgREST''s db-pre-request.';
COMMENT ON FUNCTION tenancy.set_organization(text) IS
  'set_organization by slug (a value that reads as a uuid is an id). The slug is looked up as the caller; refuses (42501) unless the current user is an active member.';
COMMENT ON FUNCTION tenancy.get_user_organization_id(uuid) IS
  'The user''s default active organization, else the earliest active one, else NULL.';
COMMENT ON FUNCTION tenancy.validate_client_access(uuid, uuid) IS
  'True only when the user is an active member of the organization and the organization is active.';
COMMENT ON FUNCTION tenancy.validate_client_data_integrity() IS
  'One row per registered tenant table, each read once: total rows, NULL tenant values, tenant values naming no organization, rows pointing at another tenant''s row through a foreign key; NOT NULL, validated FK to organizations, index leading with the tenant column, RLS enabled and forced and a policy for every command (on every partition too); saw_every_row: no row was hidden from the scan (an administrator''s scan bypasses RLS when it can run no code of the table''s owner); ok when all hold. A table the caller may not read is reported, not read.';
COMMENT ON FUNCTION tenancy.validate_client_data_integrity(regclass) IS
  'validate_client_data_integrity() for one registered tenant table.';
COMMENT ON FUNCTION tenancy.policy_organization_id(text) IS
  'For context-mode policies: current_organization_id() if the user''s role there grants the privilege (read, write, delete); else NULL (no rows).';
COMMENT ON FUNCTION tenancy.policy_organization_slug(text) IS
  'policy_organization_id(privilege) as the organization''s slug, for text tenant columns.';
COMMENT ON FUNCTION tenancy.policy_organization_ids(text) IS
  'For membership-mode policies: the organization chosen for the transaction, else every active organization of the user, where the user''s role grants the privilege; in operator mode (tenancy.operate) without a chosen organization, every organization. Empty: no rows.';
COMMENT ON FUNCTION tenancy.policy_organization_slugs(text) IS
  'policy_organization_ids(privilege) as slugs, for text tenant columns.';
COMMENT ON FUNCTION tenancy.isolation_sql(regclass, name, text, name[]) IS
  'The DDL enable_isolation would run now for these arguments, without running it: for review or a migration file. mode NULL: the table''s recorded mode, else context.';
COMMENT ON FUNCTION tenancy.enable_isolation(regclass, name, text, name[], boolean) IS
  'Isolate a table by its tenant column: enable and force RLS, boundary and access policies for every command, a default for the column; registers and logs it. Returns the DDL it ran. Idempotent. Modes: context (the default for a new table: the organization the transaction acts for, set_organization, the JWT claim or the user''s default organization; an equality the planner treats as a constant, so the (tenant, created_at) index order serves list pages) and membership (every organization of the user unless one is chosen); NULL keeps a table''s recorded mode. Refuses (55000) a table whose backfill is unfinished or that has rows without an organization, unless allow_incomplete => true.';
COMMENT ON FUNCTION tenancy._owner_null_check(oid, jsonb) IS
  'Internal: whether a column of a table holds a NULL; runs only as the table''s owner (through tenancy._as_owner).';
COMMENT ON FUNCTION tenancy._incomplete(oid, name) IS
  'Internal: why isolating a table now would hide rows from everyone (an unfinished backfill, NULL tenant columns), or NULL.';
COMMENT ON FUNCTION tenancy.disable_isolation(regclass) IS
  'Remove exactly what enable_isolation created on a table (policies, RLS flags it set, the default); hand-written policies stay. Returns the DDL it ran.';
COMMENT ON FUNCTION tenancy.enable_isolation_all(name, name, text, name[], boolean) IS
  'enable_isolation for every table of a schema that has the tenant column, all or nothing; one row per relation saying what was done or skipped, and why. A table with an unfinished backfill or rows without an organization stops it (55000) unless allow_incomplete => true, which isolates it and says INCOMPLETE in its row.';
COMMENT ON FUNCTION tenancy._tenant_column_kind(oid) IS 'Internal: the one rule for a tenant column''s type: uuid (organization id) or text (slug: text, varchar, char), also through a domain; NULL otherwise.';
COMMENT ON FUNCTION tenancy._isolation(oid, text, text, text[], boolean) IS
  'Internal: the work of isolation_sql and enable_isolation.';
COMMENT ON FUNCTION tenancy._disable_isolation(oid) IS
  'Internal: the work of disable_isolation.';
COMMENT ON FUNCTION tenancy.create_organization(text, text, uuid, jsonb, uuid) IS
  'Create an organization (tenancy administrators only); optionally with a fixed id and an owner. Idempotent for the same id, slug and name.';
COMMENT ON FUNCTION tenancy.rename_organization(uuid, text, text) IS
  'Rename an organization, and change its slug when given. Needs the manage_organization right.';
COMMENT ON FUNCTION tenancy.deactivate_organization(uuid) IS
  'Deactivate an organization: its members lose access to its rows. Needs the manage_organization right.';
COMMENT ON FUNCTION tenancy.add_member(uuid, uuid, text, boolean) IS
  'Add a user to an organization with a role. Returns false when the same membership already existed. Needs manage_members.';
COMMENT ON FUNCTION tenancy.remove_member(uuid, uuid) IS
  'Remove a user from an organization (never its last owner). Needs manage_members.';
COMMENT ON FUNCTION tenancy.change_role(uuid, uuid, text) IS
  'Change a member''s role (never demoting the last owner). Returns false when unchanged. Needs manage_members.';
COMMENT ON FUNCTION tenancy.add_member(uuid, text, text, boolean) IS
  'add_member for a user id of this database''s type (uuid, bigint or text), given as text: tenancy.add_member(org, ''auth0|abc'', ''member'').';
COMMENT ON FUNCTION tenancy.remove_member(uuid, text) IS
  'remove_member for a user id of this database''s type (uuid, bigint or text), given as text.';
COMMENT ON FUNCTION tenancy.change_role(uuid, text, text) IS
  'change_role for a user id of this database''s type (uuid, bigint or text), given as text.';
COMMENT ON FUNCTION tenancy.set_user_id_type(text) IS
  'Choose the type of user ids in this database: uuid (the default), bigint or text. Tenancy administrators only, before any membership or invitation exists (55000). Returns false when unchanged.';
COMMENT ON FUNCTION tenancy._op_set_user_id_type(jsonb, oid, boolean, text) IS
  'Internal: the work of set_user_id_type (the catalog''s user id columns and the policies comparing them).';
COMMENT ON FUNCTION tenancy._user_policies_sql(text) IS
  'Internal: the catalog policies comparing user ids with the acting user, for a user id type.';
COMMENT ON FUNCTION tenancy._user_id(text) IS
  'Internal: the canonical form of a user id of this database''s type (uuid lower-case hyphenated, bigint decimal, text as given); 22P02 otherwise.';
COMMENT ON FUNCTION tenancy.user_id_type() IS
  'The type of user ids in this database: uuid (the default), bigint or text (see set_user_id_type).';
COMMENT ON FUNCTION tenancy.current_user_id_text() IS
  'The acting user in any user id type, as text (uuid lower-case hyphenated, bigint decimal, text as given): tenancy.user_id, else the JWT sub claim, each only when written in this transaction. NULL when there is none.';
COMMENT ON FUNCTION tenancy.get_user_organization_id(text) IS
  'get_user_organization_id for a user id of this database''s type, given as text (22P02 when it is not one).';
COMMENT ON FUNCTION tenancy.validate_client_access(text, uuid) IS
  'validate_client_access for a user id of this database''s type, given as text; false for a value that is not one.';
COMMENT ON FUNCTION tenancy.create_invitation(uuid, text, text, interval) IS
  'Invite an email address to an organization. Returns the token once; only its SHA-256 is stored.';
COMMENT ON FUNCTION tenancy.accept_invitation(text) IS
  'Accept an invitation token as the current user; returns the organization id. A token works once, before it expires.';
COMMENT ON FUNCTION tenancy.register_table(regclass, name) IS
  'Register a table under tenancy with its tenant column (uuid organization id, or text slug). Table owners only.';
COMMENT ON FUNCTION tenancy._privileged(text, jsonb) IS
  'Internal: the door through which the management functions change the catalog as its owner.';
COMMENT ON FUNCTION tenancy._lookups_changed_trigger() IS
  'Internal: statement trigger on memberships, organizations and roles; makes every session forget its memoized membership answers when the change commits.';

----------------------------------------------------------------------------------------------
-- Everything else 0.3.0 changed (security hardening, issue 14).
----------------------------------------------------------------------------------------------

-- The memo's trigger is a C trigger function (nobody can call it to flush every memo).
ALTER FUNCTION tenancy._lookups_changed_trigger() SET search_path = pg_catalog, pg_temp;

-- No REFERENCES on slug for everybody: a foreign key check bypasses row-level security.
REVOKE REFERENCES (slug) ON tenancy.organizations FROM PUBLIC;

-- A table owner sees its own tables' conversion state; an administrator sees every table.
ALTER TABLE tenancy.tenant_tables ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_tables_of_table_owner ON tenancy.tenant_tables FOR SELECT
    USING (EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                    WHERE c.oid OPERATOR(pg_catalog.=) tenant_tables.relid::pg_catalog.oid
                      AND pg_catalog.pg_has_role(c.relowner, 'USAGE'))
           OR (SELECT pg_catalog.has_table_privilege('tenancy.organizations', 'UPDATE')));

-- Issue 15 (user ids that are not uuids): the operations take the acting user as text, so they
-- were created again above (with operate and record_login_lookup, new in 0.3.0). Like every
-- operation they belong to the catalog owner, and nobody else may execute them.
DO $$
DECLARE
    f pg_catalog.regprocedure;
    v_owner pg_catalog.regrole := (SELECT c.relowner::pg_catalog.regrole FROM pg_catalog.pg_class c
                                    WHERE c.oid OPERATOR(pg_catalog.=) 'tenancy.organizations'::pg_catalog.regclass);
BEGIN
    FOR f IN SELECT p.oid::pg_catalog.regprocedure FROM pg_catalog.pg_proc p
              WHERE p.pronamespace OPERATOR(pg_catalog.=) 'tenancy'::pg_catalog.regnamespace::pg_catalog.oid
                AND p.proname OPERATOR(pg_catalog.~~) '\_op\_%'
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
        EXECUTE pg_catalog.format('ALTER FUNCTION %s OWNER TO %s', f, v_owner);
    END LOOP;
END $$;

-- No table of schema tenancy readable by PUBLIC without row-level security (issue 15.11).
ALTER TABLE tenancy.roles ENABLE ROW LEVEL SECURITY;
CREATE POLICY roles_readable_by_all ON tenancy.roles FOR SELECT USING (true);
ALTER TABLE tenancy.lint_ignores ENABLE ROW LEVEL SECURITY;
CREATE POLICY lint_ignores_readable_by_all ON tenancy.lint_ignores FOR SELECT USING (true);

-- The runbooks' view of the log (issue 15.10): phase and created_at, computed from the entry.
ALTER TABLE tenancy.migration_log
    ADD COLUMN phase text GENERATED ALWAYS AS (details OPERATOR(pg_catalog.->>) 'phase') STORED,
    ADD COLUMN created_at timestamptz GENERATED ALWAYS AS (started_at) STORED;

-- Login before any tenant context (issue 15.9).
CREATE TABLE tenancy.login_lookups (
    relid       regclass PRIMARY KEY,
    key_column  name NOT NULL,
    columns     name[] NOT NULL CHECK (pg_catalog.cardinality(columns) OPERATOR(pg_catalog.>) 0),
    grantee     regrole NOT NULL,
    created_by  name NOT NULL DEFAULT current_user,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE tenancy.login_lookups IS
  'Login before any tenant context: the columns of a table that members of grantee may read by key_column (tenancy.login_lookup), whatever row-level security hides.';
SELECT pg_catalog.pg_extension_config_dump('tenancy.login_lookups', '');
-- Owned, like every catalog table, by the catalog owner (not necessarily the role running the update).
DO $$
BEGIN
    EXECUTE pg_catalog.format('ALTER TABLE tenancy.login_lookups OWNER TO %s',
        (SELECT c.relowner::pg_catalog.regrole FROM pg_catalog.pg_class c
          WHERE c.oid OPERATOR(pg_catalog.=) 'tenancy.organizations'::pg_catalog.regclass));
END $$;

-- The tenant lifecycle (issue 20): the erasure, import and clone records, the erase's progress
-- view and their privileges, as sql/lifecycle.sql creates them, owned by the catalog owner.
CREATE TABLE tenancy.erasures (
    id                   uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    organization_id      uuid NOT NULL,
    organization_slug    text NOT NULL,
    status               text NOT NULL DEFAULT 'running'
                         CHECK (status OPERATOR(pg_catalog.=) ANY (ARRAY['running', 'completed'])),
    tables               regclass[] NOT NULL,
    table_names          text[] NOT NULL,
    tables_done          integer NOT NULL DEFAULT 0,
    rows_deleted         jsonb NOT NULL DEFAULT '{}',
    catalog_rows_deleted jsonb NOT NULL DEFAULT '{}',
    verified             boolean NOT NULL DEFAULT false,
    requested_by         name NOT NULL,
    finished_by          name,
    started_at           timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    finished_at          timestamptz
);
CREATE UNIQUE INDEX erasures_running_idx ON tenancy.erasures (organization_id)
    WHERE status OPERATOR(pg_catalog.=) 'running';
COMMENT ON TABLE tenancy.erasures IS
  'One record per erased organization (tenancy.erase_organization): who asked, when, rows deleted per table, and that no row was left. Kept after the organization is gone, for an auditor.';

CREATE TABLE tenancy.imports (
    id                      uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    organization_id         uuid NOT NULL,
    organization_slug       text NOT NULL,
    source                  text NOT NULL,
    status                  text NOT NULL DEFAULT 'running'
                            CHECK (status OPERATOR(pg_catalog.=) ANY (ARRAY['running', 'completed'])),
    header                  jsonb NOT NULL,
    lines_done              bigint NOT NULL DEFAULT 0,
    rows_imported           jsonb NOT NULL DEFAULT '{}',
    requested_by            name NOT NULL,
    started_at              timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    finished_at             timestamptz
);
CREATE UNIQUE INDEX imports_running_idx ON tenancy.imports (organization_id)
    WHERE status OPERATOR(pg_catalog.=) 'running';
COMMENT ON TABLE tenancy.imports IS
  'One record per import of an export (tenancy.import_organization): its source, the export''s header, progress (lines done) and rows per table.';

CREATE TABLE tenancy.clones (
    id                uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    source_id         uuid NOT NULL,
    organization_id   uuid NOT NULL,
    organization_slug text NOT NULL,
    status            text NOT NULL DEFAULT 'running'
                      CHECK (status OPERATOR(pg_catalog.=) ANY (ARRAY['running', 'completed'])),
    tables            regclass[] NOT NULL,
    table_names       text[] NOT NULL,
    tables_done       integer NOT NULL DEFAULT 0,
    last_key          text,
    rows_copied       jsonb NOT NULL DEFAULT '{}',
    requested_by      name NOT NULL,
    started_at        timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    finished_at       timestamptz
);
CREATE UNIQUE INDEX clones_running_idx ON tenancy.clones (organization_id)
    WHERE status OPERATOR(pg_catalog.=) 'running';
COMMENT ON TABLE tenancy.clones IS
  'One record per clone of an organization (tenancy.clone_organization): source, new organization, progress (tables done, last key copied) and rows per table.';

-- Old primary key -> new primary key of every row a running clone copied (deleted when it ends).
CREATE TABLE tenancy.clone_keys (
    clone_id uuid NOT NULL REFERENCES tenancy.clones (id) ON DELETE CASCADE,
    relid    oid NOT NULL,
    old_key  text NOT NULL,
    new_key  text NOT NULL,
    PRIMARY KEY (clone_id, relid, old_key)
);
COMMENT ON TABLE tenancy.clone_keys IS
  'The key map of running clones: each copied row''s old and new primary key, by table; foreign keys of later tables are mapped through it.';

SELECT pg_catalog.pg_extension_config_dump('tenancy.erasures', '');
SELECT pg_catalog.pg_extension_config_dump('tenancy.imports', '');
SELECT pg_catalog.pg_extension_config_dump('tenancy.clones', '');
SELECT pg_catalog.pg_extension_config_dump('tenancy.clone_keys', '');

CREATE VIEW tenancy.erase_progress WITH (security_invoker = true) AS
SELECT e.organization_id, e.organization_slug, t.ord::integer AS position, t.name AS table_name,
       coalesce((e.rows_deleted OPERATOR(pg_catalog.->>) t.name)::bigint, 0) AS rows_deleted,
       t.ord OPERATOR(pg_catalog.<=) e.tables_done AS done, e.started_at
  FROM tenancy.erasures e CROSS JOIN LATERAL pg_catalog.unnest(e.table_names) WITH ORDINALITY t(name, ord)
 WHERE e.status OPERATOR(pg_catalog.=) 'running';
COMMENT ON VIEW tenancy.erase_progress IS
  'Running erasures, one row per tenant table in erase order: rows deleted so far and whether the table is done.';

GRANT SELECT ON tenancy.erasures, tenancy.imports, tenancy.clones, tenancy.clone_keys, tenancy.erase_progress TO PUBLIC;
ALTER TABLE tenancy.erasures ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenancy.imports ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenancy.clones ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenancy.clone_keys ENABLE ROW LEVEL SECURITY;
CREATE POLICY erasures_of_administrators ON tenancy.erasures FOR SELECT
    USING ((SELECT pg_catalog.has_table_privilege('tenancy.organizations', 'UPDATE')));
CREATE POLICY imports_of_administrators ON tenancy.imports FOR SELECT
    USING ((SELECT pg_catalog.has_table_privilege('tenancy.organizations', 'UPDATE')));
CREATE POLICY clones_of_administrators ON tenancy.clones FOR SELECT
    USING ((SELECT pg_catalog.has_table_privilege('tenancy.organizations', 'UPDATE')));
CREATE POLICY clone_keys_of_administrators ON tenancy.clone_keys FOR SELECT
    USING ((SELECT pg_catalog.has_table_privilege('tenancy.organizations', 'UPDATE')));
DO $$
DECLARE
    t pg_catalog.text;
    v_owner pg_catalog.regrole := (SELECT c.relowner::pg_catalog.regrole FROM pg_catalog.pg_class c
                                    WHERE c.oid OPERATOR(pg_catalog.=) 'tenancy.organizations'::pg_catalog.regclass);
BEGIN
    FOREACH t IN ARRAY ARRAY['erasures', 'imports', 'clones', 'clone_keys'] LOOP
        EXECUTE pg_catalog.format('ALTER TABLE tenancy.%I OWNER TO %s', t, v_owner);
    END LOOP;
END $$;
-- (The new catalog operations are executable by nobody but the catalog owner: the loop over every
-- _op_ function above covers them.)

-- The backfill's progress view (dropped at the top: it reads the record through the functions
-- re-created above).
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
COMMENT ON VIEW tenancy.backfill_progress IS
  'One row per table converted by tenancy.backfill: phase, rows filled, percent, rate, ETA, lock retries, whether a session is running it. \watch it from another session.';
GRANT SELECT ON tenancy.backfill_progress TO PUBLIC;
