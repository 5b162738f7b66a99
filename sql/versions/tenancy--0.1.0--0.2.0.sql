-- tenancy 0.1.0 -> 0.2.0. Run by ALTER EXTENSION tenancy UPDATE, never by hand:
\echo Use "ALTER EXTENSION tenancy UPDATE TO '0.2.0'" to load this file. \quit

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


-- Membership answers memoized per session, forgotten when memberships, organizations or roles
-- change (see src/cache.rs).
CREATE FUNCTION tenancy."_lookups_changed"() RETURNS void
STRICT VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_lookups_changed_wrapper';
CREATE FUNCTION tenancy."lookup_cache_size"() RETURNS bigint /* i64 */
STRICT VOLATILE PARALLEL RESTRICTED
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'lookup_cache_size_wrapper';
COMMENT ON FUNCTION tenancy.lookup_cache_size() IS
  'How many membership answers this session holds in memory. They are forgotten whenever a change to memberships, organizations or roles commits.';
COMMENT ON FUNCTION tenancy._lookups_changed() IS
  'Internal: makes every session forget its memoized membership answers when the current transaction commits (called by the lookups_changed triggers).';

CREATE FUNCTION tenancy._lookups_changed_trigger() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tenancy._lookups_changed();
    RETURN NULL;
END $$;
COMMENT ON FUNCTION tenancy._lookups_changed_trigger() IS
  'Internal: statement trigger on memberships, organizations and roles; makes every session forget its memoized membership answers when the change commits.';
CREATE TRIGGER lookups_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.memberships
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy._lookups_changed_trigger();
CREATE TRIGGER lookups_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.organizations
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy._lookups_changed_trigger();
CREATE TRIGGER lookups_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.roles
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy._lookups_changed_trigger();

-- Scale-out on Citus (issue 8, src/citus.rs, sql/citus.sql): the signed tenant context for the
-- policies of distributed tables, and distribute / distribute_all / distribution_plan.
CREATE FUNCTION tenancy."_distribute"(
	"tbl" oid, /* Option < pg_sys :: Oid > */
	"shard_count" INT, /* Option < i32 > */
	"apply" bool /* Option < bool > */
) RETURNS SETOF TEXT /* String */
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_distribute_wrapper';
CREATE FUNCTION tenancy."signed_organization_id"(
	"token" TEXT, /* & str */
	"privilege" TEXT /* & str */
) RETURNS uuid /* Option < Uuid > */
STRICT STABLE PARALLEL RESTRICTED
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'signed_organization_id_wrapper';
CREATE FUNCTION tenancy."signed_organization_slug"(
	"token" TEXT, /* & str */
	"privilege" TEXT /* & str */
) RETURNS TEXT /* Option < String > */
STRICT STABLE PARALLEL RESTRICTED
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'signed_organization_slug_wrapper';

-- The catalog's organizations policy, without a subquery (Citus refuses subqueries in the policies
-- of its tables): distribution_plan() switches the policy to this when the catalog becomes
-- reference tables. It reads memberships only (never organizations, whose policy calls it).
CREATE FUNCTION tenancy._is_member_of(organization_id uuid) RETURNS boolean
LANGUAGE sql STABLE PARALLEL RESTRICTED SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM tenancy.memberships m
                    WHERE m.organization_id = $1 AND m.user_id = tenancy.current_user_id())
$$;

CREATE FUNCTION tenancy.distribution_plan(tbl regclass DEFAULT NULL, shard_count integer DEFAULT NULL)
RETURNS SETOF text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT tenancy._distribute(tbl, shard_count, false)
$$;

CREATE FUNCTION tenancy.distribute(tbl regclass, shard_count integer DEFAULT NULL) RETURNS SETOF text
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'tenancy.distribute: tbl must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass a tenant table, or call tenancy.distribute_all() for every one.';
    END IF;
    RETURN QUERY SELECT tenancy._distribute(tbl, shard_count, true);
END $$;

CREATE FUNCTION tenancy.distribute_all(shard_count integer DEFAULT NULL) RETURNS SETOF text
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT tenancy._distribute(NULL, shard_count, true)
$$;

COMMENT ON FUNCTION tenancy.distribution_plan(regclass, integer) IS
  'The statements tenancy.distribute (one table) or distribute_all (tbl NULL: every tenant table) would run on Citus, without running them. Checks that keys include the tenant column.';
COMMENT ON FUNCTION tenancy.distribute(regclass, integer) IS
  'Citus: makes the catalog reference tables, switches the table''s policies to the subquery-free signed form, and distributes it by its tenant column, co-located with the other tenant tables. Returns what it ran.';
COMMENT ON FUNCTION tenancy.distribute_all(integer) IS
  'tenancy.distribute for every registered tenant table, parents before children. Returns what it ran.';
COMMENT ON FUNCTION tenancy._distribute(oid, integer, boolean) IS
  'Internal: the work of distribution_plan (apply false), distribute and distribute_all.';
COMMENT ON FUNCTION tenancy._is_member_of(uuid) IS
  'Internal: is the current user a member of the organization? The catalog''s organizations policy on Citus (no subquery).';
COMMENT ON FUNCTION tenancy.signed_organization_id(text, text) IS
  'Policies of distributed tables: the organization in the signed context (tenancy.context) if tenancy.set_organization signed it in this transaction for the current user and role, and the role there grants the privilege; else NULL.';
COMMENT ON FUNCTION tenancy.signed_organization_slug(text, text) IS
  'signed_organization_id, as the organization''s slug (text tenant columns).';

-- The resume hint names the tenant column when it is not organization_id.
CREATE OR REPLACE FUNCTION tenancy._backfill_begin(
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
           OR p_col::text <> v_rec->>'tenant_column' THEN
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
        ELSIF v_pcol.atttypid NOT IN ('uuid'::regtype, 'text'::regtype) THEN
            RAISE EXCEPTION 'tenancy.backfill: user column %.% has type %; tenancy user ids are uuids', v_name,
                            quote_ident(p_user_col), format_type(v_pcol.atttypid, NULL)
                USING ERRCODE = 'datatype_mismatch';
        END IF;
        IF NOT has_table_privilege('tenancy.organizations', 'UPDATE') THEN
            RAISE EXCEPTION 'tenancy.backfill: deriving the organization from a user column reads every user''s memberships'
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Run it as a tenancy administrator (the role that owns the tenancy catalog).';
        END IF;
        v_lookup := format(CASE p_type WHEN 'uuid' THEN 'SELECT tenancy.get_user_organization_id(($1->>%L)::uuid)::text'
                           ELSE 'SELECT o.slug FROM tenancy.organizations o WHERE o.id = tenancy.get_user_organization_id(($1->>%L)::uuid)' END,
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
