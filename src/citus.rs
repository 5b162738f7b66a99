//! What Citus has made of this database: whether it is installed, which tables are Citus tables,
//! and whether changes to the catalog reach this node. Queries only: the signed context
//! (`signed.rs`), the policy generator (`policies.rs`), the memo (`cache.rs`) and the
//! distribution planner (`distribution.rs`) build on it.
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::errors::spi;

/// Is the citus extension installed in this database (and its library loaded, without which it
/// cannot work)? Citus runs only from `shared_preload_libraries`, where it defines its settings:
/// when one of them is not defined by a library, the catalog is not searched (set_organization
/// asks this in every transaction).
pub fn citus_installed() -> bool {
    if !crate::settings::defined_by_a_library(c"citus.propagate_set_commands") {
        return false;
    }
    // SAFETY: catalog lookup by name.
    unsafe { pg_sys::get_extension_oid(c"citus".as_ptr(), true) != pg_sys::InvalidOid }
}

/// Is `relid` a Citus table (distributed, reference or Citus-managed local)?
pub fn is_citus_table(relid: pg_sys::Oid) -> bool {
    citus_installed()
        && spi(Spi::get_one_with_args::<bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition WHERE logicalrelid = $1::oid::regclass)",
            &[relid.into()],
        ))
        .unwrap_or(false)
}

/// Is `relid` distributed or a reference table (not a coordinator-local Citus table, which Citus
/// makes of a table that refers to a reference table; distribute() still distributes those)?
pub fn is_distributed(relid: pg_sys::Oid) -> bool {
    citus_installed()
        && spi(Spi::get_one_with_args::<bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition \
                             WHERE logicalrelid = $1::oid::regclass AND (partmethod <> 'n' OR repmodel = 't'))",
            &[relid.into()],
        ))
        .unwrap_or(false)
}

/// Do the catalog's invalidation triggers fire on this node when `relids` (Citus tables or not)
/// change? Citus writes a reference table on each of its placements, and the triggers fire there:
/// a node without a placement of one of them (a coordinator never registered with
/// citus_set_coordinator_host) is never told, and must not memoize membership answers
/// (src/cache.rs asks this before memoizing).
pub fn catalog_changes_reach_this_node(relids: &[pg_sys::Oid]) -> bool {
    if !citus_installed() {
        return true;
    }
    let ids: Vec<pg_sys::Oid> = relids.to_vec();
    spi(Spi::get_one_with_args::<bool>(
        "SELECT NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition p \
                             WHERE p.logicalrelid::oid = ANY ($1) \
                               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_shard s \
                                                 JOIN pg_catalog.pg_dist_placement pl ON pl.shardid = s.shardid \
                                                WHERE s.logicalrelid = p.logicalrelid \
                                                  AND pl.groupid = (SELECT g.groupid FROM pg_catalog.pg_dist_local_group g)))",
        &[ids.into()],
    ))
    .unwrap_or(false)
}
