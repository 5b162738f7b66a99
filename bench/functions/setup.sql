-- Plain SQL functions with the semantics of tenancy's two lookup functions, as a user writes them
-- (schema-qualified names, no SET clause, so the planner may inline them), and the calls to make.
-- psql variables: n_users, n_orgs, n_calls.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;

-- The user's default active membership in an active organization, else the earliest active one.
CREATE FUNCTION public.sql_get_user_organization_id(p_user uuid) RETURNS uuid
LANGUAGE sql STABLE AS $$
    SELECT m.organization_id
      FROM tenancy.memberships m JOIN tenancy.organizations o ON o.id = m.organization_id
     WHERE m.user_id = p_user AND m.is_active AND o.is_active
     ORDER BY m.is_default DESC, m.created_at, m.organization_id
     LIMIT 1
$$;

-- An active membership in an active organization.
CREATE FUNCTION public.sql_validate_client_access(p_user uuid, p_org uuid) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1
                     FROM tenancy.memberships m JOIN tenancy.organizations o ON o.id = m.organization_id
                    WHERE m.user_id = p_user AND m.organization_id = p_org AND m.is_active AND o.is_active)
$$;

-- n_calls (user, organization) pairs over every user (the 20 with deactivated or inactive
-- memberships included): half name the user's own organization, half another one.
CREATE TABLE public.bench_calls AS
SELECT bench_user(j) AS u,
       bench_org(CASE WHEN g % 2 = 0 THEN ((j - 1) % :n_orgs) + 1 ELSE 1 + (g * 31) % :n_orgs END) AS o
  FROM generate_series(1, :n_calls) g, LATERAL (SELECT 1 + (g * 7919) % (:n_users + 20) AS j) x;
ANALYZE public.bench_calls;
