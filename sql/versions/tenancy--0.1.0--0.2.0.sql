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
