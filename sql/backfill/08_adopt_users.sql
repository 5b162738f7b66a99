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

-- Checks the arguments and the users table, reads every user's id, application role and
-- organization in one query, maps the roles, and hands the memberships to the catalog operation
-- above. reason: over 80 lines because each check raises its own error, in the order a caller
-- meets them; they read best one after another, and nothing is done before the last one.
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
