//! Running code as another role, the way Postgres itself runs VACUUM, ANALYZE, CREATE INDEX and
//! SECURITY DEFINER functions: the current user id is switched for a scope and restored when the
//! scope ends, also when an error unwinds through it (transaction and subtransaction abort
//! restore it too).
//!
//! tenancy switches roles in three places, each for a reason the caller cannot abuse:
//! * the catalog door (`crate::privileged`) runs a fixed operation as the catalog's owner;
//! * record-driven work on a user table (rollback, one backfill step: `_as_owner`) runs as the
//!   table's owner, so that nothing a table owner wrote into a record, a default, a constraint or
//!   a trigger ever runs with the rights of the administrator or superuser who called it;
//! * the integrity report's scan (`crate::integrity`) reads a table with row-level security
//!   bypassed for a tenancy administrator, and only when the scan can run no code of the table's
//!   owner at all.
//!
//! Every switch is a *security-restricted operation*: the code that runs cannot SET ROLE, create
//! temporary objects, declare cursors WITH HOLD or otherwise leave something behind that would
//! later run with the caller's rights.
use pgrx::prelude::*;
use pgrx::{pg_sys, JsonB};

use crate::errors::{spi, Error};

/// Restores the previous user id and security context when dropped, also on error unwind.
pub(crate) struct AsRole {
    saved_uid: pg_sys::Oid,
    saved_ctx: i32,
}

impl AsRole {
    /// Act as `uid` until the returned guard is dropped, in a security-restricted operation.
    pub(crate) fn switch_to(uid: pg_sys::Oid) -> Self {
        let mut saved_uid = pg_sys::InvalidOid;
        let mut saved_ctx = 0;
        // SAFETY: the same calls fmgr_security_definer and ExecVacuum make; restored in Drop and,
        // on ERROR, by transaction/subtransaction abort as well.
        unsafe {
            pg_sys::GetUserIdAndSecContext(&mut saved_uid, &mut saved_ctx);
            pg_sys::SetUserIdAndSecContext(
                uid,
                saved_ctx | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32 | pg_sys::SECURITY_RESTRICTED_OPERATION as i32,
            );
        }
        AsRole { saved_uid, saved_ctx }
    }
}

impl Drop for AsRole {
    fn drop(&mut self) {
        // SAFETY: restores exactly what switch_to saved.
        unsafe { pg_sys::SetUserIdAndSecContext(self.saved_uid, self.saved_ctx) }
    }
}

/// The role running the current statement.
pub(crate) fn current_role() -> pg_sys::Oid {
    // SAFETY: reads the current user id.
    unsafe { pg_sys::GetUserId() }
}

/// The role outside every SECURITY DEFINER function and every switch above: the role the client
/// connected as or SET ROLE to.
pub(crate) fn outer_role() -> pg_sys::Oid {
    // SAFETY: reads the outer user id.
    unsafe { pg_sys::GetOuterUserId() }
}

/// Does `role` have the privileges of `of` (is it `of`, a member of it, or a superuser)?
pub(crate) fn has_privileges_of(role: pg_sys::Oid, of: pg_sys::Oid) -> bool {
    // SAFETY: a syscache lookup.
    unsafe { pg_sys::has_privs_of_role(role, of) }
}

/// The owner and the name of relation `rel`, if it exists.
pub(crate) fn relation_owner(rel: pg_sys::Oid) -> Option<(pg_sys::Oid, String)> {
    spi(Spi::connect(|c| {
        let t = c.select(
            "SELECT c.relowner, c.oid::pg_catalog.regclass::pg_catalog.text FROM pg_catalog.pg_class c WHERE c.oid = $1",
            Some(1),
            &[rel.into()],
        )?;
        if t.is_empty() {
            return Ok(None);
        }
        let r = t.first();
        Ok::<_, pgrx::spi::SpiError>(Some((
            r.get::<pg_sys::Oid>(1)?.unwrap_or(pg_sys::InvalidOid),
            r.get::<String>(2)?.unwrap_or_default(),
        )))
    }))
}

/// The operations on one table that are driven by what tenancy recorded about it, and so must
/// run as its owner (`tenancy._owner_<op>(rel oid, args jsonb) returns jsonb`).
pub const OWNER_OPERATIONS: &[&str] = &["rollback", "backfill_step", "null_check"];

/// Internal: run record-driven operation `op` on table `rel` as the table's owner, in a
/// security-restricted operation. The caller must have the owner's privileges (be the owner, a
/// member of it, or a superuser), as for any DDL on the table.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
pub fn _as_owner(rel: Option<pg_sys::Oid>, op: Option<&str>, args: Option<JsonB>) -> Option<JsonB> {
    let op = op.unwrap_or_default();
    if !OWNER_OPERATIONS.contains(&op) {
        Error::InvalidParameter.raise(
            format!("tenancy: unknown table operation {op:?}"),
            "Call the public functions of schema tenancy (\\df tenancy.*).",
        )
    }
    let Some(rel) = rel else { Error::NullArgument.raise("tenancy: tbl must not be NULL", "Pass a table.") };
    // The one ownership check (tenancy._owned_table): 42P01 for no such table, 42501 unless the
    // caller has the privileges of its owner.
    spi(Spi::get_one_with_args::<String>(
        "SELECT tenancy._owned_table($1, $2, $3)",
        &[rel.into(), current_role().into(), op.replace('_', " ").into()],
    ));
    let Some((owner, _)) = relation_owner(rel) else {
        Error::UndefinedTable.raise(
            format!("tenancy: no table with oid {}", rel.to_u32()),
            "Pass the table name, e.g. 'public.shipments'.",
        )
    };
    let _as_owner = AsRole::switch_to(owner);
    // `op` is one of OWNER_OPERATIONS, so the function name is a fixed identifier.
    let sql = format!("SELECT tenancy._owner_{op}($1, $2)");
    let args = args.unwrap_or(JsonB(serde_json::json!({})));
    spi(Spi::connect_mut(|c| c.update(&sql, Some(1), &[rel.into(), args.into()])?.first().get_one::<JsonB>()))
}
