-- The tenant lifecycle after the conversion: erase an organization (GDPR art. 17), export it
-- (art. 20), import (restore) it into another database, and count its usage. The statements that
-- touch user tables are in src/lifecycle.rs (they run as each table's owner); this file holds the
-- records, the bookkeeping (catalog operations behind tenancy._privileged), the COMMITting
-- procedures and the public API. See docs/lifecycle.md.

----------------------------------------------------------------------------------------------
-- Records
----------------------------------------------------------------------------------------------

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

----------------------------------------------------------------------------------------------
-- Catalog operations (run as the catalog owner through tenancy._privileged)
----------------------------------------------------------------------------------------------

CREATE FUNCTION tenancy._lifecycle_admin(p_is_admin boolean, p_what text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT p_is_admin THEN
        RAISE EXCEPTION 'tenancy: only a tenancy administrator may %', p_what
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Run this as a role with UPDATE on tenancy.organizations (the role that installed tenancy). '
                         'An organization''s owner may deactivate it and export it; the erase itself is an administrator''s act.';
    END IF;
END $$;

-- Whether the erase deletes tenant table p_table's rows with its parents' (src/lifecycle.rs,
-- cascaded_children): a plain table that no foreign key references, with at least one foreign key
-- to another tenant table, every one of them ON DELETE CASCADE. Deleting a batch of a parent's rows
-- then deletes their rows of p_table too (the key's own action, which would otherwise run for each
-- parent row and find nothing), and p_table's own turn, last, deletes what no parent took (rows
-- whose key is NULL, rows written since).
CREATE FUNCTION tenancy._erase_cascaded(p_table regclass) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT c.relkind = 'r'
       AND NOT EXISTS (SELECT 1 FROM pg_constraint r WHERE r.contype = 'f' AND r.confrelid = c.oid)
       AND EXISTS (SELECT 1 FROM pg_constraint f JOIN tenancy.tenant_tables pt ON pt.relid::oid = f.confrelid
                    WHERE f.contype = 'f' AND f.conrelid = c.oid)
       AND NOT EXISTS (SELECT 1 FROM pg_constraint f JOIN tenancy.tenant_tables pt ON pt.relid::oid = f.confrelid
                        WHERE f.contype = 'f' AND f.conrelid = c.oid AND f.confdeltype <> 'c')
      FROM pg_class c WHERE c.oid = p_table::oid
$$;

-- The tenant tables that exist, in erase order: children before parents, and the tables whose
-- rows go with their parents' (tenancy._erase_cascaded) last.
CREATE FUNCTION tenancy._erase_order() RETURNS regclass[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(array_agg(t ORDER BY coalesce(tenancy._erase_cascaded(t), false), n DESC), '{}')
      FROM unnest(tenancy._fk_order(ARRAY(SELECT tt.relid FROM tenancy.tenant_tables tt
                                            JOIN pg_class c ON c.oid = tt.relid::oid))) WITH ORDINALITY u(t, n)
$$;

CREATE FUNCTION tenancy._op_erase_begin(a jsonb, caller oid, is_admin boolean, actor text)
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

-- {organization_id, rows: {table: n, ...}, tables_done} or {organization_id, tables: [oid...], tables_done}.
CREATE FUNCTION tenancy._op_erase_progress(a jsonb, caller oid, is_admin boolean, actor text)
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

-- The last step, in the transaction that verified that no row is left: the organization's
-- invitations, memberships and the organization itself go, and the record is completed.
CREATE FUNCTION tenancy._op_erase_finish(a jsonb, caller oid, is_admin boolean, actor text)
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

-- A lifecycle operation on rows, for the log: {operation, organization_id, ...}.
CREATE FUNCTION tenancy._op_log_lifecycle(a jsonb, caller oid, is_admin boolean, actor text)
RETURNS jsonb LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT a->>'operation' = ANY (ARRAY['export_organization']) THEN
        RAISE EXCEPTION 'tenancy: unknown lifecycle operation %', a->>'operation' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM tenancy._log(a->>'operation', NULL, 'succeeded', (a - 'operation') || jsonb_build_object('actor', actor),
                         p_caller => caller);
    RETURN '{}';
END $$;

----------------------------------------------------------------------------------------------
-- Erase
----------------------------------------------------------------------------------------------

-- Starts (or resumes) the erasure of p_org: checks, the record, and the refusal when rows
-- outside the organization reference its rows.
CREATE FUNCTION tenancy._erase_begin(p_org uuid, p_batch_size integer) RETURNS jsonb
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

-- One step: one batch of the current table, or, when every table is done, the verification
-- and the end (in the same transaction).
CREATE FUNCTION tenancy._erase_step(p_org uuid, p_batch_size integer, p_pause interval,
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

-- No SET clause and not SECURITY DEFINER (either forbids COMMIT): names are schema-qualified
-- and the procedure uses no operators. It runs as the caller, a tenancy administrator.
CREATE PROCEDURE tenancy.erase_organization(organization_id uuid, batch_size integer DEFAULT 50000,
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

CREATE VIEW tenancy.erase_progress WITH (security_invoker = true) AS
SELECT e.organization_id, e.organization_slug, t.ord::integer AS position, t.name AS table_name,
       coalesce((e.rows_deleted OPERATOR(pg_catalog.->>) t.name)::bigint, 0) AS rows_deleted,
       t.ord OPERATOR(pg_catalog.<=) e.tables_done AS done, e.started_at
  FROM tenancy.erasures e CROSS JOIN LATERAL pg_catalog.unnest(e.table_names) WITH ORDINALITY t(name, ord)
 WHERE e.status OPERATOR(pg_catalog.=) 'running';
COMMENT ON VIEW tenancy.erase_progress IS
  'Running erasures, one row per tenant table in erase order: rows deleted so far and whether the table is done.';

----------------------------------------------------------------------------------------------
-- Usage
----------------------------------------------------------------------------------------------

CREATE FUNCTION tenancy.organization_usage()
RETURNS TABLE (organization_id uuid, organization_slug text, table_name text, rows bigint, bytes bigint)
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(oi.id, os.id), coalesce(oi.slug, os.slug, u.tenant_value), u.table_name, u.rows,
           CASE WHEN u.table_rows > 0 THEN (u.table_bytes::numeric * u.rows / u.table_rows)::bigint ELSE 0 END
      FROM tenancy._usage() u
      LEFT JOIN tenancy.organizations oi ON u.column_type = 'uuid' AND oi.id::text = u.tenant_value
      LEFT JOIN tenancy.organizations os ON u.column_type = 'text' AND os.slug = u.tenant_value
     ORDER BY 2, 3
$$;

----------------------------------------------------------------------------------------------
-- Export
----------------------------------------------------------------------------------------------

-- The header line of an export (tenancy.export_organization reads it first, through read-only
-- SPI, with the policies naming p_org for reading): the organization, the tables, and the rows
-- that reference outside it. STABLE: its statements see the snapshot of the export's query.
CREATE FUNCTION tenancy._export_header(p_org uuid, p_tables jsonb) RETURNS text
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

----------------------------------------------------------------------------------------------
-- Import (restore into another database, same ids)
----------------------------------------------------------------------------------------------

-- {organization_id, header, source, tables: [regclass text...]}: creates the organization from the
-- export's header and the import record.
CREATE FUNCTION tenancy._op_import_begin(a jsonb, caller oid, is_admin boolean, actor text)
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

CREATE FUNCTION tenancy._op_import_progress(a jsonb, caller oid, is_admin boolean, actor text)
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

CREATE FUNCTION tenancy._op_import_finish(a jsonb, caller oid, is_admin boolean, actor text)
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

-- The import source is read with the caller's (an administrator's) rights, so nothing in it may
-- run another role's code: it must be a table (not a view, whose functions run as the reader),
-- its columns n an integer and line text, varchar, json or jsonb (built-in types: no type of
-- another role, whose cast to text would run), and, when it has row-level security, owned by the
-- caller (whose own policies those are). 42703 without those columns, 0A000 otherwise. Checked
-- before each step too: the table's owner could change it between two COMMITs.
CREATE FUNCTION tenancy._import_check_source(p_source regclass) RETURNS void
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

-- Every line of an export after its header is JSON, and every row line starts with the index of
-- a table of the header (one read of the lines before anything is written): 22023 naming the
-- first line that is not, so that a damaged file stops the import before it starts.
CREATE FUNCTION tenancy._import_check_lines(p_source regclass, p_header jsonb) RETURNS void
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

-- Reads the export's header and trailer from p_source (columns n: line number, line: the line),
-- checks them and the tables, and starts (or resumes) the import.
CREATE FUNCTION tenancy._import_begin(p_source regclass, p_batch_size integer) RETURNS jsonb
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

-- One step: the next run of up to p_batch_size lines of one table, inserted in one statement.
CREATE FUNCTION tenancy._import_step(p_source regclass, p_org uuid, p_batch_size integer, OUT done boolean)
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

-- No SET clause and not SECURITY DEFINER (either forbids COMMIT): names are schema-qualified
-- and the procedure uses no operators.
CREATE PROCEDURE tenancy.import_organization(source regclass, batch_size integer DEFAULT 5000)
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

----------------------------------------------------------------------------------------------
-- Clone (a copy of an organization in this database, with new keys)
----------------------------------------------------------------------------------------------

-- {source_id, organization_id, name, slug}: creates the new organization and the clone record
-- (or finds the running clone of that source under that slug).
CREATE FUNCTION tenancy._op_clone_begin(a jsonb, caller oid, is_admin boolean, actor text)
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

-- {clone_id, table, keys: [[old, new], ...], last, rows, done}
CREATE FUNCTION tenancy._op_clone_progress(a jsonb, caller oid, is_admin boolean, actor text)
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

CREATE FUNCTION tenancy._op_clone_finish(a jsonb, caller oid, is_admin boolean, actor text)
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

CREATE FUNCTION tenancy._clone_begin(p_source uuid, p_name text, p_slug text, p_organization_id uuid, p_batch_size integer)
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

-- One step: the next batch of the current table, or the end.
CREATE FUNCTION tenancy._clone_step(p_clone uuid, p_batch_size integer, OUT done boolean)
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

-- No SET clause and not SECURITY DEFINER (either forbids COMMIT): names are schema-qualified
-- and the procedure uses no operators.
CREATE PROCEDURE tenancy.clone_organization(source uuid, name text, slug text, organization_id uuid DEFAULT NULL,
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

----------------------------------------------------------------------------------------------
-- Comments and privileges
----------------------------------------------------------------------------------------------

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
ALTER TABLE tenancy.erasures OWNER TO @extowner@;
ALTER TABLE tenancy.imports OWNER TO @extowner@;
ALTER TABLE tenancy.clones OWNER TO @extowner@;
ALTER TABLE tenancy.clone_keys OWNER TO @extowner@;
