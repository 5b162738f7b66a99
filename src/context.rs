//! The tenant context: who is acting, and for which organization, in this transaction.
//!
//! Fail-closed rules:
//! * a setting counts only when it was written in the *current* transaction: a value left behind
//!   by a session-level `SET` in an earlier transaction (a pooled connection handed to another
//!   client) is ignored;
//! * the organization is taken only when the current user is an active member of it (or the
//!   calling role is a tenancy administrator); anything else gives NULL;
//! * NULL matches no tenant row in the generated policies.
use std::ffi::CStr;

use pgrx::prelude::*;
use pgrx::{pg_sys, PgSqlErrorCode, Uuid};

use crate::errors::raise;
use crate::lookups;
use crate::security;
use crate::user_ids::{self, UserIdType};

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

fn jwt_claims() -> Option<serde_json::Value> {
    setting_of_this_transaction(JWT_CLAIMS_SETTING).and_then(|s| serde_json::from_str(&s).ok())
}

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
            None if t == UserIdType::Uuid => raise(
                PgSqlErrorCode::ERRCODE_INVALID_TEXT_REPRESENTATION,
                format!("tenancy.user_id is not a uuid: {v:?}"),
                "Set it with SET LOCAL tenancy.user_id = '<uuid>' (or set_config('tenancy.user_id', <uuid>, true)).",
            ),
            None => user_ids::canonical_or_raise(t, &v, "tenancy.user_id"),
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
        t => raise(
            PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
            format!("tenancy.current_user_id(): user ids are {} in this database, not uuids", t.name()),
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
enum Requested {
    Nothing,
    Invalid,
    Organization(Uuid),
}

/// The organization named by the transaction (set_organization), or by the JWT
/// (`organization_id`, or `app_metadata.organization_id`), before any check. A value that is
/// present but not a uuid was not written by set_organization() or a sane issuer: it makes the
/// context NULL rather than falling back to the default organization.
fn requested_organization() -> Requested {
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
    let Some(relid) = lookups::organizations_relid() else { return false };
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
            other => raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("tenancy: unknown privilege {other:?}"),
                "Use 'read', 'write' or 'delete'.",
            ),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Right::Read => "read",
            Right::Write => "write",
            Right::Delete => "delete",
        }
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
fn lifecycle_for(right: Option<Right>) -> Option<Option<(Uuid, Option<String>)>> {
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

/// May this transaction act in `org` with `right` (None: merely act there)? Yes when the current
/// user is an active member whose role grants it; without a user, when a tenancy administrator
/// acts as itself (`administrator_without_user`) and the organization is active.
pub(crate) fn may_act_in(user: Option<&str>, org: Uuid, right: Option<Right>) -> bool {
    match user {
        Some(u) => lookups::member_has_right(u, org, right.map_or("", Right::as_str)),
        None => administrator_without_user(None) && lookups::organization_state(org) == Some(true),
    }
}

/// The organization this transaction acts for, when the transaction may act there with `right`:
/// the one chosen (set_organization, JWT claim), else the current user's default organization.
fn organization_for(right: Option<Right>) -> Option<Uuid> {
    if let Some(lc) = lifecycle_for(right) {
        return lc.map(|(org, _)| org);
    }
    let user = current_user();
    match requested_organization() {
        Requested::Invalid => None,
        Requested::Organization(org) => may_act_in(user.as_deref(), org, right).then_some(org),
        Requested::Nothing => {
            let u = user?;
            let org = lookups::default_organization(&u)?;
            // default_organization() already requires an active membership.
            (right.is_none() || lookups::member_has_right(&u, org, right.map_or("", Right::as_str))).then_some(org)
        }
    }
}

/// The organization this transaction acts for: the one chosen with `set_organization`, else the
/// JWT's organization claim, else the current user's default organization, else NULL. A chosen
/// organization the current user is not an active member of gives NULL.
#[pg_extern(stable, parallel_restricted)]
#[search_path(pg_catalog, pg_temp)]
pub fn current_organization_id() -> Option<Uuid> {
    organization_for(None)
}

/// Context-mode policies: the organization this transaction acts for, if the current user's
/// role there grants `privilege` ('read', 'write' or 'delete'); else NULL, which matches no row.
#[pg_extern(stable, strict, parallel_restricted)]
#[search_path(pg_catalog, pg_temp)]
pub fn policy_organization_id(privilege: &str) -> Option<Uuid> {
    organization_for(Some(Right::parse(privilege)))
}

/// `policy_organization_id`, as the organization's slug (for text tenant columns).
#[pg_extern(stable, strict, parallel_restricted)]
#[search_path(pg_catalog, pg_temp)]
pub fn policy_organization_slug(privilege: &str) -> Option<String> {
    if let Some(lc) = lifecycle_for(Some(Right::parse(privilege))) {
        return lc.and_then(|(_, slug)| slug);
    }
    organization_for(Some(Right::parse(privilege))).and_then(lookups::organization_slug)
}

/// Membership-mode policies: the organizations whose rows this transaction may touch with
/// `privilege`. When an organization is chosen (set_organization, JWT claim): that one alone, if
/// allowed. Otherwise: every active organization where the current user's role grants it.
/// Without a user: every organization in operator mode (`crate::operator`), else none (no rows).
fn organizations_for<T>(
    right: Right,
    all_of_user: fn(&str, &str) -> Vec<T>,
    chosen: fn(Uuid) -> Option<T>,
    every: fn() -> Vec<T>,
) -> Vec<T> {
    if let Some(lc) = lifecycle_for(Some(right)) {
        return lc.and_then(|(org, _)| chosen(org)).into_iter().collect();
    }
    let user = current_user();
    match requested_organization() {
        Requested::Invalid => Vec::new(),
        Requested::Organization(org) if may_act_in(user.as_deref(), org, Some(right)) => {
            chosen(org).into_iter().collect()
        }
        Requested::Organization(_) => Vec::new(),
        Requested::Nothing => match user {
            Some(u) => all_of_user(&u, right.as_str()),
            // Operator mode (tenancy.operate): every organization.
            None if crate::operator::is_on() => every(),
            None => Vec::new(),
        },
    }
}

#[pg_extern(stable, strict, parallel_restricted)]
#[search_path(pg_catalog, pg_temp)]
pub fn policy_organization_ids(privilege: &str) -> Vec<Uuid> {
    organizations_for(
        Right::parse(privilege),
        lookups::organizations_with_right,
        Some,
        crate::operator::all_organization_ids,
    )
}

/// `policy_organization_ids`, as slugs (for text tenant columns).
#[pg_extern(stable, strict, parallel_restricted)]
#[search_path(pg_catalog, pg_temp)]
pub fn policy_organization_slugs(privilege: &str) -> Vec<String> {
    organizations_for(
        Right::parse(privilege),
        lookups::organization_slugs_with_right,
        lookups::organization_slug,
        crate::operator::all_organization_slugs,
    )
}

/// The slug of `current_organization_id()`, for tenant columns that hold slugs (text).
#[pg_extern(stable, parallel_restricted)]
#[search_path(pg_catalog, pg_temp)]
pub fn current_organization_slug() -> Option<String> {
    current_organization_id().and_then(lookups::organization_slug)
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

/// Choose the organization for the rest of this transaction (transaction-local, like SET LOCAL).
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
pub fn set_organization(organization_id: Option<Uuid>) -> Uuid {
    let Some(org) = organization_id else {
        raise(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            "tenancy.set_organization: organization_id must not be NULL",
            "Pass the id of an organization the current user belongs to (see tenancy.memberships).",
        )
    };
    let user = current_user();
    let admin = administrator_without_user(user.as_deref());
    let allowed = match user.as_deref() {
        Some(u) => lookups::is_active_member(u, org),
        None => admin && lookups::organization_state(org) == Some(true),
    };
    if !allowed {
        match (admin, lookups::organization_state(org)) {
            (true, None) => raise(
                PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                format!("tenancy.set_organization: organization {org} does not exist"),
                "List organizations with SELECT id, slug FROM tenancy.organizations.",
            ),
            (_, Some(false)) => raise(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("tenancy.set_organization: organization {org} is deactivated"),
                "Reactivate it (UPDATE tenancy.organizations SET is_active = true) or choose another one.",
            ),
            _ => raise(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                match user {
                    Some(u) => {
                        format!("tenancy.set_organization: user {u} is not an active member of organization {org}")
                    }
                    None => "tenancy.set_organization: no current user in this transaction".to_string(),
                },
                "Set the acting user first (SET LOCAL tenancy.user_id = '<user id>', or a JWT with a sub claim), \
                 and choose an organization that user belongs to.",
            ),
        }
    }
    set_local(ORG_SETTING, &org.to_string());
    // The signed context for distributed tables (and, with Citus, the forwarding of SET LOCAL).
    crate::citus::write_context(org);
    org
}

/// `set_organization` by slug, as the runbooks call it (`set_organization('acme')`); a value that
/// reads as a uuid is taken as the organization's id, so `set_organization('<uuid>')` with an
/// untyped literal (which Postgres resolves to this text form) means what it always meant. The
/// slug is looked up as the caller, who sees only the organizations it belongs to (an
/// administrator: all); then the checks of `set_organization(uuid)` apply.
#[pg_extern(volatile, parallel_unsafe, name = "set_organization")]
#[search_path(pg_catalog, pg_temp)]
pub fn set_organization_by_slug(organization: Option<&str>) -> Uuid {
    let Some(value) = organization.map(str::trim) else {
        raise(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            // The same words as set_organization(uuid): an untyped NULL comes here.
            "tenancy.set_organization: organization_id must not be NULL",
            "Pass the slug or the id of an organization the current user belongs to.",
        )
    };
    if let Some(id) = parse_uuid(value) {
        return set_organization(Some(id));
    }
    let id = crate::errors::spi(Spi::get_one_with_args::<Uuid>(
        "SELECT (SELECT o.id FROM tenancy.organizations o WHERE o.slug = $1)",
        &[value.into()],
    ));
    match id {
        Some(id) => set_organization(Some(id)),
        None => raise(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("tenancy.set_organization: no organization with slug {value:?} that this transaction may act in"),
            "Set the acting user first (SET LOCAL tenancy.user_id = '<uuid>', or a JWT with a sub claim), and choose \
             the slug of an organization that user belongs to (SELECT slug FROM tenancy.organizations).",
        ),
    }
}
