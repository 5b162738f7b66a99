-- tenancy 0.1.0 -> 0.2.0. Run by ALTER EXTENSION tenancy UPDATE, never by hand:
\echo Use "ALTER EXTENSION tenancy UPDATE TO '0.2.0'" to load this file. \quit

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
