//! The tenant context, as far as it is the caller's: who is acting (the user, from the settings or
//! the JWT), which organization the transaction asked for, whether the role is a tenancy
//! administrator, the rights a policy asks for (`Right`), and the organization a lifecycle
//! operation works on (`LifecycleScope`). Deciding which organization the transaction may act
//! for, with the memberships, is `organization.rs`'s; reading and writing settings is
//! `settings.rs`'s.
//!
//! Fail-closed rules:
//! * a setting counts only when it was written in the *current* transaction: a value left behind
//!   by a session-level `SET` in an earlier transaction (a pooled connection handed to another
//!   client) is ignored;
//! * a malformed `tenancy.user_id` is an error; a JWT subject that is not a user id of this
//!   database's type means "no user".
use pgrx::prelude::*;
use pgrx::{pg_sys, Uuid};

use crate::catalog;
use crate::errors::Error;
use crate::security;
use crate::settings::{
    jwt_claims, parse_uuid, raw_setting_of_this_transaction, setting_of_this_transaction, JWT_SUB_SETTING, ORG_SETTING,
    USER_SETTING,
};
use crate::user_ids::{self, UserIdType};

/// The acting user, as the canonical string of this database's user id type (`user_ids`):
/// `tenancy.user_id`, else the JWT `sub` claim, each only when written in this transaction. A
/// malformed `tenancy.user_id` is an error (the application wrote garbage); a JWT subject that is
/// not a user id of this database's type means "no user".
pub fn current_user() -> Option<String> {
    let t = user_ids::configured();
    // Text ids are taken exactly as written (a white-space variant is another, invalid, id);
    // uuid and bigint settings may carry spaces around them, as Postgres' own input accepts.
    let setting = match t {
        UserIdType::Text => raw_setting_of_this_transaction(USER_SETTING),
        _ => setting_of_this_transaction(USER_SETTING),
    };
    if let Some(v) = setting {
        return Some(match user_ids::canonical(t, &v) {
            Some(u) => u,
            None if t == UserIdType::Uuid => Error::InvalidUserId.raise(
                format!("tenancy: setting tenancy.user_id is not a uuid: {v:?}"),
                "Set it with SET LOCAL tenancy.user_id = '<uuid>' (or set_config('tenancy.user_id', <uuid>, true)).",
            ),
            None => user_ids::canonical_or_raise(t, &v, "setting tenancy.user_id"),
        });
    }
    if let Some(sub) = jwt_claims().and_then(|c| c.get("sub").cloned()) {
        return match sub {
            serde_json::Value::String(s) => user_ids::canonical(t, &s),
            // Some legacy issuers put a numeric subject: a bigint id, never another type's.
            serde_json::Value::Number(n) if t == UserIdType::Bigint => n.as_i64().map(|n| n.to_string()),
            _ => None,
        };
    }
    let sub = match t {
        UserIdType::Text => raw_setting_of_this_transaction(JWT_SUB_SETTING),
        _ => setting_of_this_transaction(JWT_SUB_SETTING),
    };
    sub.and_then(|s| user_ids::canonical(t, &s))
}

/// The acting user as a uuid, in a database whose user ids are uuids. With bigint or text user
/// ids, NULL when there is no user and an error (42804) when there is one: a uuid cannot name it,
/// and a policy comparing with it must not silently match nothing (use current_user_id_text()).
#[pg_extern(stable, parallel_restricted)]
#[search_path(pg_catalog, pg_temp)]
pub fn current_user_id() -> Option<Uuid> {
    let user = current_user()?;
    match user_ids::configured() {
        UserIdType::Uuid => parse_uuid(&user),
        t => Error::DatatypeMismatch.raise(
            format!("tenancy.current_user_id: user ids are {} in this database, not uuids", t.name()),
            "Use tenancy.current_user_id_text(), which returns the acting user in every user id type.",
        ),
    }
}

/// The acting user in any user id type, as text: the uuid lower-case and hyphenated, the bigint
/// in decimal, the text id as given. NULL when there is none.
#[pg_extern(stable, parallel_restricted)]
#[search_path(pg_catalog, pg_temp)]
pub fn current_user_id_text() -> Option<String> {
    current_user()
}

/// What the transaction asked for: nothing, something unusable, or an organization.
pub(crate) enum Requested {
    Nothing,
    Invalid,
    Organization(Uuid),
}

/// The organization named by the transaction (set_organization), or by the JWT
/// (`organization_id`, or `app_metadata.organization_id`), before any check. A value that is
/// present but not a uuid was not written by set_organization() or a sane issuer: it makes the
/// context NULL rather than falling back to the default organization.
pub(crate) fn requested_organization() -> Requested {
    let parsed = |v: &str| parse_uuid(v).map_or(Requested::Invalid, Requested::Organization);
    if let Some(v) = setting_of_this_transaction(ORG_SETTING) {
        return parsed(&v);
    }
    let Some(claims) = jwt_claims() else { return Requested::Nothing };
    let claim =
        claims.get("organization_id").or_else(|| claims.get("app_metadata").and_then(|m| m.get("organization_id")));
    match claim {
        None | Some(serde_json::Value::Null) => Requested::Nothing,
        Some(serde_json::Value::String(v)) => parsed(v),
        Some(_) => Requested::Invalid,
    }
}

/// True when the calling role is a tenancy administrator: a role that may UPDATE
/// `tenancy.organizations` (its owner, a superuser, or a role the DBA granted that to).
pub fn caller_is_admin() -> bool {
    role_is_admin(security::current_role())
}

fn role_is_admin(role: pg_sys::Oid) -> bool {
    let Some(relid) = catalog::organizations_relid() else { return false };
    // SAFETY: plain catalog lookups.
    unsafe {
        pg_sys::pg_class_aclcheck(relid, role, pg_sys::ACL_UPDATE as pg_sys::AclMode) == pg_sys::AclResult::ACLCHECK_OK
    }
}

/// May this transaction act in an organization it is not a member of? Only a tenancy
/// administrator acting as itself, for operations and validation:
/// * no user is set in this transaction: with a user, membership decides, whoever runs the
///   statement (the owner of a SECURITY DEFINER function included);
/// * both the role running the statement and the role outside every SECURITY DEFINER function
///   (the one the client connected as or SET ROLE to) are administrators: an administrator's
///   SECURITY DEFINER function called by anybody else acts for nobody.
pub(crate) fn administrator_without_user(user: Option<&str>) -> bool {
    user.is_none() && acting_administrator()
}

/// Is a tenancy administrator acting as itself: both the role running the statement and the role
/// outside every SECURITY DEFINER function (the one the client connected as or SET ROLE to)?
pub(crate) fn acting_administrator() -> bool {
    role_is_admin(security::current_role()) && role_is_admin(security::outer_role())
}

/// What a policy asks the context for: the right to read, write or delete rows. The role a
/// user holds in an organization grants rights as listed in `tenancy.roles`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Right {
    Read,
    Write,
    Delete,
}

impl Right {
    pub fn parse(s: &str) -> Right {
        match s {
            "read" => Right::Read,
            "write" => Right::Write,
            "delete" => Right::Delete,
            other => Error::InvalidParameter
                .raise(format!("tenancy: unknown privilege {other:?}"), "Use 'read', 'write' or 'delete'."),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Right::Read => "read",
            Right::Write => "write",
            Right::Delete => "delete",
        }
    }

    /// Its bit in `Rights` (and in the lookups' SQL: 1 read, 2 write, 4 delete).
    pub const fn bit(self) -> u8 {
        match self {
            Right::Read => 1,
            Right::Write => 2,
            Right::Delete => 4,
        }
    }
}

/// The rights a role grants in an organization (`tenancy.roles`: can_read, can_write,
/// can_delete), as the lookups read them once per membership.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Rights(u8);

impl Rights {
    /// Every right: an administrator acting as itself, without a user.
    pub const ALL: Rights = Rights(1 | 2 | 4);

    /// From the bits the lookups' SQL computes (1 read, 2 write, 4 delete).
    pub fn from_bits(bits: i32) -> Rights {
        Rights((bits & 7) as u8)
    }

    /// Does it grant `right` (None: membership alone, always)?
    pub fn allows(self, right: Option<Right>) -> bool {
        right.is_none_or(|r| self.0 & r.bit() != 0)
    }
}

/// The organization a lifecycle operation (erase, export, import) works on, for the duration of
/// one statement that tenancy itself runs: while it is set, the policies of every tenant table
/// name that organization alone, for reading and, when `delete` is set, for deleting (never for
/// writing). Nothing outside this module can set it: it is a variable of the backend's Rust code,
/// not a setting, and `LifecycleScope` clears it when the statement ends, also when an error
/// unwinds through it. It is how an erase reaches the rows of a *deactivated* organization
/// (which no context may choose) while running as the table's owner, with forced row-level
/// security still in force for every other organization.
#[derive(Clone, Debug)]
struct Lifecycle {
    org: Uuid,
    slug: Option<String>,
    delete: bool,
    write: bool,
    /// A clone reads the source organization and writes the new one: reading names this one.
    read_from: Option<(Uuid, Option<String>)>,
    /// The role that entered the scope (the table's owner, or the exporting caller): code running
    /// as any other role during the statement (a SECURITY DEFINER function of somebody else, a
    /// trigger's function owned by another role) sees no rows through it.
    role: pg_sys::Oid,
}

thread_local! {
    static LIFECYCLE: std::cell::RefCell<Option<Lifecycle>> = const { std::cell::RefCell::new(None) };
}

/// Sets the lifecycle organization until dropped (see `Lifecycle`).
pub(crate) struct LifecycleScope {
    saved: Option<Lifecycle>,
}

impl LifecycleScope {
    /// Let the policies see organization `org` (with slug `slug`, for text tenant columns) for
    /// reading, and for deleting when `delete`, for writing when `write` (an import into it).
    pub(crate) fn enter(org: Uuid, slug: Option<String>, delete: bool, write: bool) -> Self {
        let lc = Lifecycle { org, slug, delete, write, read_from: None, role: security::current_role() };
        let saved = LIFECYCLE.with(|l| l.replace(Some(lc)));
        LifecycleScope { saved }
    }

    /// A clone's statement: reading sees organization `from` only, writing `to` only.
    pub(crate) fn enter_clone(from: (Uuid, Option<String>), to: (Uuid, Option<String>)) -> Self {
        let lc = Lifecycle {
            org: to.0,
            slug: to.1,
            delete: false,
            write: true,
            read_from: Some(from),
            role: security::current_role(),
        };
        let saved = LIFECYCLE.with(|l| l.replace(Some(lc)));
        LifecycleScope { saved }
    }
}

impl Drop for LifecycleScope {
    fn drop(&mut self) {
        let saved = self.saved.take();
        LIFECYCLE.with(|l| *l.borrow_mut() = saved);
    }
}

/// The lifecycle organization, if one is set and it grants `right` (None: merely act there).
/// `Some(None)`: a lifecycle operation is running and the right is not granted (no rows).
pub(crate) fn lifecycle_for(right: Option<Right>) -> Option<Option<(Uuid, Option<String>)>> {
    LIFECYCLE.with(|l| {
        l.borrow().as_ref().map(|lc| {
            if security::current_role() != lc.role {
                return None;
            }
            if let (Some(Right::Read), Some(from)) = (right, &lc.read_from) {
                return Some(from.clone());
            }
            let granted = match right {
                None | Some(Right::Read) => true,
                Some(Right::Delete) => lc.delete,
                Some(Right::Write) => lc.write,
            };
            granted.then(|| (lc.org, lc.slug.clone()))
        })
    })
}
