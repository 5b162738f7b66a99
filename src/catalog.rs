//! Where tenancy's catalog tables are: their OIDs by syscache lookups (no query), for the modules
//! that check rights on them or read their columns' types; and the one rule for the type of a
//! tenant column.
use pgrx::pg_sys;
use pgrx::prelude::*;

/// What a tenant column of type `typid` holds: the organization's id (uuid) or its slug (text,
/// varchar, char(n)), also through a domain over one of them; None for any other type.
pub(crate) fn tenant_column_kind(typid: pg_sys::Oid) -> Option<&'static str> {
    // SAFETY: a syscache lookup; resolves domains (over domains) to their base type.
    match unsafe { pg_sys::getBaseType(typid) } {
        pg_sys::UUIDOID => Some("uuid"),
        pg_sys::TEXTOID | pg_sys::VARCHAROID | pg_sys::BPCHAROID => Some("text"),
        _ => None,
    }
}

/// `tenant_column_kind` for SQL: register_table and the backfill ask it, as the policy
/// generators do (one rule for Rust and SQL alike). In Rust, so that an older release's SQL with
/// this library (between a package upgrade and ALTER EXTENSION UPDATE) needs nothing new.
#[pg_extern(stable, strict, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
pub fn _tenant_column_kind(typid: pg_sys::Oid) -> Option<&'static str> {
    tenant_column_kind(typid)
}

/// OID of tenancy.organizations, when the extension's schema is there.
pub(crate) fn organizations_relid() -> Option<pg_sys::Oid> {
    catalog_relid(c"organizations")
}

/// OID of tenancy.memberships, when the extension's schema is there.
pub(crate) fn memberships_relid() -> Option<pg_sys::Oid> {
    catalog_relid(c"memberships")
}

/// The relation (table or index) `tenancy.<name>`, if there is one.
pub(crate) fn catalog_relid(name: &std::ffi::CStr) -> Option<pg_sys::Oid> {
    // SAFETY: syscache lookups by name.
    unsafe {
        let nsp = pg_sys::get_namespace_oid(c"tenancy".as_ptr(), true);
        if nsp == pg_sys::InvalidOid {
            return None;
        }
        let rel = pg_sys::get_relname_relid(name.as_ptr(), nsp);
        (rel != pg_sys::InvalidOid).then_some(rel)
    }
}
