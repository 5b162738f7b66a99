-- tenancy SQL API. Loaded last (finalize): wraps the Rust functions, documents everything,
-- grants what callers need, and hands the catalog to the installing role.
--
-- Every function pins its search_path and schema-qualifies what it uses.
-- Internal functions start with an underscore; the public API is what \df tenancy.* lists
-- without one.

----------------------------------------------------------------------------------------------
-- Internal helpers (run as the catalog owner, through tenancy._privileged)
----------------------------------------------------------------------------------------------

CREATE FUNCTION tenancy._require(p_name text, p_value anyelement) RETURNS anyelement
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_value IS NULL THEN
        RAISE EXCEPTION 'tenancy: % must not be NULL', p_name
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = format('Pass a value for %s.', p_name);
    END IF;
    RETURN p_value;
END $$;

-- p_caller: the role that asked (operations run as the catalog owner, which is not who acted).
CREATE FUNCTION tenancy._log(p_operation text, p_table text, p_status text, p_details jsonb,
                             p_started timestamptz DEFAULT NULL, p_caller oid DEFAULT NULL)
RETURNS bigint LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO tenancy.migration_log (operation, table_name, status, details, started_at, finished_at, actor)
    VALUES (p_operation, p_table, p_status, coalesce(p_details, '{}'),
            coalesce(p_started, clock_timestamp()),
            CASE WHEN p_status = 'started' THEN NULL ELSE clock_timestamp() END,
            coalesce((SELECT r.rolname FROM pg_roles r WHERE r.oid = p_caller), current_user))
    RETURNING id
$$;

-- The organization, which must exist (42704) and, when p_active, be active (55000).
CREATE FUNCTION tenancy._organization(p_org uuid, p_active boolean DEFAULT true)
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

CREATE FUNCTION tenancy._role(p_role text) RETURNS tenancy.roles
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

-- Authorize p_actor for p_right ('manage_members' or 'manage_organization') in p_org.
-- Tenancy administrators (roles that may UPDATE tenancy.organizations) may do anything.
-- Returns the rank the actor acts with (2^31-1 for administrators).
-- p_actor: the acting user's canonical id (tenancy._user_id), compared with the column's text
-- form, which is canonical too (uuid::text, bigint::text, text), whatever the user id type.
CREATE FUNCTION tenancy._authorize(p_org uuid, p_right text, p_is_admin boolean, p_actor text)
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

CREATE FUNCTION tenancy._check_rank(p_actor_rank integer, p_role tenancy.roles) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_role.rank > p_actor_rank THEN
        RAISE EXCEPTION 'tenancy: cannot grant or change role "%", which ranks above your own', p_role.name
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Ask a member with a higher role, or a tenancy administrator.';
    END IF;
END $$;

-- Refuse to leave an active organization without an active owner.
CREATE FUNCTION tenancy._keep_an_owner(p_org uuid, p_user text) RETURNS void
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

-- The name of table p_rel, which p_caller must own (or be a member of its owner) to p_action it.
CREATE FUNCTION tenancy._owned_table(p_rel oid, p_caller oid, p_action text) RETURNS text
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

----------------------------------------------------------------------------------------------
-- Internal operations: tenancy._op_<name>(args, caller, caller_is_admin, actor).
-- Only the catalog owner may execute them; tenancy._privileged calls them after establishing
-- the three facts about the caller.
----------------------------------------------------------------------------------------------

CREATE FUNCTION tenancy._op_create_organization(a jsonb, caller oid, is_admin boolean, actor text)
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

CREATE FUNCTION tenancy._op_rename_organization(a jsonb, caller oid, is_admin boolean, actor text)
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

CREATE FUNCTION tenancy._op_deactivate_organization(a jsonb, caller oid, is_admin boolean, actor text)
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

CREATE FUNCTION tenancy._op_add_member(a jsonb, caller oid, is_admin boolean, actor text)
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

CREATE FUNCTION tenancy._membership(p_org uuid, p_user text) RETURNS tenancy.memberships
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

CREATE FUNCTION tenancy._op_remove_member(a jsonb, caller oid, is_admin boolean, actor text)
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

CREATE FUNCTION tenancy._op_change_role(a jsonb, caller oid, is_admin boolean, actor text)
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

CREATE FUNCTION tenancy._op_create_invitation(a jsonb, caller oid, is_admin boolean, actor text)
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

CREATE FUNCTION tenancy._op_accept_invitation(a jsonb, caller oid, is_admin boolean, actor text)
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

CREATE FUNCTION tenancy._op_register_table(a jsonb, caller oid, is_admin boolean, actor text)
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

-- Record what enable_isolation created on a table the caller owns (a.isolation), or forget it
-- (a.isolation null: disable_isolation), and log the operation.
CREATE FUNCTION tenancy._op_record_isolation(a jsonb, caller oid, is_admin boolean, actor text)
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

-- Allow (a.columns not null) or forbid (null) login lookups on a table the caller owns: the
-- owner may read every row anyway (it can turn row-level security off), so this grants nothing
-- the owner does not have. Only plain or partitioned tables whose key and columns have built-in
-- types: the lookup reads them with row-level security bypassed, and must run no owner's code.
CREATE FUNCTION tenancy._op_record_login_lookup(a jsonb, caller oid, is_admin boolean, actor text)
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

-- Log the entry into operator mode (tenancy.operate checked the caller first: an administrator
-- acting as itself, no user). The row belongs to the caller's (sub)transaction, as the mode does.
CREATE FUNCTION tenancy._op_operate(a jsonb, caller oid, is_admin boolean, actor text)
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


-- The catalog's policies that compare user ids, for user ids of type p_type (from a fixed list).
CREATE FUNCTION tenancy._user_policies_sql(p_type text) RETURNS text
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

-- a: {type}. Changes the type of every user id column of the catalog (memberships.user_id,
-- invitations.invited_by and accepted_by) while none holds a row, and the catalog policies that
-- compare them with the acting user.
CREATE FUNCTION tenancy._op_set_user_id_type(a jsonb, caller oid, is_admin boolean, actor text)
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

----------------------------------------------------------------------------------------------
-- Public management API (SECURITY INVOKER wrappers around tenancy._privileged)
----------------------------------------------------------------------------------------------

CREATE FUNCTION tenancy.create_organization(name text, slug text, id uuid DEFAULT NULL,
                                            settings jsonb DEFAULT '{}', owner_user_id uuid DEFAULT NULL)
RETURNS uuid LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (tenancy._privileged('create_organization',
              jsonb_build_object('name', $1, 'slug', $2, 'id', $3, 'settings', $4, 'owner_user_id', $5))->>'id')::uuid
$$;

CREATE FUNCTION tenancy.rename_organization(organization_id uuid, name text, slug text DEFAULT NULL)
RETURNS uuid LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (tenancy._privileged('rename_organization',
              jsonb_build_object('organization_id', $1, 'name', $2, 'slug', $3))->>'id')::uuid
$$;

CREATE FUNCTION tenancy.deactivate_organization(organization_id uuid)
RETURNS uuid LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (tenancy._privileged('deactivate_organization', jsonb_build_object('organization_id', $1))->>'id')::uuid
$$;

CREATE FUNCTION tenancy.add_member(organization_id uuid, user_id uuid, role text DEFAULT 'member',
                                   is_default boolean DEFAULT false)
RETURNS boolean LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (tenancy._privileged('add_member',
              jsonb_build_object('organization_id', $1, 'user_id', $2, 'role', $3, 'is_default', $4))->>'added')::boolean
$$;

CREATE FUNCTION tenancy.remove_member(organization_id uuid, user_id uuid)
RETURNS void LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT FROM tenancy._privileged('remove_member', jsonb_build_object('organization_id', $1, 'user_id', $2))
$$;

CREATE FUNCTION tenancy.change_role(organization_id uuid, user_id uuid, role text)
RETURNS boolean LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (tenancy._privileged('change_role',
              jsonb_build_object('organization_id', $1, 'user_id', $2, 'role', $3))->>'changed')::boolean
$$;

-- The same for user ids of any type (uuid, bigint or text, as text): an untyped literal
-- resolves to these, so tenancy.add_member(org, 'auth0|abc') works.
CREATE FUNCTION tenancy.add_member(organization_id uuid, user_id text, role text DEFAULT 'member',
                                   is_default boolean DEFAULT false)
RETURNS boolean LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (tenancy._privileged('add_member',
              jsonb_build_object('organization_id', $1, 'user_id', $2, 'role', $3, 'is_default', $4))->>'added')::boolean
$$;

CREATE FUNCTION tenancy.remove_member(organization_id uuid, user_id text)
RETURNS void LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT FROM tenancy._privileged('remove_member', jsonb_build_object('organization_id', $1, 'user_id', $2))
$$;

CREATE FUNCTION tenancy.change_role(organization_id uuid, user_id text, role text)
RETURNS boolean LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (tenancy._privileged('change_role',
              jsonb_build_object('organization_id', $1, 'user_id', $2, 'role', $3))->>'changed')::boolean
$$;

CREATE FUNCTION tenancy.set_user_id_type(type text)
RETURNS boolean LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (tenancy._privileged('set_user_id_type', jsonb_build_object('type', $1))->>'changed')::boolean
$$;

CREATE FUNCTION tenancy.create_invitation(organization_id uuid, email text, role text DEFAULT 'member',
                                          expires_in interval DEFAULT interval '7 days')
RETURNS text LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT tenancy._privileged('create_invitation',
              jsonb_build_object('organization_id', $1, 'email', $2, 'role', $3, 'expires_in', $4))->>'token'
$$;

CREATE FUNCTION tenancy.accept_invitation(token text)
RETURNS uuid LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (tenancy._privileged('accept_invitation', jsonb_build_object('token', $1))->>'organization_id')::uuid
$$;

CREATE FUNCTION tenancy.register_table(tbl regclass, tenant_column name DEFAULT 'organization_id')
RETURNS text LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT tenancy._privileged('register_table',
              jsonb_build_object('relid', $1::oid, 'tenant_column', $2))->>'column_type'
$$;

CREATE FUNCTION tenancy.isolation_sql(tbl regclass, tenant_column name DEFAULT 'organization_id',
                                      mode text DEFAULT NULL, roles name[] DEFAULT '{public}')
RETURNS text LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT tenancy._isolation($1::oid, $2::text, $3, $4::text[], false)
$$;

-- Why isolating p_rel now would hide some of its rows from everyone, or NULL: a recorded
-- backfill that has not finished, or rows whose tenant column is NULL (checked only for a table
-- the caller owns; for another table enable_isolation refuses anyway).
CREATE FUNCTION tenancy._incomplete(p_rel oid, p_col name) RETURNS text
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

-- Does column a.column of p_rel hold a NULL? As the table's owner (through tenancy._as_owner).
CREATE FUNCTION tenancy._owner_null_check(p_rel oid, a jsonb) RETURNS jsonb
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

CREATE FUNCTION tenancy.enable_isolation(tbl regclass, tenant_column name DEFAULT 'organization_id',
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

CREATE FUNCTION tenancy.allow_login_lookup(tbl regclass, key_column name, columns name[], grantee regrole)
RETURNS text LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT tenancy._privileged('record_login_lookup',
              jsonb_build_object('relid', $1::oid, 'key_column', $2, 'columns', $3, 'grantee', $4::oid))->>'table'
$$;

CREATE FUNCTION tenancy.login_lookup(tbl regclass, key text)
RETURNS SETOF jsonb LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM tenancy._login_lookup($1::oid, $2)
$$;

CREATE FUNCTION tenancy.revoke_login_lookup(tbl regclass)
RETURNS text LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT tenancy._privileged('record_login_lookup', jsonb_build_object('relid', $1::oid, 'columns', NULL))->>'table'
$$;

CREATE FUNCTION tenancy.disable_isolation(tbl regclass)
RETURNS text LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT tenancy._disable_isolation($1::oid)
$$;

-- Every table of a schema that has the tenant column, in one transaction: either all of them
-- are isolated or, on the first error, none (the error names the table).
CREATE FUNCTION tenancy.enable_isolation_all(schema name DEFAULT 'public',
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

CREATE FUNCTION tenancy.validate_client_data_integrity(tbl regclass)
RETURNS TABLE (table_name text, tenant_column text, total_rows bigint, null_rows bigint,
               orphan_rows bigint, cross_tenant_rows bigint, not_null boolean, fk_validated boolean,
               tenant_index boolean, rls_enabled boolean, rls_forced boolean, policies_complete boolean,
               saw_every_row boolean, ok boolean, note text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM tenancy._table_integrity(tenancy._require('tbl', $1)::oid)
$$;

----------------------------------------------------------------------------------------------
-- Comments: \df+ tenancy.* and \dx+ tenancy explain themselves
----------------------------------------------------------------------------------------------

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

----------------------------------------------------------------------------------------------
-- Privileges. Callers read the catalog through RLS: a role that does not own it sees its own
-- memberships, the organizations it belongs to and the tenant tables it owns, nothing else.
-- Every operator and function in these top-level statements is schema-qualified (they run as
-- the superuser that runs this script).
----------------------------------------------------------------------------------------------

GRANT USAGE ON SCHEMA tenancy TO PUBLIC;
GRANT SELECT ON tenancy.roles, tenancy.organizations, tenancy.memberships, tenancy.tenant_tables TO PUBLIC;
-- Tenant tables reference organizations by id (tenancy.backfill adds the foreign key as the
-- table's owner). Not by slug: a foreign key check bypasses row-level security, so REFERENCES
-- on slug would let any table owner enumerate slugs. A text (slug) tenant column needs an
-- administrator's GRANT REFERENCES (slug) ON tenancy.organizations TO <table owner>.
GRANT REFERENCES (id) ON tenancy.organizations TO PUBLIC;

ALTER TABLE tenancy.memberships ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenancy.organizations ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenancy.tenant_tables ENABLE ROW LEVEL SECURITY;
CREATE POLICY memberships_of_current_user ON tenancy.memberships FOR SELECT
    USING (user_id OPERATOR(pg_catalog.=) (SELECT tenancy.current_user_id())
           OR (SELECT pg_catalog.has_table_privilege('tenancy.organizations', 'UPDATE')));
CREATE POLICY organizations_of_current_user ON tenancy.organizations FOR SELECT
    USING (EXISTS (SELECT 1 FROM tenancy.memberships m
                    WHERE m.organization_id OPERATOR(pg_catalog.=) organizations.id
                      AND m.user_id OPERATOR(pg_catalog.=) (SELECT tenancy.current_user_id()))
           OR (SELECT pg_catalog.has_table_privilege('tenancy.organizations', 'UPDATE')));
-- Everybody reads the roles (the membership lookups join them, as the caller) and the accepted
-- lint findings (lint() reads them, as the caller), as before; with row-level security on, so
-- that no table of schema tenancy readable by PUBLIC lacks it (Supabase's linter reports such a
-- table as ERROR rls_disabled_in_public once the schema is exposed through PostgREST). Only
-- their owner writes them: RLS is not forced, and nobody else has a write privilege.
ALTER TABLE tenancy.roles ENABLE ROW LEVEL SECURITY;
CREATE POLICY roles_readable_by_all ON tenancy.roles FOR SELECT USING (true);
ALTER TABLE tenancy.lint_ignores ENABLE ROW LEVEL SECURITY;
CREATE POLICY lint_ignores_readable_by_all ON tenancy.lint_ignores FOR SELECT USING (true);
-- A table owner sees its own tables' conversion state; an administrator sees every table.
CREATE POLICY tenant_tables_of_table_owner ON tenancy.tenant_tables FOR SELECT
    USING (EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                    WHERE c.oid OPERATOR(pg_catalog.=) tenant_tables.relid::pg_catalog.oid
                      AND pg_catalog.pg_has_role(c.relowner, 'USAGE'))
           OR (SELECT pg_catalog.has_table_privilege('tenancy.organizations', 'UPDATE')));

-- The membership lookups behind the context and the policies are memoized per session. Any
-- change to these tables makes every session forget them when the change commits: the trigger
-- queues a relcache invalidation of the three tables, which Postgres delivers to every backend
-- (and replays locally at the next command, or on rollback). It is a trigger function, so
-- nobody can call it to flush every session's memo.
ALTER FUNCTION tenancy._lookups_changed_trigger() SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION tenancy._lookups_changed_trigger() IS
  'Internal: statement trigger on memberships, organizations and roles; makes every session forget its memoized membership answers when the change commits.';
CREATE TRIGGER lookups_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.memberships
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy._lookups_changed_trigger();
CREATE TRIGGER lookups_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.organizations
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy._lookups_changed_trigger();
CREATE TRIGGER lookups_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.roles
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy._lookups_changed_trigger();

-- The catalog operations run only through their door (tenancy._privileged, as the catalog
-- owner): nobody else may execute them. (The table operations, tenancy._owner_*, refuse to run
-- as anybody but the table's owner.)
DO $$
DECLARE f pg_catalog.regprocedure;
BEGIN
    FOR f IN SELECT p.oid::pg_catalog.regprocedure FROM pg_catalog.pg_proc p
              WHERE p.pronamespace OPERATOR(pg_catalog.=) 'tenancy'::pg_catalog.regnamespace::pg_catalog.oid
                AND p.proname OPERATOR(pg_catalog.~~) '\_op\_%'
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
        EXECUTE pg_catalog.format('ALTER FUNCTION %s OWNER TO @extowner@', f);
    END LOOP;
END $$;

-- The installing role owns the catalog (on a trusted install the script runs as the bootstrap
-- superuser): it administers tenants without needing superuser, and the management functions
-- act as this role, never as a superuser it is not. The schema stays the superuser's (see the
-- install guard in sql/catalog.sql): the installing role cannot create objects in it.
ALTER TABLE tenancy.roles OWNER TO @extowner@;
ALTER TABLE tenancy.organizations OWNER TO @extowner@;
ALTER TABLE tenancy.memberships OWNER TO @extowner@;
ALTER TABLE tenancy.invitations OWNER TO @extowner@;
ALTER TABLE tenancy.tenant_tables OWNER TO @extowner@;
ALTER TABLE tenancy.migration_log OWNER TO @extowner@;
ALTER TABLE tenancy.login_lookups OWNER TO @extowner@;
