//! The organization this transaction acts for: `set_organization`, and the functions the
//! generated policies call (`policy_organization_id(s)`, `policy_organization_slug(s)`,
//! `current_organization_id`, `current_organization_slug`).
//!
//! Fail-closed rules:
//! * the organization is taken only when the current user is an active member of it (or the
//!   calling role is a tenancy administrator acting as itself); anything else gives NULL;
//! * NULL matches no tenant row in the generated policies.
use pgrx::prelude::*;
use pgrx::Uuid;

use crate::context::{
    administrator_without_user, current_user, lifecycle_for, requested_organization, Requested, Right, Rights,
};
use crate::errors::{spi, Error};
use crate::lookups;
use crate::operator;
use crate::settings::{parse_uuid, set_local, uuid_text, ORG_SETTING};
use crate::signed::{self, Grant};

/// May this transaction act in `org` with `right` (None: merely act there)? Yes when the current
/// user (`user`, as `current_user()` returned it) is an active member whose role grants it;
/// without a user, when a tenancy administrator acts as itself (`administrator_without_user`) and
/// the organization is active.
fn may_act_in(user: Option<&str>, org: Uuid, right: Option<Right>) -> bool {
    match user {
        Some(u) => lookups::acting_user_has_right(u, org, right),
        None => administrator_without_user(None) && lookups::organization_state(org) == Some(true),
    }
}

/// What the signed context carries for `org`: its slug and `rights`, what `set_organization` found
/// the transaction may do there.
fn grant(org: Uuid, rights: Rights) -> Grant {
    Grant {
        organization: org,
        slug: lookups::organization_slug(org).unwrap_or_default(),
        read: rights.allows(Some(Right::Read)),
        write: rights.allows(Some(Right::Write)),
        delete: rights.allows(Some(Right::Delete)),
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
            lookups::acting_user_has_right(&u, org, right).then_some(org)
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
    all_of_user: fn(&str, Option<Right>) -> Vec<T>,
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
            Some(u) => all_of_user(&u, Some(right)),
            // Operator mode (tenancy.operate): every organization.
            None if operator::is_on() => every(),
            None => Vec::new(),
        },
    }
}

#[pg_extern(stable, strict, parallel_restricted)]
#[search_path(pg_catalog, pg_temp)]
pub fn policy_organization_ids(privilege: &str) -> Vec<Uuid> {
    organizations_for(Right::parse(privilege), lookups::organizations_with_right, Some, operator::all_organization_ids)
}

/// `policy_organization_ids`, as slugs (for text tenant columns).
#[pg_extern(stable, strict, parallel_restricted)]
#[search_path(pg_catalog, pg_temp)]
pub fn policy_organization_slugs(privilege: &str) -> Vec<String> {
    organizations_for(
        Right::parse(privilege),
        lookups::organization_slugs_with_right,
        lookups::organization_slug,
        operator::all_organization_slugs,
    )
}

/// The slug of `current_organization_id()`, for tenant columns that hold slugs (text).
#[pg_extern(stable, parallel_restricted)]
#[search_path(pg_catalog, pg_temp)]
pub fn current_organization_slug() -> Option<String> {
    current_organization_id().and_then(lookups::organization_slug)
}

/// Choose the organization for the rest of this transaction (transaction-local, like SET LOCAL).
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
pub fn set_organization(organization_id: Option<Uuid>) -> Uuid {
    let Some(org) = organization_id else {
        Error::NullArgument.raise(
            "tenancy.set_organization: organization_id must not be NULL",
            "Pass the id of an organization the current user belongs to (see tenancy.memberships).",
        )
    };
    let user = current_user();
    let admin = administrator_without_user(user.as_deref());
    // What the transaction may do there: the rights of the user's role, or every right for an
    // administrator acting as itself in an active organization; None: it may not act there.
    let rights = match user.as_deref() {
        Some(u) => lookups::membership_seen_by(Some(u.to_owned()), u, org),
        None => (admin && lookups::organization_state(org) == Some(true)).then_some(Rights::ALL),
    };
    let Some(rights) = rights else {
        match (admin, lookups::organization_state(org)) {
            (true, None) => Error::UnknownOrganization.raise(
                format!("tenancy.set_organization: organization {org} does not exist"),
                "List organizations with SELECT id, slug FROM tenancy.organizations.",
            ),
            (_, Some(false)) => Error::PrerequisiteState.raise(
                format!("tenancy.set_organization: organization {org} is deactivated"),
                "Reactivate it (UPDATE tenancy.organizations SET is_active = true) or choose another one.",
            ),
            _ => Error::InsufficientPrivilege.raise(
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
    };
    set_local(ORG_SETTING, &uuid_text(&org));
    // The signed context for distributed tables (and, with Citus, the forwarding of SET LOCAL),
    // with what this transaction may do there (as found above, not asked again).
    signed::write_context(|| grant(org, rights));
    org
}

/// `set_organization()` without an argument: choose, for the rest of this transaction, the
/// organization the context names without a choice (the JWT's organization claim, else the
/// current user's default organization), with the checks of `set_organization(uuid)`; NULL when
/// it names none. The policies of local tables read those by themselves; on Citus only a chosen
/// organization is signed and reaches the workers, so PostgREST calls this as its
/// `db-pre-request` (docs/citus.md).
#[pg_extern(volatile, parallel_unsafe, name = "set_organization")]
#[search_path(pg_catalog, pg_temp)]
pub fn set_organization_from_context() -> Option<Uuid> {
    let org = match requested_organization() {
        Requested::Organization(org) => org,
        Requested::Invalid => Error::InvalidParameter.raise(
            "tenancy.set_organization: the requested organization (tenancy.organization_id, or the JWT's \
             organization_id claim) is not a uuid",
            "Put the id of an organization the user belongs to in the organization_id claim, or leave it out \
             to act for the user's default organization.",
        ),
        Requested::Nothing => lookups::default_organization(&current_user()?)?,
    };
    Some(set_organization(Some(org)))
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
        Error::NullArgument.raise(
            // The same words as set_organization(uuid): an untyped NULL comes here.
            "tenancy.set_organization: organization_id must not be NULL",
            "Pass the slug or the id of an organization the current user belongs to.",
        )
    };
    if let Some(id) = parse_uuid(value) {
        return set_organization(Some(id));
    }
    let id = spi(Spi::get_one_with_args::<Uuid>(
        "SELECT (SELECT o.id FROM tenancy.organizations o WHERE o.slug = $1)",
        &[value.into()],
    ));
    match id {
        Some(id) => set_organization(Some(id)),
        None => Error::InsufficientPrivilege.raise(
            format!("tenancy.set_organization: no organization with slug {value:?} that this transaction may act in"),
            "Set the acting user first (SET LOCAL tenancy.user_id = '<uuid>', or a JWT with a sub claim), and choose \
             the slug of an organization that user belongs to (SELECT slug FROM tenancy.organizations).",
        ),
    }
}
