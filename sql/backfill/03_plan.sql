----------------------------------------------------------------------------------------------
-- Planning: check the options and record them (first CALL), or check a resumed CALL agrees
----------------------------------------------------------------------------------------------

-- The checks of every CALL, before anything is read or changed: a table (not a view, not a
-- partition) the caller owns, sane options, and for a text tenant column the REFERENCES on
-- tenancy.organizations (slug) its foreign key needs.
CREATE FUNCTION tenancy._backfill_check_call(
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

-- A resumed CALL: the source of the organization may be left out, but not changed; the record
-- takes this CALL's options, session and start.
CREATE FUNCTION tenancy._backfill_resume(
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

-- The organization of each row read from its parent row (parent =>): the one foreign key to the
-- parent, whose tenant column must exist with the type of this one (p_atttypid, when the column
-- exists here). Returns the source and the lookup: the fill trigger's query.
CREATE FUNCTION tenancy._backfill_parent_source(
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

-- The organization of each row from the user in one of its columns (user_column =>): that
-- user's organization (tenancy.get_user_organization_id), which only an administrator may read.
-- Returns the source and the lookup: the fill trigger's query.
CREATE FUNCTION tenancy._backfill_user_source(p_rel oid, p_name text, p_type text, p_user_col name,
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

-- Where each row's organization comes from, checked: the fixed organization (organization_id =>,
-- also the fallback of the others), the parent row or the user column. Returns the source and
-- the lookup (the fill trigger's query).
CREATE FUNCTION tenancy._backfill_source(
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

-- The first step of every CALL (as the caller, who must own the table): the call checked
-- (tenancy._backfill_check_call), then either a resumed backfill's record updated
-- (tenancy._backfill_resume) or a new one planned: the tenant column's type, the source of the
-- organization (tenancy._backfill_source) and what the rollback needs to know, recorded.
CREATE FUNCTION tenancy._backfill_begin(
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
