//! The one door through which callers who do not own the catalog change it.
//!
//! `tenancy._privileged(op, args)` runs as the caller (SECURITY INVOKER), so it can see who the
//! caller is: the calling role, whether it is a tenancy administrator, and the acting user of
//! the tenant context. It then switches to the owner of the catalog (as SECURITY DEFINER would)
//! and runs one of a fixed list of internal operations, `tenancy._op_<op>`, handing it those
//! three facts. The operations do the authorization and the work; nobody else may execute them.
use pgrx::prelude::*;
use pgrx::{pg_sys, JsonB, PgSqlErrorCode};

use crate::context::{caller_is_admin, current_user_id};
use crate::errors::{raise, spi};
use crate::lookups::organizations_relid;

/// The operations the door opens onto. Anything else is refused.
pub const OPERATIONS: &[&str] = &[
    "create_organization",
    "rename_organization",
    "deactivate_organization",
    "add_member",
    "remove_member",
    "change_role",
    "create_invitation",
    "accept_invitation",
    "register_table",
    "record_isolation",
    "record_backfill",
    "adopt_users",
    "log",
];

/// Restores the previous user id and security context when dropped, also on error unwind.
struct AsUser {
    saved_uid: pg_sys::Oid,
    saved_ctx: i32,
}

impl AsUser {
    fn switch_to(uid: pg_sys::Oid) -> Self {
        let mut saved_uid = pg_sys::InvalidOid;
        let mut saved_ctx = 0;
        // SAFETY: the same calls fmgr_security_definer makes; restored in Drop and, on ERROR, by
        // transaction/subtransaction abort as well.
        unsafe {
            pg_sys::GetUserIdAndSecContext(&mut saved_uid, &mut saved_ctx);
            pg_sys::SetUserIdAndSecContext(
                uid,
                saved_ctx
                    | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32
                    | pg_sys::SECURITY_RESTRICTED_OPERATION as i32,
            );
        }
        AsUser { saved_uid, saved_ctx }
    }
}

impl Drop for AsUser {
    fn drop(&mut self) {
        // SAFETY: restores exactly what switch_to saved.
        unsafe { pg_sys::SetUserIdAndSecContext(self.saved_uid, self.saved_ctx) }
    }
}

fn catalog_owner() -> pg_sys::Oid {
    let Some(relid) = organizations_relid() else {
        raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            "tenancy catalog not found",
            "Run CREATE EXTENSION tenancy in this database.",
        )
    };
    spi(Spi::get_one_with_args::<pg_sys::Oid>(
        "SELECT relowner FROM pg_catalog.pg_class WHERE oid = $1",
        &[relid.into()],
    ))
    .expect("tenancy.organizations has an owner")
}

/// Run catalog operation `op` with `args` on behalf of the caller. Internal: call the public
/// wrappers (tenancy.create_organization, tenancy.add_member, ...) instead.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
pub fn _privileged(op: &str, args: JsonB) -> Option<JsonB> {
    if !OPERATIONS.contains(&op) {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("tenancy: unknown operation {op:?}"),
            "Call the public functions of schema tenancy (\\df tenancy.*).",
        )
    }
    // Facts about the caller, gathered before the switch.
    // SAFETY: reads the current user id.
    let caller = unsafe { pg_sys::GetUserId() };
    let is_admin = caller_is_admin();
    let actor = current_user_id();
    let owner = catalog_owner();

    let _as_owner = AsUser::switch_to(owner);
    // `op` is one of OPERATIONS, so the function name is a fixed identifier.
    let sql = format!("SELECT tenancy._op_{op}($1, $2, $3, $4)");
    spi(Spi::connect_mut(|c| {
        c.update(&sql, Some(1), &[args.into(), caller.into(), is_admin.into(), actor.into()])?
            .first()
            .get_one::<JsonB>()
    }))
}
