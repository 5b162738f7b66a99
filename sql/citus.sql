-- Scale-out on Citus (src/distribution.rs, src/signed.rs): distribute tenant tables by their tenant column.

-- The catalog's organizations policy, without a subquery (Citus refuses subqueries in the policies
-- of its tables): distribution_plan() switches the policy to this when the catalog becomes
-- reference tables. It reads memberships only (never organizations, whose policy calls it).
-- On a worker this runs inside the query Citus sends to a shard of organizations, and reading the
-- memberships reference table from there is a nested distributed query, which Citus refuses
-- unless citus.allow_nested_distributed_execution is on. It reads a reference table only, whose
-- placement on that node is complete, so it is safe here (without Citus: an unused placeholder).
CREATE FUNCTION tenancy._is_member_of(organization_id uuid) RETURNS boolean
LANGUAGE sql STABLE PARALLEL RESTRICTED SET search_path = pg_catalog, pg_temp
SET citus.allow_nested_distributed_execution = on AS $$
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
