//! The transaction's settings: reading a setting only when the current transaction wrote it,
//! writing one for the rest of the transaction, the names tenancy reads (its own and PostgREST's),
//! the uuid form they carry, and the id of the local transaction they belong to.
//!
//! The lowest layer: it uses nothing else of the crate, so every module may read settings.
use std::ffi::CStr;

use pgrx::{pg_sys, Uuid};

/// Written by the application server with `SET LOCAL` / `set_config(..., true)`.
pub const USER_SETTING: &CStr = c"tenancy.user_id";
/// Written by `tenancy.set_organization()`.
pub const ORG_SETTING: &CStr = c"tenancy.organization_id";
/// Written by PostgREST / Supabase for every request.
pub const JWT_CLAIMS_SETTING: &CStr = c"request.jwt.claims";
/// Older PostgREST versions write the subject claim on its own.
pub const JWT_SUB_SETTING: &CStr = c"request.jwt.claim.sub";

/// Postgres' order of setting names (`guc_name_compare`): byte-wise, ASCII letters folded.
#[cfg(any(feature = "pg13", feature = "pg14", feature = "pg15"))]
fn guc_name_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    a.iter().map(u8::to_ascii_lowercase).cmp(b.iter().map(u8::to_ascii_lowercase))
}

/// Find a configuration variable (placeholders included) without creating it. Up to PG15 the
/// variables form an array that Postgres keeps sorted by name (it re-sorts whenever it adds a
/// placeholder), so this is the binary search `find_option` does; PG16+ exports `find_option`.
unsafe fn find_guc(name: &CStr) -> *mut pg_sys::config_generic {
    #[cfg(any(feature = "pg13", feature = "pg14", feature = "pg15"))]
    {
        let vars = pg_sys::get_guc_variables();
        let n = pg_sys::GetNumConfigOptions().max(0) as usize;
        if vars.is_null() || n == 0 {
            return std::ptr::null_mut();
        }
        let all = std::slice::from_raw_parts(vars, n);
        let wanted = name.to_bytes();
        all.binary_search_by(|g| {
            if g.is_null() {
                std::cmp::Ordering::Greater
            } else {
                guc_name_order(CStr::from_ptr((**g).name).to_bytes(), wanted)
            }
        })
        .map_or(std::ptr::null_mut(), |i| all[i])
    }
    #[cfg(not(any(feature = "pg13", feature = "pg14", feature = "pg15")))]
    {
        // PG16+ (checked against the 18.6 source, and by the in-database tests on PG18): the
        // variables live in a hash table keyed case-insensitively; find_option finds placeholders
        // too (SET LOCAL tenancy.user_id adds one to that table), and with create_placeholders
        // false and skip_errors true it returns NULL for an unknown name without creating it or
        // raising (elevel is then unused). push_old_value still sets `stack` (besides linking the
        // variable into guc_stack_list) and AtEOXact_GUC pops it, so `stack` means what it means
        // up to PG15: written in this transaction.
        pg_sys::find_option(name.as_ptr(), false, true, pgrx::PgLogLevel::ERROR as _)
    }
}

/// The value of setting `name` if, and only if, it was written during the current transaction
/// (it then has an entry on the GUC stack, which Postgres pops at every COMMIT or ROLLBACK).
/// Empty values count as unset.
pub fn setting_of_this_transaction(name: &CStr) -> Option<String> {
    raw_setting_of_this_transaction(name).and_then(|s| {
        let s = s.trim();
        (!s.is_empty()).then(|| s.to_owned())
    })
}

/// `setting_of_this_transaction`, untrimmed (a text user id is taken exactly as written; only
/// an empty value counts as unset).
pub fn raw_setting_of_this_transaction(name: &CStr) -> Option<String> {
    // SAFETY: read-only access to the backend's GUC table, on the backend's own thread.
    unsafe {
        let g = find_guc(name);
        if g.is_null() || (*g).stack.is_null() {
            return None;
        }
        let v = pg_sys::GetConfigOption(name.as_ptr(), true, false);
        if v.is_null() {
            return None;
        }
        let s = CStr::from_ptr(v).to_str().ok()?;
        (!s.is_empty()).then(|| s.to_owned())
    }
}

/// Parse a UUID in the forms Postgres accepts most often (with or without hyphens or braces).
pub fn parse_uuid(s: &str) -> Option<Uuid> {
    let s = s.trim();
    let s = s.strip_prefix('{').and_then(|x| x.strip_suffix('}')).unwrap_or(s);
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(Uuid::from_bytes(bytes))
}

pub(crate) fn jwt_claims() -> Option<serde_json::Value> {
    setting_of_this_transaction(JWT_CLAIMS_SETTING).and_then(|s| serde_json::from_str(&s).ok())
}

/// What `set_config(name, value, is_local => true)` does, without running a query.
pub(crate) fn set_local(name: &CStr, value: &str) {
    let value = std::ffi::CString::new(value).expect("a setting value has no NUL");
    // SAFETY: sets a setting for the current transaction; errors are raised by Postgres (elevel
    // ERROR) and unwind through pgrx.
    unsafe {
        let context = if pg_sys::superuser() { pg_sys::GucContext::PGC_SUSET } else { pg_sys::GucContext::PGC_USERSET };
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            context,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_LOCAL,
            true,
            pgrx::PgLogLevel::ERROR as _,
            false,
        );
    }
}

/// The local transaction id of this backend's current top-level transaction (what makes a
/// transaction-local state belong to this transaction and no other).
pub(crate) fn local_transaction_id() -> u32 {
    // SAFETY: MyProc is this backend's PGPROC, set for the backend's lifetime.
    unsafe {
        #[cfg(any(feature = "pg13", feature = "pg14", feature = "pg15", feature = "pg16"))]
        {
            (*pg_sys::MyProc).lxid
        }
        #[cfg(not(any(feature = "pg13", feature = "pg14", feature = "pg15", feature = "pg16")))]
        {
            (*pg_sys::MyProc).vxid.lxid
        }
    }
}
