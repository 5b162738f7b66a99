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

SELECT pg_catalog.pg_extension_config_dump('tenancy.erasures', '');
SELECT pg_catalog.pg_extension_config_dump('tenancy.imports', '');

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

-- The tenant tables that exist, in erase order (children before parents).
CREATE FUNCTION tenancy._erase_order() RETURNS regclass[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(array_agg(t ORDER BY n DESC), '{}')
      FROM unnest(tenancy._fk_order(ARRAY(SELECT tt.relid FROM tenancy.tenant_tables tt
                                            JOIN pg_class c ON c.oid = tt.relid::oid))) WITH ORDINALITY u(t, n)
$$;

CREATE FUNCTION tenancy._op_erase_begin(a jsonb, caller oid, is_admin boolean, actor uuid)
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

-- {organization_id, table, rows, tables_done} or {organization_id, tables: [oid...], tables_done}.
CREATE FUNCTION tenancy._op_erase_progress(a jsonb, caller oid, is_admin boolean, actor uuid)
RETURNS jsonb LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_org uuid := tenancy._require('organization_id', (a->>'organization_id')::uuid);
    e     record;
BEGIN
    PERFORM tenancy._lifecycle_admin(is_admin, 'erase an organization');
    UPDATE tenancy.erasures
       SET rows_deleted = CASE WHEN a ? 'table'
                               THEN jsonb_set(rows_deleted, ARRAY[a->>'table'],
                                              to_jsonb(coalesce((rows_deleted->>(a->>'table'))::bigint, 0) + (a->>'rows')::bigint))
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
CREATE FUNCTION tenancy._op_erase_finish(a jsonb, caller oid, is_admin boolean, actor uuid)
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
CREATE FUNCTION tenancy._op_log_lifecycle(a jsonb, caller oid, is_admin boolean, actor uuid)
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
    v_n     bigint;
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
        v_n := tenancy._erase_batch(v_tbl, p_org, p_batch_size);
        v_rec := tenancy._privileged('erase_progress', jsonb_build_object(
                     'organization_id', p_org, 'table', e.table_names[e.tables_done + 1], 'rows', v_n,
                     'tables_done', e.tables_done + CASE WHEN v_n < p_batch_size THEN 1 ELSE 0 END));
        SELECT coalesce(sum(value::bigint), 0) INTO v_total FROM jsonb_each_text(v_rec->'rows_deleted');
        RAISE NOTICE 'tenancy.erase_organization %: % % rows deleted%, table % of %; % rows so far, % rows/s',
              e.organization_slug, e.table_names[e.tables_done + 1], (v_rec->'rows_deleted'->>e.table_names[e.tables_done + 1]),
              CASE WHEN v_n < p_batch_size THEN ' (done)' ELSE '' END, e.tables_done + 1, cardinality(e.tables), v_total,
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
CREATE PROCEDURE tenancy.erase_organization(organization_id uuid, batch_size integer DEFAULT 10000,
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

-- The lines of an export (tenancy.export_organization runs it as one query, with the policies
-- naming p_org for reading). STABLE: every statement in it sees the snapshot of that one query.
CREATE FUNCTION tenancy._export_lines(p_org uuid, p_tables jsonb) RETURNS SETOF text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t         record;
    v_outside jsonb := '[]';
    v_rows    jsonb := '{}';
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
    RETURN NEXT json_build_object(
        'format', 'tenancy-export', 'format_version', 1,
        'tenancy_version', (SELECT extversion FROM pg_extension WHERE extname = 'tenancy'),
        'source_database', current_database(),
        'organization', json_build_object('id', o.id, 'name', o.name, 'slug', o.slug, 'settings', o.settings,
                                          'is_active', o.is_active),
        'snapshot', pg_current_snapshot()::text, 'exported_at', statement_timestamp(),
        'tables', (SELECT json_agg(x.relid::regclass::text) FROM jsonb_to_recordset(p_tables) x(relid oid)),
        'outside_references', v_outside)::text;
    FOR t IN SELECT x.relid::regclass AS tbl, x.tenant_column, x.column_type
               FROM jsonb_to_recordset(p_tables) x(relid oid, tenant_column name, column_type text)
    LOOP
        RETURN QUERY EXECUTE format('SELECT json_build_object(''table'', %L, ''row'', to_jsonb(r))::text FROM %s r WHERE r.%I = $1%s',
                                    t.tbl::text, t.tbl, t.tenant_column,
                                    CASE WHEN t.column_type = 'text' THEN '' ELSE '::uuid' END)
                     USING CASE WHEN t.column_type = 'text' THEN o.slug ELSE p_org::text END;
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_rows := v_rows || jsonb_build_object(t.tbl::text, v_n);
    END LOOP;
    RETURN NEXT json_build_object('end', true, 'rows', v_rows)::text;
END $$;

----------------------------------------------------------------------------------------------
-- Import (restore into another database, same ids)
----------------------------------------------------------------------------------------------

-- {organization_id, header, source, tables: [regclass text...]}: creates the organization from the
-- export's header and the import record.
CREATE FUNCTION tenancy._op_import_begin(a jsonb, caller oid, is_admin boolean, actor uuid)
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
            USING ERRCODE = 'duplicate_object',
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

CREATE FUNCTION tenancy._op_import_progress(a jsonb, caller oid, is_admin boolean, actor uuid)
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

CREATE FUNCTION tenancy._op_import_finish(a jsonb, caller oid, is_admin boolean, actor uuid)
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
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = p_source AND attname = 'n' AND NOT attisdropped)
       OR NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = p_source AND attname = 'line' AND NOT attisdropped) THEN
        RAISE EXCEPTION 'tenancy.import_organization: % must have the columns n (line number) and line', p_source
            USING ERRCODE = 'undefined_column',
                  HINT = 'CREATE TABLE export (n bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, line text); then \copy export (line) FROM ''org.jsonl'' (see docs/lifecycle.md).';
    END IF;
    EXECUTE format('SELECT (SELECT line::text::jsonb FROM %1$s ORDER BY n LIMIT 1), (SELECT line::text::jsonb FROM %1$s ORDER BY n DESC LIMIT 1)', p_source)
       INTO v_first, v_last;
    IF v_first IS NULL OR v_first->>'format' IS DISTINCT FROM 'tenancy-export' THEN
        RAISE EXCEPTION 'tenancy.import_organization: % does not start with a tenancy export header', p_source
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Load the file written by tenancy.export_organization, in order.';
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
    SELECT string_agg(x, ', ') INTO v_bad FROM jsonb_array_elements_text(v_first->'tables') x
     WHERE NOT EXISTS (SELECT 1 FROM tenancy.tenant_tables tt WHERE tt.relid::oid = to_regclass(x)::oid);
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION 'tenancy.import_organization: the export has tables that are not tenant tables here: %', v_bad
            USING ERRCODE = 'undefined_table', HINT = 'Create and convert those tables first (same columns), then import again.';
    END IF;
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
    v_rows  jsonb;
    v_max   bigint;
    v_n     bigint;
    v_from  bigint;
BEGIN
    SELECT * INTO i FROM tenancy.imports WHERE organization_id = p_org AND status = 'running';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenancy: no import into organization % is running', p_org USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    -- The table of the next line, then that table's consecutive lines (at most p_batch_size).
    EXECUTE format('SELECT l.n, l.line::text::jsonb->>''table'' FROM %s l
                     WHERE l.n > $1 AND (l.line::text::jsonb ? ''table'' OR l.line::text::jsonb ? ''end'')
                     ORDER BY l.n LIMIT 1', p_source)
       INTO v_from, v_tbl USING i.lines_done;
    IF v_tbl IS NULL THEN
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
    EXECUTE format('WITH run AS (SELECT l.n, l.line::text::jsonb AS j FROM %s l WHERE l.n >= $1 ORDER BY l.n LIMIT $3),
                         stop AS (SELECT min(r.n) AS n FROM run r WHERE (r.j->>''table'') IS DISTINCT FROM $2)
                    SELECT coalesce(jsonb_agg(r.j->''row'' ORDER BY r.n), ''[]''), max(r.n)
                      FROM run r, stop s WHERE s.n IS NULL OR r.n < s.n', p_source)
       INTO v_rows, v_max USING v_from, v_tbl, p_batch_size;
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
-- Comments and privileges
----------------------------------------------------------------------------------------------

COMMENT ON FUNCTION tenancy._lifecycle_admin(boolean, text) IS 'Internal: refuses unless the caller is a tenancy administrator.';
COMMENT ON FUNCTION tenancy._erase_order() IS 'Internal: the tenant tables in erase order (children before parents).';
COMMENT ON FUNCTION tenancy._op_erase_begin(jsonb, oid, boolean, uuid) IS 'Internal catalog operation: checks an erase and creates (or finds) its record.';
COMMENT ON FUNCTION tenancy._op_erase_progress(jsonb, oid, boolean, uuid) IS 'Internal catalog operation: records an erase''s progress.';
COMMENT ON FUNCTION tenancy._op_erase_finish(jsonb, oid, boolean, uuid) IS 'Internal catalog operation: deletes the erased organization''s invitations, memberships and row, and completes the record.';
COMMENT ON FUNCTION tenancy._op_log_lifecycle(jsonb, oid, boolean, uuid) IS 'Internal catalog operation: logs a lifecycle operation on rows (an export).';
COMMENT ON FUNCTION tenancy._op_import_begin(jsonb, oid, boolean, uuid) IS 'Internal catalog operation: creates the imported organization and the import record (or finds it).';
COMMENT ON FUNCTION tenancy._op_import_progress(jsonb, oid, boolean, uuid) IS 'Internal catalog operation: records an import''s progress.';
COMMENT ON FUNCTION tenancy._op_import_finish(jsonb, oid, boolean, uuid) IS 'Internal catalog operation: completes an import record.';
COMMENT ON FUNCTION tenancy._erase_begin(uuid, integer) IS 'Internal: starts or resumes an erase; refuses when rows outside the organization reference its rows.';
COMMENT ON FUNCTION tenancy._erase_step(uuid, integer, interval) IS 'Internal: one step of an erase (a batch, or the verification and the end).';
COMMENT ON FUNCTION tenancy._erase_batch(oid, uuid, integer) IS 'Internal: deletes one batch of an organization''s rows from a tenant table, as the table''s owner.';
COMMENT ON FUNCTION tenancy._erase_remaining(oid, uuid) IS 'Internal: counts an organization''s rows left in a tenant table, as the table''s owner.';
COMMENT ON FUNCTION tenancy._erase_references(uuid) IS 'Internal: foreign keys through which rows outside an organization reference its rows, with how many.';
COMMENT ON FUNCTION tenancy._usage() IS 'Internal: rows per tenant value and tenant table, with each table''s size.';
COMMENT ON FUNCTION tenancy._export_lines(uuid, jsonb) IS 'Internal: the lines of an export, from one snapshot.';
COMMENT ON FUNCTION tenancy._import_begin(regclass, integer) IS 'Internal: checks an export''s header and trailer and starts or resumes its import.';
COMMENT ON FUNCTION tenancy._import_step(regclass, uuid, integer) IS 'Internal: imports the next run of one table''s lines.';
COMMENT ON FUNCTION tenancy._import_rows(oid, uuid, jsonb) IS 'Internal: inserts rows of an import into a tenant table, as the table''s owner.';
COMMENT ON PROCEDURE tenancy.erase_organization(uuid, integer, interval) IS
  'Delete every row of a deactivated organization from every tenant table (children first, batches with a COMMIT each, as each table''s owner), then its invitations, memberships and the organization; verifies that no row is left and completes its record in tenancy.erasures. Resumable: CALL again. Administrators only.';
COMMENT ON FUNCTION tenancy.organization_usage() IS
  'Rows and estimated bytes per organization and tenant table. Bytes: the table''s total size (heap, TOAST, indexes) shared in proportion to rows. Administrators see every organization; others the rows they may read.';
COMMENT ON FUNCTION tenancy.export_organization(uuid) IS
  'Every row of an organization from every tenant table, parents first, from one snapshot, as JSON lines: a header, one {"table","row"} line per row, an end line with the counts. Owners of the organization and administrators.';
COMMENT ON PROCEDURE tenancy.import_organization(regclass, integer) IS
  'Load an export (its lines in a table with columns n, line) into this database: creates the organization with its id, inserts the rows with their ids, parents first, in batches with a COMMIT each, as each table''s owner. Resumable: CALL again. Administrators only.';

GRANT SELECT ON tenancy.erasures, tenancy.imports, tenancy.erase_progress TO PUBLIC;
ALTER TABLE tenancy.erasures ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenancy.imports ENABLE ROW LEVEL SECURITY;
CREATE POLICY erasures_of_administrators ON tenancy.erasures FOR SELECT
    USING ((SELECT pg_catalog.has_table_privilege('tenancy.organizations', 'UPDATE')));
CREATE POLICY imports_of_administrators ON tenancy.imports FOR SELECT
    USING ((SELECT pg_catalog.has_table_privilege('tenancy.organizations', 'UPDATE')));
ALTER TABLE tenancy.erasures OWNER TO @extowner@;
ALTER TABLE tenancy.imports OWNER TO @extowner@;
