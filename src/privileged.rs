//! The one door through which callers who do not own the catalog change it.
//!
//! `tenancy._privileged(op, args)` runs as the caller (SECURITY INVOKER), so it can see who the
//! caller is: the calling role, whether it is a tenancy administrator, and the acting user of
//! the tenant context. It then switches to the owner of the catalog (as SECURITY DEFINER would)
//! and runs one of a fixed list of internal operations, `tenancy._op_<op>`, handing it those
//! three facts. The operations do the authorization and the work; nobody else may execute them.
use pgrx::prelude::*;
use pgrx::{pg_sys, JsonB};

use crate::catalog::organizations_relid;
use crate::context::{caller_is_admin, current_user};
use crate::errors::{spi, Error};
use crate::security::AsRole;

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
    "set_user_id_type",
    "operate",
    "record_login_lookup",
    "erase_begin",
    "erase_progress",
    "erase_finish",
    "import_begin",
    "import_progress",
    "import_finish",
    "log_lifecycle",
    "clone_begin",
    "clone_progress",
    "clone_finish",
];

pub(crate) fn catalog_owner() -> pg_sys::Oid {
    let Some(relid) = organizations_relid() else {
        Error::UndefinedTable.raise("tenancy: catalog not found", "Run CREATE EXTENSION tenancy in this database.")
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
        Error::InvalidParameter.raise(
            format!("tenancy: unknown operation {op:?}"),
            "Call the public functions of schema tenancy (\\df tenancy.*).",
        )
    }
    // Facts about the caller, gathered before the switch.
    // SAFETY: reads the current user id.
    let caller = unsafe { pg_sys::GetUserId() };
    let is_admin = caller_is_admin();
    // The acting user's canonical id (text, whatever the database's user id type).
    let actor = current_user();
    let owner = catalog_owner();

    let _as_owner = AsRole::switch_to(owner);
    // `op` is one of OPERATIONS, so the function name is a fixed identifier.
    let sql = format!("SELECT tenancy._op_{op}($1, $2, $3, $4)");
    // A database not yet updated to this release (before ALTER EXTENSION UPDATE) has operations
    // that take the acting user as a uuid (its user ids are uuids).
    let actor_is_text = spi(Spi::get_one::<bool>(&format!(
        "SELECT pg_catalog.to_regprocedure('tenancy._op_{op}(jsonb, oid, boolean, text)') IS NOT NULL"
    )))
    .unwrap_or(true);
    spi(Spi::connect_mut(|c| {
        let actor =
            if actor_is_text { actor.into() } else { actor.as_deref().and_then(crate::settings::parse_uuid).into() };
        c.update(&sql, Some(1), &[args.into(), caller.into(), is_admin.into(), actor])?.first().get_one::<JsonB>()
    }))
}

/// The names of tenancy's functions whose names start with `prefix`, as the catalog has them.
#[cfg(any(test, feature = "pg_test"))]
pub(crate) fn functions_named(prefix: &str) -> std::collections::BTreeSet<String> {
    spi(Spi::connect(|c| {
        let rows = c.select(
            "SELECT DISTINCT p.proname::pg_catalog.text FROM pg_catalog.pg_proc p \
              WHERE p.pronamespace = 'tenancy'::pg_catalog.regnamespace AND pg_catalog.starts_with(p.proname::pg_catalog.text, $1)",
            None,
            &[prefix.into()],
        )?;
        rows.map(|r| r.get::<String>(1).map(Option::unwrap_or_default)).collect::<Result<_, _>>()
    }))
}

/// The differences between the operations a Rust list names (`prefix` + each) and the functions
/// of that prefix in schema tenancy: (in Rust only, in SQL only).
#[cfg(any(test, feature = "pg_test"))]
pub(crate) fn list_vs_catalog(prefix: &str, list: &[&str]) -> (Vec<String>, Vec<String>) {
    let rust: std::collections::BTreeSet<String> = list.iter().map(|op| format!("{prefix}{op}")).collect();
    let sql = functions_named(prefix);
    (rust.difference(&sql).cloned().collect(), sql.difference(&rust).cloned().collect())
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn the_doors_operations_are_exactly_the_op_functions() {
        let (only_rust, only_sql) = super::list_vs_catalog("_op_", super::OPERATIONS);
        assert!(
            only_rust.is_empty() && only_sql.is_empty(),
            "privileged::OPERATIONS and the tenancy._op_* functions differ: named in Rust without a SQL function: \
             {only_rust:?}; SQL functions the door does not name: {only_sql:?}"
        );
    }

    #[pg_test]
    fn the_table_owners_operations_are_exactly_the_owner_functions() {
        let (only_rust, only_sql) = super::list_vs_catalog("_owner_", crate::security::OWNER_OPERATIONS);
        assert!(
            only_rust.is_empty() && only_sql.is_empty(),
            "security::OWNER_OPERATIONS and the tenancy._owner_* functions differ: named in Rust without a SQL \
             function: {only_rust:?}; SQL functions _as_owner does not name: {only_sql:?}"
        );
    }
}
