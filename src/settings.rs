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
/// `a` is a NUL-terminated name, read up to its end or its first difference from `b` (no strlen:
/// this runs a dozen times per setting read, for every policy check).
///
/// # Safety
/// `a` must point to a NUL-terminated string.
#[cfg(any(feature = "pg13", feature = "pg14", feature = "pg15"))]
unsafe fn guc_name_order(a: *const std::ffi::c_char, b: &[u8]) -> std::cmp::Ordering {
    let mut i = 0;
    loop {
        let x = *a.add(i) as u8;
        match (x, b.get(i)) {
            (0, None) => return std::cmp::Ordering::Equal,
            (0, Some(_)) => return std::cmp::Ordering::Less,
            (_, None) => return std::cmp::Ordering::Greater,
            (x, Some(&y)) => match x.to_ascii_lowercase().cmp(&y.to_ascii_lowercase()) {
                std::cmp::Ordering::Equal => i += 1,
                other => return other,
            },
        }
    }
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
        all.binary_search_by(
            |g| {
                if g.is_null() {
                    std::cmp::Ordering::Greater
                } else {
                    guc_name_order((**g).name, wanted)
                }
            },
        )
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

/// Is setting `name` defined by a loaded library (not merely a placeholder that a `SET` of an
/// unknown name creates)?
pub fn defined_by_a_library(name: &CStr) -> bool {
    // SAFETY: read-only access to the backend's GUC table, on the backend's own thread.
    unsafe {
        let g = find_guc(name);
        !g.is_null() && (*g).flags & pg_sys::GUC_CUSTOM_PLACEHOLDER as i32 == 0
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
        // A string variable (tenancy's settings and PostgREST's are placeholders, which are
        // strings): its value, as GetConfigOption would return it without searching again.
        let v = if (*g).vartype == pg_sys::config_type::PGC_STRING {
            let var = (*(g as *mut pg_sys::config_string)).variable;
            if var.is_null() {
                std::ptr::null()
            } else {
                *var as *const std::ffi::c_char
            }
        } else {
            pg_sys::GetConfigOption(name.as_ptr(), true, false)
        };
        if v.is_null() {
            return None;
        }
        let s = CStr::from_ptr(v).to_str().ok()?;
        (!s.is_empty()).then(|| s.to_owned())
    }
}

/// Parse a UUID in the forms Postgres accepts most often (with or without hyphens or braces).
/// Runs for every policy check (the acting user, the chosen organization): byte by byte, without
/// allocating.
pub fn parse_uuid(s: &str) -> Option<Uuid> {
    let s = s.trim();
    let s = s.strip_prefix('{').and_then(|x| x.strip_suffix('}')).unwrap_or(s);
    let mut bytes = [0u8; 16];
    let mut digits = 0usize;
    for &c in s.as_bytes() {
        let v = match c {
            b'-' => continue,
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        if digits == 32 {
            return None;
        }
        bytes[digits / 2] |= if digits.is_multiple_of(2) { v << 4 } else { v };
        digits += 1;
    }
    (digits == 32).then(|| Uuid::from_bytes(bytes))
}

/// A uuid's 16 bytes as `uuid_out` writes them (lower-case, hyphenated), into `out`.
pub fn write_uuid(b: &[u8; 16], out: &mut [u8; 36]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut j = 0;
    for (i, &x) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[j] = b'-';
            j += 1;
        }
        out[j] = HEX[usize::from(x >> 4)];
        out[j + 1] = HEX[usize::from(x & 15)];
        j += 2;
    }
}

/// A uuid as `uuid::text` writes it (lower-case, hyphenated): the canonical form of a uuid user
/// id, written for every policy check (`core::fmt` takes several times as long).
pub fn uuid_text(u: &Uuid) -> String {
    let mut out = [0u8; 36];
    write_uuid(u.as_bytes(), &mut out);
    std::str::from_utf8(&out).expect("a uuid's text is ASCII").to_owned()
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
