//! Membership lookups used by the context and by RLS policies, and the seed functions
//! `get_user_organization_id` and `validate_client_access`.
//!
//! Each lookup is a statement prepared once per backend and kept (SPI_keepplan): no SQL is
//! parsed or planned per call, and Postgres revalidates the plan when the catalog changes.
//! Answers are memoized per backend (`crate::cache`) and forgotten whenever a transaction that
//! changed memberships, organizations or roles commits, so a revoked membership stops counting
//! at the next statement of every session.
//! The catalog tables carry RLS: a role that does not own them sees only the memberships of
//! the current user, so these functions cannot be used to probe other users' memberships.
//! The acting user's own membership (what `set_organization` and every policy check ask) and the
//! list of its organizations (membership-mode policies without a chosen organization) are read
//! from the catalog's indexes without SPI where that gives the query's answer (`crate::probe`).
use std::cell::RefCell;
use std::thread::LocalKey;

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use pgrx::{pg_sys, PgOid, Uuid};

use crate::cache::memo;
use crate::context::{current_user, Right, Rights};
use crate::errors::spi;
use crate::user_ids;

/// A kept statement and the SQL it was prepared from (a statement comparing user ids names the
/// database's user id type, so it is prepared again when that type changes).
type Slot = RefCell<Option<(String, OwnedPreparedStatement)>>;

thread_local! {
    static DEFAULT_ORG: Slot = const { RefCell::new(None) };
    static ORG_STATE: Slot = const { RefCell::new(None) };
    static ORG_SLUG: Slot = const { RefCell::new(None) };
    static MEMBER_RIGHT: Slot = const { RefCell::new(None) };
    static MEMBER_ORG_IDS: Slot = const { RefCell::new(None) };
    static MEMBER_ORG_SLUGS: Slot = const { RefCell::new(None) };
}

/// The user id parameter ($1, text, canonical) as the column's own type, so that the lookups
/// compare like with like and use the indexes on user_id. The type comes from the catalog
/// through a fixed list (`UserIdType::sql`).
fn user_param() -> String {
    format!("$1::{}", user_ids::configured().sql())
}

/// The rights of the user's active membership in an active organization, as bits (1 read,
/// 2 write, 4 delete); no row when there is none.
fn membership_sql() -> String {
    format!(
        "SELECT {RIGHTS_OF_ROLE} \
         FROM tenancy.memberships m \
         JOIN tenancy.organizations o ON o.id = m.organization_id \
         JOIN tenancy.roles r ON r.name = m.role \
         WHERE m.user_id = {} AND m.organization_id = $2 AND m.is_active AND o.is_active",
        user_param()
    )
}
fn default_org_sql() -> String {
    format!(
        "SELECT m.organization_id FROM tenancy.memberships m \
         JOIN tenancy.organizations o ON o.id = m.organization_id \
         WHERE m.user_id = {} AND m.is_active AND o.is_active \
         ORDER BY m.is_default DESC, m.created_at, m.organization_id LIMIT 1",
        user_param()
    )
}
const ORG_STATE_SQL: &str = "SELECT o.is_active FROM tenancy.organizations o WHERE o.id = $1";
const ORG_SLUG_SQL: &str = "SELECT o.slug FROM tenancy.organizations o WHERE o.id = $1 AND o.is_active";

/// The rights of the role a membership holds, as bits (1 read, 2 write, 4 delete: `Right::bit`).
const RIGHTS_OF_ROLE: &str = "(r.can_read::int | (r.can_write::int << 1) | (r.can_delete::int << 2))";

/// The organizations (`what` of each) where the user's role grants every right of the bits $2.
fn member_orgs_sql(what: &str) -> String {
    format!(
        "SELECT coalesce(array_agg({what} ORDER BY {what}), '{{}}') FROM tenancy.memberships m \
         JOIN tenancy.organizations o ON o.id = m.organization_id \
         JOIN tenancy.roles r ON r.name = m.role \
         WHERE m.user_id = {} AND m.is_active AND o.is_active AND {RIGHTS_OF_ROLE} & $2 = $2",
        user_param()
    )
}

fn uuid_oid() -> PgOid {
    PgOid::from(pg_sys::UUIDOID)
}

fn text_oid() -> PgOid {
    PgOid::from(pg_sys::TEXTOID)
}

/// Run a kept statement (prepared on first use) and return the first column of its first row.
fn kept_one<T: FromDatum + IntoDatum>(
    slot: &'static LocalKey<Slot>,
    sql: &str,
    types: &[PgOid],
    args: &[DatumWithOid],
) -> Option<T> {
    Spi::connect(|client| {
        slot.with(|cell| {
            if cell.borrow().as_ref().is_none_or(|(kept, _)| kept != sql) {
                let stmt = spi(client.prepare(sql, types)).keep();
                *cell.borrow_mut() = Some((sql.to_owned(), stmt));
            }
            let guard = cell.borrow();
            let (_, stmt) = guard.as_ref().expect("prepared above");
            let table = spi(client.select(stmt, Some(1), args));
            if table.is_empty() {
                None
            } else {
                spi(table.first().get_one::<T>())
            }
        })
    })
}

/// The user's membership in the organization, when it is active and so is the organization:
/// the rights of its role. One lookup answers both membership and every right, so that choosing
/// an organization (set_organization) and the policies' checks share one memoized answer.
pub fn membership(user: &str, org: Uuid) -> Option<Rights> {
    membership_seen_by(current_user(), user, org)
}

/// `membership`, for a caller that already read the acting user (`viewer`, what `current_user()`
/// returns now): the context functions, which would otherwise read it twice per check.
pub fn membership_seen_by(viewer: Option<String>, user: &str, org: Uuid) -> Option<Rights> {
    let probe_viewer = viewer.clone();
    memo("membership", viewer, &[user.as_bytes(), org.as_bytes()], || {
        // The acting user's own membership, read from the indexes where that is the query's
        // answer (crate::probe); else the query.
        crate::probe::membership(probe_viewer.as_deref(), user, org).unwrap_or_else(|| {
            kept_one::<i32>(&MEMBER_RIGHT, &membership_sql(), &[text_oid(), uuid_oid()], &[user.into(), org.into()])
                .map(Rights::from_bits)
        })
    })
}

pub fn is_active_member(user: &str, org: Uuid) -> bool {
    membership(user, org).is_some()
}

/// True when the acting user (`user`, what `current_user()` returns now) is an active member of
/// the active organization and its role there grants `right` (None: membership alone).
pub fn acting_user_has_right(user: &str, org: Uuid, right: Option<Right>) -> bool {
    membership_seen_by(Some(user.to_owned()), user, org).is_some_and(|rights| rights.allows(right))
}

/// The active organizations in which the user's role grants `right`: `column` of each
/// (m.organization_id or o.slug), through the statement kept in `slot`.
/// `probe` answers first where it can (`crate::probe`); else the query.
fn organizations_where<T>(
    slot: &'static LocalKey<Slot>,
    column: &'static str,
    user: &str,
    right: Option<Right>,
    probe: fn(Option<&str>, &str, i32) -> Option<Vec<T>>,
) -> Vec<T>
where
    T: Clone + 'static,
    Vec<T>: FromDatum + IntoDatum,
{
    let bits = right.map_or(0, Right::bit);
    let viewer = current_user();
    let probe_viewer = viewer.clone();
    memo(column, viewer, &[user.as_bytes(), &[bits]], || {
        probe(probe_viewer.as_deref(), user, i32::from(bits)).unwrap_or_else(|| {
            kept_one::<Vec<T>>(
                slot,
                &member_orgs_sql(column),
                &[text_oid(), PgOid::from(pg_sys::INT4OID)],
                &[user.into(), i32::from(bits).into()],
            )
            .unwrap_or_default()
        })
    })
}

/// The active organizations in which the user's role grants `right`, by id (the acting user's
/// from the catalog's indexes where that is the query's answer: `crate::probe`).
pub fn organizations_with_right(user: &str, right: Option<Right>) -> Vec<Uuid> {
    organizations_where(&MEMBER_ORG_IDS, "m.organization_id", user, right, crate::probe::organizations)
}

/// The active organizations in which the user's role grants `right`, by slug (always the query:
/// its order is the slugs' collation's).
pub fn organization_slugs_with_right(user: &str, right: Option<Right>) -> Vec<String> {
    organizations_where(&MEMBER_ORG_SLUGS, "o.slug", user, right, |_, _, _| None)
}

pub fn default_organization(user: &str) -> Option<Uuid> {
    memo("default_org", current_user(), &[user.as_bytes()], || {
        kept_one::<Uuid>(&DEFAULT_ORG, &default_org_sql(), &[text_oid()], &[user.into()])
    })
}

/// Some(is_active) for an organization the caller can see, None when there is none.
pub fn organization_state(org: Uuid) -> Option<bool> {
    memo("org_state", current_user(), &[org.as_bytes()], || {
        kept_one::<bool>(&ORG_STATE, ORG_STATE_SQL, &[uuid_oid()], &[org.into()])
    })
}

pub fn organization_slug(org: Uuid) -> Option<String> {
    memo("org_slug", current_user(), &[org.as_bytes()], || {
        kept_one::<String>(&ORG_SLUG, ORG_SLUG_SQL, &[uuid_oid()], &[org.into()])
    })
}

/// The user's default active organization, else the earliest active one, else NULL.
#[pg_extern(stable, strict, parallel_restricted)]
#[search_path(pg_catalog, pg_temp)]
pub fn get_user_organization_id(user_id: Uuid) -> Option<Uuid> {
    user_ids::canonical(user_ids::configured(), &crate::settings::uuid_text(&user_id))
        .and_then(|u| default_organization(&u))
}

/// `get_user_organization_id` for a user id of any type (uuid, bigint or text, as this database
/// stores them), given as text; an untyped literal resolves to this one. 22P02 for a value that
/// is not a user id of this database's type.
#[pg_extern(stable, strict, parallel_restricted, name = "get_user_organization_id")]
#[search_path(pg_catalog, pg_temp)]
pub fn get_user_organization_id_text(user_id: &str) -> Option<Uuid> {
    default_organization(&user_ids::canonical_or_raise(user_ids::configured(), user_id, "user id"))
}

/// True only when the user is an active member of the organization and the organization is
/// active. NULL arguments give false.
#[pg_extern(stable, parallel_restricted)]
#[search_path(pg_catalog, pg_temp)]
pub fn validate_client_access(user_id: Option<Uuid>, organization_id: Option<Uuid>) -> bool {
    match (user_id, organization_id) {
        (Some(u), Some(o)) => user_ids::canonical(user_ids::configured(), &crate::settings::uuid_text(&u))
            .is_some_and(|u| is_active_member(&u, o)),
        _ => false,
    }
}

/// `validate_client_access` for a user id of any type, given as text; an untyped literal
/// resolves to this one. A value that is not a user id of this database's type gives false.
#[pg_extern(stable, parallel_restricted, name = "validate_client_access")]
#[search_path(pg_catalog, pg_temp)]
pub fn validate_client_access_text(user_id: Option<&str>, organization_id: Option<Uuid>) -> bool {
    match (user_id, organization_id) {
        (Some(u), Some(o)) => user_ids::canonical(user_ids::configured(), u).is_some_and(|u| is_active_member(&u, o)),
        _ => false,
    }
}
