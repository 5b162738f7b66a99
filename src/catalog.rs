//! Where tenancy's catalog tables are: their OIDs by syscache lookups (no query), for the modules
//! that check rights on them or read their columns' types.
use pgrx::pg_sys;

/// OID of tenancy.organizations, when the extension's schema is there.
pub(crate) fn organizations_relid() -> Option<pg_sys::Oid> {
    catalog_relid(c"organizations")
}

/// OID of tenancy.memberships, when the extension's schema is there.
pub(crate) fn memberships_relid() -> Option<pg_sys::Oid> {
    catalog_relid(c"memberships")
}

fn catalog_relid(name: &std::ffi::CStr) -> Option<pg_sys::Oid> {
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
