//! Operator mode: a tenancy administrator acting across every organization, for operations and
//! validation (the runbooks' checks), explicitly, for one transaction, and logged.
//!
//! `tenancy.operate(reason)` enters it for the rest of the current transaction and writes a row
//! to `tenancy.migration_log` (operation `operate`: the reason, session_user, the current and the
//! outer role). `tenancy.operating()` says whether it holds for the statement running now.
//!
//! Fail-closed rules:
//! * the state lives in this backend's memory, never in a setting a client could write
//!   (`set_config('tenancy.anything', ...)` changes nothing here);
//! * it belongs to the subtransaction that entered it and to the top-level transaction: it ends
//!   at COMMIT, ROLLBACK or PREPARE, and when the subtransaction that entered it (or one it was
//!   handed to on RELEASE) is rolled back, exactly as the log row it wrote vanishes;
//! * entering needs an administrator acting as itself (`context::acting_administrator`: the
//!   current role and the role outside every SECURITY DEFINER function) and no user in this
//!   transaction; `operating()` checks both again at every call, so a SECURITY DEFINER function
//!   of a non-administrator called by an operator sees `false`, and once a user is set the mode
//!   is over for good (setting the user back to nothing does not bring it back).
//!
//! What it opens: the membership-mode lookups behind the policies return every organization
//! (so the boundary and access policies for PUBLIC let an operator read and fix the rows of every
//! organization), and where the generated policies do not reach the administrator (they are for
//! other roles, or the table's own policies replace an access policy) `enable_isolation` adds a
//! PERMISSIVE policy for members of the role that owns `tenancy.organizations` only,
//! `tenancy_operator` (`USING ((SELECT tenancy.operating()))`). A role that is not a member of the
//! catalog owner (the application's) gets no extra policy, and its plans do not change.
use std::cell::Cell;

use pgrx::prelude::*;
use pgrx::{pg_sys, JsonB, Uuid};

use crate::context::{acting_administrator, current_user_id};
use crate::errors::{spi, Error};

/// Where operator mode was entered: the local transaction id of the top-level transaction and the
/// subtransaction that owns it now.
#[derive(Clone, Copy)]
struct Entered {
    lxid: u32,
    subid: pg_sys::SubTransactionId,
}

thread_local! {
    static STATE: Cell<Option<Entered>> = const { Cell::new(None) };
    static REGISTERED: Cell<bool> = const { Cell::new(false) };
}

/// End of the top-level transaction, whatever the outcome: operator mode ends.
unsafe extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    use pg_sys::XactEvent::*;
    if matches!(
        event,
        XACT_EVENT_COMMIT
            | XACT_EVENT_PARALLEL_COMMIT
            | XACT_EVENT_ABORT
            | XACT_EVENT_PARALLEL_ABORT
            | XACT_EVENT_PREPARE
    ) {
        STATE.with(|s| s.set(None));
    }
}

/// A subtransaction ends: rolled back, the mode it entered ends with it (as its log row does);
/// released, the mode now belongs to its parent, so rolling the parent back ends it too.
unsafe extern "C-unwind" fn on_subxact(
    event: pg_sys::SubXactEvent::Type,
    my_subid: pg_sys::SubTransactionId,
    parent_subid: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    STATE.with(|s| {
        let Some(e) = s.get() else { return };
        if e.subid != my_subid {
            return;
        }
        match event {
            pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB => s.set(None),
            pg_sys::SubXactEvent::SUBXACT_EVENT_COMMIT_SUB => s.set(Some(Entered { subid: parent_subid, ..e })),
            _ => {}
        }
    });
}

/// Register the callbacks once per backend (they cannot be unregistered; the library stays).
fn ensure_registered() {
    if !REGISTERED.with(Cell::get) {
        // SAFETY: callbacks that only touch this thread's state.
        unsafe {
            pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut());
            pg_sys::RegisterSubXactCallback(Some(on_subxact), std::ptr::null_mut());
        }
        REGISTERED.with(|r| r.set(true));
    }
}

/// Is operator mode on for the statement running now? Entered in this transaction (and not
/// undone), an administrator acting as itself, and no user. A user ends it for the rest of the
/// transaction.
pub(crate) fn is_on() -> bool {
    let Some(e) = STATE.with(Cell::get) else { return false };
    if e.lxid != crate::settings::local_transaction_id() {
        // A callback was missed (it cannot be, but fail closed).
        STATE.with(|s| s.set(None));
        return false;
    }
    if current_user_id().is_some() {
        STATE.with(|s| s.set(None));
        return false;
    }
    acting_administrator()
}

/// Operator mode: is this transaction acting across every organization (entered with
/// `tenancy.operate`), for the role running this statement? Policies call it.
#[pg_extern(stable, parallel_restricted)]
#[search_path(pg_catalog, pg_temp)]
pub fn operating() -> bool {
    is_on()
}

/// Enter operator mode for the rest of the current transaction, and log it.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
pub fn operate(reason: Option<&str>) -> bool {
    let reason = reason.map(str::trim).unwrap_or_default();
    if reason.is_empty() {
        Error::NullArgument.raise(
            "tenancy.operate: a reason is required",
            "Say why, e.g. SELECT tenancy.operate('runbook 001 validation'); it is written to tenancy.migration_log.",
        )
    }
    // SAFETY: reads whether a transaction block is open.
    if !unsafe { pg_sys::IsTransactionBlock() } {
        Error::NoTransaction.raise(
            "tenancy.operate: operator mode lasts for one transaction, and none is open",
            "Run BEGIN first; operator mode ends at COMMIT or ROLLBACK.",
        )
    }
    if let Some(user) = current_user_id() {
        Error::InsufficientPrivilege.raise(
            format!("tenancy.operate: user {user} is acting in this transaction"),
            "Operator mode is for a tenancy administrator acting as itself: use a transaction that sets no \
             tenancy.user_id and no JWT.",
        )
    }
    if !acting_administrator() {
        Error::NotAdministrator.raise(
            "tenancy.operate: only a tenancy administrator acting as itself may enter operator mode",
            "Connect as the role that owns tenancy.organizations (or a role granted UPDATE on it, and membership in \
             that role to see rows), outside any SECURITY DEFINER function.",
        )
    }
    ensure_registered();
    // The log row first: if it fails, there is no mode. It is written in the current
    // subtransaction, so rolling that back removes both.
    // SAFETY: plain reads of the session's and the outer role.
    let (session, outer) = unsafe { (pg_sys::GetSessionUserId(), pg_sys::GetOuterUserId()) };
    let args = serde_json::json!({
        "reason": reason,
        "session_user": role_name(session),
        "current_user": role_name(crate::security::current_role()),
        "outer_role": role_name(outer),
    });
    spi(Spi::connect_mut(|c| {
        c.update("SELECT tenancy._privileged('operate', $1)", Some(1), &[JsonB(args).into()]).map(|_| ())
    }));
    // SAFETY: reads the current subtransaction id.
    let subid = unsafe { pg_sys::GetCurrentSubTransactionId() };
    let lxid = crate::settings::local_transaction_id();
    STATE.with(|s| {
        // Already on since an enclosing (sub)transaction: keep that, the wider one.
        if !matches!(s.get(), Some(e) if e.lxid == lxid) {
            s.set(Some(Entered { lxid, subid }));
        }
    });
    true
}

fn role_name(oid: pg_sys::Oid) -> String {
    spi(Spi::get_one_with_args::<String>("SELECT pg_catalog.pg_get_userbyid($1)::pg_catalog.text", &[oid.into()]))
        .unwrap_or_default()
}

/// Every organization, active or not, by id: what membership-mode policies let an operator
/// reach. Read as the caller (an administrator sees every organization).
pub(crate) fn all_organization_ids() -> Vec<Uuid> {
    spi(Spi::get_one::<Vec<Uuid>>(
        "SELECT coalesce(pg_catalog.array_agg(o.id ORDER BY o.id), '{}') FROM tenancy.organizations o",
    ))
    .unwrap_or_default()
}

/// Every organization, active or not, by slug.
pub(crate) fn all_organization_slugs() -> Vec<String> {
    spi(Spi::get_one::<Vec<String>>(
        "SELECT coalesce(pg_catalog.array_agg(o.slug ORDER BY o.slug), '{}') FROM tenancy.organizations o",
    ))
    .unwrap_or_default()
}
